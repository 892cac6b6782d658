"""Dynamic batching: texts from concurrent requests share forward passes.

Requests put their (already tokenized) texts into a queue bounded in texts. A single worker task takes
what is waiting, up to `max_batch_size` texts and `max_batch_tokens` tokens, sorts the batch by
length and runs the forward pass in a one-thread executor, so the event loop keeps accepting and
parsing requests meanwhile. There is no timer when idle: a lone request is run at once, and batches
form by themselves from what arrives while the previous batch computes (continuous batching as in
text-embeddings-inference). `max_wait_ms` > 0 optionally holds a non-full batch open for more company.
Under load only (the previous batch had several texts), `coalesce` lets the worker wait up to that
fraction of the last forward pass for the clients it just answered: closed-loop clients otherwise
settle into two half-size groups that alternate forever (measured with 64 clients: mean batch 32 ->
63, texts/s +5%, p50 and p99 lower).

Fair sharing. A request with more pieces than one batch holds (64 texts of 10,000 characters are
1,024 chunks; the engine's threshold is the larger of that and the texts a request may have) is
*bulk*: it goes into its own lane, bounded in texts too (`max_bulk_texts`), so it can never fill the
room small requests need. Each batch takes the small requests first, oldest first and whole
(up to 7/8 of the batch while bulk work waits, so bulk always progresses), then up to
`bulk_share` pieces of each bulk request in turn, then fills what room is left from the oldest bulk
request. A small request therefore waits for the batch computing now and is in the next one, however
much bulk work is queued. A batch holds at most a quarter of `max_batch_tokens` of bulk pieces, which
bounds how long a batch takes while bulk work runs (TEI bounds its batches by tokens the same way).
Explain requests' occlusion sequences are bulk too (core/explain.py).

A request with more texts than fit in one batch spans several and is reassembled in order. A
request that is dropped (client gone, timeout) gives its queue room back at once and its remaining
texts never reach the model. An exception in a forward pass fails only the requests in that batch.

Each job carries the inference function (the model) it was submitted for, and a batch never mixes two:
a request tokenized by one model is scored by that model even if a reload (core/model_swap.py) swaps
the default while it waits. Small requests are FIFO, so a swap costs at most one short batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from core.errors import BatchFailed, Overloaded, ShuttingDown

if TYPE_CHECKING:
    from core.metrics import Metrics

log = logging.getLogger("core.batcher")

# Runs in the executor thread: token ids (sorted longest first) -> one probability row per text.
InferFn = Callable[[list[list[int]]], list[list[float]]]


def split_by_length(lengths: Sequence[int], pad_ratio: float, min_size: int) -> list[int]:
    """Cut points for a batch sorted longest first: a new forward pass starts where padding would
    push the pass's padded tokens above pad_ratio × its real tokens, once it has min_size texts.

    Why: the packed LSTM skips padding, but embedding, sorting and pooling run on the padded tensor,
    and a long text's tail steps run at a tiny effective batch. On a realistic mix of short and long
    reviews, two or three length-homogeneous passes beat one padded pass by ~10% (bench/results/serve.md,
    in-process rows "one forward" vs "batcher path")."""
    cuts = [0]
    start = real = 0
    for i, n in enumerate(lengths):
        if i - start >= min_size and lengths[start] * (i - start + 1) > pad_ratio * (real + n):
            cuts.append(i)
            start, real = i, 0
        real += n
    cuts.append(len(lengths))
    return cuts


def overloaded_message(queued: int, limit: int, bulk: bool = False) -> str:
    if bulk:
        return (
            f"the server is at capacity for large requests ({queued} of {limit} pieces of large requests "
            f"waiting; SENTIMENT_MAX_BULK_QUEUE_TEXTS={limit}); retry shortly"
        )
    return (
        f"the server is at capacity (queue full: {queued} of {limit} texts waiting; "
        f"SENTIMENT_MAX_QUEUE_TEXTS={limit}); retry shortly"
    )


class Job:
    """One request's texts on their way through the queue."""

    __slots__ = (
        "_batcher", "batch_ids", "bulk", "enqueued_at", "future", "ids", "infer", "next", "remaining",
        "rows",
    )  # fmt: skip

    def __init__(
        self,
        batcher: Batcher,
        ids: list[list[int]],
        future: asyncio.Future[list[list[float]]],
        infer: InferFn,
        bulk: bool = False,
    ) -> None:
        self._batcher = batcher
        self.bulk = bulk  # in the bulk lane (see the module docstring)
        self.ids = ids
        self.infer = infer  # the model that tokenized these texts scores them
        self.future = future
        self.rows: list[list[float]] = [None] * len(ids)  # type: ignore[list-item]  # filled per batch
        self.next = 0  # first text not yet handed to a batch
        self.remaining = len(ids)  # texts without a result yet
        self.enqueued_at = time.perf_counter()
        self.batch_ids: list[int] = []

    def drop(self) -> None:
        """Give up on this job: texts still queued are never run and their queue room is freed."""
        self._batcher._drop(self)
        if not self.future.done():
            self.future.cancel()


