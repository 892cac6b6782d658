"""The dynamic batcher (core/batcher.py): batching, ordering, backpressure, faults, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from core.batcher import Batcher, Job, split_by_length
from core.engine import make_infer
from core.errors import BatchFailed, Overloaded, ShuttingDown
from core.metrics import Metrics
from model.artifact import load_artifact

pytestmark = pytest.mark.asyncio


class FakeModel:
    """Each row echoes its text's first id, so callers can check order; records every batch."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, ids: list[list[int]]) -> list[list[float]]:
        self.gate.wait(10)
        self.batches.append(ids)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and any(x[0] == self.fail_on for x in ids):
            raise RuntimeError("injected fault")
        return [[float(x[0]), float(len(x))] for x in ids]

    @property
    def seen(self) -> list[int]:
        return [x[0] for batch in self.batches for x in batch]


def texts(*first_ids: int, length: int = 3) -> list[list[int]]:
    return [[i] + [7] * (length - 1) for i in first_ids]


async def started(model: FakeModel, metrics: Metrics | None = None, **kwargs: object) -> Batcher:
    b = Batcher(model, metrics=Metrics() if metrics is None else metrics, **kwargs)  # type: ignore[arg-type]
    b.start()
    return b


async def held(model: FakeModel, first: list[list[int]], **kwargs: object) -> tuple[Batcher, Job]:
    """A started batcher whose worker has taken `first` into the model and is held there (the model's
    gate is closed) until the test calls model.gate.set()."""
    model.gate.clear()
    batcher = await started(model, **kwargs)
    job = batcher.submit(first)
    await asyncio.sleep(0.01)  # taken by the worker: no longer counts as queued
    return batcher, job


async def test_lone_request_runs_at_once() -> None:
    batcher = await started(FakeModel())
    t0 = time.perf_counter()
    rows = await batcher.submit(texts(5)).future
    assert rows == [[5.0, 3.0]]
    assert time.perf_counter() - t0 < 0.05  # no wait timer when the worker is idle
    await batcher.close(1)


async def test_max_wait_holds_a_batch_open_for_company() -> None:
    model = FakeModel()
    batcher = await started(model, max_wait_ms=100)
    first = batcher.submit(texts(1))
    await asyncio.sleep(0.02)
    second = batcher.submit(texts(2))
    await asyncio.gather(first.future, second.future)
    assert [len(b) for b in model.batches] == [2]
    await batcher.close(1)


async def test_batches_form_while_the_worker_is_busy() -> None:
    model = FakeModel(delay=0.05)
    batcher = await started(model)
    jobs = [batcher.submit(texts(0))]
    await asyncio.sleep(0.01)  # the first batch is computing now
    jobs += [batcher.submit(texts(i)) for i in range(1, 11)]
    results = await asyncio.gather(*(j.future for j in jobs))
    assert [len(b) for b in model.batches] == [1, 10]
    assert [r[0][0] for r in results] == list(range(11))
    await batcher.close(1)


async def test_under_load_the_next_batch_waits_briefly_for_the_clients_just_answered() -> None:
    model = FakeModel(delay=0.05)
    batcher = await started(model, coalesce=0.5)
    first = [batcher.submit(texts(i)) for i in (1, 2)]  # batch of 2: "under load" from now on
    await asyncio.sleep(0.01)
    waiting = batcher.submit(texts(3))  # queued while the first batch computes
    await asyncio.gather(*(j.future for j in first))
    await asyncio.sleep(0.01)  # an answered client comes back within half a forward pass...
    again = batcher.submit(texts(4))
    await asyncio.gather(waiting.future, again.future)
    assert [len(b) for b in model.batches] == [2, 2]  # ...and joins the same batch
    await batcher.close(1)


async def test_request_spanning_batches_is_reassembled_in_order() -> None:
    model = FakeModel()
    batcher = await started(model, max_batch_size=3)
    ids = [[i] + [7] * (i % 5) for i in range(1, 11)]  # varied lengths: batches get reordered
    rows = await batcher.submit(ids).future
    assert [r[0] for r in rows] == list(range(1, 11))
    assert [len(b) for b in model.batches] == [3, 3, 3, 1]
    for batch in model.batches:  # each batch is sorted longest first
        assert [len(x) for x in batch] == sorted((len(x) for x in batch), reverse=True)
    await batcher.close(1)


