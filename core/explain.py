"""Token attributions for `POST /predict` with `"explain": true`, by occlusion.

A token's score is p(target | text) − p(target | text without that token), where `target` is the
label the response gives the text and p is scored as the plain path scores it: the pieces the text
was planned into (core/long_text.py: one, or several chunks in chunk mode), aggregated. Deleting a
token changes only the chunk it is in; the text is re-aggregated with that chunk's new row. Positive
scores pushed the prediction towards `target`. The occluded variants are extra sequences in the same
batcher, so they share forward passes with everything else (docs/ARCHITECTURE.md says why occlusion
and why deletion rather than [UNK]).

What this module is given: the tokenizer, the inference function, the token limit and the rows the
plain prediction already computed for each text's pieces; it scores only the occluded texts.

Cost: a text with n explained tokens is n sequences (n <= SENTIMENT_MAX_EXPLAIN_TOKENS, the first n
tokens) beyond the k pieces the plain prediction scores anyway. Fairness: explain requests go
through `ExplainLane`, which lets at most about 2 × SENTIMENT_MAX_BATCH_SIZE of their sequences into
the batcher's FIFO queue at a time. The rest wait outside it, so a plain request never queues behind
more than that (about two batches by default) however many explain requests are waiting; the lane
keeps one batch computing and one queued, so explain throughput loses nothing. A backlog beyond
SENTIMENT_MAX_EXPLAIN_BACKLOG sequences is refused with 503 at once rather than left to time out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from core.batcher import Batcher, InferFn, Job
from core.errors import InvalidInput, Overloaded
from core.long_text import AGGREGATION, Plan, aggregate
from model.alignment import MAX_WIDEN, pieces, repair_offsets
from model.tokenizer import UNK_ID

METHOD = "occlusion"


@dataclass(frozen=True, slots=True)
class TokenScore:
    """One explained token: as the model reads it, its character span in the text, its score."""

    token: str
    start: int
    end: int
    score: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """One text's explanation of label index `target` (the prediction's label)."""

    target: int
    tokens: list[TokenScore]  # the explained tokens, in text order
    total_tokens: int  # tokens in the whole text, also those beyond the model's max length
    method: str = METHOD


# --- which tokens, where ----------------------------------------------------------------------------


@dataclass(slots=True)
class Explained:
    """One text: the pieces the plain path scored, the explained tokens and where they are in the text."""

    chunks: list[list[int]]  # the ids of the pieces whose aggregate is the text's score, in text order
    tokens: list[str]  # the first `explained` tokens as the model reads them ([UNK] when unknown)
    offsets: list[tuple[int, int]]  # their character spans in the original text
    total: int  # tokens in the whole text, also those beyond the model's max length

    @property
    def sequences(self) -> int:
        """Sequences this text costs: one per explained token (its pieces are the plain path's)."""
        return len(self.tokens)


def chunk_ids(plan: Plan) -> list[list[list[int]]]:
    """Per text, the ids of the pieces its score aggregates (not its sentences)."""
    return [[plan.ids[i] for i in t.chunk_pieces] for t in plan.texts]


def prepare(
    tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int, chunks: Sequence[list[list[int]]]
) -> list[Explained]:
    """Locate the first `max_tokens` scored tokens of each text in the original text. `chunks` are the
    plain path's pieces (`chunk_ids`): consecutive token spans from the text's first token, so the
    truncating encoding here (the first max_length tokens) is their prefix."""
    out = []
    encs = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    for text, enc, pieces_ids in zip(texts, encs, chunks, strict=True):
        # Not beyond the scored part: with max_chunks, chunk mode may score fewer than max_length tokens.
        n = min(len(enc.ids), max_tokens, sum(len(c) for c in pieces_ids))
        tokens, offsets = list(enc.tokens[:n]), enc.offsets[:n]
        if n:
            # Only the explained part of a long text is re-tokenized; the margin keeps a word cut at
            # the end of the prefix ("don'|t") from changing the last explained one.
            words = pieces(tokenizer, text[: offsets[-1][1] + 2 * MAX_WIDEN])
            offsets = repair_offsets(tokenizer, text, tokens, offsets, words)
        total = len(enc.ids) + sum(len(o.ids) for o in enc.overflowing)
        out.append(Explained(pieces_ids, tokens, list(offsets), total))
    return out


def occlusions(ids: list[int], n: int) -> list[list[int]]:
    """The text with token j deleted, for j < n. Deleting the only token leaves an empty text, which
    the service scores as [UNK] (model/tokenizer.token_ids), so that is what it becomes here too."""
    return [ids[:j] + ids[j + 1 :] or [UNK_ID] for j in range(n)]


def chunk_occlusions(chunks: list[list[int]], n: int) -> list[tuple[int, list[int]]]:
    """(chunk index, that chunk with the token deleted) for each of the text's first n tokens."""
    out: list[tuple[int, list[int]]] = []
    for c, ids in enumerate(chunks):
        k = min(n - len(out), len(ids))
        if k <= 0:
            break
        out += [(c, seq) for seq in occlusions(ids, k)]
    return out


def explanation(
    item: Explained, chunk_rows: list[list[float]], occluded_rows: list[list[float]], target: int
) -> Explanation:
    """The explanation of label index `target` from the rows the plain path scored for the text's
    pieces (`chunk_rows`) and the rows of its occluded variants (`chunk_occlusions` order)."""
    k = len(item.chunks)
    weights = [len(c) for c in item.chunks]
    p = aggregate(chunk_rows, weights, AGGREGATION)[target]
    scores = []
    for (c, _), row in zip(chunk_occlusions(item.chunks, len(item.tokens)), occluded_rows, strict=True):
        if k == 1:
            occluded = row
        else:  # the text with the token deleted: its chunk's row replaced, one token lighter, re-aggregated
            # (a chunk left empty weighs 0: the text is then its other chunks, not them plus [UNK])
            occluded = aggregate(
                [row if i == c else r for i, r in enumerate(chunk_rows)],
                [w - 1 if i == c else w for i, w in enumerate(weights)],
                AGGREGATION,
            )
        scores.append(round(p - occluded[target], 6))
    tokens = [
        TokenScore(tok, s, e, score)
        for tok, (s, e), score in zip(item.tokens, item.offsets, scores, strict=True)
    ]
    return Explanation(target, tokens, item.total)


# --- admission ----------------------------------------------------------------------------------------


class ExplainLane:
    """FIFO admission of explain sequences into the batcher queue.

    `acquire(n)` returns once fewer than `size` sequences of explain requests are in the batcher
    (queued or computing), then counts n more; so at most size − 1 + the largest n are ever there.
    `backlog` counts the sequences of explain requests admitted and not yet finished, waiting or not.
    """

    def __init__(self, size: int, max_backlog: int) -> None:
        self.size = size
        self.max_backlog = max_backlog
        self.in_flight = 0
        self.backlog = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, n: int) -> None:
        if not self._waiters and self.in_flight < self.size:
            self.in_flight += n
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just as we were cancelled: give it back
                self.release(n)
            raise  # a cancelled waiter stays in the deque; _wake skips it

    def release(self, n: int) -> None:
        self.in_flight -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.size:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += n
                fut.set_result(None)


