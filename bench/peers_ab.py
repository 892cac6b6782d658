"""This service before and after a change, on the peers benchmark's two headline loads, in one run.

    python -m bench.peers_ab --base /tmp/base [--rounds 2] [--duration 15]

`--base`: another source tree of this project (e.g. `git archive <commit> | tar -x -C /tmp/base`).
Each round serves the peers-size artifact (bench/peers_bench.py) from the base tree, then from this
one, with `python -m app` as the Dockerfile runs it (1 worker, 1 torch thread, access log off) pinned
to --server-cpu, and drives it with ../shared/peers/bench.sh (wrk on --wrk-cpu): 64 connections × 1
text and 16 connections × 16 texts, --duration s each after bench.sh's 5 s warm-up. Alternating rounds
spread a noisy neighbour's effect over both. Writes bench/results/peers-ab.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO, RESULTS
from bench.peers import PEERS, QUIET, artifact
from bench.servers import start_server

LINE = re.compile(r"conns=(?P<conns>\d+)\s+req/s=\S+\s+texts/s=(?P<tps>\S+)\s+p50_ms=(?P<p50>\S+)\s+"
                  r"p99_ms=(?P<p99>\S+)\s+errors=(?P<errors>\d+)")  # fmt: skip
LOADS = {"64 conns × 1 text": ("single.lua", "64", "1"), "16 conns × 16 texts": ("batch16.lua", "16", "16")}


def drive(url: str, duration: int, server_cpu: int, wrk_cpu: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, (lua, conns, tpr) in LOADS.items():
        env = {**os.environ, "CONNS": conns, "TEXTS_PER_REQ": tpr, "DURATION": str(duration),
               "WRK_CPU": str(wrk_cpu), "SERVER_CPU": str(server_cpu), "TEXTS_FILE": str(PEERS / "texts.txt"),
               "RAW_DIR": tempfile.mkdtemp(prefix="peers-ab-")}  # fmt: skip
        text = subprocess.run(
            ["bash", str(PEERS / "bench.sh"), url, str(PEERS / lua), "ours"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        m = LINE.search(text)
        assert m, text
        out[name] = {k: float(v) for k, v in m.groupdict().items()}
        print(f"  {name}: {out[name]}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--base", type=Path, required=True, help="the source tree to compare against")
    p.add_argument("--rounds", type=int, default=2, help="base/this pairs (2)")
    p.add_argument("--duration", type=int, default=15, help="seconds per load (15)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument("--name", default="peers-ab")
    a = p.parse_args()
    model_dir = artifact()
    runs: list[dict[str, Any]] = []
    for r in range(a.rounds):
        for label, tree in (("before", a.base.resolve()), ("after", REPO)):
            print(f"round {r + 1}, {label} ({tree}) ...", flush=True)
            log = Path(tempfile.mkdtemp(prefix="peers-ab-")) / "server.log"
            server = start_server(model_dir, log, cpu=a.server_cpu, env=QUIET, cwd=tree)
            try:
                runs.append({"round": r + 1, "code": label, **drive(
                    f"http://127.0.0.1:{server.port}/predict", a.duration, a.server_cpu, a.wrk_cpu
                )})  # fmt: skip
            finally:
                server.stop()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"when": when, "base": str(a.base), "runs": runs},
                                                       indent=2) + "\n")  # fmt: skip
    lines = [
        "# Before and after, the peers benchmark's headline loads (bench/peers_ab.py)",
        "",
        f"{when}, `python -m bench.peers_ab {' '.join(sys.argv[1:])}`: `python -m app` (1 worker, 1 torch "
        f"thread, access log off) pinned to CPU {a.server_cpu}, wrk on CPU {a.wrk_cpu}, the peers-size "
        "artifact; rounds alternate the two trees. A shared 2-core VM (other work paused by "
        "bench-quiet.sh). Cells: texts/s (p50 / p99 ms, errors).",
        "",
        "| round | code | " + " | ".join(LOADS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in LOADS) + " |",
    ]
    for run in runs:
        cells = [f"{run[n]['tps']:,.0f} ({run[n]['p50']:.1f} / {run[n]['p99']:.1f}, {run[n]['errors']:.0f})"
                 for n in LOADS]  # fmt: skip
        lines.append(f"| {run['round']} | {run['code']} | " + " | ".join(cells) + " |")
    for code in ("before", "after"):
        mean = {n: sum(r[n]["tps"] for r in runs if r["code"] == code) / a.rounds for n in LOADS}
        lines.append(f"| mean | {code} | " + " | ".join(f"{v:,.0f}" for v in mean.values()) + " |")
    (RESULTS / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
