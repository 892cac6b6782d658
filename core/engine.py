"""The engine: the active model, the batcher and the lifecycle phase, and the /predict pipeline in one
place with no HTTP in it:

    plan (tokenize; chunks, sentences)  ->  submit (to the batch queue)  ->  await (the batch worker's
    forward passes)  ->  reassemble (a text's pieces into its row)  ->  results (`Prediction`s)

`Engine.start` builds the engine complete (model loaded, batcher running), as text-embeddings-inference
builds its `Infer`: nothing in it is unset. `Engine.submit` runs the first two stages and returns a
`Pending`; `await pending.result()` runs the rest. The HTTP layer (app/) decodes the request before,
renders the results after (app/schemas.py), and maps the exceptions of core/errors.py to statuses.
Errors are raised, never answered, here."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import explain, long_text
from core.batcher import Batcher, InferFn, Job, overloaded_message
from core.errors import ClientGone, InvalidInput, NotReady, Overloaded, ShuttingDown, TimedOut
from core.explain import ExplainJob, ExplainLane
from core.metrics import Metrics
from core.settings import EngineSettings
from model.artifact import Artifact, ArtifactError, load_artifact, read_allowlist
from model.backends import BackendChoice, BackendUnavailable, Runner, load_runner
from model.labels import UNKNOWN, polarity, polarity_weights
from model.readability import Readability

log = logging.getLogger("core.engine")

# Test seam: wraps the model's inference function (e.g. to inject faults).
InferWrapper = Callable[[InferFn, Artifact], InferFn]
_SURROGATE = re.compile("[\ud800-\udfff]")
# What makes a text blank: whitespace, control characters (NUL included) and invisible format
# characters (zero-width space and joiners, BOM, soft hyphen, direction marks) of the Basic
# Multilingual Plane. A text of only these has no word to score (it was scored as [UNK], 0.88
# positive): 422 like an empty one. The BMP only, so that the OpenAPI schema's `pattern` can say the
# same (app/openapi.py): astral format characters (Unicode tags, musical beams) are not blank.
BLANK = "".join(c for c in map(chr, range(0x10000)) if c.isspace() or unicodedata.category(c) in ("Cc", "Cf"))


def is_blank(text: str) -> bool:
    return not text.strip(BLANK)


# What a request gets (NotReady, 503) while the model loads.
NOT_LOADED = "the model is still loading; retry shortly"

# Requests with more characters are planned in the planner thread (Engine.planned_in_thread): ~2 ms of
# tokenizing and layout, against ~0.03 ms for one review-length text.
PLAN_INLINE_CHARS = 8192


@dataclass(frozen=True, eq=False)
class ActiveModel:
    """The serving model and what derives from it, replaced as one object by a reload
    (core/model_swap.py). A request reads `engine.active` once, so the artifact that tokenizes its
    texts also scores them (jobs carry `infer`) and names itself in the response."""

    artifact: Artifact
    runner: Runner  # where its forward passes run (model/backends.py)
    infer: InferFn
    identity: dict[str, str]
    labels: list[str]
    readability: Readability
    polarity_weights: list[float] | None  # None: the labels are not sentiment names (no polarity)


# The warning a prediction carries when the model cannot read its text (its label is then UNKNOWN).
UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class SentencePrediction:
    """One sentence of a text scored on its own (`"sentences": true`)."""

    text: str
    start: int  # character offsets into the text
    end: int
    label: str
    score: float
    polarity: float | None
    probabilities: list[float]  # in the order of the model's labels


@dataclass(slots=True)
class Prediction:
    """One text's answer. `probabilities` are in the order of the model's labels; `score` and
    `polarity` are None when the label is UNKNOWN (or, for polarity, when the labels are not
    sentiment names). The HTTP layer renders it (app/schemas.py `render_predictions`)."""

    label: str
    score: float | None
    polarity: float | None
    probabilities: list[float]
    truncated: bool
    chunks: int
    warnings: list[str]
    sentences: list[SentencePrediction] | None = None
    explanation: explain.Explanation | None = None


@dataclass(frozen=True, slots=True)
class Predictions:
    """A request's answer: one Prediction per text, in input order, and the model that scored them."""

    model: ActiveModel
    predictions: list[Prediction]