# --- running ---------------------------------------------------------------------------------------


class ExplainJob:
    """All texts of one explain request, one batcher job of occluded texts per text as the lane admits
    them.

    Quacks like `core.batcher.Job` for the engine (`future`, `drop()`, `batch_ids`): `future` resolves
    to the texts' explanations in input order."""

    def __init__(
        self,
        lane: ExplainLane,
        batcher: Batcher,
        infer: InferFn,
        items: list[Explained],
        chunk_rows: list[list[list[float]]],
        targets: Sequence[int],
    ) -> None:
        self.items = items
        self.batch_ids: list[int] = []
        self._lane, self._batcher, self._infer = lane, batcher, infer
        self._chunk_rows, self._targets = chunk_rows, targets
        self._weights = [item.sequences for item in items]
        self._unfinished = set(range(len(items)))
        self._explanations: list[Explanation | None] = [None] * len(items)
        self._jobs: list[Job] = []
        loop = asyncio.get_running_loop()
        self.future: asyncio.Future[list[Explanation]] = loop.create_future()
        self._task = loop.create_task(self._run(), name="explain")

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other texts
                for i in range(len(self.items)):
                    group.create_task(self._one(i))
        except BaseExceptionGroup as eg:
            error = next((e for e in eg.exceptions if not isinstance(e, asyncio.CancelledError)), None)
            if not self.future.done():
                self.future.set_exception(error or asyncio.CancelledError())
        except asyncio.CancelledError:
            if not self.future.done():
                self.future.cancel()
        else:
            if not self.future.done():
                self.future.set_result([e for e in self._explanations if e is not None])
        finally:
            # texts never started (cancelled while waiting, or before their task ran) leave the backlog
            self._lane.backlog -= sum(self._weights[i] for i in self._unfinished)
            self._unfinished.clear()

    async def _one(self, i: int) -> None:
        item, weight = self.items[i], self._weights[i]
        occluded: list[list[float]] = []
        if weight:  # a text with no explained token costs nothing
            await self._lane.acquire(weight)
            try:
                seqs = [seq for _, seq in chunk_occlusions(item.chunks, len(item.tokens))]
                # Bulk work: plain requests go first in every batch (core/batcher.py).
                job = self._batcher.submit(seqs, self._infer, bulk=True)
                self._jobs.append(job)
                occluded = await job.future
                self.batch_ids.extend(b for b in job.batch_ids if b not in self.batch_ids)
            finally:
                self._lane.release(weight)
        self._explanations[i] = explanation(item, self._chunk_rows[i], occluded, self._targets[i])
        self._unfinished.discard(i)
        self._lane.backlog -= weight

    def drop(self) -> None:
        """Give up (client gone, timeout): queued sequences never run, waiting texts never start."""
        for job in self._jobs:
            job.drop()
        self._task.cancel()
        if not self.future.done():
            self.future.cancel()


