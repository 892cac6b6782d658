"""One pure-ASGI middleware for the per-request bookkeeping (cheaper than BaseHTTPMiddleware):
request id, the body-size limit, request metrics and the JSON access-log line."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body
from app.metrics import Metrics

access_log = logging.getLogger("app.access")


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self._routes: frozenset[str] | None = None  # known paths, for bounded metric labels

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = value
            elif name == b"x-request-id" and len(value) <= 64 and value.isascii():
                rid = value.decode()
        if rid is None:
            rid = os.urandom(8).hex()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500  # if the app raises before sending anything, ServerErrorMiddleware answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                receive, too_large = await self._limit_body(content_length, receive)
                if too_large is not None:
                    await self._reject(too_large, rid, send_with_id)
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = route.path if route is not None else self._label(scope)
            self.metrics.observe_request(label, scope["method"], status, elapsed)
            if self.log_requests and access_log.isEnabledFor(logging.INFO):
                fields: dict[str, Any] = {
                    "id": rid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                }
                if "batch_ids" in state:
                    fields["texts"] = state["texts"]
                    fields["batch_ids"] = state["batch_ids"]
                access_log.info("request", extra={"fields": fields})

    async def _limit_body(self, content_length: bytes | None, receive: Receive) -> tuple[Receive, str | None]:
        limit = self.max_body_bytes
        hint = (
            f"at most {limit} bytes are accepted (SENTIMENT_MAX_BODY_BYTES={limit}); "
            "split the texts over several requests"
        )
        if content_length is not None:
            try:
                n = int(content_length)
            except ValueError:
                n = -1
            if n > limit:
                return receive, f"request body is {n} bytes; {hint}"
            return receive, None
        # No Content-Length (chunked): read up to the limit here, then replay the body to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first: Message = message
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return receive, f"request body exceeds {limit} bytes; {hint}"
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        return replay, None

    @staticmethod
    async def _reject(message: str, rid: str, send: Send) -> None:
        body = error_body("payload_too_large", message, rid)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the unread body makes the connection unusable
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _label(self, scope: Scope) -> str:
        if self._routes is None:
            app = scope.get("app")
            self._routes = frozenset(getattr(r, "path", "") for r in getattr(app, "routes", ()))
        return scope["path"] if scope["path"] in self._routes else "unmatched"
