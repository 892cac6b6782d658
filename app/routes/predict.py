"""POST /predict: classify one text or many.

The request path, stage by stage (LitServe's decode -> batch -> predict -> unbatch -> encode):

    decode       `parse` + `validate`: the raw body, json.loads then PredictRequest in pydantic-core
    check        the API key, then readiness and the limits (core/engine.py: `Engine.check_*`)
    plan+submit  `Engine.submit`: tokenize into pieces, queue them as one batcher job
    await        `Pending.result`: the batch worker's forward passes (disconnect -> job dropped)
    reassemble   pieces -> one row per text; render: plain dicts (core/engine.py)
    encode       orjson, one response

`endpoint` is a plain ASGI callable that RequestMiddleware calls for every POST /predict, so the
request skips FastAPI's middleware, router, dependency resolution, body parsing and response model
(issue 11's floor, one core, 64 connections: a FastAPI app with only a pydantic request and response
model served 5,587 requests/s, a bare ASGI callable 25,983). bench/results/profile.md shows where the
rest of the time goes. The FastAPI route below is the same operation as OpenAPI describes it (request
and response models, examples, every error status); it only documents: a POST /predict never
reaches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from app.errors import (
    engine_error_response,
    error_response,
    request_id,
    validation_details,
    validation_message,
)
from app.openapi import error_responses
from app.schemas import BATCH_EXAMPLE, SINGLE_EXAMPLE, PredictRequest, PredictResponse
from app.security import UNAUTHORIZED_MESSAGE, key_matches
from app.settings import Settings
from core.engine import Engine, Options
from core.errors import EngineError

router = APIRouter(tags=["predict"])
log = logging.getLogger("app.errors")

_EXAMPLES = {
    "one text": {"summary": "one text", "value": SINGLE_EXAMPLE},
    "several texts": {"summary": "several texts, answered in order", "value": BATCH_EXAMPLE},
    "explained": {
        "summary": "with token contributions",
        "value": {**SINGLE_EXAMPLE, "explain": True},
    },
}
_NOT_JSON = (
    'body must be a JSON object like {"text": "..."} or {"texts": ["...", "..."]} sent with '
    "Content-Type: application/json"
)


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify the sentiment of one or more texts",
    description="Send one text as `text` or several as `texts`; the answer always holds a list of "
    "predictions in input order, each with the label, its calibrated probability, the probability of "
    "every label, whether the text was truncated and how many chunks a long text was scored in. Options: "
    "`long_text` (`chunk` scores a long text in pieces, `truncate` only its start), `sentences` (a score "
    "per sentence) and `explain` (a signed contribution per token, by occlusion). Texts from concurrent "
    "requests are batched together on the server.",
    response_description="one prediction per text, in input order",
    responses=error_responses(413, 422, 500, 503, 504),
)
async def predict(body: Annotated[PredictRequest, Body(openapi_examples=_EXAMPLES)]) -> PredictResponse:
    raise RuntimeError("POST /predict is answered by app.routes.predict.endpoint (see RequestMiddleware)")


class BadRequest(Exception):
    """The body is not a JSON object we can read: 422 with these errors (pydantic's shape)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def parse(body: bytes, content_type: bytes | None) -> Any:
    """Stage decode, part 1: the JSON document. BadRequest when it is not JSON at all."""
    if not body:
        raise BadRequest([{"loc": ("body",), "type": "missing", "msg": "Field required"}])
    if not _is_json(content_type):
        raise BadRequest([{"loc": ("body",), "type": "model_attributes_type", "msg": _NOT_JSON}])
    try:
        return json.loads(body)  # bytes: UTF-8 (a BOM is allowed), the last of repeated keys wins
    except json.JSONDecodeError as e:
        raise BadRequest(
            [
                {
                    "loc": ("body", e.pos),
                    "type": "json_invalid",
                    "msg": "JSON decode error",
                    "ctx": {"error": str(e)},  # with its line and column
                }
            ]
        ) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as e:  # not UTF-8, too deep, too long an int
        raise BadRequest(
            [
                {
                    "loc": ("body",),
                    "type": "json_invalid",
                    "msg": "JSON decode error",
                    "ctx": {"error": type(e).__name__},  # app/errors.py says what to send
                }
            ]
        ) from None


def validate(document: Any) -> PredictRequest:
    """Stage decode, part 2: the fields, in pydantic-core (strict, as the schema says)."""
    try:
        return PredictRequest.model_validate(document)
    except ValidationError as e:
        raise BadRequest(
            [
                {**err, "loc": ("body", *err["loc"])}
                for err in e.errors(include_url=False, include_input=False)
            ]
        ) from None


def _bad_request(errors: list[dict[str, Any]], rid: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    resp = error_response(
        422, "validation_error", validation_message(errors), rid, details=validation_details(errors)
    )
    return 422, resp.body, []


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (RequestMiddleware has enforced the size limit), or None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# How long a request waits before its disconnect watcher starts. Most requests are answered sooner
# (at 64 connections on one core the median wait is ~30 ms) and need none: a watcher task costs ~7 µs a
# request, the timer ~2.5 µs. A client that leaves earlier is noticed at this point. A request that
# finds a full batch's worth of texts ahead of it is watched at once: it will wait at least one whole
# forward pass, and if its client leaves (a load generator's run ending, a client's own timeout) its
# texts must free their queue room now, not 0.1 s later, or the next clients find the queue full.
WATCH_AFTER_S = 0.1


async def _watch_disconnect(receive: Receive, pending: Any) -> None:
    # After the body is read, receive() only returns once the client has gone (or the response is
    # complete, by when this task is cancelled): drop the request so its texts never reach the model.
    while (await receive())["type"] != "http.disconnect":
        pass
    pending.drop()


class _Client:
    """What a disconnect watch drops before the request has a Pending (it is being planned)."""

    __slots__ = ("gone", "pending")

    def __init__(self) -> None:
        self.gone = False
        self.pending: Any = None

    def left(self) -> bool:
        return self.gone

    def drop(self) -> None:
        self.gone = True
        if self.pending is not None:
            self.pending.drop()


class _DisconnectWatch:
    """Watches for the client leaving, from `after_s` after submission until `close`."""

    __slots__ = ("_task", "_timer")

    def __init__(self, receive: Receive, pending: Any, after_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._timer = loop.call_later(after_s, self._start, loop, receive, pending)

    def _start(self, loop: asyncio.AbstractEventLoop, receive: Receive, pending: Any) -> None:
        self._task = loop.create_task(_watch_disconnect(receive, pending))

    def close(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def answer(
    engine: Engine, settings: Settings, scope: Scope, receive: Receive
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The whole pipeline for one request: (status, body, extra headers)."""
    rid = request_id(scope)
    body = await _read_body(receive)
    if body is None:  # gone before the whole body arrived: nobody to answer (logged as 499)
        return 499, b"", []
    headers = dict(scope["headers"]) if settings.api_key is not None else None
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    request: PredictRequest | None = None
    field_errors: list[dict[str, Any]] | None = None
    try:
        document = parse(body, content_type)
    except BadRequest as e:
        return _bad_request(e.errors, rid)  # malformed JSON first: before the key and readiness
    if headers is not None and not key_matches(settings, headers.get(b"authorization")):
        resp = error_response(401, "unauthorized", UNAUTHORIZED_MESSAGE, rid)
        return 401, resp.body, [(b"www-authenticate", b"Bearer")]
    try:
        request = validate(document)
    except BadRequest as e:
        field_errors = e.errors
    try:
        engine.check_ready()
        if field_errors is not None:
            return _bad_request(field_errors, rid)
        assert request is not None
        texts = request.as_list()
        options = Options(request.long_text or settings.long_text, request.sentences, request.explain)
        batcher = engine.batcher
        assert batcher is not None  # check_ready passed
        deep = batcher.queued_texts >= batcher.max_batch_size  # read before this request joins
        single = request.text is not None
        if engine.planned_in_thread(texts):
            # Watched from the start: a client that leaves while its request waits for the planner
            # thread is not planned (or, if already, not queued).
            client = _Client()
            watch = _DisconnectWatch(receive, client, 0.0)
            try:
                pending = await engine.submit_in_thread(texts, options, single=single, abandoned=client.left)
            except BaseException:
                watch.close()
                raise
            client.pending = pending
        else:
            pending = engine.submit(texts, options, single=single)
            watch = _DisconnectWatch(receive, pending, 0.0 if deep else WATCH_AFTER_S)
        try:
            out = await pending.result()
        finally:
            watch.close()
    except EngineError as e:
        resp = engine_error_response(e, rid, settings.retry_after_s)
        extra = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k == "retry-after"]
        return resp.status_code, resp.body, extra
    state = scope["state"]
    state["batch_ids"] = pending.batch_ids
    state["texts"] = len(texts)
    return 200, orjson.dumps(out), []


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /predict as a plain ASGI app (RequestMiddleware calls it; scope["app"] is the FastAPI app)."""
    state = scope["app"].state
    try:
        status, body, extra = await answer(state.engine, state.settings, scope, receive)
    except Exception:  # a bug: the error body and the log line FastAPI's handler would give it
        rid = request_id(scope)
        log.exception("unhandled error in request %s", rid)
        message = f"internal error; quote id {rid} when reporting it"
        status, body, extra = 500, error_response(500, "internal_error", message, rid).body, []
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