def active_model(artifact: Artifact, runner: Runner, infer: InferFn) -> ActiveModel:
    """The ActiveModel of a loaded artifact: what rendering a prediction needs besides the rows."""
    return ActiveModel(
        artifact,
        runner,
        infer,
        {"name": str(artifact.meta["name"]), "version": str(artifact.meta["version"])},
        artifact.labels,
        Readability.of(artifact.tokenizer, **artifact.meta.get("readability", {})),
        polarity_weights(artifact.labels),
    )


def readable_flags(model: ActiveModel, plan: long_text.Plan) -> list[bool]:
    """Per text of the plan: whether the model can read the pieces its score comes from."""
    ids, readability = plan.ids, model.readability
    return [readability.readable(ids[j] for j in t.chunk_pieces) for t in plan.texts]


def _best(row: list[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def sentence_predictions(
    model: ActiveModel, result: long_text.TextResult, text: str
) -> list[SentencePrediction]:
    labels, weights = model.labels, model.polarity_weights
    out = []
    for start, end, row in result.sentences or ():
        best = _best(row)
        pol = polarity(row, weights) if weights is not None else None
        out.append(SentencePrediction(text[start:end], start, end, labels[best], row[best], pol, row))
    return out


def predictions(
    model: ActiveModel,
    results: Sequence[long_text.TextResult],
    readable: Sequence[bool] | None = None,
    texts: Sequence[str] | None = None,
) -> list[Prediction]:
    """One Prediction per text (`Pending.result`; scoring/ for files). `readable`: False for a text the
    model cannot read (model/readability.py), which gets the label UNKNOWN and no score or polarity;
    `texts`: given, the sentences the plan scored are added."""
    labels, weights = model.labels, model.polarity_weights
    preds = []
    for i, r in enumerate(results):
        row = r.row
        if readable is not None and not readable[i]:
            pred = Prediction(UNKNOWN, None, None, row, r.truncated, r.chunks, [UNREADABLE])
        else:
            best = _best(row)
            pol = polarity(row, weights) if weights is not None else None
            pred = Prediction(labels[best], row[best], pol, row, r.truncated, r.chunks, [])
        if texts is not None and r.sentences is not None:
            pred.sentences = sentence_predictions(model, r, texts[i])
        preds.append(pred)
    return preds


def text_problem(text: str, max_chars: int, limit_name: str) -> tuple[str, str] | None:
    """(kind, message) when a text cannot be scored as given, else None. `limit_name` names the setting
    behind max_chars in the message (an environment variable, a command-line flag)."""
    if len(text) > max_chars:
        return (
            "text_too_long",
            f"{len(text)} characters; at most {max_chars} per text ({limit_name}={max_chars})",
        )
    if is_blank(text):
        return "empty_text", "the text is empty or only whitespace or invisible characters; send some words"
    if not text.isascii() and _SURROGATE.search(text):
        # A "\ud800" escape is valid JSON but not Unicode; the tokenizer would raise.
        return (
            "invalid_unicode",
            "contains an unpaired surrogate (a \\ud800-\\udfff escape); send valid Unicode text",
        )
    return None


class Phase(enum.StrEnum):
    """What /ready reports. STARTING is the HTTP layer's (no engine yet); an engine is READY or DRAINING."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Options:
    """How to score a request's texts (the request's options, with the settings' defaults)."""

    long_text: long_text.Mode
    sentences: bool = False
    explain: bool = False


class Engine:
    """One per worker process, built complete by `Engine.start` (or the constructor, from a loaded
    model): the active model, the batcher, the explain lane and whether it is draining. The HTTP layer
    holds it in app.state once start-up has built it, and calls submit / check_ready."""

    def __init__(
        self,
        settings: EngineSettings,
        metrics: Metrics,
        artifact: Artifact,
        runner: Runner,
        *,
        infer_wrapper: InferWrapper | None = None,
        torch_threads: int = 1,
    ) -> None:
        """An engine serving `artifact` through `runner`; its batcher's worker starts with
        `start_worker` (on the event loop). `Engine.start` does both, and the warm-up between."""
        self.settings = settings
        self.metrics = metrics
        self.infer_wrapper = infer_wrapper
        self.torch_threads = torch_threads
        self.phase = Phase.READY
        infer = self.infer_for(artifact, runner)
        self.batcher = Batcher(
            infer,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=batch_tokens(settings, artifact),
            max_wait_ms=settings.max_wait_ms,
            coalesce=settings.coalesce_fraction,
            max_queue_texts=settings.max_queue_texts,
            max_bulk_texts=settings.max_bulk_queue_texts,
            metrics=metrics,
            split_pad_ratio=runner.split_pad_ratio,
            split_min_size=runner.split_min_size,
            # Only chunks and sentences make a request bulk: a request of plain texts never is.
            bulk_above=max(settings.max_batch_size, settings.max_texts_per_request),
        )
        self.active = active_model(artifact, runner, infer)
        metrics.model_info.labels(**self.active.identity).set(1)
        self.reload_lock = asyncio.Lock()  # one model reload at a time (core/model_swap.py)
        # Admission of explain requests' occlusion sequences (core/explain.py): kept across model swaps.
        self.explain_lane = ExplainLane(settings.explain_queue_texts, settings.max_explain_backlog)
        # Plans large requests (`submit_in_thread`) one at a time, off the event loop.
        self._planner = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="planner", initializer=_lower_priority
        )

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY and self.batcher.running

    def begin_drain(self) -> bool:
        """Stop taking new work (/ready and /predict answer 503); True the first time."""
        if self.phase is Phase.DRAINING:
            return False
        self.phase = Phase.DRAINING
        fields = {"event": "drain", "queued_texts": self.batcher.queued_texts}
        log.info("draining: /ready is 503 and new requests are refused", extra={"fields": fields})
        return True

    # --- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    async def start(
        cls, settings: EngineSettings, metrics: Metrics, infer_wrapper: InferWrapper | None = None
    ) -> Engine:
        """Load the artifact (every checksum verified first: a missing or corrupt one raises
        ArtifactError naming the file), build the engine, warm up, start the batch worker: the engine
        returned is ready."""
        loop = asyncio.get_running_loop()
        threads = settings.resolved_torch_threads()
        torch.set_num_threads(threads)
        try:
            allowed = model_allowlist(settings)
            artifact, runner = await loop.run_in_executor(
                None, functools.partial(load_model, settings, settings.model_dir, threads, allowed)
            )
        except (ArtifactError, BackendUnavailable) as e:
            log.critical("start-up failed: %s", e)
            raise
        engine = cls(settings, metrics, artifact, runner, infer_wrapper=infer_wrapper, torch_threads=threads)
        if settings.warmup:
            seconds = await loop.run_in_executor(None, warm_up, engine.batcher, artifact, settings)
            log.info("warm-up done in %.2f s", seconds)
        engine.batcher.start()
        identity = engine.active.identity
        log.info(
            "ready: model %s %s from %s, backend %s (SENTIMENT_BACKEND=%s), %d threads, max batch %d",
            identity["name"], identity["version"], artifact.path, runner.name, settings.backend,
            threads, settings.max_batch_size,
        )  # fmt: skip
        return engine

    async def close(self) -> None:
        """Refuse new work, let queued work finish for up to shutdown_grace_s, then stop."""
        self.begin_drain()
        t0 = time.perf_counter()
        await self.batcher.close(self.settings.shutdown_grace_s)
        fields = {"event": "drained", "seconds": round(time.perf_counter() - t0, 3)}
        log.info("drained: queued work finished or failed; the worker stopped", extra={"fields": fields})
        self._planner.shutdown(wait=False, cancel_futures=True)

    def load(self, path: Path, allowed: frozenset[str] | None = None) -> tuple[Artifact, Runner]:
        """`load_model` with this engine's settings and thread count (a model reload); blocking."""
        return load_model(self.settings, path, self.torch_threads, allowed)

    def infer_for(self, artifact: Artifact, runner: Runner) -> InferFn:
        infer = make_infer(runner)
        if self.infer_wrapper is not None:
            infer = self.infer_wrapper(infer, artifact)
        return infer

    def activate(self, artifact: Artifact, runner: Runner, infer: InferFn) -> ActiveModel:
        """Make `artifact` the serving model, in one step on the event loop (no await): requests
        that already hold the previous ActiveModel finish with it."""
        old = self.active
        active = active_model(artifact, runner, infer)
        self.active = active
        self.batcher.max_batch_tokens = batch_tokens(self.settings, artifact)
        self.batcher.split_pad_ratio = runner.split_pad_ratio
        self.batcher.split_min_size = runner.split_min_size
        self.batcher.set_infer(infer)
        info = self.metrics.model_info
        if old.identity != active.identity:
            info.labels(**old.identity).set(0)  # multi-process mode keeps the last value written
            info.remove(*old.identity.values())
        info.labels(**active.identity).set(1)
        return active

    # --- admission, before a request is read --------------------------------------------------------

    def refusal(self, body_bytes: int | None) -> Overloaded | None:
        """Would a /predict request of `body_bytes` (None: unknown) fit now? The Overloaded error it
        would get, judged before its body is read, parsed or tokenized, or None when it may fit: the
        lane of small requests cannot take even one more text (every request holds one), or the body
        is so large that it will be bulk (core/batcher.py) and the bulk lane has no room for it. Not
        ready: None (the request gets its 503 from check_ready)."""
        b = self.batcher
        if not self.ready:
            return None
        if b.full:
            return Overloaded(overloaded_message(b.queued_texts - b.bulk_queued, b.max_queue_texts))
        if b.bulk_queued and body_bytes is not None and body_bytes >= 1000:
            estimate = estimate_body_pieces(self.settings, self.active.artifact.max_length, body_bytes)
            if b.is_bulk(estimate) and not b.bulk_room(estimate):
                return Overloaded(overloaded_message(b.bulk_queued, b.max_bulk_texts, bulk=True))
        return None

    # --- the /predict pipeline -------------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready:
            if self.phase is Phase.DRAINING:
                raise ShuttingDown("the server is shutting down; retry on another instance")
            raise NotReady(NOT_LOADED)

    def check_limits(self, texts: Sequence[str], single: bool) -> None:
        """Per-request limits from the settings (the HTTP layer has checked types). `single`: the texts
        came as one `text`, which names the field in error locations."""
        s = self.settings
        if len(texts) > s.max_texts_per_request:
            raise InvalidInput(
                f"body.texts: {len(texts)} texts given; at most {s.max_texts_per_request} per request "
                f"(SENTIMENT_MAX_TEXTS_PER_REQUEST={s.max_texts_per_request}); split them over several "
                "requests",
                details=[{"loc": ["body", "texts"], "msg": "too many texts", "type": "too_many_texts"}],
            )
        problems: list[tuple[list[str | int], str, str]] = []
        for i, text in enumerate(texts):
            problem = text_problem(text, s.max_chars_per_text, "SENTIMENT_MAX_CHARS_PER_TEXT")
            if problem is not None:
                kind, msg = problem
                problems.append((["body", "text"] if single else ["body", "texts", i], msg, kind))
        if problems:
            raise InvalidInput(
                "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in problems),
                details=[{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in problems],
            )

    def planned_in_thread(self, texts: Sequence[str]) -> bool:
        """Whether planning these texts (tokenizing, chunks, sentences) is worth a thread: beyond
        PLAN_INLINE_CHARS characters it takes milliseconds (~0.2 s for 64 × 10,000) that would stall
        the event loop, and every other request with it."""
        return sum(map(len, texts)) > PLAN_INLINE_CHARS

    def submit(self, texts: list[str], options: Options, *, single: bool = False) -> Pending:
        """Stages plan and submit, on the event loop: check, tokenize into pieces and queue them as one
        batcher job. Raises NotReady, ShuttingDown, InvalidInput or Overloaded at once. For texts that
        `planned_in_thread`, use `submit_in_thread`."""
        self.check_ready()
        self.check_limits(texts, single)
        # Read once: a reload may swap the model while this request waits; it is scored and labelled
        # by the model that tokenized it.
        active = self.active
        # Tokenized here, not in the batch worker: both cost the same CPU per text (within 2%,
        # bench/results/tokenize_placement.md), and here the batcher gets the exact token counts its
        # length sort and split need, while the inference thread only runs forward passes.
        return self._enqueue(active, texts, options, self._plan(active, texts, options), False)

    async def submit_in_thread(
        self,
        texts: list[str],
        options: Options,
        *,
        single: bool = False,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> Pending:
        """`submit` for large requests: the cheap checks and an estimate of the pieces from the
        character counts first (a request that would not fit in the queue of large requests now gets
        503 before anything is tokenized), then the planning in the planner thread (one: large
        requests are planned one at a time, beside the event loop, not on it). `abandoned`: true once
        the client has gone; then the request is not planned, or not queued (ClientGone)."""
        self.check_ready()
        self.check_limits(texts, single)
        active, batcher = self.active, self.batcher
        s = self.settings
        max_length = active.artifact.max_length
        estimate = long_text.estimate_pieces(
            texts, max_length=max_length, mode=options.long_text, max_chunks=s.max_chunks_per_text
        )
        if batcher.is_bulk(estimate) and not batcher.bulk_room(estimate):
            raise Overloaded(overloaded_message(batcher.bulk_queued, batcher.max_bulk_texts, bulk=True))
        loop = asyncio.get_running_loop()
        plan = await loop.run_in_executor(self._planner, self._plan, active, texts, options, abandoned)
        self.check_ready()  # a drain may have begun meanwhile
        if abandoned():
            raise ClientGone("the client disconnected before its request was queued")
        return self._enqueue(active, texts, options, plan, True)

    def _plan(
        self,
        active: ActiveModel,
        texts: Sequence[str],
        options: Options,
        abandoned: Callable[[], bool] = lambda: False,
    ) -> long_text.Plan:
        if abandoned():  # the client left while this waited for the planner thread
            raise ClientGone("the client disconnected before its request was planned")
        s = self.settings
        max_length = active.artifact.max_length
        plan = long_text.plan(
            active.artifact.tokenizer,
            texts,
            max_length=max_length,
            mode=options.long_text,
            sentences=options.sentences,
            max_chunks=s.max_chunks_per_text,
            fast=active.artifact.ascii_ids,
            max_pieces=s.max_queue_texts,
        )
        if options.explain:
            explain.check_cost(plan, s.max_explain_tokens, max_length, s.max_explain_sequences)
        return plan

    def _enqueue(
        self, active: ActiveModel, texts: list[str], options: Options, plan: long_text.Plan, large: bool
    ) -> Pending:
        batcher = self.batcher
        behind = batcher.queued_texts >= batcher.max_batch_size  # read before this request joins
        job = batcher.submit(plan.ids, active.infer)
        return Pending(self, active, texts, options, plan, job, large, behind)


class Pending:
    """A submitted request: `await result()` for its Predictions, `drop()` when the caller has gone
    (its texts still queued never reach the model, and result() raises ClientGone).
    `behind_full_batch`: when it was queued, a full batch's worth of texts was ahead of it, so it waits
    at least one whole forward pass (the HTTP layer then watches for its client leaving at once)."""

    __slots__ = (
        "_engine", "_gone", "_job", "active", "batch_ids", "behind_full_batch", "large", "options", "plan",
        "texts",
    )  # fmt: skip

    def __init__(
        self,
        engine: Engine,
        active: ActiveModel,
        texts: list[str],
        options: Options,
        plan: long_text.Plan,
        job: Job,
        large: bool = False,
        behind_full_batch: bool = False,
    ) -> None:
        self._engine, self.active, self.texts, self.options, self.plan = engine, active, texts, options, plan
        self.large = large  # planned in the planner thread: so is its explanation
        self.behind_full_batch = behind_full_batch
        self._job: Job | ExplainJob = job
        self._gone = False
        self.batch_ids: list[int] = job.batch_ids

    def drop(self) -> None:
        self._gone = True
        self._job.drop()

    async def _wait(self, job: Job | ExplainJob, timeout: float) -> Any:
        self._job = job
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - result() is always awaited in a task
            raise RuntimeError("Pending.result() must run in an asyncio task")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        # A timer that cancels the task, as asyncio.timeout() does, at a third of its cost per request
        # (~2.5 µs against ~7 µs under uvloop).
        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.drop()
            if expired:
                task.uncancel()
                t = self._engine.settings.request_timeout_s
                raise TimedOut(
                    f"no result within {t:g} s (SENTIMENT_REQUEST_TIMEOUT_S={t:g}); the server is busy, "
                    "retry later"
                ) from None
            if not self._gone:
                raise  # the server is cancelling us: not ours to swallow
            raise ClientGone("the client disconnected before the result was ready") from None
        finally:
            timer.cancel()

    async def result(self) -> Predictions:
        """Stages await, reassemble and results (and explain, after the plain rows: only the occluded
        texts are scored then, through their own lane, core/explain.py). Raises TimedOut, BatchFailed,
        ShuttingDown, Overloaded (explain backlog) or ClientGone."""
        engine, active, texts, plan = self._engine, self.active, self.texts, self.plan
        deadline = time.monotonic() + engine.settings.request_timeout_s
        rows: list[list[float]] = await self._wait(self._job, engine.settings.request_timeout_s)
        results = long_text.reassemble(plan, rows)
        preds = predictions(
            active, results, readable_flags(active, plan), texts if self.options.sentences else None
        )
        if self.options.explain:
            tokenizer, max_tokens = active.artifact.tokenizer, engine.settings.max_explain_tokens
            chunks = explain.chunk_ids(plan)
            if self.large:
                items = await asyncio.get_running_loop().run_in_executor(
                    engine._planner, explain.prepare, tokenizer, texts, max_tokens, chunks
                )
            else:
                items = explain.prepare(tokenizer, texts, max_tokens, chunks)
            chunk_rows = [[rows[i] for i in t.chunk_pieces] for t in plan.texts]
            # Each explanation is of the label the response gives (in chunk mode the first chunk's own
            # label may differ); an unknown label: the model's own answer.
            targets = [_best(r.row) for r in results]
            lane, batcher = engine.explain_lane, engine.batcher
            job = explain.submit(lane, batcher, active.infer, items, chunk_rows, targets)
            explanations: list[explain.Explanation] = await self._wait(
                job, max(0.0, deadline - time.monotonic())
            )
            self.batch_ids = sorted({*self.batch_ids, *job.batch_ids})
            for pred, expl in zip(preds, explanations, strict=True):
                pred.explanation = expl
        return Predictions(active, preds)


def load_model(
    settings: EngineSettings, path: Path, threads: int, allowed: frozenset[str] | None = None
) -> tuple[Artifact, Runner]:
    """Load and verify an artifact (its model.pt in `allowed` when given: SENTIMENT_MODEL_ALLOWLIST)
    and prepare its backend (SENTIMENT_BACKEND); blocking, for a worker thread. Raises
    ArtifactError, or BackendUnavailable when a requested backend is not installed."""
    artifact = load_artifact(path, allowed=allowed)
    backend: BackendChoice = settings.backend
    return artifact, load_runner(artifact, backend, threads or 1)


def model_allowlist(settings: EngineSettings) -> frozenset[str] | None:
    """The digests of SENTIMENT_MODEL_ALLOWLIST (None when unset), read now. The list must not be in
    the model folder: whoever can write a model there could then list it too."""
    path = settings.model_allowlist
    if path is None:
        return None
    if path.resolve().is_relative_to(settings.model_root().resolve()):
        raise ArtifactError(
            f"{path}: the model allow-list (SENTIMENT_MODEL_ALLOWLIST) is inside the model folder; keep it "
            "where model files cannot be written, or it proves nothing"
        )
    return read_allowlist(path)


def _lower_priority() -> None:
    """The planner thread is background work: nice +10 (per thread on Linux), so that where it shares a
    core with the event loop and the inference thread, they get the core first (measured with the server
    on one CPU, bench/results/heavy_clients.md)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: only slower to yield
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def estimate_body_pieces(settings: EngineSettings, max_length: int, body_bytes: int) -> int:
    """The pieces a /predict body of this many bytes likely makes (a character is at least a byte):
    what RequestMiddleware checks against the bulk lane before reading the body."""
    per_chunk = max_length * long_text.CHARS_PER_TOKEN
    return min(settings.max_texts_per_request * settings.max_chunks_per_text, -(-body_bytes // per_chunk))


def batch_tokens(settings: EngineSettings, artifact: Artifact) -> int:
    """The batcher's token budget: SENTIMENT_MAX_BATCH_TOKENS, but at least one piece of max_length
    (8192 by default: a full batch of 128-token pieces, so only bulk pieces are bounded by it, to a
    quarter; core/batcher.py)."""
    return max(settings.max_batch_tokens, artifact.max_length)


def make_infer(model: Artifact | Runner) -> InferFn:
    """The batcher's inference function: an artifact's TorchScript model, or a backend's runner."""
    if isinstance(model, Artifact):
        return lambda ids: model.probabilities(ids).tolist()
    return model.probabilities


def warmup_shapes(max_batch_size: int, max_length: int) -> list[tuple[int, int]]:
    """(batch size, length) pairs covering what the batcher will send: powers of two up to the
    largest batch, short to maximum lengths."""
    sizes = sorted(
        {1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size} | {max_batch_size}
    )
    lengths = sorted({n for n in (4, 16, 48, max_length) if n <= max_length} or {max_length})
    return [(b, n) for b in sizes for n in lengths]


def warm_up(
    batcher: Batcher, artifact: Artifact, settings: EngineSettings, infer: InferFn | None = None
) -> float:
    """Run every warm-up shape in the inference thread, so the first real requests are not slow: the
    TorchScript executor profiles and optimises on the first calls (measured: the first call takes
    ~15x a steady one, the second ~2x) and the allocator grows its pools to the largest batch."""
    t0 = time.perf_counter()
    rng = random.Random(0)
    vocab = artifact.tokenizer.get_vocab_size()
    shapes = warmup_shapes(settings.max_batch_size, artifact.max_length)
    for i, (b, n) in enumerate(shapes):
        ids = [[rng.randrange(2, vocab) for _ in range(rng.randint(max(1, n // 2), n))] for _ in range(b)]
        ids[0] = ids[0] + [2] * (n - len(ids[0]))  # one text of exactly n tokens
        ids.sort(key=len, reverse=True)
        for _ in range(3 if i == 0 else 1):
            batcher.run_sync(ids, infer)
    return time.perf_counter() - t0
