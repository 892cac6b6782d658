"""One error body for every 4xx/5xx: {"error": {"code", "message", "id", "details"?}}.

`ENGINE_ERRORS` is the one table from the engine's exceptions (core/errors.py) to status, error code
and Retry-After. Handlers here cover those, the HTTP layer's own errors (ApiError: 401, 403),
FastAPI's request validation (422), Starlette's HTTP errors (404, 405, ...) and anything unexpected
(500, logged with the request id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from app.fast_path import is_fast_path_endpoint
from app.responses import OrjsonResponse
from core.errors import (
    BatchFailed,
    ClientGone,
    EngineError,
    IncompatibleArtifact,
    InvalidArtifact,
    InvalidInput,
    NotReady,
    Overloaded,
    ShuttingDown,
    TimedOut,
)

log = logging.getLogger("app.errors")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",  # app/transport.py
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",  # nginx's rate and connection limits (deploy/nginx/nginx.conf)
    431: "request_header_fields_too_large",  # app/transport.py
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


# Engine exception -> (status, error code, whether the answer carries Retry-After).
ENGINE_ERRORS: dict[type[EngineError], tuple[int, str, bool]] = {
    InvalidInput: (422, "validation_error", False),
    InvalidArtifact: (422, "invalid_artifact", False),
    IncompatibleArtifact: (409, "incompatible_artifact", False),
    ClientGone: (499, "client_closed_request", False),  # nobody receives it; logs and metrics do
    BatchFailed: (500, "internal_error", False),
    Overloaded: (503, "overloaded", True),
    NotReady: (503, "not_ready", True),
    ShuttingDown: (503, "shutting_down", True),
    TimedOut: (504, "timeout", False),
}


def engine_error_response(exc: EngineError, rid: str, retry_after_s: int) -> Response:
    status, code, retry = ENGINE_ERRORS[type(exc)]
    message = exc.message
    if isinstance(exc, BatchFailed):  # the cause is in the log, under this request's id
        message = (
            f"inference failed for the batch holding this request (batch {exc.batch_id}); quote id {rid} "
            "when reporting it"
        )
    headers = {"Retry-After": str(retry_after_s)} if retry else None
    return error_response(status, code, message, rid, details=exc.details, headers=headers)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers


def request_id(scope: Scope) -> str:
    state = scope.get("state")
    return (state or {}).get("request_id", "-")


def error_body(code: str, message: str, rid: str, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "id": rid}
    if details is not None:
        error["details"] = details
    return orjson.dumps({"error": error})


def error_response(
    status: int,
    code: str,
    message: str,
    rid: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, rid, details),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


# Why a body could not be read as JSON at all (the exception's name) -> the problem, in words.
_UNREADABLE_JSON = {
    "UnicodeDecodeError": "it is not UTF-8 text",
    "RecursionError": "nested too deeply to parse",
    "ValueError": "a number too long to parse",
}
_SEND = 'send a JSON object like {"text": "..."}'


def json_invalid_message(error: str, loc: Sequence[Any] = (), body: Any = None) -> str:
    """The message for a body that is not JSON: the parser's complaint with its position (the
    character offset in `loc`, as line and column when the body is known), and what to send instead."""
    if error in _UNREADABLE_JSON:
        encoding = "UTF-8 encoded " if error == "UnicodeDecodeError" else ""
        return f"body is not valid JSON: {_UNREADABLE_JSON[error]}; {_SEND.replace('a ', 'a ' + encoding, 1)}"
    position = next((p for p in loc if isinstance(p, int)), None)
    if position is not None and "line" not in error:
        if isinstance(body, (str, bytes)):
            nl = "\n" if isinstance(body, str) else b"\n"
            line, column = body.count(nl, 0, position) + 1, position - body.rfind(nl, 0, position)
            error = f"{error}: line {line} column {column} (char {position})"  # as json.JSONDecodeError
        else:
            error = f"{error} (character {position})"
    return f"body is not valid JSON ({error}); {_SEND}"


def body_too_large_message(size: int | None, limit: int) -> str:
    """413: which limit the body hit and the two ways under it (the body holds many texts, or one long
    text: no single text within SENTIMENT_MAX_CHARS_PER_TEXT comes near the body limit)."""
    limit_hit = f"SENTIMENT_MAX_BODY_BYTES={limit}"
    if size is None:  # chunked: read up to the limit
        got = f"request body exceeds {limit} bytes ({limit_hit})"
    else:
        got = f"request body is {size} bytes; at most {limit} are accepted ({limit_hit})"
    return (
        f"{got}. Many texts: send "
        "them over several requests; one long document: send an excerpt (a text may have at most "
        "SENTIMENT_MAX_CHARS_PER_TEXT characters, and only its first chunks are scored)"
    )


def validation_message(errors: Sequence[dict[str, Any]], predict: bool = True, body: Any = None) -> str:
    """Turn pydantic/FastAPI errors into one sentence per problem that says what to fix. The hints
    about "text"/"texts" are for /predict only (`predict=False` elsewhere)."""
    parts = []
    for e in errors:
        loc, kind, msg = tuple(e.get("loc", ())), e.get("type", ""), str(e.get("msg", ""))
        msg = msg.removeprefix("Value error, ")
        if not predict and kind != "json_invalid":
            parts.append(f"{_loc(loc)}: {msg}")
        elif kind == "json_invalid":
            parts.append(json_invalid_message(str((e.get("ctx") or {}).get("error", msg)), loc, body))
        elif loc == ("body",) and kind == "missing":
            parts.append(
                'request body is missing; send JSON like {"text": "..."} or {"texts": ["...", "..."]}'
            )
        elif loc == ("body",) and kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append(
                'body must be a JSON object like {"text": "..."} or {"texts": ["...", "..."]} '
                "sent with Content-Type: application/json"
            )
        elif kind == "extra_forbidden":
            parts.append(f'{_loc(loc)}: unknown field; only "text" or "texts" are accepted')
        else:
            parts.append(f"{_loc(loc)}: {msg}")
    return "; ".join(parts) or "invalid request"


def validation_details(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")).removeprefix("Value error, "),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.code, exc.message, request_id(request.scope), details=exc.details, headers=exc.headers
    )


async def _engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineError)
    return engine_error_response(exc, request_id(request.scope), request.app.state.settings.retry_after_s)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    return error_response(
        422,
        "validation_error",
        # /predict's hints for its route, whatever its prefix (its endpoint is the one with a fast path)
        validation_message(
            errors, predict=is_fast_path_endpoint(request.scope.get("endpoint")), body=exc.body
        ),
        request_id(request.scope),
        details=validation_details(errors),
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 400 and exc.__cause__ is not None:
        # FastAPI's "error parsing the body" (invalid UTF-8, nesting or integers too large to parse):
        # malformed JSON like any other, so the documented 422 with a hint instead of an opaque 400.
        message = json_invalid_message(type(exc.__cause__).__name__)
        return error_response(422, "validation_error", message, request_id(request.scope))
    if status == 404:
        message = f"no route {request.url.path}; see /docs for the API"
    elif status == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allow or 'another method'}"
    else:
        message = str(exc.detail)
    return error_response(
        status, _CODES.get(status, "http_error"), message, request_id(request.scope), headers=exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request_id(request.scope)
    log.error("unhandled error in request %s", rid, exc_info=exc)
    return error_response(500, "internal_error", f"internal error; quote id {rid} when reporting it", rid)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


__all__ = [
    "ENGINE_ERRORS",
    "ApiError",
    "OrjsonResponse",
    "body_too_large_message",
    "engine_error_response",
    "error_body",
    "error_response",
    "install_error_handlers",
    "json_invalid_message",
]