class _Batch:
    __slots__ = ("id", "ids", "infer", "order", "segments")

    def __init__(
        self,
        segments: list[tuple[Job, int, int]],
        order: list[tuple[int, int, int]],
        ids: list[list[int]],
        infer: InferFn,
    ) -> None:
        self.id = 0
        self.infer = infer
        self.segments = segments  # (job, start, end): texts job.ids[start:end] are in this batch
        self.order = order  # (length, segment index, text index) of each row of `ids`
        self.ids = ids  # token ids, longest first


class _Fill:
    """A batch being filled: texts picked so far, within a size and a token limit."""

    __slots__ = ("full", "infer", "picked", "segments", "size_limit", "token_limit", "tokens")

    def __init__(self, size_limit: int, token_limit: int) -> None:
        self.size_limit, self.token_limit = size_limit, token_limit
        self.segments: list[tuple[Job, int, int]] = []
        self.picked: list[tuple[int, int, int]] = []  # (length, segment index, offset in job)
        self.tokens = 0
        self.full = False
        self.infer: InferFn | None = None

    def add(self, job: Job, stop: int) -> int:
        """Take job's next texts up to index `stop` while they fit; returns how many were taken."""
        start = end = job.next
        seg = len(self.segments)
        picked, ids = self.picked, job.ids
        for i in range(start, stop):
            n = len(ids[i])
            if picked and (len(picked) >= self.size_limit or self.tokens + n > self.token_limit):
                self.full = True
                break
            self.tokens += n
            picked.append((n, seg, i))
            end = i + 1
        if end > start:
            self.segments.append((job, start, end))
            self.infer = job.infer
            job.next = end
        return end - start


