"""This service against the peer servers (../shared/peers), one protocol, one run.

    python -m bench.peers_bench [--duration 15] [--peers "naive batcher litserve"]
                                [--backends "onnxruntime torchscript"]

1. An artifact of the peers' size, trained by this project's own code (embedding 128, biLSTM 128,
   last-state pooling, no n-gram bag, 30,000 words), at ~/.cache/sentiment-service/peers-artifact;
   trained once (a few minutes on 2 cores), reused after.
2. Its in-process limit through the service's own batch path (tokenize + forward, one thread, pinned
   to the server CPU) on each backend (SENTIMENT_BACKEND): texts/s at batch 1, 8, 32, 64.
3. The service (`python -m app`, 1 worker, 1 thread, access log off) pinned to the server CPU, once per
   backend, then `../shared/peers/run.sh` with OURS_URL pointing at it: wrk on the other CPU; the
   peers' in-process limit, this service, then (after the last backend) each peer, each pinned to the
   same CPU.
4. bench/results/peers.md, peers.json and peers.png: texts/s, p50, p99 per server and connection count,
   and each server's 64-connection texts/s as a share of its own model's batch-64 limit.

Needs wrk (Debian package) and taskset; the first run of run.sh installs the peers' packages (~2 min).
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

LINE = re.compile(
    r"^(?P<label>\S+)\s+conns=(?P<conns>\d+)\s+req/s=(?P<rps>\S+)\s+texts/s=(?P<tps>\S+)\s+"
    r"p50_ms=(?P<p50>\S+)\s+p99_ms=(?P<p99>\S+)\s+errors=(?P<errors>\d+)"
)
RAW = re.compile(r"^raw bs=(?P<bs>\d+)\s+texts/s=\s*(?P<tps>[\d.]+)")
NAMES = {
    "ours-onnxruntime": "this service, ONNX Runtime",
    "ours-torchscript": "this service, TorchScript",
    "naive_fastapi": "FastAPI, no batching",
    "fastapi_batcher": "FastAPI + a 40-line batcher",
    "litserve": "LitServe 0.2.19",
}


def in_process(model_dir: Path, cpu: int, backend: str) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.serve_bench", "--inprocess",
         str(model_dir), "--texts-file", str(PEERS / "texts.txt")],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, "SENTIMENT_BACKEND": backend},
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["server_path"]


def run_peers(
    url: str, duration: int, peers: str, cpu: int, wrk_cpu: int
) -> tuple[list[dict[str, Any]], dict]:
    env = {**os.environ, "OURS_URL": url, "DURATION": str(duration), "PEERS": peers,
           "SERVER_CPU": str(cpu), "WRK_CPU": str(wrk_cpu)}  # fmt: skip
    proc = subprocess.Popen(["bash", str(PEERS / "run.sh")], env=env, stdout=subprocess.PIPE, text=True)
    rows, raw = [], {}
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if m := LINE.match(line):
            d = m.groupdict()
            label, tpr = (d["label"][:-4], 16) if d["label"].endswith("_x16") else (d["label"], 1)
            rows.append({"server": label, "texts_per_request": tpr, "conns": int(d["conns"]),
                         "texts_per_s": float(d["tps"]), "p50_ms": float(d["p50"]), "p99_ms": float(d["p99"]),
                         "errors": int(d["errors"])})  # fmt: skip
        elif m := RAW.match(line):
            raw[m["bs"]] = float(m["tps"])
    if proc.wait() != 0:
        raise RuntimeError(f"run.sh exited {proc.returncode}")
    return rows, raw


def table(rows: list[dict[str, Any]], limits: dict[str, dict[str, float]]) -> list[str]:
    def cell(server: str, tpr: int, conns: int, p99: bool = False) -> str:
        r = next(
            (r for r in rows if (r["server"], r["texts_per_request"], r["conns"]) == (server, tpr, conns)),
            None,
        )
        if r is None:
            return "-"
        extra = f" / {r['p99_ms']:.1f}" if p99 else ""
        err = f", {r['errors']} errors" if r["errors"] else ""
        return f"{r['texts_per_s']:,.0f} ({r['p50_ms']:.2f}{extra}{err})"

    lines = [
        "| server | 1 conn texts/s (p50 ms) | 16 conns | 64 conns (p50 / p99 ms) | 16 conns × 16 texts | "
        "64 conns × 16 texts | 64 conns ÷ own batch-64 limit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, lim in limits.items():
        label = "peers' model" if key == "peers" else f"our artifact, {key.removeprefix('ours-')}"
        label = f"in-process limit, {label}"
        lines.append(f"| {label} | bs 1: {lim['1']:,.0f} | bs 8: {lim['8']:,.0f} | bs 64: {lim['64']:,.0f} | "
                     f"bs 32: {lim['32']:,.0f} | | |")  # fmt: skip
    for server in dict.fromkeys(r["server"] for r in rows):
        own = limits[server if server.startswith("ours") else "peers"]["64"]
        c64 = next(
            (r for r in rows if (r["server"], r["texts_per_request"], r["conns"]) == (server, 1, 64)), None
        )
        share = f"{c64['texts_per_s'] / own:.0%}" if c64 else "-"
        lines.append(
            f"| {NAMES.get(server, server)} | {cell(server, 1, 1)} | {cell(server, 1, 16)} | "
            f"{cell(server, 1, 64, p99=True)} | {cell(server, 16, 16)} | {cell(server, 16, 64)} | {share} |"
        )
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, tpr in zip(axes, (1, 16), strict=True):
        for server in dict.fromkeys(r["server"] for r in rows):
            pts = sorted(
                (r["conns"], r["texts_per_s"])
                for r in rows
                if r["server"] == server and r["texts_per_request"] == tpr
            )
            ax.plot([c for c, _ in pts], [t for _, t in pts], marker="o", label=NAMES.get(server, server))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("connections")
        ax.set_ylabel("texts/s")
        ax.set_title(f"{tpr} text{'s' if tpr > 1 else ''} per request, server on one core")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--duration", type=int, default=15, help="seconds per point (run.sh's DURATION, 15)")
    p.add_argument("--peers", default="naive batcher litserve", help="peers to run (all three)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument(
        "--backends", default="onnxruntime torchscript", help="SENTIMENT_BACKEND of each run of this service"
    )
    a = p.parse_args()
    model_dir = artifact()
    backends = a.backends.split()
    limits: dict[str, dict[str, float]] = {}
    for backend in backends:
        print(f"in-process limit of our artifact on {backend} ...", flush=True)
        limit = in_process(model_dir, a.server_cpu, backend)
        limits[f"ours-{backend}"] = {str(k): v for k, v in limit.items()}
    rows: list[dict[str, Any]] = []
    for i, backend in enumerate(backends):
        # `python -m app` as the Dockerfile runs it (1 worker, 1 thread), access log off; the peers
        # after the last backend (" ": run.sh's empty PEERS would mean all of them).
        log = Path(tempfile.mkdtemp(prefix="peers-")) / "server.log"
        server = start_server(model_dir, log, cpu=a.server_cpu, env={**QUIET, "SENTIMENT_BACKEND": backend})
        try:
            got, peers_limit = run_peers(
                f"http://127.0.0.1:{server.port}/predict", a.duration,
                a.peers if i == len(backends) - 1 else " ", a.server_cpu, a.wrk_cpu,
            )  # fmt: skip
        finally:
            server.stop()
        rows += [{**r, "server": f"ours-{backend}"} if r["server"] == "ours" else r for r in got]
    limits["peers"] = peers_limit
    RESULTS.mkdir(exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M")
    (RESULTS / "peers.json").write_text(json.dumps({"when": when, "rows": rows, "limits": limits,
                                                    "duration_s": a.duration}, indent=2))  # fmt: skip
    lines = [
        "# This service against the peers (bench/peers_bench.py)",
        "",
        f"{when}, one run, `python -m bench.peers_bench --duration {a.duration}`: every server pinned to CPU "
        f"{a.server_cpu}, wrk on CPU {a.wrk_cpu} (../shared/peers/bench.sh). Same model size everywhere; "
        "ours is an artifact of that size trained by this project's code. Cells: texts/s (p50 ms).",
        "",
        *table(rows, limits),
        "",
        "![texts/s by connections](peers.png)",
    ]
    (RESULTS / "peers.md").write_text("\n".join(lines) + "\n")
    plot(rows, RESULTS / "peers.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
