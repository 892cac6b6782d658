"""Event-loop CPU per POST /predict, this tree against another, alternating: the HTTP side's cost.

    python bench/loop_cpu_ab.py --base /tmp/base [--rounds 3] [--seconds 10]

Throughput on a shared machine moves ±10% between runs of the same code (bench/results/seams.md);
the CPU the server's event loop spends per request (everything but the forward passes: HTTP, JSON,
validation, tokenizing, batching bookkeeping, rendering), read from /proc, moves far less, so it shows a
change of a few microseconds. Each round serves the peers-size artifact (bench/peers_bench.py) with
`python -m app` (1 worker, 1 torch thread, access log off) pinned to CPU 0 from --base, then from this
tree, and drives it with wrk from CPU 1 (64 connections × 1 text, ../shared/peers' single.lua).
Prints one line per run and the mean per tree; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.loadgen import cpu_split, start_server, thread_cpu
from bench.peers_bench import QUIET, artifact
from bench.profile_predict import wrk

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--base", type=Path, required=True, help="the source tree to compare against")
    p.add_argument("--rounds", type=int, default=3, help="base/this pairs (3)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per run (10)")
    a = p.parse_args()
    model_dir = artifact()
    per_tree: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(a.rounds):
        for label, tree in (("before", a.base.resolve()), ("after", REPO)):
            log = Path(tempfile.mkdtemp(prefix="loop-cpu-")) / "server.log"
            server = start_server(model_dir, log, cpu=0, env=QUIET, cwd=tree)
            try:
                url = f"http://127.0.0.1:{server.port}/predict"
                wrk(url, 16, 3)  # warm-up
                c0, t0 = thread_cpu(server.pid), time.perf_counter()
                rps = wrk(url, 64, a.seconds)["requests_per_s"]
                c1, elapsed = thread_cpu(server.pid), time.perf_counter() - t0
            finally:
                server.stop()
            loop_s = cpu_split(server.pid, c0, c1, elapsed)["event_loop"] * elapsed
            us = loop_s / (rps * elapsed) * 1e6
            per_tree[label].append(us)
            print(f"round {r + 1} {label:6s}: {rps:7,.0f} requests/s, event loop {us:6.1f} µs CPU a request",
                  flush=True)  # fmt: skip
    for label, values in per_tree.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"mean {label:6s}: {sum(values) / len(values):.1f} µs ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