class Batcher:
    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch_size: int = 64,
        max_batch_tokens: int = 16384,
        bulk_share: int | None = None,
        bulk_above: int | None = None,
        max_wait_ms: float = 0.0,
        max_queue_texts: int = 1024,
        max_bulk_texts: int | None = None,
        metrics: Metrics | None = None,
        split_pad_ratio: float = 1.5,
        split_min_size: int = 8,
        coalesce: float = 0.0,
    ) -> None:
        self.coalesce = coalesce
        self._infer = infer
        self.split_pad_ratio = split_pad_ratio
        self.split_min_size = split_min_size
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens  # tokens (not padding) in one batch
        # Pieces of each bulk request a batch takes in turn before filling up from the oldest one.
        self.bulk_share = bulk_share or max(1, max_batch_size // 8)
        # Bulk pieces in one batch: at most a quarter of the token budget, so a batch holding them
        # takes a quarter as long (at the same throughput: long pieces run as fast in batches of 16
        # as of 64) and a small request arriving behind it waits that much less.
        self.bulk_tokens = max(1, max_batch_tokens // 4)
        # A request with more texts than this is bulk (default: more than one batch holds).
        self.bulk_above = bulk_above or max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue_texts = max_queue_texts
        self.max_bulk_texts = max_bulk_texts or max_queue_texts  # the bulk lane's bound
        self._metrics = metrics
        self._queue: deque[Job] = deque()
        self._queued = 0  # texts in the queue not yet handed to a batch
        self._bulk: deque[Job] = deque()  # the bulk lane: requests with more pieces than one batch
        self._bulk_queued = 0
        # One thread: forward passes never overlap (torch already parallelises inside one).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        # Bound to the running loop on first use (Python >= 3.10), so it can exist before start().
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopping = False
        self._busy = False
        self._batch_id = 0

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and self._accepting

    @property
    def queued_texts(self) -> int:
        """Texts waiting in both lanes."""
        return self._queued + self._bulk_queued

    @property
    def bulk_queued(self) -> int:
        """Texts waiting in the bulk lane."""
        return self._bulk_queued

    @property
    def full(self) -> bool:
        """The lane of small requests cannot take even one more text (a request of any size would
        be refused now, or, if bulk, soon): what the HTTP layer sheds on before reading a body."""
        return self._queued >= self.max_queue_texts

    def is_bulk(self, pieces: int) -> bool:
        return pieces > self.bulk_above

    def bulk_room(self, pieces: int) -> bool:
        """Whether the bulk lane could take `pieces` more now (an empty lane takes any request)."""
        return not self._bulk_queued or self._bulk_queued + pieces <= self.max_bulk_texts

    def run_sync(self, ids: list[list[int]], infer: InferFn | None = None) -> list[list[float]]:
        """Run a batch (sorted longest first) in the inference thread, blocking: for warm-up (before
        start(), or of a model being loaded, between the batches being served) and for in-process
        benchmarks of exactly the server's execution path. `infer` defaults to the current model."""
        return self._executor.submit(self._run_batch, ids, infer or self._infer).result()

    def set_infer(self, infer: InferFn) -> None:
        """Score jobs submitted from now on with `infer`; queued jobs keep the one they came with."""
        self._infer = infer

    def _run_batch(self, ids: list[list[int]], infer: InferFn) -> list[list[float]]:
        if len(ids) <= self.split_min_size:
            return infer(ids)
        cuts = split_by_length([len(x) for x in ids], self.split_pad_ratio, self.split_min_size)
        if len(cuts) == 2:
            return infer(ids)
        rows: list[list[float]] = []
        for start, end in itertools.pairwise(cuts):
            rows += infer(ids[start:end])
        return rows

    def start(self) -> None:
        """Start the worker; call from within the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")
        self._accepting = True

    async def close(self, grace_s: float) -> None:
        """Refuse new work, let queued work finish for up to `grace_s`, then fail the rest and stop."""
        self._accepting = False
        deadline = time.monotonic() + grace_s
        while (self.queued_texts or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.queued_texts:
            log.warning("shutdown grace of %.1f s over: failing %d queued texts", grace_s, self.queued_texts)
        for job in (*self._queue, *self._bulk):
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server shut down before these texts were run"))
        self._queue.clear()
        self._bulk.clear()
        self._queued = self._bulk_queued = 0
        self._stopping = True
        if self._worker is not None:
            self._wakeup.set()
            try:
                await asyncio.wait_for(self._worker, timeout=max(0.0, deadline - time.monotonic()) + 5)
            except TimeoutError:
                log.error("batch worker did not stop in time")
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- request side -----------------------------------------------------------------------------

    def submit(self, ids: list[list[int]], infer: InferFn | None = None, *, bulk: bool | None = None) -> Job:
        """Queue a request's texts (all or nothing) and return its job; await `job.future` for the
        probability rows in input order. Raises Overloaded or ShuttingDown at once instead of queueing.
        `infer`: the model that tokenized `ids` (default: the current one). `bulk`: into the bulk lane
        (default: more texts than `bulk_above`)."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down")
        n = len(ids)
        if bulk is None:
            bulk = n > self.bulk_above
        # An empty bulk lane takes any request: one larger than its bound is slow, not refused forever.
        if (not self.bulk_room(n)) if bulk else self._queued + n > self.max_queue_texts:
            if self._metrics:
                self._metrics.rejected_texts.labels("overloaded").inc(n)
            if bulk:
                raise Overloaded(overloaded_message(self._bulk_queued, self.max_bulk_texts, bulk))
            raise Overloaded(overloaded_message(self._queued, self.max_queue_texts))
        job = Job(self, ids, asyncio.get_running_loop().create_future(), infer or self._infer, bulk)
        if bulk:
            self._bulk.append(job)
            self._bulk_queued += n
        else:
            self._queue.append(job)
            self._queued += n
        if self._metrics:
            self._metrics.queue_depth.set(self._queued + self._bulk_queued)
        self._wakeup.set()
        return job

    def _drop(self, job: Job) -> None:
        untaken = len(job.ids) - job.next
        if untaken > 0:
            job.next = len(job.ids)  # the worker skips exhausted jobs
            if job.bulk:
                self._bulk_queued -= untaken
            else:
                self._queued -= untaken
            if self._metrics:
                self._metrics.rejected_texts.labels("dropped").inc(untaken)
                self._metrics.queue_depth.set(self._queued + self._bulk_queued)

    # --- worker -----------------------------------------------------------------------------------

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        last_size, last_seconds = 0, 0.0
        while not self._stopping:
            if not self._queued and not self._bulk_queued:
                last_size = 0  # idle: the next lone request runs at once
                wakeup.clear()
                await wakeup.wait()
                continue
            if self._queued + self._bulk_queued < self.max_batch_size:
                if self.max_wait_s > 0:
                    head = self._queue[0] if self._queue else self._bulk[0]
                    await self._hold_open(head.enqueued_at + self.max_wait_s, self.max_batch_size)
                elif self.coalesce > 0 and last_size > 1:
                    # Under load, the clients just answered send again at once: wait a little (a
                    # fraction of the last forward pass) for their texts to join this batch, instead
                    # of two half-size groups alternating batch after batch.
                    target = min(self.max_batch_size, self._queued + self._bulk_queued + last_size)
                    await self._hold_open(time.perf_counter() + self.coalesce * last_seconds, target)
            batch = self._take()
            if batch is None:
                continue
            self._batch_id += 1
            batch.id = self._batch_id
            self._busy = True
            try:
                rows, seconds = await loop.run_in_executor(
                    self._executor, self._timed_infer, batch.ids, batch.infer
                )
                if len(rows) != len(batch.ids):
                    raise RuntimeError(f"inference returned {len(rows)} rows for {len(batch.ids)} texts")
            except Exception as e:  # one bad batch must not stop the worker
                log.exception("batch %d (%d texts) failed", batch.id, len(batch.ids))
                if self._metrics:
                    self._metrics.batch_failures.inc()
                error = BatchFailed(batch.id, e)
                for job, _, _ in batch.segments:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                self._deliver(batch, rows, seconds)
                last_size, last_seconds = len(rows), seconds
            finally:
                self._busy = False

    async def _hold_open(self, deadline: float, target: int) -> None:
        """Wait until `target` texts are queued or the perf_counter `deadline` passes."""
        wakeup = self._wakeup
        while self._queued + self._bulk_queued < target:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> _Batch | None:
        """The next batch: small requests from the head of their queue (FIFO, so long texts never
        starve), whole; then bulk requests in turn (`bulk_share` pieces each), then the room left
        from the oldest bulk request, up to `bulk_tokens` of bulk pieces. At most max_batch_size
        texts and max_batch_tokens tokens (but always one text); sorted longest first so the packed
        LSTM needs no reordering and split_by_length can cut them into passes of similar length."""
        fill = _Fill(self.max_batch_size, self.max_batch_tokens)
        queue = self._queue
        bulk = self._bulk
        if bulk:  # keep room for bulk work, so it progresses under any flood
            fill.size_limit -= max(1, self.max_batch_size // 8)
            fill.token_limit -= self.bulk_tokens
        while queue and not fill.full:
            job = queue[0]
            if job.next >= len(job.ids) or job.future.done():  # finished, dropped or cancelled
                queue.popleft()
                self._drop(job)
                continue
            if fill.segments and job.infer != fill.infer:
                break  # submitted for another model (a reload happened): it starts the next batch
            self._queued -= fill.add(job, len(job.ids))
            if job.next >= len(job.ids):
                queue.popleft()
        if bulk:
            fill.full = False
            fill.size_limit = self.max_batch_size
            fill.token_limit = min(self.max_batch_tokens, fill.tokens + self.bulk_tokens)
            stale = False
            for share in (self.bulk_share, self.max_batch_size):  # in turn, then fill up
                for job in bulk:
                    if fill.full:
                        break
                    if job.next >= len(job.ids) or job.future.done():
                        stale = True
                        continue
                    if fill.segments and job.infer != fill.infer:
                        continue  # another model's job: a later batch
                    self._bulk_queued -= fill.add(job, min(len(job.ids), job.next + share))
                    stale = stale or job.next >= len(job.ids)
            if stale:
                for job in bulk:
                    if job.next < len(job.ids) and job.future.done():
                        self._drop(job)
                self._bulk = deque(j for j in bulk if j.next < len(j.ids))
        picked = fill.picked
        if not picked:
            return None
        picked.sort(key=lambda p: -p[0])
        segments = fill.segments
        now = time.perf_counter()
        m = self._metrics
        if m:
            m.queue_depth.set(self._queued + self._bulk_queued)
            m.batch_size.observe(len(picked))
            m.batch_tokens.observe(len(picked) * picked[0][0])
            for job, _, _ in segments:
                m.queue_time.observe(now - job.enqueued_at)
        ids = [segments[s][0].ids[i] for _, s, i in picked]
        return _Batch(segments, picked, ids, segments[0][0].infer)

    def _timed_infer(self, ids: list[list[int]], infer: InferFn) -> tuple[list[list[float]], float]:
        t0 = time.perf_counter()
        rows = self._run_batch(ids, infer)
        return rows, time.perf_counter() - t0

    def _deliver(self, batch: _Batch, rows: list[list[float]], seconds: float) -> None:
        segments = batch.segments
        for row, (_, s, i) in zip(rows, batch.order, strict=True):
            segments[s][0].rows[i] = row
        for job, start, end in segments:
            job.batch_ids.append(batch.id)
            job.remaining -= end - start
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job.rows)
        if self._metrics:
            self._metrics.inference_time.observe(seconds)
            self._metrics.texts.inc(len(rows))
