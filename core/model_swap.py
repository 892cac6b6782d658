"""Live model updates (POST /admin/reload): load a new artifact beside the serving one, check it,
warm it up, then swap without dropping a request.

1. One reload at a time (`engine.reload_lock`): a second one waits, then runs against the new state.
2. Which artifact: the request's `model_dir` (relative to the model root), or else
   SENTIMENT_MODEL_DIR with its `latest` pointer resolved again now; either way fully resolved
   (`latest` and every symlink followed) and refused unless it is inside the model root. A path
   string that no file system would take (NUL, a 300-byte part) is a 422 too, not a 500.
3. The same directory with the same checksums as the serving model: nothing to do (`changed: false`).
4. `Engine.load` in a worker thread (every file inside the folder, every sha256 verified, model.pt
   in SENTIMENT_MODEL_ALLOWLIST when set, TorchScript and JSON only; the backend of SENTIMENT_BACKEND
   prepared and, for ONNX Runtime, checked against TorchScript) while the old model keeps serving;
   any ArtifactError is a 422 naming the file (relative to the model root: no host paths in answers)
   and the problem (torch's own text goes to the log only).
5. Its labels must equal the serving model's (clients rely on them): else 409.
6. A smoke prediction, then the warm-up shapes (SENTIMENT_WARMUP), each as its own call in the
   inference thread, so served batches run between them instead of waiting for the whole warm-up.
7. The swap: `Engine.activate`, one synchronous step on the event loop. Requests read
   `engine.active` once; jobs carry their model's inference function and the batcher never mixes
   two models in one forward pass (core/batcher.py), so every request is tokenized, scored and
   labelled by one model, old or new, and the old one is freed when its last job has finished.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.engine import Engine, model_allowlist, warm_up
from core.errors import EngineError, IncompatibleArtifact, InvalidArtifact, InvalidInput, ShuttingDown
from model.artifact import META_FILE, Artifact, ArtifactError, read_meta, resolve_artifact_dir

if TYPE_CHECKING:
    from core.settings import EngineSettings

log = logging.getLogger("core.model_swap")

SMOKE_TEXTS = ["a gorgeous , witty , seductive movie .", "a dull , lifeless and utterly boring mess ."]


def model_root(settings: EngineSettings) -> Path:
    """The folder reloads may load from (EngineSettings.model_root)."""
    return settings.model_root()


# A file name part longer than this is refused by every common file system (ENAMETOOLONG).
MAX_NAME_BYTES = 255


def _forbidden(model_dir: str, problem: str, kind: str) -> InvalidInput:
    return InvalidInput(
        f"body.model_dir: {model_dir[:200]!r} {problem}; give an artifact folder inside the model root (the "
        "folder of SENTIMENT_MODEL_DIR), relative to it or absolute",
        details=[{"loc": ["body", "model_dir"], "msg": problem, "type": kind}],
    )


def check_model_dir(model_dir: str) -> None:
    """A path string no file system call will choke on: no control character (NUL raised ValueError,
    a newline split log lines), no part longer than a file name can be (ENAMETOOLONG)."""
    if any(ord(c) < 32 or c == "\x7f" for c in model_dir):
        raise _forbidden(model_dir, "contains a control character", "invalid_path")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in model_dir.split("/")):
        raise _forbidden(model_dir, f"has a part longer than {MAX_NAME_BYTES} bytes", "invalid_path")


def target_dir(settings: EngineSettings, model_dir: str | None) -> Path:
    """The artifact directory a reload loads, fully resolved (`latest` and every symlink followed),
    and inside the model root: checked on the name first, so that nothing outside is even looked at,
    then again once resolved. Raises InvalidInput or InvalidArtifact."""
    root = model_root(settings).resolve()
    if model_dir is None:
        target = settings.model_dir  # its `latest` pointer is followed again now
        shown = "SENTIMENT_MODEL_DIR"  # the operator's setting: not echoed (a host path)
    else:
        check_model_dir(model_dir)
        given = Path(model_dir)
        target = given if given.is_absolute() else root / given
        shown = model_dir
    try:
        if not target.resolve().is_relative_to(root):
            raise _forbidden(shown, "is outside the model root", "forbidden_path")
        found = resolve_artifact_dir(target).resolve()
    except ArtifactError as e:
        raise invalid(e, root) from None
    except (OSError, ValueError) as e:  # unreadable, a symlink loop, ...: the type says enough
        raise InvalidArtifact(
            f"{shown[:200]!r} cannot be read ({type(e).__name__}); the current model keeps serving"
        ) from None
    if not found.is_relative_to(root):  # `latest`, or the folder, is a symlink leading out of the root
        raise _forbidden(shown, "leads outside the model root (a symlink)", "forbidden_path")
    return found


def public_message(e: ArtifactError, root: Path) -> str:
    """The error for an API answer: paths relative to the model root, no library text."""
    return e.message.replace(f"{root}/", "").replace(str(root), ".")


def invalid(e: ArtifactError, root: Path) -> InvalidArtifact:
    return InvalidArtifact(f"{public_message(e, root)}; the current model keeps serving")


def smoke_check(rows: list[list[float]], artifact: Artifact) -> None:
    """The new model's first answers must be well-formed probabilities over its labels."""
    where = artifact.path / "model.pt"
    labels = artifact.labels
    if len(rows) != len(SMOKE_TEXTS) or any(len(r) != len(labels) for r in rows):
        shape = [len(r) for r in rows]
        raise ArtifactError(
            f"{where}: the smoke prediction returned rows of sizes {shape} for {len(SMOKE_TEXTS)} texts "
            f"and {len(labels)} labels {labels}"
        )
    for r in rows:
        if not all(math.isfinite(x) for x in r) or abs(sum(r) - 1) > 1e-3:
            raise ArtifactError(f"{where}: the smoke prediction gave {r}, not probabilities")


