"""The engine (core/engine.py) on its own, with no HTTP: predictions for one and many texts, long texts,
sentences, explanations and every refusal. Uses the real small artifact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core.batcher import InferFn
from core.engine import Engine, Options, Phase, Predictions
from core.errors import InvalidInput, Overloaded, ShuttingDown
from core.metrics import Metrics
from core.settings import EngineSettings
from model.artifact import Artifact, load_artifact
from model.labels import UNKNOWN

pytestmark = pytest.mark.asyncio

GOOD = "a gorgeous , witty and moving film ."
BAD = "a dull , lifeless and utterly boring mess ."


class Model:
    """Wraps the real inference function: counts the sequences it scores, can hold passes."""

    def __init__(self) -> None:
        self.sequences = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, infer: InferFn, artifact: Artifact) -> InferFn:
        def wrapped(ids: list[list[int]]) -> list[list[float]]:
            self.entered.set()
            self.gate.wait(30)
            self.sequences += len(ids)
            return infer(ids)

        return wrapped


@asynccontextmanager
async def engine(model_dir: Path, model: Model | None = None, **settings: Any) -> AsyncIterator[Engine]:
    settings.setdefault("warmup", False)
    eng = await Engine.start(EngineSettings(model_dir=model_dir, **settings), Metrics(), model)
    try:
        yield eng
    finally:
        await eng.close()


async def predict(eng: Engine, texts: list[str], **options: Any) -> Predictions:
    options.setdefault("long_text", "chunk")
    return await eng.submit(texts, Options(**options)).result()


@pytest.fixture(scope="module")
def artifact(small_artifact: Path) -> Artifact:
    return load_artifact(small_artifact)


def p_of(artifact: Artifact, ids: list[int]) -> list[float]:
    return artifact.probabilities([ids]).tolist()[0]


async def test_one_and_many_texts(small_artifact: Path, artifact: Artifact) -> None:
    async with engine(small_artifact) as eng:
        assert eng.ready and eng.phase is Phase.READY
        one = await predict(eng, [GOOD])
        many = await predict(eng, [BAD, GOOD, BAD])
    assert one.model.identity == {"name": artifact.meta["name"], "version": artifact.meta["version"]}
    (good,) = one.predictions
    labels = artifact.labels
    assert len(good.probabilities) == len(labels) and abs(sum(good.probabilities) - 1) < 1e-5
    assert good.label == labels[good.probabilities.index(max(good.probabilities))] and good.label != UNKNOWN
    assert good.score == max(good.probabilities)
    assert (good.truncated, good.chunks, good.warnings, good.explanation) == (False, 1, [], None)
    # the model's own probabilities, in input order whatever the batch
    expected = p_of(artifact, artifact.tokenize([GOOD])[0][0])
    assert good.probabilities == pytest.approx(expected, abs=1e-6)
    assert many.predictions[1].probabilities == pytest.approx(expected, abs=1e-6)
    assert many.predictions[0].probabilities == pytest.approx(many.predictions[2].probabilities, abs=1e-6)
    assert many.predictions[0].probabilities != pytest.approx(expected, abs=1e-3)


async def test_long_text_is_chunked_or_truncated(small_artifact: Path, artifact: Artifact) -> None:
    text = " ".join([GOOD, BAD] * 20)  # ~ 400 tokens: several chunks of at most max_length
    async with engine(small_artifact) as eng:
        chunked = (await predict(eng, [text])).predictions[0]
        cut = (await predict(eng, [text], long_text="truncate")).predictions[0]
        sents = (await predict(eng, [f"{GOOD} {BAD}"], sentences=True)).predictions[0]
    assert chunked.chunks > 1 and not chunked.truncated
    assert cut.chunks == 1 and cut.truncated
    first = p_of(artifact, artifact.tokenize([text])[0][0])  # its first max_length tokens
    assert cut.probabilities == pytest.approx(first, abs=1e-6)
    assert chunked.probabilities != pytest.approx(first, abs=1e-4)  # the whole text counts
    assert sents.sentences is not None and [s.text for s in sents.sentences] == [GOOD, BAD]
    for s in sents.sentences:
        assert s.probabilities == pytest.approx(p_of(artifact, artifact.tokenize([s.text])[0][0]), abs=1e-6)


async def test_explain_scores_only_the_occluded_texts(small_artifact: Path, artifact: Artifact) -> None:
    model = Model()
    async with engine(small_artifact, model) as eng:
        model.sequences = 0
        out = (await predict(eng, [GOOD], explain=True)).predictions[0]
    ids = artifact.tokenize([GOOD])[0][0]
    # the text once (the plain prediction), then one sequence per deleted token: not the text again
    assert model.sequences == 1 + len(ids)
    expl = out.explanation
    assert expl is not None and expl.method == "occlusion"
    assert artifact.labels[expl.target] == out.label and expl.total_tokens == len(ids) == len(expl.tokens)
    p = p_of(artifact, ids)[expl.target]
    for j, tok in enumerate(expl.tokens):
        assert GOOD[tok.start : tok.end] == tok.token
        without = p_of(artifact, ids[:j] + ids[j + 1 :])[expl.target]
        assert tok.score == pytest.approx(p - without, abs=1e-5)


async def test_refusals(small_artifact: Path) -> None:
    model = Model()
    async with engine(small_artifact, model, max_texts_per_request=3, max_queue_texts=3, max_batch_size=1,
                      max_explain_sequences=5) as eng:  # fmt: skip
        with pytest.raises(InvalidInput, match="SENTIMENT_MAX_TEXTS_PER_REQUEST=3"):
            eng.submit(["a"] * 4, Options("chunk"))
        with pytest.raises(InvalidInput, match=r"body\.texts\.1: the text is empty"):
            eng.submit(["fine", " \u200b\t"], Options("chunk"))
        with pytest.raises(InvalidInput, match="SENTIMENT_MAX_EXPLAIN_SEQUENCES=5"):
            eng.submit([GOOD], Options("chunk", explain=True))  # 8 tokens to explain
        assert eng.refusal(100) is None
        model.entered.clear()
        model.gate.clear()  # hold the model
        running = eng.submit(["first"], Options("chunk"))
        while not model.entered.is_set():
            await asyncio.sleep(0.002)
        second = eng.submit(["second"], Options("chunk"))
        assert not second.behind_full_batch  # nothing queued when it came: it runs next
        third = eng.submit(["third", "fourth"], Options("chunk"))
        assert third.behind_full_batch  # a full batch (1 text) was waiting ahead of it
        refusal = eng.refusal(None)
        assert isinstance(refusal, Overloaded) and "3 of 3 texts" in refusal.message
        with pytest.raises(Overloaded):
            eng.submit(["one too many"], Options("chunk"))
        model.gate.set()
        for pending in (running, second, third):
            await pending.result()
        assert eng.refusal(None) is None
        await eng.close()
        assert eng.phase is Phase.DRAINING and not eng.ready
        with pytest.raises(ShuttingDown):
            eng.submit(["late"], Options("chunk"))
