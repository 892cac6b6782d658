"""Client faults against the real server: trickling (slowloris) clients and requests that time out
must not leak queue entries, connections or memory.

    python -m scripts.client_faults [--trickle-connections 1000] [--trickle-seconds 30] [--trickle-rounds 3]
                                    [--rounds 3]

Server as in the Dockerfile (`python -m app`) pinned to one CPU, clients on the other, with oneDNN's
per-shape primitive cache capped (--dnnl-cache) so that its bounded growth is not read as a leak.

1. Trickle: --trickle-connections connections send a /predict request one byte per second, half of
   them still in the headers, half in the body (headers complete, Content-Length promising more),
   while 16 ordinary clients measure latency. After --trickle-seconds, half of each group hangs up
   and the other half sends the rest at once and must get 200. Then: queue depth 0, the server's open
   sockets back to what they were, ordinary p99 unchanged; --trickle-rounds rounds, and RSS must not
   grow from round to round.
2. Timeouts: a second server with SENTIMENT_REQUEST_TIMEOUT_S=1 and a deep queue
   (SENTIMENT_MAX_QUEUE_TEXTS=4096), flooded by 256 clients x 16 texts so that most requests wait
   longer than the timeout and get 504, for --rounds rounds of 10 s. After each round: queue depth back
   to 0, no socket left open, and RSS not growing from round to round.

Writes bench/results/client_faults.json and client_faults.md; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS
from bench.cli import script_parser
from bench.load import ClosedLoopStats, closed_loop, load_requests, quantile
from bench.metrics import scrape
from bench.procstats import RssSampler, open_sockets
from bench.report import save
from bench.servers import Server, pinned_to, start_server

MIB = 1024 * 1024


async def settle(server: Server, *, sockets: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the queue is empty (and the socket count is back to `sockets`), then report both."""
    deadline = time.monotonic() + timeout
    while True:
        m = await asyncio.to_thread(scrape, server.port)
        # the scrape's own connection may still be closing: allow it
        now_sockets = open_sockets(server.pid)
        ok = m.get("sentiment_queue_depth", 1) == 0 and (sockets is None or now_sockets <= sockets)
        if ok or time.monotonic() > deadline:
            return {"queue_depth": m.get("sentiment_queue_depth"), "sockets": now_sockets, "metrics": m}
        await asyncio.sleep(0.2)


def p99_ms(stats: ClosedLoopStats) -> float:
    return (
        quantile([o.latency for o in stats.outcomes if o.kind == "answer" and o.status == 200], 0.99) * 1000
    )


async def probe(port: int, requests: list[tuple[bytes, int]], seconds: float) -> ClosedLoopStats:
    stats = ClosedLoopStats()
    await closed_loop(port, requests, 16, time.perf_counter() + seconds, stats, deadline_s=30)
    return stats


# --- 1. trickle -----------------------------------------------------------------------------------


