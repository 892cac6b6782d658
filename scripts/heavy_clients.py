"""Fair sharing under heavy clients: one request, or one client, must not stall everyone.

    python -m scripts.heavy_clients [--seconds 20] [--heavy-clients 2] [--model-dir models/default]

Server as in the Dockerfile (`python -m app`, one worker, one torch thread, default settings) pinned
to --server-cpu; the clients run here on --client-cpu. Phases, each --seconds long:

0. alone: one client sends single short texts (SST-2 sentences and IMDB openings), one at a time:
   its latency unloaded.
1. heavy: --heavy-clients clients loop legal maximum requests (64 texts of ~10,000 characters of
   IMDB reviews, chunked: ~1,000 pieces each) without pausing (but for the Retry-After of a 503);
   the short client meanwhile. Target: its p99 <= --p99-ms (250) and no error.
2. sentences: the same heavy clients with `"sentences": true` (refused: more pieces than the queue
   holds); how fast the 422 comes, and the short client's p99 meanwhile.
3. explain: 4 clients loop explain requests of 16 long texts (refused above
   SENTIMENT_MAX_EXPLAIN_SEQUENCES) and 16 review openings; the short client's p99 meanwhile.

Writes bench/results/heavy_clients.json and .md (--name); exits 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.cli import env_settings, script_parser
from bench.http_client import HttpConn, connect, post
from bench.load import ClosedLoopStats, closed_loop, load_requests, quantile, send
from bench.report import save
from bench.servers import pinned_to, start_server
from bench.texts import data_root


def long_texts(n: int, chars: int, offset: int = 0) -> list[str]:
    """n texts of `chars` characters, each IMDB test reviews joined until long enough."""
    reviews: list[str] = []
    with gzip.open(data_root() / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 53 == 0:
                reviews.append(json.loads(line)["text"])
    out, k = [], offset
    for _ in range(n):
        text = ""
        while len(text) < chars:
            text += reviews[k % len(reviews)] + " "
            k += 1
        out.append(text[:chars].strip())
    return out


def summary(stats: ClosedLoopStats) -> dict[str, Any]:
    ok = [o.latency * 1000 for o in stats.outcomes if o.kind == "answer" and o.status == 200]
    codes = collections.Counter(
        str(o.status) if o.kind == "answer" else o.kind for o in stats.outcomes if o.status != 200
    )
    return {
        "requests": len(stats.outcomes),
        "ok": len(ok),
        "p50_ms": round(quantile(sorted(ok), 0.5), 1),
        "p99_ms": round(quantile(sorted(ok), 0.99), 1),
        "max_ms": round(max(ok, default=float("nan")), 1),
        "not_ok": dict(codes),
    }


def by_status(stats: ClosedLoopStats) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in stats.outcomes:
        key = str(o.status) if o.kind == "answer" else o.kind
        row = out.setdefault(key, {"n": 0, "latencies": []})
        row["n"] += 1
        row["latencies"].append(o.latency * 1000)
    return {
        k: {"n": v["n"], "p50_ms": round(quantile(sorted(v["latencies"]), 0.5), 1)} for k, v in out.items()
    }


async def polite_loop(
    port: int, requests: list[tuple[bytes, int]], clients: int, until: float, stats: ClosedLoopStats
) -> None:
    """`clients` clients each sending its next request as soon as the last is answered, after waiting
    the Retry-After (1 s) of a 503 as a well-behaved client does."""

    async def client(k: int) -> None:
        conn: HttpConn | None = None
        i = k
        while time.perf_counter() < until:
            if conn is None or conn.closed:
                conn = await connect(port)
            data, n = requests[i % len(requests)]
            i += 1
            outcome = await send(conn, data, n, 60)
            stats.outcomes.append(outcome)
            if outcome.retry_after:
                await asyncio.sleep(1.0)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))


async def phase(
    port: int,
    seconds: float,
    short: list[tuple[bytes, int]],
    heavy: list[tuple[bytes, int]] | None,
    heavy_clients: int,
) -> dict[str, Any]:
    until = time.perf_counter() + seconds
    short_stats, heavy_stats = ClosedLoopStats(), ClosedLoopStats()
    tasks = []
    if heavy:
        tasks.append(polite_loop(port, heavy, heavy_clients, until, heavy_stats))
        await asyncio.sleep(0.5)  # the heavy clients' first requests are in
    tasks.append(closed_loop(port, short, 1, until, short_stats, deadline_s=60))
    await asyncio.gather(*tasks)
    out = {"short": summary(short_stats)}
    if heavy:
        out["heavy"] = by_status(heavy_stats)
        out["heavy_texts_ok"] = sum(o.texts for o in heavy_stats.outcomes if o.status == 200)
    return out


async def scenario(port: int, args: Any) -> dict[str, Any]:
    short = load_requests(1)
    heavy = [
        (post({"texts": long_texts(64, args.chars, offset=k * 64)}), 64) for k in range(args.heavy_clients)
    ]
    sentences = [
        (post({"texts": long_texts(64, args.chars, offset=k * 64), "sentences": True}), 64)
        for k in range(args.heavy_clients)
    ]
    explain = [
        (post({"texts": long_texts(16, args.chars, offset=k * 16), "explain": True}), 16) for k in range(2)
    ] + [(post({"texts": long_texts(16, 300, offset=k * 16), "explain": True}), 16) for k in range(2)]
    res: dict[str, Any] = {}
    await phase(port, 3, short, None, 0)  # warm
    for name, load, clients in (
        ("alone", None, 0),
        ("heavy", heavy, args.heavy_clients),
        ("sentences", sentences, args.heavy_clients),
        ("explain", explain, 4),
    ):
        print(f"{name}: {args.seconds:g} s ...", flush=True)
        res[name] = await phase(port, args.seconds, short, load, clients)
        print(f"  {res[name]}", flush=True)
        await asyncio.sleep(2)  # let the last heavy requests finish
    return res


def targets(res: dict[str, Any], p99_ms: float) -> list[dict[str, Any]]:
    out = []
    for name in ("heavy", "sentences", "explain"):
        s = res[name]["short"]
        out.append(
            {
                "name": f"{name}: the short client's p99 <= {p99_ms:g} ms and no error",
                "measured": f"p99 {s['p99_ms']} ms (p50 {s['p50_ms']}, max {s['max_ms']}), "
                f"{s['ok']} of {s['requests']} ok, not ok {s['not_ok']}",
                "pass": s["p99_ms"] <= p99_ms and not s["not_ok"],
            }
        )
    return out


def write_report(res: dict[str, Any], name: str) -> Path:
    lines = [
        "# A short client beside heavy clients (scripts/heavy_clients.py)",
        "",
        f"`{res['command']}`, {res['when']}. {res['server']}; clients on CPU {res['client_cpu']}. "
        f"{res['machine']}: a shared 2-core VM (other work paused by bench-quiet.sh, not stopped).",
        "",
        "| phase | short client p50 ms | p99 ms | max ms | ok / sent | not ok | heavy clients' answers |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase_name in ("alone", "heavy", "sentences", "explain"):
        r = res[phase_name]
        s = r["short"]
        heavy = ", ".join(
            f"{k}: {v['n']} (p50 {v['p50_ms']} ms)" for k, v in sorted(r.get("heavy", {}).items())
        )
        lines.append(
            f"| {phase_name} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | {s['ok']} / {s['requests']} "
            f"| {s['not_ok'] or '-'} | {heavy or '-'} |"
        )
    lines += ["", "| target | measured | pass |", "| --- | --- | --- |"]
    lines += [f"| {t['name']} | {t['measured']} | {'yes' if t['pass'] else 'NO'} |" for t in res["targets"]]
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in res["settings"].items())]
    return save(name, res, lines)


def main() -> int:
    p = script_parser(__doc__, server_env=True)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase (20)")
    p.add_argument("--heavy-clients", type=int, default=2, help="clients looping maximum requests (2)")
    p.add_argument("--chars", type=int, default=10_000, help="characters per heavy text (10,000: the limit)")
    p.add_argument("--p99-ms", type=float, default=250.0, help="target p99 of the short client (250)")
    p.add_argument("--name", default="heavy_clients", help="results file name in bench/results")
    args = p.parse_args()
    import uvloop

    extra = env_settings(p, args)
    env = {"SENTIMENT_ACCESS_LOG": "false", **extra}
    log_path = Path(tempfile.mkdtemp(prefix="heavy-clients-")) / "server.log"
    with pinned_to(args.client_cpu):
        server = start_server(args.model_dir, log_path, cpu=args.server_cpu, env=env)
        try:
            url = f"http://127.0.0.1:{server.port}/info"
            info = json.loads(urllib.request.urlopen(url, timeout=10).read())
            res = uvloop.run(scenario(server.port, args))
        finally:
            code = server.stop()
    log = server.log_text()
    model = f"{info['model']['name']} {info['model']['version']}"
    res.update(
        command="python -m scripts.heavy_clients " + " ".join(sys.argv[1:]),
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        server=f"Server (`python -m app`, 1 worker, 1 torch thread, model `{model}`) pinned to CPU "
        f"{args.server_cpu}, exit status {code}",
        client_cpu=args.client_cpu,
        settings={**info["batching"], **info["limits"], **extra},
    )
    res["targets"] = targets(res, args.p99_ms)
    if "Traceback" in log:
        failed = {"name": "no traceback in the server log", "pass": False, "measured": log[-2000:]}
        res["targets"].append(failed)
    print(write_report(res, args.name).read_text())
    return 0 if all(t["pass"] for t in res["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