async def test_token_budget_limits_a_batch() -> None:
    model = FakeModel()
    batcher, first = await held(model, texts(0), max_batch_size=64, max_batch_tokens=40)
    jobs = [batcher.submit(texts(i, length=10)) for i in range(1, 9)]  # 8 texts x 10 tokens
    model.gate.set()
    await asyncio.gather(first.future, *(j.future for j in jobs))
    assert [len(b) for b in model.batches] == [1, 4, 4]  # 4 x 10 = 40 padded tokens per batch
    await batcher.close(1)


async def test_queue_full_is_refused_at_once_all_or_nothing() -> None:
    model = FakeModel()
    batcher, running = await held(model, texts(0), max_queue_texts=4)
    queued = batcher.submit(texts(1, 2, 3))
    with pytest.raises(Overloaded):
        batcher.submit(texts(4, 5))  # 3 + 2 > 4: nothing of it is queued
    assert batcher.queued_texts == 3
    single = batcher.submit(texts(6))  # 3 + 1 fits
    with pytest.raises(Overloaded):
        batcher.submit(texts(7))
    model.gate.set()
    await asyncio.gather(running.future, queued.future, single.future)
    assert 4 not in model.seen and 7 not in model.seen
    await batcher.close(1)


async def test_dropped_request_never_reaches_the_model_and_frees_the_queue() -> None:
    model, metrics = FakeModel(), Metrics()
    batcher, running = await held(model, texts(0), max_queue_texts=4, metrics=metrics)
    gone = batcher.submit(texts(1, 2, 3))
    assert batcher.queued_texts == 3
    gone.drop()  # client disconnected or timed out
    assert gone.future.cancelled()
    assert batcher.queued_texts == 0  # room is given back at once
    kept = batcher.submit(texts(4, 5, 6, 7))
    model.gate.set()
    await asyncio.gather(running.future, kept.future)
    assert model.seen == [0, 4, 5, 6, 7]
    assert metrics.rejected_texts.labels("dropped")._value.get() == 3
    await batcher.close(1)


async def test_cancelled_waiter_drops_its_texts() -> None:
    model = FakeModel()
    batcher, running = await held(model, texts(0))
    job = batcher.submit(texts(1))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await job.future
    model.gate.set()
    await running.future
    await asyncio.sleep(0.01)
    assert model.seen == [0]
    await batcher.close(1)


async def test_failing_batch_fails_only_its_own_requests() -> None:
    model, metrics = FakeModel(fail_on=99), Metrics()
    batcher, before = await held(model, texts(1), max_batch_size=2, metrics=metrics)
    bad = batcher.submit(texts(99))
    neighbour = batcher.submit(texts(2))  # same batch as the bad text: fails with it
    after = batcher.submit(texts(3))  # next batch
    model.gate.set()
    assert (await before.future)[0][0] == 1
    for job in (bad, neighbour):
        with pytest.raises(BatchFailed):
            await job.future
    assert (await after.future)[0][0] == 3
    assert (await batcher.submit(texts(4)).future)[0][0] == 4  # the worker keeps serving
    assert metrics.batch_failures._value.get() == 1
    await batcher.close(1)


async def test_close_finishes_queued_work_then_refuses() -> None:
    model = FakeModel(delay=0.02)
    batcher = await started(model, max_batch_size=2)
    jobs = [batcher.submit(texts(i)) for i in range(6)]
    await batcher.close(grace_s=5)
    assert all(j.future.done() and not j.future.cancelled() for j in jobs)
    assert sorted(model.seen) == list(range(6))
    with pytest.raises(ShuttingDown):
        batcher.submit(texts(9))


async def test_close_fails_what_the_grace_period_cannot_finish() -> None:
    model = FakeModel(delay=0.2)
    batcher = await started(model, max_batch_size=1)
    jobs = [batcher.submit(texts(i)) for i in range(4)]
    await batcher.close(grace_s=0.05)
    outcomes = [j.future.exception() for j in jobs]
    assert outcomes[0] is None
    assert all(isinstance(e, ShuttingDown) for e in outcomes[1:])