async def trickler(
    port: int, data: bytes, *, in_body: bool, finish: bool, until: float, interval: float
) -> str:
    """Send `data` a byte per `interval` until `until` (with in_body: the headers at once first), then
    hang up or send the rest; returns how it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head_end = data.index(b"\r\n\r\n") + 4
    pos = head_end if in_body else 0
    try:
        if in_body:
            writer.write(data[:pos])
        while time.perf_counter() < until and pos < len(data) - 1:
            writer.write(data[pos : pos + 1])
            pos += 1
            await asyncio.sleep(interval)
        if not finish:
            return "hung up"
        writer.write(data[pos:])
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        return line.decode(errors="replace").split(" ", 2)[1] if line else "closed"
    except (ConnectionError, TimeoutError) as e:
        return type(e).__name__
    finally:
        writer.close()


async def trickle_round(
    server: Server, requests: list[tuple[bytes, int]], args: argparse.Namespace, rss: RssSampler
) -> dict[str, Any]:
    data = requests[0][0]
    until = time.perf_counter() + args.trickle_seconds
    n = args.trickle_connections
    tasks = [
        asyncio.create_task(
            trickler(server.port, data, in_body=i % 2 == 1, finish=i % 4 >= 2, until=until, interval=1.0)
        )
        for i in range(n)
    ]
    await asyncio.sleep(2)
    depth_during = []
    during = ClosedLoopStats()
    # ordinary clients meanwhile
    load = asyncio.create_task(closed_loop(server.port, requests, 16, until - 1, during, deadline_s=30))
    sockets_during = 0
    while time.perf_counter() < until - 1:
        m = await asyncio.to_thread(scrape, server.port)
        depth_during.append(m.get("sentiment_queue_depth", float("nan")))
        sockets_during = max(sockets_during, open_sockets(server.pid))
        print(
            f"  {until - time.perf_counter():4.0f} s left: {sockets_during} server sockets, queue "
            f"{depth_during[-1]:g}, RSS {rss.last() / MIB:.0f} MiB",
            flush=True,
        )
        await asyncio.sleep(5)
    await load
    peak = server.rss()
    endings = collections.Counter(await asyncio.gather(*tasks))
    await asyncio.sleep(1)
    return {
        "p99_ms_during": p99_ms(during),
        "not_ok_during": sum(1 for o in during.outcomes if o.status != 200),
        "endings": dict(endings),
        "queue_depth_max_during": max(depth_during, default=float("nan")),
        "sockets_during": sockets_during,
        "rss_mib_peak": peak / MIB,
    }


async def trickle_phase(
    server: Server, requests: list[tuple[bytes, int]], args: argparse.Namespace, rss: RssSampler
) -> dict[str, Any]:
    await probe(server.port, requests, 3)  # warm: the baseline includes the ordinary clients' memory
    before = await probe(server.port, requests, 5)
    base = await settle(server)
    rss_base, sockets_base = server.rss(), base["sockets"]
    print(
        f"trickle: baseline p99 {p99_ms(before):.1f} ms (16 clients), RSS {rss_base / MIB:.0f} MiB, "
        f"{sockets_base} sockets",
        flush=True,
    )
    rounds = []
    for k in range(args.trickle_rounds):
        print(f"trickle round {k + 1}: {args.trickle_connections} connections", flush=True)
        r = await trickle_round(server, requests, args, rss)
        after = await settle(server, sockets=sockets_base)
        r["p99_ms_after"] = p99_ms(await probe(server.port, requests, 5))
        r.update(queue_depth_after=after["queue_depth"], sockets_after=after["sockets"])
        r["rss_mib_after"] = server.rss() / MIB
        print(f"  {r}", flush=True)
        rounds.append(r)
    return {
        "connections": args.trickle_connections,
        "seconds": args.trickle_seconds,
        "p99_ms_before": p99_ms(before),
        "sockets_before": sockets_base,
        "rss_mib_before": rss_base / MIB,
        "rss_kib_per_connection": (max(r["rss_mib_peak"] for r in rounds) - rss_base / MIB)
        * 1024
        / args.trickle_connections,
        "rounds": rounds,
    }


# --- 2. timeouts ----------------------------------------------------------------------------------


async def timeout_phase(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    requests16 = load_requests(16)
    requests1 = load_requests(1)
    await probe(server.port, requests1, 3)  # warm
    base = await settle(server)
    sockets_base, rss_base = base["sockets"], server.rss()
    rounds = []
    for k in range(args.rounds):
        stats = ClosedLoopStats()
        await closed_loop(server.port, requests16, 256, time.perf_counter() + 10, stats, deadline_s=60)
        after = await settle(server, sockets=sockets_base)
        await asyncio.sleep(1)
        m = after["metrics"]
        codes = collections.Counter(o.status if o.kind == "answer" else o.kind for o in stats.outcomes)
        rounds.append(
            {
                "answers": {str(c): v for c, v in codes.items()},
                "queue_depth_after": after["queue_depth"],
                "sockets_after": after["sockets"],
                "rss_mib_after": server.rss() / MIB,
                "dropped_texts_total": m.get('sentiment_rejected_texts_total{reason="dropped"}', 0.0),
            }
        )
        print(f"timeouts round {k + 1}: {rounds[-1]}", flush=True)
    return {"sockets_before": sockets_base, "rss_mib_before": rss_base / MIB, "rounds": rounds}


# --- report ---------------------------------------------------------------------------------------


def checks(res: dict[str, Any]) -> list[dict[str, Any]]:
    t, o = res["trickle"], res["timeouts"]
    tr, rounds = t["rounds"], o["rounds"]
    n_finish = t["connections"] // 4 * 2  # i % 4 in (2, 3)
    t_growth = tr[-1]["rss_mib_after"] - tr[0]["rss_mib_after"]
    growth = rounds[-1]["rss_mib_after"] - rounds[0]["rss_mib_after"]
    return [
        {
            "name": "trickle: nothing queued by trickling requests (queue <= the 16 ordinary texts), 0 after",
            "pass": all(r["queue_depth_max_during"] <= 16 and r["queue_depth_after"] == 0 for r in tr),
            "measured": ", ".join(
                f"max {r['queue_depth_max_during']:g} during, {r['queue_depth_after']:g} after" for r in tr
            ),
        },
        {
            "name": "trickle: the clients that finished their request got 200",
            "pass": all(r["endings"].get("200", 0) == n_finish for r in tr),
            "measured": ", ".join(str(r["endings"]) for r in tr),
        },
        {
            "name": "trickle: server sockets back to the baseline count after every round",
            "pass": all(r["sockets_after"] <= t["sockets_before"] for r in tr),
            "measured": f"{t['sockets_before']} before; "
            + ", ".join(f"{r['sockets_during']} during / {r['sockets_after']} after" for r in tr),
        },
        {
            "name": "trickle: RSS not growing from round to round (last - first <= 10 MiB)",
            "pass": t_growth <= 10,
            "measured": f"{t['rss_mib_before']:.0f} MiB before; peak / after per round "
            + ", ".join(f"{r['rss_mib_peak']:.0f} / {r['rss_mib_after']:.0f}" for r in tr)
            + f" MiB ({t_growth:+.1f})",
        },
        {
            "name": "trickle: ordinary clients unaffected (p99 during <= 1.5x before + 20 ms, all 200)",
            "pass": all(
                r["p99_ms_during"] <= 1.5 * t["p99_ms_before"] + 20 and r["not_ok_during"] == 0 for r in tr
            ),
            "measured": f"p99 {t['p99_ms_before']:.1f} ms before; during / after per round "
            + ", ".join(f"{r['p99_ms_during']:.1f} / {r['p99_ms_after']:.1f}" for r in tr)
            + f" ms; not 200: {sum(r['not_ok_during'] for r in tr)}",
        },
        {
            "name": "timeouts: requests did time out (504) and their texts were dropped",
            "pass": all(r["answers"].get("504", 0) > 0 for r in rounds)
            and rounds[-1]["dropped_texts_total"] > 0,
            "measured": ", ".join(str(r["answers"]) for r in rounds),
        },
        {
            "name": "timeouts: queue depth 0 and sockets back to the baseline after every round",
            "pass": all(
                r["queue_depth_after"] == 0 and r["sockets_after"] <= o["sockets_before"] for r in rounds
            ),
            "measured": ", ".join(
                f"queue {r['queue_depth_after']:g} / {r['sockets_after']} sockets" for r in rounds
            )
            + f" (baseline {o['sockets_before']} sockets)",
        },
        {
            "name": "timeouts: RSS not growing from round to round (last - first <= 10 MiB)",
            "pass": growth <= 10,
            "measured": f"{o['rss_mib_before']:.0f} MiB before, after each round "
            + " / ".join(f"{r['rss_mib_after']:.0f}" for r in rounds)
            + f" MiB ({growth:+.1f})",
        },
    ]


def write_report(res: dict[str, Any]) -> None:
    t = res["trickle"]
    lines = [
        "# Client faults: trickling clients and timeouts",
        "",
        f"`{res['command']}`. Server `python -m app` (1 worker, 1 torch thread, model `{res['model']}`) "
        f"pinned to CPU {res['server_cpu']}, clients on CPU {res['client_cpu']}; "
        f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={res['dnnl_cache']} (so that oneDNN's per-shape cache, bounded "
        "but up to ~230 MiB, does not pass for a leak).",
        "",
        f"Trickle: {t['connections']} connections sending a byte per second for {t['seconds']:g} s; "
        f"{t['rss_kib_per_connection']:.1f} KiB of server RSS per trickling connection at the peak.",
        "",
        "## Checks",
        "",
    ]
    lines += [f"- {'PASS' if c['pass'] else 'FAIL'}: {c['name']}: {c['measured']}" for c in res["checks"]]
    lines.append("")
    save("client_faults", res, lines)


def main() -> int:
    p = script_parser(__doc__)
    p.add_argument("--trickle-connections", type=int, default=1000, help="trickling connections (1000)")
    p.add_argument("--trickle-seconds", type=float, default=30.0, help="how long they trickle (30)")
    p.add_argument("--trickle-rounds", type=int, default=3, help="trickle rounds (3)")
    p.add_argument("--rounds", type=int, default=3, help="timeout rounds of 10 s (3)")
    p.add_argument(
        "--dnnl-cache",
        type=int,
        default=8,
        help="ONEDNN_PRIMITIVE_CACHE_CAPACITY for the servers (8; 0: oneDNN's default of 1024). oneDNN "
        "keeps one LSTM primitive per (batch size, length) shape, ~0.2 MiB each: with the default, RSS "
        "grows by up to ~230 MiB under any varied load until the cache is full, which would hide (or "
        "fake) a leak",
    )
    args = p.parse_args()

    import uvloop

    from model.artifact import read_meta, resolve_artifact_dir

    meta = read_meta(resolve_artifact_dir(Path(args.model_dir)))
    logs = Path(tempfile.mkdtemp(prefix="client-faults-"))
    res: dict[str, Any] = {}
    with pinned_to(args.client_cpu):
        requests = load_requests(1)
        print(f"starting the server on CPU {args.server_cpu} (logs: {logs}) ...", flush=True)
        dnnl = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(args.dnnl_cache)} if args.dnnl_cache else {}
        # The header and body timeouts (app/transport.py) would close the tricklers at 10 and 30 s; they
        # are raised past the trickle here, so that this keeps checking what it did: that connections
        # held open leave no queue entry, socket or memory behind (tests/test_transport.py checks the
        # timeouts themselves).
        held = str(args.trickle_seconds * 2 + 30)
        trickle_env = {"SENTIMENT_HEADER_TIMEOUT_S": held, "SENTIMENT_BODY_TIMEOUT_S": held, **dnnl}
        server = start_server(args.model_dir, logs / "trickle.log", cpu=args.server_cpu, env=trickle_env)
        try:
            with RssSampler(server.pid) as rss:
                res["trickle"] = uvloop.run(trickle_phase(server, requests, args, rss))
        finally:
            server.stop()
        env = {"SENTIMENT_REQUEST_TIMEOUT_S": "1", "SENTIMENT_MAX_QUEUE_TEXTS": "4096", **dnnl}
        print(f"timeouts: a server with {env}", flush=True)
        server2 = start_server(args.model_dir, logs / "timeouts.log", cpu=args.server_cpu, env=env)
        try:
            res["timeouts"] = uvloop.run(timeout_phase(server2, args))
        finally:
            server2.stop()
    tracebacks = server.log_text().count("Traceback") + server2.log_text().count("Traceback")
    res.update(
        command="python -m scripts.client_faults " + " ".join(sys.argv[1:]),
        model=f"{meta['name']} {meta['version']}",
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        dnnl_cache=args.dnnl_cache or "default (1024)",
    )
    res["checks"] = checks(res)
    res["checks"].append(
        {"name": "no traceback in the server logs", "pass": tracebacks == 0, "measured": str(tracebacks)}
    )
    write_report(res)
    print((RESULTS / "client_faults.md").read_text())
    return 0 if all(c["pass"] for c in res["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