async def reload_model(engine: Engine, model_dir: str | None, who: str = "-") -> dict[str, Any]:
    """Load, check, warm up and activate an artifact; the body of a successful POST /admin/reload.
    Logs one line per reload: who asked (`who`: the client and request id), for what, and the result."""
    metrics = engine.metrics.model_reloads
    fields: dict[str, Any] = {"event": "model_reload", "who": who, "model_dir": model_dir}
    try:
        async with engine.reload_lock:
            result = await _reload(engine, model_dir, fields)
    except EngineError as e:
        outcome = "failed" if isinstance(e, ShuttingDown) else "refused"
        metrics.labels(outcome).inc()
        fields.update(result=outcome, error=type(e).__name__, message=e.message)
        log.warning("model reload %s", outcome, extra={"fields": fields})
        raise
    except Exception:
        metrics.labels("failed").inc()
        fields.update(result="failed")
        log.exception("model reload failed", extra={"fields": fields})
        raise
    outcome = "swapped" if result["changed"] else "unchanged"
    metrics.labels(outcome).inc()
    fields.update(
        result=outcome, model=result["model"], previous=result["previous"], path=result["path"],
        seconds=result["seconds"],
    )  # fmt: skip
    log.info("model reload %s", outcome, extra={"fields": fields})
    return result


async def _reload(engine: Engine, model_dir: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    settings, batcher, old = engine.settings, engine.batcher, engine.active
    loop = asyncio.get_running_loop()
    root = model_root(settings).resolve()
    path = await loop.run_in_executor(None, target_dir, settings, model_dir)
    seconds = {"load": 0.0, "smoke": 0.0, "warmup": 0.0}
    if path == old.artifact.path.resolve():
        try:
            same = read_meta(path)["files"] == old.artifact.meta["files"]
        except ArtifactError as e:
            raise invalid(e, root) from None
        if same:
            return _result(old.identity, old.identity, path, False, seconds)

    t0 = time.perf_counter()
    try:
        allowed = model_allowlist(settings)  # re-read: an operator may have listed a new model
        load = functools.partial(engine.load, path, allowed=allowed)
        artifact, runner = await loop.run_in_executor(None, load)
    except ArtifactError as e:
        fields["detail"] = str(e)  # the full text (torch's own included) for the log line
        raise invalid(e, root) from None
    seconds["load"] = time.perf_counter() - t0
    if artifact.labels != old.labels:
        raise IncompatibleArtifact(
            f"{(path / META_FILE).relative_to(root)}: labels {artifact.labels} differ from the serving "
            f"model's {old.labels}; clients rely on the labels, so changing them needs a restart. The "
            "current model keeps serving",
        )

    infer = engine.infer_for(artifact, runner)
    t0 = time.perf_counter()
    try:
        ids = sorted(artifact.tokenize(SMOKE_TEXTS)[0], key=len, reverse=True)
        rows = await loop.run_in_executor(None, batcher.run_sync, ids, infer)
        smoke_check(rows, artifact)
    except ArtifactError as e:
        raise invalid(e, root) from None
    except Exception as e:  # the model raised: the artifact is unusable
        fields["detail"] = str(e)
        error = ArtifactError(f"{path / 'model.pt'}: the smoke prediction failed ({type(e).__name__})")
        raise invalid(error, root) from None
    seconds["smoke"] = time.perf_counter() - t0
    if settings.warmup:
        seconds["warmup"] = await loop.run_in_executor(None, warm_up, batcher, artifact, settings, infer)

    if not engine.ready:  # shutdown began while loading: nothing to swap into
        raise ShuttingDown("the server began shutting down during the reload; the model was not swapped")
    new = engine.activate(artifact, runner, infer)
    return _result(new.identity, old.identity, path, True, seconds)


def _result(
    model: dict[str, str], previous: dict[str, str], path: Path, changed: bool, seconds: dict[str, float]
) -> dict[str, Any]:
    return {
        "model": model,
        "previous": previous,
        "changed": changed,
        "path": str(path),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