async def test_split_by_length_keeps_passes_homogeneous() -> None:
    assert split_by_length([10] * 20, 1.5, 8) == [0, 20]
    # 12 long texts share a pass with 7 short ones (1900 padded <= 1.5 x 1270 real tokens)...
    assert split_by_length([100] * 12 + [10] * 40, 1.5, 8) == [0, 19, 52]
    # ...and a lone long text does not drag 40 short ones into one padded pass.
    assert split_by_length([100] + [10] * 40, 1.5, 8) == [0, 8, 41]
    assert split_by_length([5, 4], 1.5, 8) == [0, 2]  # never below min_size


async def test_split_passes_give_the_same_rows(small_artifact: Path) -> None:
    artifact = load_artifact(small_artifact)
    infer = make_infer(artifact)
    batcher = Batcher(infer, split_min_size=2)
    sentences = ["good", "a truly wonderful film , full of life and wit and warmth and joy"] * 6 + ["bad"]
    ids = sorted(artifact.tokenize(sentences)[0], key=len, reverse=True)
    split = batcher.run_sync(ids)
    whole = infer(ids)
    assert len(split) == len(whole) == len(ids)
    for a, b in zip(split, whole, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    await batcher.close(0)


async def test_real_model_alone_and_in_a_batch_agree(small_artifact: Path) -> None:
    artifact = load_artifact(small_artifact)
    batcher = Batcher(make_infer(artifact))
    batcher.start()
    target = "an engrossing , moving and beautifully acted story ."
    others = [
        "dull .",
        "the plot is nothing but boilerplate clichés from start to finish , and the acting is wooden .",
        "a masterpiece .",
        "I didn't like it at all, to be honest, although the music was fine and the sets were pretty.",
    ] * 8
    alone = (await batcher.submit(artifact.tokenize([target])[0]).future)[0]
    ids = artifact.tokenize([*others[:13], target, *others[13:]])[0]
    together = (await batcher.submit(ids).future)[13]
    assert together == pytest.approx(alone, abs=1e-6)
    await batcher.close(1)


async def test_a_short_request_behind_huge_ones_is_in_the_next_batch() -> None:
    """Fair sharing: two requests with many more texts than a batch holds are queued first; a one-text
    request arriving after them is scored in the very next batch, not after all of their texts."""
    model = FakeModel()
    # 64 texts, 8 batches' worth: the first batch is computing now
    batcher, first = await held(model, texts(*range(100, 164)), max_batch_size=8, max_batch_tokens=8 * 3)
    second = batcher.submit(texts(*range(200, 264)))
    short = batcher.submit(texts(1))
    model.gate.set()
    assert (await short.future) == [[1.0, 3.0]]
    assert 1 in [x[0] for x in model.batches[1]]
    rows = await asyncio.gather(first.future, second.future)
    assert [r[0] for r in rows[0]] == list(range(100, 164))  # still reassembled in order
    assert [r[0] for r in rows[1]] == list(range(200, 264))
    # the two big requests took turns instead of one waiting for all of the other
    assert any(200 <= x[0] < 264 for x in model.batches[1])
    await batcher.close(1)


async def test_big_requests_cannot_fill_the_room_of_small_ones() -> None:
    model = FakeModel()
    batcher, running = await held(model, texts(0), max_batch_size=4, max_queue_texts=8)
    big = batcher.submit(texts(*range(10, 18)))  # 8 texts > one batch: the bulk lane, now full
    with pytest.raises(Overloaded, match="SENTIMENT_MAX_BULK_QUEUE_TEXTS=8"):
        batcher.submit(texts(*range(20, 25)))
    assert not batcher.full
    small = [batcher.submit(texts(i)) for i in range(1, 9)]  # the small requests' lane is untouched
    assert batcher.full and batcher.queued_texts == 16
    model.gate.set()
    await asyncio.gather(running.future, big.future, *(j.future for j in small))
    await batcher.close(1)


async def test_bulk_work_progresses_under_a_flood_of_small_requests() -> None:
    model = FakeModel()
    batcher, running = await held(model, texts(0), max_batch_size=8)
    big = batcher.submit(texts(*range(100, 120)))
    small = [batcher.submit(texts(i)) for i in range(1, 41)]  # 5 batches of small texts
    model.gate.set()
    await asyncio.gather(running.future, big.future, *(j.future for j in small))
    # every batch that had small texts waiting also took at least one of the big request's
    for batch in model.batches[1:5]:
        assert any(x[0] >= 100 for x in batch), model.batches
    await batcher.close(1)
