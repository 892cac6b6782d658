"""What the engine refuses or fails, as plain exceptions whose message tells the client what to do.

No status codes here: app/errors.py maps each class to a status, an error code and whether the
answer carries Retry-After, in one table."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every error the engine raises on purpose; `message` is meant for the client."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details  # [{"loc": [...], "msg": ..., "type": ...}] for input errors


class InvalidInput(EngineError):
    """The request's texts or options break a limit (too many, too long, empty, not Unicode)."""


class Overloaded(EngineError):
    """No room in the queue (or the explain backlog) for the request's texts: retry later."""


class NotReady(EngineError):
    """The model is still loading."""


class ShuttingDown(EngineError):
    """The engine takes no new work: it is stopping."""


class TimedOut(EngineError):
    """No result within the request timeout; the request's texts were dropped."""


class ClientGone(EngineError):
    """The caller went away before the result was ready; its texts were dropped."""


class BatchFailed(EngineError):
    """The forward pass of a batch holding some of the request's texts raised."""

    def __init__(self, batch_id: int, cause: BaseException) -> None:
        super().__init__(f"batch {batch_id} failed: {type(cause).__name__}: {cause}")
        self.batch_id = batch_id
        self.cause = cause


class InvalidArtifact(EngineError):
    """A model reload was refused: the artifact is missing, corrupt or unusable (names the file)."""


class IncompatibleArtifact(EngineError):
    """A model reload was refused: the new artifact's labels differ from the serving model's."""
