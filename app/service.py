"""The running service: loaded artifact, batcher and lifecycle phase, plus the lifespan that builds
and tears them down. Routes get the `Service` through dependencies (app/deps.py), never a global."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from fastapi import FastAPI

from app.batcher import Batcher, InferFn
from app.explain import ExplainLane
from app.metrics import Metrics
from app.settings import Settings
from model.artifact import Artifact, ArtifactError, load_artifact

log = logging.getLogger("app.service")

# Test seam: wraps the model's inference function (e.g. to inject faults).
InferWrapper = Callable[[InferFn, Artifact], InferFn]


@dataclass(frozen=True, eq=False)
class ActiveModel:
    """The serving model and what derives from it, replaced as one object by a reload
    (app/model_swap.py). A request reads `service.active` once, so the artifact that tokenizes its
    texts also scores them (jobs carry `infer`) and names itself in the response."""

    artifact: Artifact
    infer: InferFn
    identity: dict[str, str]
    labels: list[str]


class Phase(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class Service:
    def __init__(
        self, settings: Settings, metrics: Metrics, infer_wrapper: InferWrapper | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.infer_wrapper = infer_wrapper
        self.phase = Phase.STARTING
        self.batcher: Batcher | None = None
        self.active: ActiveModel | None = None
        self.reload_lock = asyncio.Lock()  # one model reload at a time (app/model_swap.py)
        self.torch_threads = 0
        # Admission of explain requests' occlusion sequences (app/explain.py): kept across model swaps.
        self.explain_lane = ExplainLane(settings.explain_queue_texts, settings.max_explain_backlog)

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY and self.batcher is not None and self.batcher.running

    def begin_drain(self) -> bool:
        """Stop taking new work (/ready and /predict answer 503); True the first time."""
        if self.phase is Phase.DRAINING:
            return False
        self.phase = Phase.DRAINING
        log.info("draining: /ready is 503 and new requests are refused")
        return True

    def infer_for(self, artifact: Artifact) -> InferFn:
        infer = make_infer(artifact)
        if self.infer_wrapper is not None:
            infer = self.infer_wrapper(infer, artifact)
        return infer

    def activate(self, artifact: Artifact, infer: InferFn) -> ActiveModel:
        """Make `artifact` the serving model, in one step on the event loop (no await): requests
        that already hold the previous ActiveModel finish with it."""
        old = self.active
        active = ActiveModel(
            artifact,
            infer,
            {"name": str(artifact.meta["name"]), "version": str(artifact.meta["version"])},
            artifact.labels,
        )
        self.active = active
        if self.batcher is not None:
            self.batcher.set_infer(infer)
        info = self.metrics.model_info
        if old is not None and old.identity != active.identity:
            info.labels(**old.identity).set(0)  # multi-process mode keeps the last value written
            info.remove(*old.identity.values())
        info.labels(**active.identity).set(1)
        return active

    def render(
        self,
        rows: list[list[float]],
        truncated: list[bool],
        *,
        model: ActiveModel | None = None,
        chunks: list[int] | None = None,
        extra: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The /predict body, built as plain dicts (orjson serialises them; no pydantic per request).
        `model`: the ActiveModel that scored the rows (default: the current one); `extra`: more
        fields per prediction (e.g. `sentences`)."""
        model = model or self.active
        assert model is not None  # only called once a model is active
        labels = model.labels
        preds = []
        for i, (row, cut) in enumerate(zip(rows, truncated, strict=True)):
            best = max(range(len(row)), key=row.__getitem__)
            probabilities = dict(zip(labels, row, strict=True))
            pred = {
                "label": labels[best],
                "score": row[best],
                "probabilities": probabilities,
                "truncated": cut,
                "chunks": chunks[i] if chunks is not None else 1,
            }
            if extra is not None:
                pred.update(extra[i])
            preds.append(pred)
        return {"model": model.identity, "predictions": preds}


def make_infer(artifact: Artifact) -> InferFn:
    def infer(ids: list[list[int]]) -> list[list[float]]:
        return artifact.probabilities(ids).tolist()

    return infer


