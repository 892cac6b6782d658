"""Where a POST /predict's time goes outside the model: py-spy on the server under 64 connections.

    python -m bench.profile_predict [--model-dir DIR] [--seconds 10]

Starts `python -m app` (1 worker, 1 torch thread, access log off) pinned to CPU 0, drives it with wrk
from CPU 1 (../shared/peers' single.lua: 64 connections x 1 text, the peers' texts), and meanwhile:
- reads each server thread's CPU time from /proc: event-loop CPU per request (HTTP, JSON, routing,
  tokenizing, batching bookkeeping, rendering: everything but the forward passes) and inference-thread
  CPU per text;
- samples the event loop with py-spy (`pip install py-spy`; not a project dependency) and sorts each
  sample into the request stage its innermost known frame belongs to.
Writes bench/results/profile.md and profile.json. Default model: the peers-size artifact that
bench/peers_bench.py trains (~/.cache/sentiment-service/peers-artifact/latest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import REPO, RESULTS
from bench.procstats import cpu_split, thread_cpu
from bench.servers import start_server

PEERS = REPO.parent / "shared" / "peers"
DEFAULT_MODEL = Path.home() / ".cache/sentiment-service/peers-artifact/latest"

# Request stage -> function names (innermost match wins), in the order of the request path.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("decode (JSON + pydantic-core)", ("decode", "validate", "loads", "model_validate", "_read_body")),
    ("tokenize + plan (core/long_text.py)", ("plan", "token_ids", "encode_batch", "layout")),
    ("limits + submit (core/engine.py, core/batcher.py submit)", ("submit", "check_limits", "check_ready")),
    ("batch worker on the loop (take, deliver, wake-ups)", ("_work", "_take", "_deliver", "_hold_open")),
    ("await (timeout, futures, disconnect watch)", ("_wait", "Timeout", "_watch_disconnect", "timeout")),
    ("reassemble + render + encode", ("render_predictions", "predictions", "reassemble", "result", "dumps")),
    (
        "endpoint + middleware (id, metrics, access log)",
        ("serve_fast", "predict_texts", "refusal", "RequestMiddleware", "observe"),
    ),
    ("uvicorn HTTP (httptools parse, send, receive)", ("HttpToolsProtocol", "RequestResponseCycle")),
    ("asyncio event loop itself", ("Runner.run", "run_forever", "_run_once", "select")),
]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        func = frame.split(" (", 1)[0]
        for stage, names in STAGES:
            if any(func == n or func.startswith(n + ".") or func.endswith("." + n) for n in names):
                return stage
    return "other"


def wrk(url: str, conns: int, seconds: float, latency: bool = False) -> dict[str, float]:
    env = {**os.environ, "TEXTS_FILE": str(PEERS / "texts.txt")}
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "-s",
        str(PEERS / "single.lua"),
    ]
    out = subprocess.run([*cmd, *(["--latency"] if latency else []), url], env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return {"requests_per_s": rps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL))
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    if not shutil.which("py-spy") or not shutil.which("wrk"):
        sys.exit("needs py-spy (pip install py-spy) and wrk (apt-get install wrk)")
    # `python -m app` as the Dockerfile runs it (1 worker, 1 torch thread), access log off.
    log = Path(tempfile.mkdtemp(prefix="profile-")) / "server.log"
    server = start_server(
        a.model_dir, log, cpu=0, env={"SENTIMENT_ACCESS_LOG": "false", "SENTIMENT_LOG_LEVEL": "warning"}
    )
    url = f"http://127.0.0.1:{server.port}/predict"
    raw = log.parent / "profile.raw"
    try:
        wrk(url, 16, 3)  # warm-up
        # Unprofiled first: CPU per request without the sampler's own cost.
        c0, t0 = thread_cpu(server.pid), time.perf_counter()
        load = wrk(url, 64, a.seconds, latency=True)
        c1, elapsed = thread_cpu(server.pid), time.perf_counter() - t0
        requests = load["requests_per_s"] * a.seconds
        cpu = {k: v * elapsed for k, v in cpu_split(server.pid, c0, c1, elapsed).items()}
        # Then profiled.
        spy_cmd = ["py-spy", "record", "--pid", str(server.pid), "--duration", str(int(a.seconds)), "--rate",
                   "250", "--threads", "--nonblocking", "--format", "raw", "-o", str(raw)]  # fmt: skip
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wrk(url, 64, a.seconds + 2)
        spy.wait(60)
    finally:
        server.stop()
    stages: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        if "MainThread" in frames[0]:
            stages[stage_of(frames[1:])] += int(n)
    shutil.rmtree(log.parent)  # the raw samples and the server log
    total = sum(stages.values())
    loop_us = cpu["event_loop"] / requests * 1e6
    infer_us = cpu["inference"] / requests * 1e6
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "model_dir": a.model_dir,
        "requests_per_s": load["requests_per_s"],
        "seconds": elapsed,
        "event_loop_cpu_us_per_request": loop_us,
        "inference_cpu_us_per_text": infer_us,
        "other_threads_cpu_s": cpu["other_threads"],
        "event_loop_samples": dict(stages),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile.json").write_text(json.dumps(res, indent=2))
    lines = [
        "# Where POST /predict spends its time outside the model (bench/profile_predict.py)",
        "",
        f"{res['when']}, one run: server pinned to CPU 0 (1 worker, 1 torch thread, access log off), wrk on "
        f"CPU 1, 64 connections x 1 text for {a.seconds:g} s: **{load['requests_per_s']:,.0f} texts/s**.",
        "",
        f"CPU per request, from /proc (unprofiled run): event loop **{loop_us:.0f} µs** (everything outside "
        f"the forward passes: HTTP, JSON, tokenizing, batching bookkeeping, rendering), inference thread "
        f"{infer_us:.0f} µs per text (the forward passes, padding and softmax).",
        "",
        f"The event loop's py-spy samples (a second run, {total} samples at 250 Hz), by request stage (µs: "
        "the share times the CPU per request above; samples count a thread that is ready but waiting for the "
        "shared core too, so the split is approximate):",
        "",
        "| stage | share of the event loop's samples | ≈ µs per request |",
        "| --- | --- | --- |",
    ]
    order = [s for s, _ in STAGES] + ["other"]
    for stage in order:
        if stages.get(stage):
            share = stages[stage] / total
            lines.append(f"| {stage} | {share:.0%} | {share * loop_us:.0f} |")
    (RESULTS / "profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
