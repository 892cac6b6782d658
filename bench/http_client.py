"""A raw asyncio HTTP/1.1 client that tells apart every way a request can end (answer, close before
an answer, close mid-answer), and ready-made POST /predict requests.

Raw sockets rather than httpx: at thousands of requests per second on one core an HTTP library's
own overhead would be the bottleneck, and its retries and pooling would hide exactly the connection
faults the reliability scripts look for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


def post(body: Any, *, path: str = "/predict", host: str = "127.0.0.1") -> bytes:
    """A whole POST request with `body` as JSON."""
    data = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    return head + data


def predict_request(texts: Sequence[str], *, explain: bool = False, host: str = "127.0.0.1") -> bytes:
    """POST /predict of `texts`: the single-text form for one text, the list form otherwise."""
    body: dict[str, Any] = {"text": texts[0]} if len(texts) == 1 else {"texts": list(texts)}
    if explain:
        body["explain"] = True
    return post(body, host=host)


def request_pool(texts: Sequence[str], per_request: int, *, explain: bool = False) -> list[tuple[bytes, int]]:
    """One /predict request per text, each of `per_request` consecutive texts (wrapping around), with
    its text count: what the load loops cycle through."""
    windows = ([texts[(i + k) % len(texts)] for k in range(per_request)] for i in range(len(texts)))
    return [(predict_request(window, explain=explain), per_request) for window in windows]


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
        if self.transport is None or self.waiter is not None or self.closed:
            raise RuntimeError("request on a connection that is closed or has a request in flight")
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
