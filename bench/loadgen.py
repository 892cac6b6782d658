"""Shared pieces of the reliability scripts (scripts/overload.py, scripts/sigterm_under_load.py,
scripts/client_faults.py) and their CI test: the server started exactly as the Dockerfile's CMD
(`python -m app`, one worker, one torch thread), a raw asyncio HTTP/1.1 client that tells apart every
way a request can end (answer, refusal, close before an answer, close mid-answer, no answer), an RSS
sampler and a /metrics scraper.

Raw sockets rather than httpx: at thousands of requests per second on one core an HTTP library's
own overhead would be the bottleneck, and its retries and pooling would hide exactly the connection
faults these scripts look for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]

# --- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    model_dir: str | Path,
    log_path: Path,
    *,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180,
    cwd: Path = REPO,
) -> Server:
    """`python -m app` (the Dockerfile's CMD) with the Dockerfile's ENV (one worker, one torch thread),
    on a free port of 127.0.0.1, pinned to `cpu` when given; waits until /ready answers 200. `cwd`: the
    source tree to run (another checkout, for before/after comparisons)."""
    from model.artifact import resolve_artifact_dir

    # `python -m app` trains a model when there is none: 10+ minutes nobody asked for here.
    resolve_artifact_dir(Path(model_dir))
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SENTIMENT_HOST": "127.0.0.1",
        "SENTIMENT_PORT": str(port),
        "SENTIMENT_WORKERS": "1",
        "SENTIMENT_TORCH_THREADS": "1",
        "SENTIMENT_MODEL_DIR": str(model_dir),
        **(env or {}),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115  (the child keeps its own descriptor)
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )  # fmt: skip
    log.close()
    server = Server(proc, port, log_path, full_env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"server not ready after {ready_timeout} s:\n{server.log_text()[-3000:]}")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's resident memory every `interval` seconds in a thread (so a busy event loop
    does not delay the samples)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), rss_bytes(self.pid)))
            except (OSError, ValueError):  # the process has exited
                return
            self._stop.wait(self.interval)

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        return max((b for t, b in self.samples if t0 <= t <= t1), default=0)

    def last(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each thread of a process."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_split(
    pid: int, before: dict[int, float], after: dict[int, float], seconds: float
) -> dict[str, float]:
    """Share of one CPU each kind of server thread used between two thread_cpu() snapshots: the
    event loop (the main thread), the busiest other thread (the inference thread during load) and
    the rest (torch, uvloop workers)."""
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(pid, 0.0)
    busiest = max(used.values(), default=0.0)
    return {
        "event_loop": loop / seconds,
        "inference": busiest / seconds,
        "other_threads": (sum(used.values()) - busiest) / seconds,
    }


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def requests_with_status(metrics: dict[str, float], status: int, route: str = "/predict") -> float:
    key = f'sentiment_requests_total{{method="POST",route="{route}",status="{status}"}}'
    return metrics.get(key, 0.0)


# --- the client -----------------------------------------------------------------------------------


def predict_request(texts: Sequence[str], *, host: str = "127.0.0.1") -> bytes:
    body = orjson.dumps({"text": texts[0]} if len(texts) == 1 else {"texts": list(texts)})
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def error(self) -> tuple[str, str]:
        """(code, message) of an error body; ('', '') when there is none."""
        try:
            e = orjson.loads(self.body)["error"]
            return str(e["code"]), str(e["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "", ""


class ConnectionClosed(Exception):
    """The connection ended before the whole answer arrived."""

    def __init__(self, partial: bool, reused: bool, reset: bool) -> None:
        kind = "mid-answer" if partial else "before any answer byte"
        how = "reset" if reset else "closed"
        super().__init__(f"connection {how} {kind} ({'reused' if reused else 'new'} connection)")
        self.partial = partial  # some bytes of the answer had arrived: a cut answer
        self.reused = reused  # the connection had carried an earlier request (keep-alive)
        self.reset = reset


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight. Honours
    `Connection: close` and notices the server's FIN, so it is never reused after either."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.answers = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        total = end + 4 + int(headers.get(b"content-length", b"0"))
        if len(self.buf) < total:
            return
        response = Response(int(lines[0].split(b" ", 2)[1]), headers, bytes(self.buf[end + 4 : total]))
        del self.buf[:total]
        self.answers += 1
        waiter, self.waiter = self.waiter, None
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        if not waiter.done():
            waiter.set_result(response)

    def eof_received(self) -> bool:
        self._lost(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(
                ConnectionClosed(bool(self.buf), self.answers > 0, isinstance(exc, ConnectionResetError))
            )
        self.waiter = None

    def request(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None and not self.closed
        self.waiter = asyncio.get_running_loop().create_future()
        self.buf.clear()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def connect(port: int, host: str = "127.0.0.1") -> HttpConn:
    """Raises ConnectionRefusedError (or another OSError) when the server does not accept."""
    _, conn = await asyncio.get_running_loop().create_connection(HttpConn, host, port)
    return conn


# --- outcomes -------------------------------------------------------------------------------------


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


@dataclass
class ClosedLoopStats:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, t0: float, t1: float) -> list[Outcome]:
        return [o for o in self.outcomes if t0 <= o.done < t1]


async def closed_loop(
    port: int,
    requests: Sequence[tuple[bytes, int]],
    clients: int,
    until: float,
    stats: ClosedLoopStats,
    *,
    deadline_s: float = 60.0,
    stop_when_refused: bool = True,
    host: str = "127.0.0.1",
) -> None:
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


def load_requests(per_request: int = 1) -> list[tuple[bytes, int]]:
    """The benchmark's real texts (bench/texts.py), as ready-to-send /predict requests."""
    from bench.texts import load_texts

    texts = load_texts()
    return [
        (predict_request([texts[(i + k) % len(texts)] for k in range(per_request)]), per_request)
        for i in range(len(texts))
    ]


@contextlib.contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Run this (client) process on `cpu` for the duration; the server gets the other one."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def script_parser(doc: str) -> argparse.ArgumentParser:
    """The reliability scripts' parser: summary and epilog from the module docstring, plus --model-dir."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model-dir",
        default=os.environ.get("SENTIMENT_MODEL_DIR", str(REPO / "models" / "default")),
        help="artifact to serve (default: $SENTIMENT_MODEL_DIR, else the shipped models/default)",
    )
    return p
