"""Structured logging: one JSON object per line on stderr, for our loggers and uvicorn's."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)  # log.info("request", extra={"fields": {...}})
        if fields:
            out.update(fields)
        else:  # other `extra=` keys
            out.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))


# Our loggers: the HTTP layer, the engine (batcher, reloads, drain) and artifact loading.
LOGGERS = ("app", "core", "model")


def configure_logging(level: str) -> None:
    """JSON lines at `level` for every logger under LOGGERS (`core.*` had no handler: its warnings went
    out as plain text through Python's last-resort handler, and its info lines nowhere); idempotent
    (tests build many apps). One object per line whatever a message holds: a newline in it is escaped,
    so no client-supplied string can forge a log line."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(h, "_sentiment", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(JsonFormatter())
            handler._sentiment = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own lines (start-up, shutdown, errors) in the same JSON format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
