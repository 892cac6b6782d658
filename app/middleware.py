"""One pure-ASGI middleware for the per-request bookkeeping (cheaper than BaseHTTPMiddleware):
request id, the body-size limit, request metrics and the JSON access-log line. It wraps FastAPI's
own middleware stack (app/main.py: SentimentApi) and hands each request for a route declared with
@fast_path (app/fast_path.py; POST /predict) straight to its handler, past FastAPI's middleware and
routing."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import body_too_large_message, error_body
from app.fast_path import FastRoute
from core.metrics import Metrics

access_log = logging.getLogger("app.access")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        log_requests: bool,
        fast_routes: dict[tuple[str, str], FastRoute],
    ) -> None:
        self.app = app
        self.fast_routes = fast_routes  # (method, path) -> its fast handler (app/fast_path.py)
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self._routes: dict[str, bool] = {}  # path -> a route matches it, for bounded metric labels

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
            # Not os.urandom: its syscall releases the GIL, and getting it back from the inference
            # thread cost ~20 µs a request (py-spy). Ids need to be unique, not secret.
            rid = f"{random.getrandbits(64):016x}"
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500  # if the app raises before sending anything, ServerErrorMiddleware answers 500
        fast = None

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
            fast = self.fast_routes.get((scope["method"], scope["path"]))
            if fast is not None:
                await fast.handler(fast, scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = fast or scope.get("route")  # a fast route's label is its declared path, prefix included
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
        if content_length is not None:
            try:
                n = int(content_length)
            except ValueError:
                n = -1
            if n > limit:
                return receive, body_too_large_message(n, limit)
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
                return receive, body_too_large_message(None, limit)
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
        """Label of a request answered before routing (413, shed 503) or unrouted (404): its path
        when a route matches it (all paths are static, so labels stay bounded), else "unmatched".
        Matched rather than looked up in app.routes: recent FastAPI (0.165 here) lists included routers
        there, not their paths (413s and shed 503s were all counted as "unmatched")."""
        path = scope["path"]
        known = self._routes.get(path)
        if known is None:
            app = scope.get("app")
            known = any(r.matches(scope)[0] is not Match.NONE for r in getattr(app, "routes", ()))
            if len(self._routes) < 1000:  # a scan of random 404 paths must not grow it forever
                self._routes[path] = known
        return path if known else "unmatched"