def warmup_shapes(max_batch_size: int, max_batch_tokens: int, max_length: int) -> list[tuple[int, int]]:
    """(batch size, length) pairs covering what the batcher will send: powers of two up to the
    largest batch, short to maximum lengths, within the token budget."""
    sizes = sorted(
        {1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size} | {max_batch_size}
    )
    lengths = sorted({n for n in (4, 16, 48, max_length) if n <= max_length} or {max_length})
    return [(b, n) for b in sizes for n in lengths if b * n <= max_batch_tokens or b == 1]


def warm_up(batcher: Batcher, artifact: Artifact, settings: Settings, infer: InferFn | None = None) -> float:
    """Run every warm-up shape in the inference thread, so the first real requests are not slow: the
    TorchScript executor profiles and optimises on the first calls (measured: the first call takes
    ~15x a steady one, the second ~2x) and the allocator grows its pools to the largest batch."""
    t0 = time.perf_counter()
    rng = random.Random(0)
    vocab = artifact.tokenizer.get_vocab_size()
    shapes = warmup_shapes(settings.max_batch_size, settings.max_batch_tokens, artifact.max_length)
    for i, (b, n) in enumerate(shapes):
        ids = [[rng.randrange(2, vocab) for _ in range(rng.randint(max(1, n // 2), n))] for _ in range(b)]
        ids[0] = ids[0] + [2] * (n - len(ids[0]))  # one text of exactly n tokens
        ids.sort(key=len, reverse=True)
        for _ in range(3 if i == 0 else 1):
            batcher.run_sync(ids, infer)
    return time.perf_counter() - t0


def _install_drain_signals(service: Service, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Chain a handler in front of the server's SIGTERM/SIGINT handler: mark the service draining at
    once (/ready 503, new work refused), then let the server stop accepting and finish in-flight
    requests, after `drain_delay_s` so load balancers see /ready fail first."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    delay = service.settings.drain_delay_s
    installed: dict[int, Any] = {}

    def chain(prev: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            first = service.begin_drain()
            if first and delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, prev, signum, frame)
            else:
                prev(signum, frame)

        return handler

    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)
        if callable(prev):  # a server's handler (uvicorn, gunicorn worker) to chain to
            handler = chain(prev)
            signal.signal(sig, handler)
            installed[sig] = (prev, handler)

    def restore() -> None:
        for sig, (prev, handler) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, prev)

    return restore


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    settings = service.settings
    loop = asyncio.get_running_loop()
    service.phase = Phase.STARTING
    service.torch_threads = settings.resolved_torch_threads()
    torch.set_num_threads(service.torch_threads)
    try:
        # Checksums first (load_artifact verifies every sha256 before unpickling anything): a missing
        # or corrupt artifact stops start-up here, naming the file.
        artifact = await loop.run_in_executor(None, load_artifact, settings.model_dir)
    except ArtifactError as e:
        log.critical("start-up failed: %s", e)
        raise
    infer = service.infer_for(artifact)
    batcher = Batcher(
        infer,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_ms=settings.max_wait_ms,
        coalesce=settings.coalesce_fraction,
        max_queue_texts=settings.max_queue_texts,
        metrics=service.metrics,
    )
    if settings.warmup:
        seconds = await loop.run_in_executor(None, warm_up, batcher, artifact, settings)
        log.info("warm-up done in %.2f s", seconds)
    service.batcher = batcher
    identity = service.activate(artifact, infer).identity
    batcher.start()
    restore_signals = _install_drain_signals(service, loop)
    service.phase = Phase.READY
    log.info(
        "ready: model %s %s from %s, torch threads %d, max batch %d",
        identity["name"], identity["version"], artifact.path, service.torch_threads,
        settings.max_batch_size,
    )  # fmt: skip
    try:
        yield
    finally:
        service.begin_drain()
        await batcher.close(settings.shutdown_grace_s)
        restore_signals()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # drop this worker from live gauges
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
        log.info("stopped")
