"""Graceful shutdown under load: SIGTERM the real server while 64 clients keep it busy.

    python -m scripts.sigterm_under_load [--clients 64] [--load-seconds 5] [--drain-delay 0] [--grace 20]
                                         [--repeat 3]

Starts the server as the Dockerfile does (`python -m app`) pinned to one CPU, runs closed-loop clients
(one keep-alive connection each, a new one when the server closes it) from the other CPU, sends
SIGTERM after --load-seconds and keeps the clients going until the server has gone. Every request is
recorded as sent before or after the signal, with how it ended. Checks:

- sent before the signal and admitted by the server: answered 200 (none lost, cut or hanging). A
  request still in transit when the signal arrived (written, not yet read by the server) is new work
  to the server and may be refused at entry with 503 shutting_down; those are counted apart, with
  how long before the signal they were sent;
- sent after the signal: 200 (already on its way), 503 shutting_down with Retry-After, or the
  connection refused once the listening socket is closed. No answer cut mid-way, no hang; a
  keep-alive connection the server closes before reading a request in transit is counted apart;
- the process exits within SENTIMENT_DRAIN_DELAY_S + SENTIMENT_SHUTDOWN_GRACE_S of the signal, with
  status 0 or -SIGTERM, and no traceback in its log.

--repeat runs, each with a fresh server (the outcome depends on where in the batch cycle the signal
lands). Writes bench/results/sigterm.{json,md} (sigterm-drain<N>.* with a drain delay); exits 1 when
a check fails.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cli import script_parser
from bench.load import ClosedLoopStats, Outcome, closed_loop, load_requests, quantile
from bench.report import save
from bench.servers import Server, pinned_to, start_server

# The two 503 shutting_down messages (core/engine.py vs core/batcher.py): refused at
# the door, or admitted and then failed because the grace ran out. Only the first is acceptable.
ADMITTED_THEN_FAILED = "before these texts were run"


def classify(o: Outcome, t_signal: float) -> str:
    before = o.sent < t_signal
    if o.kind == "answer":
        if o.status == 200:
            return "200"
        if o.status == 503 and o.code == "shutting_down":
            if ADMITTED_THEN_FAILED in o.message:
                return "503 after admission (lost)"
            if not o.retry_after:
                return "503 without Retry-After"
            return "503 shutting_down at entry" + (" (in transit at the signal)" if before else "")
        return f"{o.status} {o.code}".strip()
    if o.kind == "closed":
        return f"closed before any answer byte ({'reused' if o.reused else 'new'} connection)"
    return {"refused": "connection refused", "cut": "cut mid-answer", "hang": "no answer (hang)"}.get(
        o.kind, o.kind
    )


ACCEPTABLE_BEFORE = {"200", "503 shutting_down at entry (in transit at the signal)"}
ACCEPTABLE_AFTER = {"200", "503 shutting_down at entry", "connection refused"}


async def run(
    server: Server,
    requests: list[tuple[bytes, int]],
    *,
    clients: int = 64,
    load_s: float = 5.0,
    deadline_s: float = 60.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Load, SIGTERM, keep loading until every client is refused (or `deadline_s` after the signal);
    returns the raw figures: per-request classes before/after the signal, exit time and status."""
    stats = ClosedLoopStats()
    t0 = time.perf_counter()
    # Clients stop at their first refused connect: the listening socket is gone for good then.
    # Every request's wait is bounded by deadline_s, so one that never gets an answer is recorded as
    # a hang rather than holding this up.
    load = asyncio.create_task(
        closed_loop(server.port, requests, clients, t0 + load_s + deadline_s, stats, deadline_s=deadline_s)
    )
    await asyncio.sleep(load_s)
    done_before = len(stats.outcomes)
    t_signal = time.perf_counter()
    os.kill(server.pid, signal.SIGTERM)
    if progress:
        print(f"SIGTERM sent after {load_s:g} s ({done_before} requests answered so far)", flush=True)

    def wait_exit() -> float:
        try:
            server.proc.wait(deadline_s)
        except subprocess.TimeoutExpired:  # judged below
            return float("inf")
        return time.perf_counter()

    t_exit = await asyncio.to_thread(wait_exit)
    if progress:
        print(f"server exited {t_exit - t_signal:.2f} s after the signal, status {server.proc.returncode}")
    await load
    classes: dict[str, collections.Counter[str]] = {
        "before": collections.Counter(),
        "after": collections.Counter(),
    }
    transit_gaps_ms: list[float] = []
    ok_before: list[float] = []
    for o in stats.outcomes:
        when = "before" if o.sent < t_signal else "after"
        c = classify(o, t_signal)
        classes[when][c] += 1
        if c == "503 shutting_down at entry (in transit at the signal)":
            transit_gaps_ms.append((t_signal - o.sent) * 1000)
        if when == "before" and c == "200":
            ok_before.append(o.done - t_signal)
    still_running = server.proc.poll() is None
    return {
        "clients": clients,
        "load_s": load_s,
        "requests": len(stats.outcomes),
        "in_flight_at_signal": sum(1 for o in stats.outcomes if o.sent < t_signal <= o.done),
        "before": dict(classes["before"]),
        "after": dict(classes["after"]),
        "transit_gap_ms_max": max(transit_gaps_ms, default=0.0),
        "last_before_answered_after_signal_s": max(ok_before, default=0.0),
        "before_ok_p99_after_signal_s": quantile(ok_before, 0.99) if ok_before else 0.0,
        "exit_after_s": t_exit - t_signal,
        "exit_status": None if still_running else server.proc.returncode,
    }


