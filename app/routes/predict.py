"""POST /predict: classify one text or many.

The request path, stage by stage (LitServe's decode -> batch -> predict -> unbatch -> encode):

    decode       the raw body: json.loads, then the route's body field (PredictRequest, pydantic-core)
    check        the API key, then readiness and the limits (core/engine.py: `Engine.check_*`)
    plan+submit  `Engine.submit`: tokenize into pieces, queue them as one batcher job
    await        `Pending.result`: the batch worker's forward passes (disconnect -> job dropped)
    reassemble   pieces -> one Prediction per text (core/engine.py)
    encode       `render_predictions` (app/schemas.py), orjson, one response

One declaration, two paths (app/fast_path.py): the FastAPI route below is the documented operation and
a complete path of its own; `@fast_path` has RequestMiddleware answer the same method and path with
`serve_fast`, a plain ASGI handler that skips FastAPI's middleware, router, dependency resolution, body
parsing and response model (issue 11's floor, one core, 64 connections: a FastAPI app with only a
pydantic request and response model served 5,587 requests/s, a bare ASGI callable 25,983).
`serve_fast` validates with the route's own body field and raises what the route raises, in the order
FastAPI checks (JSON syntax, the dependencies: API key then readiness, the body's fields, then the
engine), answered by the same exception handlers; before reading the body it also sheds load
(`Engine.refusal`). bench/results/profile.md shows where the rest of the time goes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.deps import ReadyEngineDep, SettingsDep, engine_of, get_ready_engine, get_settings
from app.fast_path import FastRoute, answer_error, fast_path
from app.openapi import error_responses
from app.schemas import BATCH_EXAMPLE, SINGLE_EXAMPLE, PredictRequest, PredictResponse, render_predictions
from app.security import check_api_key, require_api_key
from app.settings import Settings
from core.engine import Engine, Options, Predictions

router = APIRouter(tags=["predict"])

_EXAMPLES = {
    "one text": {"summary": "one text", "value": SINGLE_EXAMPLE},
    "several texts": {"summary": "several texts, answered in order", "value": BATCH_EXAMPLE},
    "explained": {
        "summary": "with token contributions",
        "value": {**SINGLE_EXAMPLE, "explain": True},
    },
}
_JSON = [(b"content-type", b"application/json")]


_NOTHING: Any = object()  # an empty body: the field is missing, as FastAPI reports it
_MISSING = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def decode(body: bytes, content_type: bytes | None) -> Any:
    """Stage decode, part 1, as FastAPI reads a JSON body: the document when the body is JSON, the raw
    bytes when the content type is not (the field validation then refuses them), _NOTHING when empty.
    Malformed JSON raises at once (before the dependencies), as on the route."""
    if not body:
        return _NOTHING
    if not _is_json(content_type):
        return body
    try:
        return json.loads(body)  # bytes: UTF-8 (a BOM is allowed), the last of repeated keys wins
    except json.JSONDecodeError as e:
        error = {"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "input": {},
                 "ctx": {"error": e.msg}}  # fmt: skip  # as FastAPI's; app/errors.py adds line and column
        raise RequestValidationError([error], body=e.doc) from e
    except Exception as e:  # not UTF-8, too deep, too long an int: FastAPI's 400 (app/errors.py: 422)
        raise HTTPException(400, "There was an error parsing the body") from e


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


async def predict_texts(
    engine: Engine, settings: Settings, request: PredictRequest, receive: Receive, state: dict[str, Any]
) -> Predictions:
    """Both paths' call of the engine: submit, watch for the client leaving, await the results."""
    texts = request.as_list()
    options = Options(request.long_text or settings.long_text, request.sentences, request.explain)
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
        watch = _DisconnectWatch(receive, pending, 0.0 if pending.behind_full_batch else WATCH_AFTER_S)
    try:
        out = await pending.result()
    finally:
        watch.close()
    state["batch_ids"] = pending.batch_ids
    state["texts"] = len(texts)
    return out


async def serve_fast(route: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /predict (and the same route under any prefix) as a plain ASGI handler: RequestMiddleware
    calls it with the route it was declared as (app/fast_path.py)."""
    state = scope["app"].state
    content_type = content_length = authorization = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            content_length = value
        elif name == b"authorization":
            authorization = value
    try:
        engine: Engine | None = state.engine
        if engine is not None:
            # Shed before the body is read, parsed, validated and tokenized: a refusal through the route
            # cost ~0.45 ms of CPU, as much as the HTTP side of serving a request, so at 10x capacity
            # the event loop took 91% of the core and throughput fell to 14%; here it costs ~0.07 ms
            # (scripts/overload.py, docs/RELIABILITY.md). The unread body is discarded by the server.
            refusal = engine.refusal(_int(content_length))
            if refusal is not None:
                raise refusal
        body = await _read_body(receive)
        if body is None:  # gone before the whole body arrived: nobody to answer (logged as 499)
            status, headers, payload = 499, [], b""
        else:
            document = decode(body, content_type)
            settings: Settings = state.settings
            if route.depends_on(require_api_key):
                check_api_key(settings, authorization)
            if engine is None:  # the dependency get_ready_engine: 503 until start-up has built it
                engine = engine_of(state)
            engine.check_ready()
            if document is _NOTHING:
                raise RequestValidationError([_MISSING])
            request, errors = route.body_field.validate(document, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors)
            out = await predict_texts(engine, settings, request, receive, scope["state"])
            payload = orjson.dumps(render_predictions(out))
            status, headers = 200, [*_JSON, (b"content-length", str(len(payload)).encode())]
    except Exception as e:  # answered as FastAPI's route answers it, by the app's exception handlers
        response = await answer_error(route, scope, e)
        status, headers, payload = response.status_code, response.raw_headers, bytes(response.body)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


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
@fast_path(serve_fast, performs=(require_api_key, get_ready_engine, get_settings))
async def predict(
    request: Request,
    body: Annotated[PredictRequest, Body(openapi_examples=_EXAMPLES)],
    engine: ReadyEngineDep,
    settings: SettingsDep,
) -> Response:
    """The FastAPI path of the operation (served when the middleware's fast path is off:
    create_app(fast_path=False)); same engine call, same answers."""
    out = await predict_texts(engine, settings, body, request.receive, request.scope["state"])
    return Response(orjson.dumps(render_predictions(out)), media_type="application/json")
