"""OpenAPI details: declared error responses with examples, and the configured limits in the schema
(so /docs shows them and schema-driven fuzzers generate mostly valid input)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.schemas import ErrorResponse, error_example
from app.settings import Settings
from core.engine import BLANK
from model.labels import UNKNOWN

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "example": 1},
    }
}

_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "the authentication scheme: `Bearer`", "schema": {"type": "string"}}
}

_ERRORS: dict[int, tuple[str, dict[str, dict[str, Any]]]] = {
    401: (
        "SENTIMENT_API_KEY is set and the request has no `Authorization: Bearer <key>` header, or the "
        "wrong key.",
        {
            "unauthorized": error_example(
                "unauthorized",
                "missing or invalid API key; send the header 'Authorization: Bearer <key>' with the key "
                "configured in SENTIMENT_API_KEY",
            )
        },
    ),
    413: (
        "The request body is larger than SENTIMENT_MAX_BODY_BYTES.",
        {
            "payload_too_large": error_example(
                "payload_too_large",
                "request body is 2000000 bytes; at most 1048576 bytes are accepted "
                "(SENTIMENT_MAX_BODY_BYTES=1048576); split the texts over several requests",
            )
        },
    ),
    422: (
        "The request is not valid: malformed JSON, neither or both of `text` and `texts`, an unknown "
        "field, wrong types, an empty text, or a limit (texts per request, characters per text) exceeded. "
        "`message` says what to fix.",
        {
            "missing": error_example(
                "validation_error", 'body: give "text" (one string) or "texts" (a list of strings)'
            ),
            "both": error_example("validation_error", 'body: give either "text" or "texts", not both'),
            "too_many_texts": error_example(
                "validation_error",
                "body.texts: 80 texts given; at most 64 per request (SENTIMENT_MAX_TEXTS_PER_REQUEST=64); "
                "split them over several requests",
            ),
            "text_too_long": error_example(
                "validation_error",
                "body.texts.3: 12000 characters; at most 10000 per text (SENTIMENT_MAX_CHARS_PER_TEXT=10000)",
            ),
            "empty_text": error_example(
                "validation_error", "body.text: the text is empty or only whitespace; send some words"
            ),
        },
    ),
    500: (
        "Unexpected server error, e.g. the forward pass of the batch holding this request failed. "
        "Other requests are not affected; `id` finds the logged traceback.",
        {
            "internal_error": error_example(
                "internal_error", "internal error; quote id 3f2a9c1e7b4d4e0a when reporting it"
            )
        },
    ),
    503: (
        'Not serving right now: the queue is full, or for `"explain": true` too many explanations are '
        "waiting (`overloaded`), the model is still loading (`not_ready`) or the server is shutting down "
        "(`shutting_down`). Retry after `Retry-After` seconds.",
        {
            "overloaded": error_example(
                "overloaded",
                "the server is at capacity (1024 texts queued, SENTIMENT_MAX_QUEUE_TEXTS=1024); retry",
            ),
            "explain_backlog": error_example(
                "overloaded",
                "too many explanations in progress (8150 sequences waiting, this request needs 65; "
                "SENTIMENT_MAX_EXPLAIN_BACKLOG=8192); retry after 1 s, or send fewer texts per explain "
                "request",
            ),
            "not_ready": error_example("not_ready", "the model is still loading; retry shortly"),
            "shutting_down": error_example(
                "shutting_down", "the server is shutting down; retry on another instance"
            ),
        },
    ),
    504: (
        "No result within SENTIMENT_REQUEST_TIMEOUT_S; the request's texts were dropped.",
        {"timeout": error_example("timeout", "no result within 30 s (SENTIMENT_REQUEST_TIMEOUT_S=30)")},
    ),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, examples = _ERRORS[status]
        entry: dict[str, Any] = {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"examples": {k: {"value": v} for k, v in examples.items()}}},
        }
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        elif status == 401:
            entry["headers"] = _WWW_AUTHENTICATE
        out[status] = entry
    return out


def _char_class(chars: str) -> str:
    """A regex character class body for `chars` (BMP): runs as ranges, every character as a \\uXXXX
    escape, which means the same in ECMA-262 (JSON Schema's dialect) and Python."""
    codes = sorted(map(ord, chars))
    runs: list[list[int]] = []
    for c in codes:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in runs)


# "Not blank" as core/engine.py checks it (`is_blank`: not only whitespace, control and invisible
# format characters), for the schema's `pattern`. Spelled out, because JSON Schema's `\S` is
# ECMA-262's, which differs from Python's (U+FEFF, U+001C-U+001F, U+0085).
NOT_ONLY_WHITESPACE = f"[^{_char_class(BLANK)}]"


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        props = schema["components"]["schemas"]["PredictRequest"]["properties"]
        text_limits = {
            "minLength": 1,
            "maxLength": settings.max_chars_per_text,
            "pattern": NOT_ONLY_WHITESPACE,
        }
        for branch in props["text"]["anyOf"]:
            if branch.get("type") == "string":
                branch.update(text_limits)
        for branch in props["texts"]["anyOf"]:
            if branch.get("type") == "array":
                branch["maxItems"] = settings.max_texts_per_request
                branch["items"].update(text_limits)
        # The serving model's labels (a reload cannot change them: core/model_swap.py), so clients
        # generated from the schema know them. Before the model is loaded the schema is not cached.
        engine = app.state.engine
        if engine is None:
            return schema
        active = engine.active
        models = schema["components"]["schemas"]
        models["Prediction"]["properties"]["label"]["enum"] = [*active.labels, UNKNOWN]
        models["SentenceScore"]["properties"]["label"]["enum"] = list(active.labels)
        for name in ("Prediction", "SentenceScore"):
            models[name]["properties"]["probabilities"]["propertyNames"] = {"enum": list(active.labels)}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
