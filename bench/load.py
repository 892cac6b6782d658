"""Load loops over bench.http_client connections: closed-loop clients that record how every request
ended (the reliability scripts), and a fixed measuring window (the throughput benchmarks)."""

from __future__ import annotations

import asyncio
import collections
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from bench.http_client import ConnectionClosed, HttpConn, connect, request_pool


@dataclass(slots=True)
class Outcome:
    """How one request ended. kind: 'answer' (see status), 'refused' (connect refused: never sent),
    'closed' (connection ended before any answer byte), 'cut' (ended mid-answer), 'hang' (no answer
    within the deadline), 'error' (another socket error)."""

    sent: float  # perf_counter when written (or when the connect was tried)
    done: float
    kind: str
    texts: int = 1
    status: int = 0
    retry_after: bool = False
    code: str = ""
    message: str = ""
    reused: bool = False

    @property
    def latency(self) -> float:
        return self.done - self.sent


async def send(
    conn: HttpConn, data: bytes, texts: int, deadline_s: float, *, parse_errors: bool = True
) -> Outcome:
    reused = conn.answers > 0
    t0 = time.perf_counter()
    try:
        r = await asyncio.wait_for(conn.request(data), deadline_s)
    except TimeoutError:
        conn.close()
        return Outcome(t0, time.perf_counter(), "hang", texts, reused=reused)
    except ConnectionClosed as e:
        return Outcome(t0, time.perf_counter(), "cut" if e.partial else "closed", texts, reused=e.reused)
    t1 = time.perf_counter()
    code = message = ""
    if r.status != 200 and parse_errors:
        code, message = r.error()
    return Outcome(t0, t1, "answer", texts, r.status, b"retry-after" in r.headers, code, message, reused)


def quantile(values: Sequence[float], q: float) -> float:
    """q in [0, 1]; nan for no values (statistics.quantiles needs two)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[min(998, max(0, round(q * 1000) - 1))]


def latency_ms(latencies: Sequence[float]) -> dict[str, float]:
    """Count, p50, p99 and mean of latencies given in seconds, in milliseconds."""
    return {
        "n": len(latencies),
        "p50_ms": quantile(latencies, 0.50) * 1000,
        "p99_ms": quantile(latencies, 0.99) * 1000,
        "mean_ms": statistics.mean(latencies) * 1000 if latencies else float("nan"),
    }


@dataclass
class ClosedLoopStats:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, t0: float, t1: float) -> list[Outcome]:
        return [o for o in self.outcomes if t0 <= o.done < t1]


async def closed_loop(
    port: int, requests: Sequence[tuple[bytes, int]], clients: int, until: float, stats: ClosedLoopStats,
    *, deadline_s: float = 60.0, stop_when_refused: bool = True, host: str = "127.0.0.1",
) -> None:  # fmt: skip
    """`clients` concurrent clients, each sending its next request as soon as the previous one is
    answered, on its own keep-alive connection (a new one when the server closed it), until the
    perf_counter `until`. Every request's Outcome goes to `stats`."""

    async def client(k: int) -> None:
        conn: HttpConn | None = None
        i = k * 7
        while time.perf_counter() < until:
            data, n = requests[i % len(requests)]
            i += 1
            if conn is None or conn.closed:
                t0 = time.perf_counter()
                try:
                    conn = await connect(port, host)
                except ConnectionRefusedError:
                    stats.outcomes.append(Outcome(t0, time.perf_counter(), "refused", n))
                    if stop_when_refused:
                        return
                    await asyncio.sleep(0.05)
                    continue
                except OSError as e:
                    stats.outcomes.append(Outcome(t0, time.perf_counter(), "error", n, message=str(e)))
                    await asyncio.sleep(0.05)
                    continue
            outcome = await send(conn, data, n, deadline_s)
            stats.outcomes.append(outcome)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))


@dataclass
class Window:
    """What completed inside a measuring window."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    texts: int = 0  # in 200 answers

    def summary(self) -> dict[str, object]:
        errors = {s: n for s, n in self.statuses.items() if s != 200}
        lat = latency_ms(self.latencies)
        return {
            "texts_per_s": self.texts / self.seconds,
            "requests_per_s": len(self.latencies) / self.seconds,
            "p50_ms": lat["p50_ms"],
            "p99_ms": lat["p99_ms"],
            "errors": sum(errors.values()),
            "error_statuses": errors,
        }


async def window_load(
    port: int, requests: Sequence[tuple[bytes, int]], clients: int, warmup: float, seconds: float,
    *, offset: int = 0, check: bool = False,
) -> Window:  # fmt: skip
    """`clients` keep-alive connections, opened first, each sending its next request as soon as the
    previous one is answered; records the requests that complete in the window of `seconds` that
    starts `warmup` seconds after the connections are open, whenever they were sent. `check`: make
    sure every 97th answer has a prediction per text sent."""
    conns = [await connect(port) for _ in range(clients)]
    start = time.perf_counter() + warmup
    end = start + seconds
    window = Window(seconds)

    async def client(k: int, conn: HttpConn) -> None:
        i = offset + k * 7
        while (t0 := time.perf_counter()) < end:
            data, n = requests[i % len(requests)]
            i += 1
            r = await conn.request(data)
            t1 = time.perf_counter()
            if start <= t1 <= end:
                window.latencies.append(t1 - t0)
                window.statuses[r.status] += 1
                window.texts += n if r.status == 200 else 0
            if check and i % 97 == 0 and r.status == 200 and len(orjson.loads(r.body)["predictions"]) != n:
                raise AssertionError(f"{n} texts sent, answer {r.body[:200]!r}")

    try:
        await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            c.close()
    return window


def load_requests(per_request: int = 1) -> list[tuple[bytes, int]]:
    """The benchmark's real texts (bench/texts.py), as ready-to-send /predict requests."""
    from bench.texts import load_texts

    return request_pool(load_texts(), per_request)
