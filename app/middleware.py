"""One pure-ASGI middleware for the per-request bookkeeping (cheaper than BaseHTTPMiddleware):
request id, the body-size limit, request metrics and the JSON access-log line. It wraps FastAPI's
own middleware stack (app/main.py: SentimentApi) and hands every POST /predict straight to its ASGI
endpoint (app/routes/predict.py), past FastAPI's middleware and routing."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import body_too_large_message, engine_error_response, error_body
from app.routes.predict import endpoint as predict_endpoint
from core.batcher import overloaded_message
from core.engine import estimate_body_pieces
from core.errors import Overloaded
from core.metrics import Metrics

access_log = logging.getLogger("app.access")


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, log_requests: bool) -> None:
        self.app = app
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
                if scope["method"] == "POST" and scope["path"] == "/predict":
                    if (full := _queue_full(scope, content_length)) is not None:
                        await self._shed(full, send_with_id)
                    else:
                        await predict_endpoint(scope, receive, send_with_id)
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

    @staticmethod
    async def _shed(response: Response, send: Send) -> None:
        # The unread body is discarded by the server; the connection stays usable.
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

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


def _queue_full(scope: Scope, content_length: bytes | None) -> Response | None:
    """The 503 `overloaded` response when /predict cannot admit even one more text, or when the body
    is so large that it will be bulk (core/batcher.py) and the bulk lane has no room for it, else None.

    Shedding here, before the body is parsed, validated and tokenized, is what keeps overload
    handling cheap: through the route a refusal cost ~0.45 ms of CPU, as much as the HTTP side of
    serving a request, so at 10x capacity the event loop took 91% of the core, accepted requests
    waited 15 s and throughput fell to 14%; here it costs ~0.07 ms (scripts/overload.py,
    docs/RELIABILITY.md). Every request holds at least one text, so it would be refused anyway
    (an invalid one gets its 4xx on the retry). A client resending 640 kB requests at once after each
    503 cost ~4 ms of event loop per refusal when the body was read first (bench/results/heavy_clients.md)."""
    state = getattr(scope.get("app"), "state", None)
    engine = getattr(state, "engine", None)
    batcher = getattr(engine, "batcher", None)
    if batcher is None or not engine.ready:
        return None
    if batcher.full:
        small = batcher.queued_texts - batcher.bulk_queued  # the lane of small requests is full
        error = Overloaded(overloaded_message(small, batcher.max_queue_texts))
    elif batcher.bulk_queued and content_length is not None and len(content_length) >= 4:  # >= 1,000 bytes
        try:
            size = int(content_length)
        except ValueError:
            return None
        estimate = estimate_body_pieces(engine.settings, engine.active.artifact.max_length, size)
        if not batcher.is_bulk(estimate) or batcher.bulk_room(estimate):
            return None
        error = Overloaded(overloaded_message(batcher.bulk_queued, batcher.max_bulk_texts, bulk=True))
    else:
        return None
    return engine_error_response(error, scope["state"]["request_id"], state.settings.retry_after_s)
