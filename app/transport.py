"""Transport limits uvicorn's httptools protocol lacks: a header size limit, header and body read
timeouts, and a connection cap (docs/RELIABILITY.md, "Transport limits").

uvicorn (0.55) reads headers of any size (a 50 MB header stalled the event loop 2.5 s and took 100 MB),
keeps a connection that never sends a byte or trickles its headers or body forever (21,000 idle
connections exhausted the file descriptors and /health failed), and its `limit_concurrency` answers
only once a request's headers are complete. `GuardedHttpTools` is its httptools protocol with:

* `max_header_bytes`: a request line and headers longer than this get 431 and the connection is
  closed; at most one read (<= 256 KiB) more than the limit is ever buffered.
* `header_timeout_s`: from a connection's start, or a request's first byte, to the end of its
  headers; then 408 and close. Idle keep-alive connections are uvicorn's `timeout_keep_alive` (5 s).
* `body_timeout_s`: from the end of the headers to the end of the body; then 408 and close (the
  request, if it is waiting for its body, sees the client gone).
* `max_connections`: a connection beyond this many (and never closer than 64 to the process's file
  descriptor limit) is answered 503 + Retry-After at once and closed, so /health and the requests
  in flight keep their descriptors.

`python -m app` uses it (app/__main__.py); with `uvicorn app.main:app` pass
`--http app.transport:GuardedHttpTools`. Per request it costs a few attribute checks: timers are set
only for a request whose headers or body do not arrive in one read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("app.transport")

# Room left under the file-descriptor limit for the listening socket, logs, the model files, /health.
FD_RESERVE = 64
LINGER_S = 1.0  # after a 431, how long the rest of an oversized request is read and dropped


@dataclass(frozen=True)
class TransportLimits:
    max_header_bytes: int = 32_768
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096

    @classmethod
    def from_settings(cls, settings: Any) -> TransportLimits:
        return cls(
            settings.max_header_bytes,
            settings.header_timeout_s,
            settings.body_timeout_s,
            settings.max_connections,
        )

    def connection_cap(self) -> int:
        """max_connections, or fewer where the file-descriptor limit is lower."""
        try:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (OSError, ValueError):
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))


def _response(status: int, reason: str, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message, "id": "-"}})
    return (
        (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + body
    )


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    # Set once per process from the SENTIMENT_* settings on first use (or by a subclass, in tests).
    limits: ClassVar[TransportLimits | None] = None
    _cap: ClassVar[int] = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            from app.settings import Settings

            cls.limits = TransportLimits.from_settings(Settings())
        if not cls._cap:
            cls._cap = cls.limits.connection_cap()
        self._limits = cls.limits
        self._in_head = False  # between a request's first byte and the end of its headers
        self._in_body = False  # between the end of its headers and the end of its body
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._discarding = False

    # --- connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._cap:
            log.warning("connection refused: %d open, the cap is %d", len(self.connections) - 1, self._cap)
            message = (
                f"too many connections ({self._cap}; SENTIMENT_MAX_CONNECTIONS); retry shortly, or reuse "
                "connections"
            )
            transport.write(
                _response(503, "Service Unavailable", "overloaded", message, b"retry-after: 1\r\n")
            )
            transport.close()
            return
        # A connection that never sends a byte is closed when its first headers are late.
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._discarding:
            self.transport.close()

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # --- reading --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # the rest of a refused request
            return
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse_header()
                return
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._limits.header_timeout_s, self._head_timeout)
        elif self._head_timer is not None:  # headers complete (or the connection's first timer)
            self._head_timer.cancel()
            self._head_timer = None
        if self._in_body:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_timeout)
        elif self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    # --- refusals -------------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No response of this connection is under way (one could be written now)."""
        return self.cycle is None or self.cycle.response_complete

    def _refuse_header(self) -> None:
        limit = self._limits.max_header_bytes
        log.warning("request headers over %d bytes: 431, connection closed", limit)
        self._cancel_timers()
        self._in_head = False
        if self._idle():
            message = (
                f"the request line and headers exceed {limit} bytes (SENTIMENT_MAX_HEADER_BYTES); send "
                "smaller headers"
            )
            self.transport.write(
                _response(431, "Request Header Fields Too Large", "request_header_fields_too_large", message)
            )
        # Read and drop what the client is still sending for a moment, so it can read the answer
        # before the close (closing with unread data would reset the connection and lose it).
        self._discarding = True
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        t = self._limits.header_timeout_s
        if self._idle():
            message = f"the request headers did not arrive within {t:g} s (SENTIMENT_HEADER_TIMEOUT_S)"
            self.transport.write(_response(408, "Request Timeout", "request_timeout", message))
        self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        t = self._limits.body_timeout_s
        log.warning("request body not complete within %g s: 408, connection closed", t)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            message = f"the request body did not arrive within {t:g} s (SENTIMENT_BODY_TIMEOUT_S)"
            self.transport.write(_response(408, "Request Timeout", "request_timeout", message))
        if cycle is not None:  # the app, waiting for the body, sees the client gone; its answer is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()
