"""Live model updates (POST /admin/reload): load a new artifact beside the serving one, check it,
warm it up, then swap without dropping a request.

1. One reload at a time (`engine.reload_lock`): a second one waits, then runs against the new state.
2. Which artifact: the request's `model_dir` (relative to the model root, and never outside it), or
   else SENTIMENT_MODEL_DIR with its `latest` pointer resolved again now.
3. The same directory with the same checksums as the serving model: nothing to do (`changed: false`).
4. `Engine.load` in a worker thread (every sha256 verified, TorchScript and JSON only; the backend
   of SENTIMENT_BACKEND prepared and, for ONNX Runtime, checked against TorchScript) while the old
   model keeps serving; any ArtifactError is a 422 naming the file and the problem.
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
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.engine import warm_up
from core.errors import EngineError, IncompatibleArtifact, InvalidArtifact, InvalidInput, ShuttingDown
from model.artifact import META_FILE, Artifact, ArtifactError, read_meta, resolve_artifact_dir

if TYPE_CHECKING:
    from core.engine import Engine
    from core.settings import EngineSettings

log = logging.getLogger("core.model_swap")

SMOKE_TEXTS = ["a gorgeous , witty , seductive movie .", "a dull , lifeless and utterly boring mess ."]


def model_root(settings: EngineSettings) -> Path:
    """The folder reloads may load from: SENTIMENT_MODEL_DIR, or its parent when it is itself an
    artifact (then its siblings are the other versions)."""
    d = settings.model_dir
    if (d / META_FILE).exists() and not (d / "latest").exists():
        return d.parent
    return d


def target_dir(settings: EngineSettings, model_dir: str | None) -> Path:
    """The artifact directory a reload loads, resolved (symlinks followed)."""
    if model_dir is None:
        target = settings.model_dir  # its `latest` pointer is followed again now
    else:
        root = model_root(settings).resolve()
        given = Path(model_dir)
        target = given if given.is_absolute() else root / given
        if not target.resolve().is_relative_to(root):
            raise InvalidInput(
                f"body.model_dir: {model_dir} is outside the model root {root} (the folder of "
                "SENTIMENT_MODEL_DIR); give an artifact folder inside it, relative or absolute",
                details=[
                    {"loc": ["body", "model_dir"], "msg": "outside the model root", "type": "forbidden_path"}
                ],
            )
    try:
        return resolve_artifact_dir(target).resolve()
    except ArtifactError as e:
        raise invalid(e) from None


def invalid(e: ArtifactError) -> InvalidArtifact:
    return InvalidArtifact(f"{e}; the current model keeps serving")


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


async def reload_model(engine: Engine, model_dir: str | None) -> dict[str, Any]:
    """Load, check, warm up and activate an artifact; the body of a successful POST /admin/reload."""
    metrics = engine.metrics.model_reloads
    try:
        async with engine.reload_lock:
            result = await _reload(engine, model_dir)
    except EngineError as e:
        metrics.labels("failed" if isinstance(e, ShuttingDown) else "refused").inc()
        log.warning("model reload refused (%s): %s", type(e).__name__, e.message)
        raise
    except Exception:
        metrics.labels("failed").inc()
        log.exception("model reload failed")
        raise
    metrics.labels("swapped" if result["changed"] else "unchanged").inc()
    return result


async def _reload(engine: Engine, model_dir: str | None) -> dict[str, Any]:
    settings, batcher, old = engine.settings, engine.batcher, engine.active
    assert batcher is not None and old is not None
    loop = asyncio.get_running_loop()
    path = await loop.run_in_executor(None, target_dir, settings, model_dir)
    seconds = {"load": 0.0, "smoke": 0.0, "warmup": 0.0}
    if path == old.artifact.path.resolve():
        try:
            same = read_meta(path)["files"] == old.artifact.meta["files"]
        except ArtifactError as e:
            raise invalid(e) from None
        if same:
            return _result(old.identity, old.identity, path, False, seconds)

    t0 = time.perf_counter()
    try:
        artifact, runner = await loop.run_in_executor(None, engine.load, path)
    except ArtifactError as e:
        raise invalid(e) from None
    seconds["load"] = time.perf_counter() - t0
    if artifact.labels != old.labels:
        raise IncompatibleArtifact(
            f"{path / META_FILE}: labels {artifact.labels} differ from the serving model's {old.labels}; "
            "clients rely on the labels, so changing them needs a restart. The current model keeps serving",
        )

    infer = engine.infer_for(artifact, runner)
    t0 = time.perf_counter()
    try:
        ids = sorted(artifact.tokenize(SMOKE_TEXTS)[0], key=len, reverse=True)
        rows = await loop.run_in_executor(None, batcher.run_sync, ids, infer)
        smoke_check(rows, artifact)
    except ArtifactError as e:
        raise invalid(e) from None
    except Exception as e:  # the model raised: the artifact is unusable
        raise invalid(ArtifactError(f"{path / 'model.pt'}: the smoke prediction failed ({e})")) from None
    seconds["smoke"] = time.perf_counter() - t0
    if settings.warmup:
        seconds["warmup"] = await loop.run_in_executor(None, warm_up, batcher, artifact, settings, infer)

    if not engine.ready:  # shutdown began while loading: nothing to swap into
        raise ShuttingDown("the server began shutting down during the reload; the model was not swapped")
    new = engine.activate(artifact, runner, infer)
    log.info(
        "model reloaded: %s %s -> %s %s from %s (load %.2f s, smoke %.3f s, warm-up %.2f s)",
        *old.identity.values(), *new.identity.values(), path, *seconds.values(),
    )  # fmt: skip
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