def judge(r: dict[str, Any], *, drain_delay_s: float, grace_s: float, log: str) -> list[dict[str, Any]]:
    bad_before = {k: v for k, v in r["before"].items() if k not in ACCEPTABLE_BEFORE}
    bad_after = {
        k: v for k, v in r["after"].items() if k not in ACCEPTABLE_AFTER and not k.startswith("closed before")
    }
    closed_after = {k: v for k, v in r["after"].items() if k.startswith("closed before")}
    limit = drain_delay_s + grace_s
    return [
        {
            "name": "requests sent before the signal: 200, or (in transit at the signal) refused at entry",
            "pass": r["before"].get("200", 0) > 0 and not bad_before,
            "measured": f"{r['before']}; in transit: sent at most {r['transit_gap_ms_max']:.1f} ms before it"
            + (f"; FAILED: {bad_before}" if bad_before else ""),
        },
        {
            "name": "requests sent after the signal: 503 shutting_down + Retry-After or connection refused; "
            "none cut mid-answer or hanging",
            "pass": not bad_after,
            "measured": f"{r['after']}" + (f"; FAILED: {bad_after}" if bad_after else ""),
        },
        {
            "name": "counted, not failed: keep-alive connections the server closed at shutdown while a "
            "request sent after the signal was on its way (never read by the server, so safe to retry)",
            "pass": True,
            "measured": str(sum(closed_after.values())),
        },
        {
            "name": f"exit within drain delay + grace ({limit:g} s), status 0 or -SIGTERM",
            "pass": r["exit_after_s"] <= limit and r["exit_status"] in (0, -signal.SIGTERM),
            "measured": f"{r['exit_after_s']:.2f} s, status {r['exit_status']}",
        },
        {
            "name": "no traceback in the server log",
            "pass": "Traceback" not in log,
            "measured": f"{log.count('Traceback')} tracebacks",
        },
    ]


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over repeated runs; the worst of each time and exit status."""
    before: collections.Counter[str] = collections.Counter()
    after: collections.Counter[str] = collections.Counter()
    for r in runs:
        before.update(r["before"])
        after.update(r["after"])
    bad_status = [r["exit_status"] for r in runs if r["exit_status"] not in (0, -signal.SIGTERM)]
    return {
        "requests": sum(r["requests"] for r in runs),
        "in_flight_at_signal": sum(r["in_flight_at_signal"] for r in runs),
        "before": dict(before),
        "after": dict(after),
        "transit_gap_ms_max": max(r["transit_gap_ms_max"] for r in runs),
        "last_before_answered_after_signal_s": max(r["last_before_answered_after_signal_s"] for r in runs),
        "exit_after_s": max(r["exit_after_s"] for r in runs),
        "exit_status": bad_status[0] if bad_status else runs[-1]["exit_status"],
    }


def write_report(res: dict[str, Any], name: str) -> Path:
    lines = [
        "# SIGTERM under load",
        "",
        f"`{res['command']}`. Server `python -m app` (1 worker, 1 torch thread, model `{res['model']}`, "
        f"SENTIMENT_DRAIN_DELAY_S={res['drain_delay_s']:g}, SENTIMENT_SHUTDOWN_GRACE_S={res['grace_s']:g}) "
        f"pinned to CPU {res['server_cpu']}, {res['clients']} closed-loop clients on CPU "
        f"{res['client_cpu']}; SIGTERM after {res['load_s']:g} s of load; {len(res['runs'])} run(s), a fresh "
        "server each.",
        "",
        "| run | sent before the signal | in flight at the signal | sent after the signal | exit after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(res["runs"], 1):
        lines.append(
            f"| {i} | {r['before']} | {r['in_flight_at_signal']} | {r['after']} | {r['exit_after_s']:.2f} s, "
            f"status {r['exit_status']} |"
        )
    lines += ["", "All runs:", "", "| sent | outcome | requests |", "| --- | --- | --- |"]
    for when in ("before", "after"):
        lines += [f"| {when} the signal | {k} | {v} |" for k, v in sorted(res[when].items())]
    lines += [
        "",
        f"The last request sent before the signal was answered at most "
        f"{res['last_before_answered_after_signal_s']:.3f} s after it; the process exited at most "
        f"{res['exit_after_s']:.2f} s after the signal.",
        "",
        "## Checks",
        "",
    ]
    lines += [f"- {'PASS' if t['pass'] else 'FAIL'}: {t['name']}: {t['measured']}" for t in res["checks"]]
    lines.append("")
    return save(name, res, lines)


def main() -> int:
    p = script_parser(__doc__)
    p.add_argument("--clients", type=int, default=64, help="closed-loop clients, 1 text each (64)")
    p.add_argument("--load-seconds", type=float, default=5.0, help="load before the signal (5)")
    p.add_argument(
        "--drain-delay", type=float, default=0.0, help="SENTIMENT_DRAIN_DELAY_S (0, as in Compose)"
    )
    p.add_argument("--grace", type=float, default=20.0, help="SENTIMENT_SHUTDOWN_GRACE_S (20)")
    p.add_argument("--repeat", type=int, default=3, help="runs, each with a fresh server (3)")
    args = p.parse_args()

    import uvloop

    from model.artifact import read_meta, resolve_artifact_dir

    meta = read_meta(resolve_artifact_dir(Path(args.model_dir)))
    env = {"SENTIMENT_DRAIN_DELAY_S": str(args.drain_delay), "SENTIMENT_SHUTDOWN_GRACE_S": str(args.grace)}
    runs, logs = [], []
    with pinned_to(args.client_cpu):
        requests = load_requests(1)
        for i in range(args.repeat):
            log_path = Path(tempfile.mkdtemp(prefix="sigterm-")) / "server.log"
            print(f"run {i + 1}/{args.repeat}: starting the server on CPU {args.server_cpu} ...", flush=True)
            server = start_server(args.model_dir, log_path, cpu=args.server_cpu, env=env)
            try:
                runs.append(
                    uvloop.run(
                        run(server, requests, clients=args.clients, load_s=args.load_seconds,
                            deadline_s=args.drain_delay + args.grace + 10)
                    )
                )  # fmt: skip
            finally:
                server.stop()
            logs.append(server.log_text())
    res = {
        **combine(runs),
        "runs": runs,
        "command": "python -m scripts.sigterm_under_load " + " ".join(sys.argv[1:]),
        "model": f"{meta['name']} {meta['version']}",
        "clients": args.clients,
        "load_s": args.load_seconds,
        "drain_delay_s": args.drain_delay,
        "grace_s": args.grace,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
    }
    res["checks"] = judge(res, drain_delay_s=args.drain_delay, grace_s=args.grace, log="".join(logs))
    name = "sigterm" if args.drain_delay == 0 else f"sigterm-drain{args.drain_delay:g}"
    print(write_report(res, name).read_text())
    return 0 if all(c["pass"] for c in res["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