def sequences(plan: Plan, max_tokens: int, max_length: int) -> int:
    """What `prepare` + `submit` will cost, from the plan alone: per text the tokens explained (the
    first max_tokens of its first max_length, within the scored part), one occluded text each."""
    return sum(min(max_tokens, max_length, sum(t.weights)) for t in plan.texts)


def check_cost(plan: Plan, max_tokens: int, max_length: int, max_sequences: int) -> None:
    """InvalidInput (422) before anything is run when one explain request would cost more than
    SENTIMENT_MAX_EXPLAIN_SEQUENCES sequences (64 long texts cost 5,000: half a minute of the model)."""
    n = sequences(plan, max_tokens, max_length)
    if n > max_sequences:
        raise InvalidInput(
            f"body: explaining these texts needs {n} sequences (one per explained token); at most "
            f"{max_sequences} per request (SENTIMENT_MAX_EXPLAIN_SEQUENCES={max_sequences}); send fewer or "
            "shorter texts per explain request",
            details=[{"loc": ["body", "explain"], "msg": "explanation too costly", "type": "too_costly"}],
        )


def submit(
    lane: ExplainLane,
    batcher: Batcher,
    infer: InferFn,
    items: list[Explained],
    chunk_rows: list[list[list[float]]],
    targets: Sequence[int],
) -> ExplainJob:
    """Admit an explain request (Overloaded at once if the explain backlog is full) and start it.
    `chunk_rows`: per text, the rows the plain prediction scored for its pieces (`Explained.chunks`);
    `targets`: per text, the label index to explain; `infer`: the model that scored those rows."""
    weight = sum(item.sequences for item in items)
    # An empty backlog takes any request, so one larger than the limit is slow, not refused forever.
    if lane.backlog and lane.backlog + weight > lane.max_backlog:
        raise Overloaded(
            f"too many explanations in progress ({lane.backlog} sequences waiting, this request needs "
            f"{weight}; SENTIMENT_MAX_EXPLAIN_BACKLOG={lane.max_backlog}); retry shortly, or send fewer "
            "texts per explain request"
        )
    lane.backlog += weight
    return ExplainJob(lane, batcher, infer, items, chunk_rows, targets)
