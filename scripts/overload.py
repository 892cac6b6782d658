"""Overload test: drive the real server at 10x its capacity, then check that it recovers.

    python -m scripts.overload [--duration 60] [--factor 10] [--model-dir models/default]

1. Starts the server as the Dockerfile does (`python -m app`, one worker, one torch thread) pinned to
   one CPU; this load generator runs on the other.
2. Capacity: 64 closed-loop clients x 1 text for --baseline-seconds -> texts/s and p99.
3. Burst: open loop at --factor x that rate (fixed arrival schedule, independent of answers) over a
   pool of --connections keep-alive connections, for --duration seconds. An arrival that finds every
   connection still waiting for an answer is counted as unsent: the server is not even refusing as
   fast as requests arrive.
4. Recovery: right when the burst ends, the baseline load again for --recovery-seconds, per second,
   while the burst's last requests are still being answered.

Reports the share of 503s carrying Retry-After, p99 of accepted (200) requests, peak server RSS
(sampled every 100 ms), connections left hanging, accepted requests never answered (client and
server counts compared), 5xx other than 503, and the time until texts/s and p99 are back within
10% / 20% of the baseline, and where the server's CPU went (event loop vs inference thread). Writes
bench/results/overload.json and overload.md (--name); exits 1 when a target is missed.

With --port and --pid it starts no server and drives the one already listening on --host:PORT (a
container, as scripts/compose_e2e.py does), sampling the RSS and CPU of process PID (the container's
server process as the host sees it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cli import env_settings, script_parser
from bench.http_client import HttpConn, connect
from bench.load import ClosedLoopStats, Outcome, closed_loop, load_requests, quantile, send
from bench.metrics import requests_with_status, scrape
from bench.procstats import ForeignCpu, RssSampler, cpu_split, thread_cpu
from bench.report import save
from bench.servers import pinned_to, start_server

HOST = ["127.0.0.1"]  # the server's address: --host in attached mode
MIB = 1024 * 1024


# --- phases ---------------------------------------------------------------------------------------


def summarise(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    ok = [o.latency for o in outcomes if o.kind == "answer" and o.status == 200]
    return {
        "texts_per_s": sum(o.texts for o in outcomes if o.kind == "answer" and o.status == 200) / seconds,
        "requests": len(outcomes),
        "ok": len(ok),
        "p50_ms": quantile(ok, 0.50) * 1000,
        "p99_ms": quantile(ok, 0.99) * 1000,
        "not_ok": collections.Counter(
            f"{o.status}" if o.kind == "answer" else o.kind for o in outcomes if o.status != 200
        ),
    }


def per_second(outcomes: list[Outcome], t0: float, seconds: int) -> list[dict[str, Any]]:
    """Texts/s and p99 of 200s for each whole second after t0, by completion time."""
    buckets: list[list[Outcome]] = [[] for _ in range(seconds)]
    for o in outcomes:
        k = int(o.done - t0)
        if 0 <= k < seconds:
            buckets[k].append(o)
    rows = []
    for k, b in enumerate(buckets):
        ok = [o for o in b if o.kind == "answer" and o.status == 200]
        rows.append(
            {
                "second": k + 1,
                "texts_per_s": sum(o.texts for o in ok),
                "p99_ms": quantile([o.latency for o in ok], 0.99) * 1000,
                "not_ok": len(b) - len(ok),
            }
        )
    return rows


async def closed_phase(
    port: int, requests: list[tuple[bytes, int]], clients: int, seconds: float
) -> tuple[ClosedLoopStats, float]:
    stats = ClosedLoopStats()
    t0 = time.perf_counter()
    await closed_loop(port, requests, clients, t0 + seconds, stats, stop_when_refused=False, host=HOST[0])
    return stats, t0


@dataclass
class Burst:
    rate: float
    duration: float
    pool: int
    sent: list[int] = field(default_factory=list)  # per second
    unsent: list[int] = field(default_factory=list)
    answered: list[collections.Counter[int]] = field(default_factory=list)  # status counts by second
    ok_latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)  # of the 503s
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    codes_503: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_after_503: int = 0
    lost: list[str] = field(default_factory=list)  # requests sent whose connection ended unanswered
    hanging: int = 0
    reconnect_failures: int = 0
    end: float = 0.0
    drained_after_s: float = float("nan")  # last burst answer, seconds after the burst ended
    peak_in_flight: int = 0
    idle: collections.deque[HttpConn] = field(default_factory=collections.deque)


async def open_pool(port: int, n: int) -> list[HttpConn]:
    conns: list[HttpConn] = []
    for start in range(0, n, 128):  # not all at once: the listen backlog would overflow
        conns += await asyncio.gather(*(connect(port, HOST[0]) for _ in range(start, min(n, start + 128))))
    return conns


async def burst_phase(
    port: int,
    requests: list[tuple[bytes, int]],
    burst: Burst,
    rss: RssSampler,
) -> set[asyncio.Task[None]]:
    """Open loop: arrival k is due at t0 + k / rate whatever the server does. Returns the requests
    still in flight when the burst ends (the caller waits for them with a deadline)."""
    seconds = int(burst.duration) + 1
    burst.sent, burst.unsent = [0] * seconds, [0] * seconds
    burst.answered = [collections.Counter() for _ in range(seconds + 120)]
    idle = collections.deque(await open_pool(port, burst.pool))  # FIFO: no connection idles into
    in_flight: set[asyncio.Task[None]] = set()  # the server's keep-alive timeout
    t0 = time.perf_counter()
    ok_by_second: list[list[float]] = [[] for _ in range(seconds + 120)]

    async def one(conn: HttpConn, data: bytes, n: int) -> None:
        o = await send(conn, data, n, deadline_s=3600)  # hangs are judged by the caller's deadline
        k = int(o.done - t0)
        if o.kind == "answer":
            burst.answered[min(k, len(burst.answered) - 1)][o.status] += 1
            burst.outcomes[str(o.status)] += 1
            if o.status == 200:
                burst.ok_latencies.append(o.latency)
                ok_by_second[min(k, len(ok_by_second) - 1)].append(o.latency)
            elif o.status == 503:
                burst.refused_latencies.append(o.latency)
                burst.codes_503[o.code] += 1
                burst.retry_after_503 += o.retry_after
        else:
            burst.outcomes[o.kind] += 1
            burst.lost.append(f"{o.kind} ({'reused' if o.reused else 'new'} connection)")
        burst.drained_after_s = o.done - burst.end if burst.end else float("nan")
        if not conn.closed:
            idle.append(conn)
            return
        try:  # the server closed it (Connection: close, keep-alive timeout): replace it
            idle.append(await connect(port, HOST[0]))
        except OSError:
            burst.reconnect_failures += 1

    def finished(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)

    async def progress() -> None:
        shown = 0
        while True:
            await asyncio.sleep(1.0)
            k = shown
            shown += 1
            if k >= seconds - 1:
                return
            codes = burst.answered[k]
            other = sum(v for s, v in codes.items() if s not in (200, 503))
            ok = ok_by_second[k]
            print(
                f"  burst {k + 1:3d}/{int(burst.duration)} s: sent {burst.sent[k]:5d}/s (unsent "
                f"{burst.unsent[k]:4d}) | 200 {codes[200]:4d}/s  503 {codes[503]:5d}/s  other {other} | "
                f"in flight {len(in_flight):4d} | p99 of 200s {quantile(ok, 0.99) * 1000:6.0f} ms | "
                f"RSS {rss.last() / MIB:5.0f} MiB",
                flush=True,
            )

    printer = asyncio.create_task(progress())
    k = 0
    end = t0 + burst.duration
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - t0) * burst.rate)
        while k < due:
            sec = min(int(k / burst.rate), seconds - 1)
            data, n = requests[k % len(requests)]
            k += 1
            if not idle:
                burst.unsent[sec] += 1
                continue
            burst.sent[sec] += 1
            task = asyncio.create_task(one(idle.popleft(), data, n))
            in_flight.add(task)
            task.add_done_callback(finished)
        burst.peak_in_flight = max(burst.peak_in_flight, len(in_flight))
        await asyncio.sleep(0.0005)
    burst.end = time.perf_counter()
    printer.cancel()
    burst.idle = idle  # closed by the caller once the stragglers are in (they put theirs back)
    return set(in_flight)


def batch_figures(m0: dict[str, float], m1: dict[str, float]) -> dict[str, float]:
    """Batches run between two /metrics scrapes: how many, mean texts, mean forward-pass seconds."""
    n = m1.get("sentiment_batch_size_count", 0) - m0.get("sentiment_batch_size_count", 0)
    texts = m1.get("sentiment_batch_size_sum", 0) - m0.get("sentiment_batch_size_sum", 0)
    seconds = m1.get("sentiment_inference_seconds_sum", 0) - m0.get("sentiment_inference_seconds_sum", 0)
    return {"batches": n, "mean_texts": texts / max(1, n), "mean_forward_ms": seconds / max(1, n) * 1000}


# --- targets and report ---------------------------------------------------------------------------


def recovery_time(rows: list[dict[str, Any]], base: dict[str, Any]) -> float:
    """End of the first second whose texts/s is within 10% of the baseline and whose p99 within 20%."""
    for r in rows:
        if r["texts_per_s"] >= 0.9 * base["texts_per_s"] and r["p99_ms"] <= 1.2 * base["p99_ms"]:
            return float(r["second"])
    return float("inf")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    b = res["burst"]
    base = res["baseline"]
    n503 = b["statuses"].get("503", 0)
    bound_ms = 2 * res["settings"]["max_queue_texts"] / base["texts_per_s"] * 1000 + base["p99_ms"]
    growth = (res["rss"]["peak_burst"] - res["rss"]["baseline"]) / MIB
    offered = sum(b["sent_per_s"]) / res["duration_s"]
    return [
        {
            "name": f"answers kept pace with the arrivals: >= 90% of them found one of the {b['pool']} "
            "connections free (the others wait for an answer, 200 or 503)",
            "pass": offered >= 0.9 * b["rate"],
            "measured": f"{offered:.0f} of {b['rate']:.0f} requests/s sent; {sum(b['unsent_per_s'])} "
            "arrivals found every connection busy",
        },
        {
            "name": "every 503 carries Retry-After",
            "pass": n503 > 0 and b["retry_after_503"] == n503,
            "measured": f"{b['retry_after_503']} of {n503} ({b['retry_after_503'] / max(1, n503):.1%})",
        },
        {
            "name": "p99 of accepted (200) requests within the queue's bound (a full queue drained at half "
            "the baseline rate, plus the baseline p99)",
            "pass": b["ok_p99_ms"] <= bound_ms,
            "measured": f"{b['ok_p99_ms']:.0f} ms (bound {bound_ms:.0f} ms)",
        },
        {
            "name": "server RSS bounded: peak during the burst <= baseline + 100 MiB",
            "pass": growth <= 100,
            "measured": f"peak {res['rss']['peak_burst'] / MIB:.0f} MiB, baseline "
            f"{res['rss']['baseline'] / MIB:.0f} MiB (+{growth:.0f} MiB)",
        },
        {
            "name": "no connection left hanging (no answer within the deadline after the burst)",
            "pass": b["hanging"] == 0,
            "measured": f"{b['hanging']} (deadline {res['hang_deadline_s']:.0f} s; last burst answer "
            f"{b['drained_after_s']:.2f} s after the burst ended)",
        },
        {
            "name": "no accepted request without an answer",
            "pass": res["unanswered"]["total"] == 0,
            "measured": ", ".join(f"{k} {v}" for k, v in res["unanswered"].items()),
        },
        {
            "name": "no 5xx other than 503",
            "pass": res["other_5xx"] == 0,
            "measured": str(res["other_5xx"]),
        },
        {
            "name": "recovery: texts/s within 10% and p99 within 20% of the baseline in <= 5 s",
            "pass": res["recovery"]["recovered_after_s"] <= 5,
            "measured": f"{res['recovery']['recovered_after_s']:g} s",
        },
    ]


def write_report(res: dict[str, Any], name: str) -> Path:
    b, base, rec = res["burst"], res["baseline"], res["recovery"]
    offered = sum(b["sent_per_s"]) / res["duration_s"]
    lines = [
        "# Overload: 10x capacity, then recovery",
        "",
        f"`{res['command']}`, {res['machine']}. {res['server']}, load generator pinned to CPU "
        f"{res['client_cpu']}. Other processes took {res['foreign_cpu']['baseline']:.0%} / "
        f"{res['foreign_cpu']['burst']:.0%} / {res['foreign_cpu']['recovery']:.0%} of the server CPU "
        "during baseline / burst / recovery.",
        "",
        "| phase | load | texts/s (200) | p50 ms | p99 ms | other answers |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| baseline | 64 clients x 1 text, closed loop, {res['baseline_s']:g} s | "
        f"{base['texts_per_s']:.0f} | {base['p50_ms']:.1f} | {base['p99_ms']:.1f} | "
        f"{dict(base['not_ok']) or '-'} |",
        f"| burst | open loop {b['rate']:.0f} req/s asked ({res['factor']:g}x), {offered:.0f} sent, "
        f"{b['pool']} connections, {res['duration_s']:g} s | {b['ok_texts_per_s']:.0f} | "
        f"{b['ok_p50_ms']:.1f} | {b['ok_p99_ms']:.1f} | {b['statuses']} |",
        f"| recovery | as baseline, {res['recovery_s']:g} s | {rec['summary']['texts_per_s']:.0f} | "
        f"{rec['summary']['p50_ms']:.1f} | {rec['summary']['p99_ms']:.1f} | "
        f"{dict(rec['summary']['not_ok']) or '-'} |",
        "",
        f"503 codes: {b['codes_503']}, answered in {b['refused_p50_ms']:.0f} ms (p50) / "
        f"{b['refused_p99_ms']:.0f} ms (p99). Peak requests in flight: {b['peak_in_flight']}. Server RSS: "
        "baseline "
        f"{res['rss']['baseline'] / MIB:.0f} MiB, peak during the burst {res['rss']['peak_burst'] / MIB:.0f} "
        f"MiB, after recovery {res['rss']['after'] / MIB:.0f} MiB. Queue depth after: "
        f"{res['queue_depth_after']:g}. Server exit: {res['server_exit']}.",
        "",
        "Where the server's CPU went (share of one core; the rest went to other processes or idle), and the "
        "load generator's own CPU (near 100%, it and not the server sets the pace):",
        "",
        "| phase | event loop | inference thread | other threads | batches | mean texts | mean forward ms "
        "| load generator |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for phase in ("baseline", "burst", "recovery"):
        c, bf = res[f"server_cpu_{phase}"], res[f"batches_{phase}"]
        lines.append(
            f"| {phase} | {c['event_loop']:.0%} | {c['inference']:.0%} | {c['other_threads']:.0%} | "
            f"{bf['batches']:.0f} | {bf['mean_texts']:.1f} | {bf['mean_forward_ms']:.1f} | "
            f"{res[f'client_cpu_{phase}']:.0%} |"
        )
    lines += [
        "",
        "Recovery, per second after the burst ended (baseline: "
        f"{base['texts_per_s']:.0f} texts/s, p99 {base['p99_ms']:.1f} ms):",
        "",
        "| second | texts/s | p99 ms | not 200 |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['second']} | {r['texts_per_s']} | {r['p99_ms']:.1f} | {r['not_ok']} |"
        for r in rec["per_second"]
    ]
    lines += ["", "## Targets", ""]
    lines += [f"- {'PASS' if t['pass'] else 'MISS'}: {t['name']}: {t['measured']}" for t in res["targets"]]
    lines.append("")
    return save(name, res, lines)


# --- main -----------------------------------------------------------------------------------------


async def scenario(args: argparse.Namespace, port: int, rss: RssSampler, pid: int) -> dict[str, Any]:
    requests = load_requests(1)
    res: dict[str, Any] = {}
    print(f"warm-up: {args.clients} clients, 2 s", flush=True)
    await closed_phase(port, requests, args.clients, 2.0)

    print(f"baseline: {args.clients} clients x 1 text, closed loop, {args.baseline_seconds:g} s", flush=True)
    mb0, cb0 = await asyncio.to_thread(scrape, port, HOST[0]), thread_cpu(pid)
    own0 = time.process_time()
    with ForeignCpu(args.server_cpu, pid) as foreign_base:
        stats, t0 = await closed_phase(port, requests, args.clients, args.baseline_seconds)
    mb1, cb1 = await asyncio.to_thread(scrape, port, HOST[0]), thread_cpu(pid)
    res["server_cpu_baseline"] = cpu_split(pid, cb0, cb1, time.perf_counter() - t0)
    # This load generator's own CPU (one core): near 100% it, not the server, sets the pace.
    res["client_cpu_baseline"] = (time.process_time() - own0) / (time.perf_counter() - t0)
    res["batches_baseline"] = batch_figures(mb0, mb1)
    base = summarise(stats.outcomes, args.baseline_seconds)
    base["per_second"] = per_second(stats.outcomes, t0, int(args.baseline_seconds))
    res["baseline"] = base
    res["rss_baseline"] = rss.last()
    print(
        f"  capacity {base['texts_per_s']:.0f} texts/s, p50 {base['p50_ms']:.1f} ms, "
        f"p99 {base['p99_ms']:.1f} ms",
        flush=True,
    )
    m0 = await asyncio.to_thread(scrape, port, HOST[0])

    burst = Burst(rate=args.factor * base["texts_per_s"], duration=args.duration, pool=args.connections)
    print(
        f"burst: open loop at {burst.rate:.0f} requests/s ({args.factor:g}x) over {burst.pool} connections "
        f"for {args.duration:g} s",
        flush=True,
    )
    t_burst = time.perf_counter()
    c0, own0 = thread_cpu(pid), time.process_time()
    with ForeignCpu(args.server_cpu, pid) as foreign_burst:
        stragglers = await burst_phase(port, requests, burst, rss)
    t_end = burst.end
    res["server_cpu_burst"] = cpu_split(pid, c0, thread_cpu(pid), t_end - t_burst)
    res["client_cpu_burst"] = (time.process_time() - own0) / (t_end - t_burst)
    res["batches_burst"] = batch_figures(m0, await asyncio.to_thread(scrape, port, HOST[0]))
    peak_burst = rss.peak(t_burst, t_end)

    print(
        f"recovery: baseline load for {args.recovery_seconds:g} s; {len(stragglers)} burst requests still "
        f"in flight (deadline {args.hang_deadline:g} s)",
        flush=True,
    )
    rec_stats = ClosedLoopStats()

    async def wait_stragglers() -> int:
        if not stragglers:
            return 0
        _, pending = await asyncio.wait(stragglers, timeout=args.hang_deadline)
        for task in pending:
            task.cancel()
        return len(pending)

    m_rec, c_rec, own0 = await asyncio.to_thread(scrape, port, HOST[0]), thread_cpu(pid), time.process_time()
    t_rec = time.perf_counter()
    with ForeignCpu(args.server_cpu, pid) as foreign_rec:
        burst.hanging, _ = await asyncio.gather(
            wait_stragglers(),
            closed_loop(
                port,
                requests,
                args.clients,
                t_end + args.recovery_seconds,
                rec_stats,
                stop_when_refused=False,
                host=HOST[0],
            ),
        )
    res["server_cpu_recovery"] = cpu_split(pid, c_rec, thread_cpu(pid), time.perf_counter() - t_rec)
    res["client_cpu_recovery"] = (time.process_time() - own0) / (time.perf_counter() - t_rec)
    res["batches_recovery"] = batch_figures(m_rec, await asyncio.to_thread(scrape, port, HOST[0]))
    for conn in burst.idle:
        conn.close()
    rows = per_second(rec_stats.outcomes, t_end, int(args.recovery_seconds))
    for r in rows:
        ok = r["texts_per_s"] >= 0.9 * base["texts_per_s"] and r["p99_ms"] <= 1.2 * base["p99_ms"]
        print(
            f"  recovery {r['second']:2d} s: {r['texts_per_s']:5d} texts/s, p99 {r['p99_ms']:7.1f} ms, "
            f"not 200: {r['not_ok']}{'  (back)' if ok else ''}",
            flush=True,
        )
    await asyncio.sleep(0.5)  # let the access log and metrics settle
    m1 = await asyncio.to_thread(scrape, port, HOST[0])

    # Cross-check what the server says it answered with what the client received.
    burst_ok = burst.outcomes.get("200", 0)
    rec_ok = sum(1 for o in rec_stats.outcomes if o.kind == "answer" and o.status == 200)
    rec_503 = sum(1 for o in rec_stats.outcomes if o.kind == "answer" and o.status == 503)
    server_ok = requests_with_status(m1, 200) - requests_with_status(m0, 200)
    server_503 = requests_with_status(m1, 503) - requests_with_status(m0, 503)
    server_499 = requests_with_status(m1, 499) - requests_with_status(m0, 499)
    rec_lost = [o for o in rec_stats.outcomes if o.kind in ("closed", "cut", "hang")]
    dropped = m1.get('sentiment_rejected_texts_total{reason="dropped"}', 0) - m0.get(
        'sentiment_rejected_texts_total{reason="dropped"}', 0
    )
    unanswered = {
        "closed or cut by the server (client)": len(burst.lost) + len(rec_lost),
        "hanging (client)": burst.hanging,
        "answered 200 by the server but not received": max(0, int(server_ok) - burst_ok - rec_ok),
        "499 in the server": int(server_499),
        "texts dropped after admission (server)": int(dropped),
    }
    unanswered["total"] = sum(unanswered.values())
    other_5xx = sum(v for s, v in burst.outcomes.items() if s.isdigit() and int(s) >= 500 and s != "503")
    other_5xx += sum(
        1 for o in rec_stats.outcomes if o.kind == "answer" and o.status >= 500 and o.status != 503
    )
    seconds = int(burst.duration)
    res.update(
        burst={
            "rate": burst.rate,
            "pool": burst.pool,
            "sent_per_s": burst.sent[:seconds],
            "unsent_per_s": burst.unsent[:seconds],
            "statuses": dict(burst.outcomes),
            "codes_503": dict(burst.codes_503),
            "retry_after_503": burst.retry_after_503,
            "ok_texts_per_s": burst_ok / burst.duration,
            "ok_p50_ms": quantile(burst.ok_latencies, 0.5) * 1000,
            "ok_p99_ms": quantile(burst.ok_latencies, 0.99) * 1000,
            "refused_p50_ms": quantile(burst.refused_latencies, 0.5) * 1000,
            "refused_p99_ms": quantile(burst.refused_latencies, 0.99) * 1000,
            "hanging": burst.hanging,
            "lost": collections.Counter(burst.lost),
            "reconnect_failures": burst.reconnect_failures,
            "drained_after_s": burst.drained_after_s,
            "peak_in_flight": burst.peak_in_flight,
        },
        recovery={
            "per_second": rows,
            "summary": summarise(rec_stats.outcomes, args.recovery_seconds),
            "recovered_after_s": recovery_time(rows, base),
        },
        server_counts={
            "200": server_ok,
            "503": server_503,
            "client_200": burst_ok + rec_ok,
            "client_503": burst.outcomes.get("503", 0) + rec_503,
        },
        unanswered=unanswered,
        other_5xx=other_5xx,
        queue_depth_after=m1.get("sentiment_queue_depth", float("nan")),
        rss={"baseline": res.pop("rss_baseline"), "peak_burst": peak_burst, "after": rss.last()},
        foreign_cpu={
            "baseline": round(foreign_base.share, 3),
            "burst": round(foreign_burst.share, 3),
            "recovery": round(foreign_rec.share, 3),
        },
    )
    return res


def main() -> int:
    p = script_parser(__doc__, server_env=True)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of overload (default 60)")
    p.add_argument("--factor", type=float, default=10.0, help="offered load as a multiple of capacity (10)")
    p.add_argument("--clients", type=int, default=64, help="closed-loop clients for baseline and recovery")
    p.add_argument("--baseline-seconds", type=float, default=10.0, help="capacity measurement (10)")
    p.add_argument("--recovery-seconds", type=float, default=15.0, help="baseline load after the burst (15)")
    p.add_argument("--connections", type=int, default=2048, help="connection pool of the burst (2048)")
    p.add_argument(
        "--hang-deadline",
        type=float,
        default=35.0,
        help="seconds after the burst within which every request must be answered (35: the server's "
        "30 s request timeout plus margin)",
    )
    p.add_argument(
        "--name", default="overload", help="results file name in bench/results (overload: .json and .md)"
    )
    p.add_argument(
        "--port", type=int, help="drive the server already on 127.0.0.1:PORT instead of starting one"
    )
    p.add_argument("--host", default="127.0.0.1", help="with --port: the server's address (127.0.0.1)")
    p.add_argument("--pid", type=int, help="with --port: the server process to sample (RSS, threads' CPU)")
    args = p.parse_args()

    import uvloop

    extra = env_settings(p, args)
    if (args.port is None) != (args.pid is None):
        p.error("--port and --pid go together")
    if args.port is not None and extra:
        p.error("--env changes the server this script starts; with --port it starts none")
    if args.port is not None:
        return attached(args)
    with pinned_to(args.client_cpu):
        with ForeignCpu(args.server_cpu) as idle:
            time.sleep(1.0)
        if idle.share > 0.1:
            print(f"warning: other processes use {idle.share:.0%} of CPU {args.server_cpu}", flush=True)
        log_path = Path(tempfile.mkdtemp(prefix="overload-")) / "server.log"
        print(f"starting the server on CPU {args.server_cpu} (log: {log_path}) ...", flush=True)
        server = start_server(args.model_dir, log_path, cpu=args.server_cpu, env=extra)
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/info", timeout=10).read())
        try:
            with RssSampler(server.pid) as rss:
                res = uvloop.run(scenario(args, server.port, rss, server.pid))
        finally:
            t = time.perf_counter()
            code = server.stop()
            exit_s = time.perf_counter() - t
    log = server.log_text()
    if "Traceback" not in log:  # one access-log line per request: ~60 MB for a 60 s burst
        log_path.unlink()
        log_path.parent.rmdir()
    from model.artifact import read_meta, resolve_artifact_dir

    meta = read_meta(resolve_artifact_dir(Path(args.model_dir)))
    server_exit = f"status {code} after {exit_s:.2f} s, {log.count('Traceback')} tracebacks in its log"
    return finish(args, res, info, f"{meta['name']} {meta['version']}", server_exit, idle.share, extra, log)


def attached(args: argparse.Namespace) -> int:
    """The scenario against a server this script did not start (--port, --pid)."""
    import uvloop

    HOST[0] = args.host
    info = json.loads(urllib.request.urlopen(f"http://{args.host}:{args.port}/info", timeout=10).read())
    with pinned_to(args.client_cpu), RssSampler(args.pid) as rss:
        res = uvloop.run(scenario(args, args.port, rss, args.pid))
    model = f"{info['model']['name']} {info['model']['version']}"
    return finish(args, res, info, model, "not stopped (attached with --port)", float("nan"), {}, "")


def finish(
    args: argparse.Namespace,
    res: dict[str, Any],
    info: dict[str, Any],
    model: str,
    server_exit: str,
    foreign_before: float,
    extra: dict[str, str],
    log: str,
) -> int:
    res.update(
        command="python -m scripts.overload " + " ".join(sys.argv[1:]),
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        model=model,
        server=f"Server (`python -m app`, 1 worker, 1 torch thread, model `{model}`) pinned to CPU "
        f"{args.server_cpu}"
        if args.port is None
        else f"Server already running on {args.host}:{args.port} (model `{model}`, process {args.pid})",
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        factor=args.factor,
        duration_s=args.duration,
        baseline_s=args.baseline_seconds,
        recovery_s=args.recovery_seconds,
        hang_deadline_s=args.hang_deadline,
        settings={
            "max_queue_texts": info["batching"]["max_queue_texts"],
            "request_timeout_s": info["limits"]["request_timeout_s"],
            **extra,
        },
        server_exit=server_exit,
        foreign_cpu_before=round(foreign_before, 3),
    )
    res["targets"] = targets(res)
    if "Traceback" in log:
        res["targets"].append(
            {
                "name": "no traceback in the server log",
                "pass": False,
                "measured": log[log.index("Traceback") :][:2000],
            }
        )
    print(write_report(res, args.name).read_text())
    return 0 if all(t["pass"] for t in res["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
