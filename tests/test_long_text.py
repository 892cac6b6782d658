"""Long documents (`long_text`: truncate | chunk) and per-sentence scores (`sentences`), through the
API with the real small artifact and real IMDB reviews (core/long_text.py)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from core.long_text import AGGREGATION, aggregate, full_stream, layout, sentence_bounds
from model.artifact import Artifact, load_artifact
from tests.helpers import ModelProbe, assert_error, serve

pytestmark = pytest.mark.asyncio
MIXED = "The acting is superb. The plot is a mess."


@pytest.fixture(scope="module")
def artifact(small_artifact: Path) -> Artifact:
    return load_artifact(small_artifact)


@pytest.fixture(scope="module")
def review(data_mirror: Path, artifact: Artifact) -> str:
    """The first IMDB test review of 2.5 to 4 times the model's max length (within the chars limit)."""
    with gzip.open(data_mirror / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            n = len(full_stream(artifact.tokenizer.encode(text, add_special_tokens=False)).ids)
            if 2.5 * artifact.max_length < n < 4 * artifact.max_length and len(text) <= 10_000:
                return text
    raise AssertionError("no long review found")


def probs(pred: dict, artifact: Artifact) -> list[float]:
    return [pred["probabilities"][label] for label in artifact.labels]


async def test_long_review_is_chunked_and_scored_as_the_weighted_mean_of_its_chunks(
    small_artifact: Path, artifact: Artifact, review: str
) -> None:
    probe = ModelProbe()
    async with serve(small_artifact, probe) as (_, client):
        probe.reset()
        r = await client.post("/predict", json={"text": review, "long_text": "chunk"})
        assert r.status_code == 200, r.text
        (pred,) = r.json()["predictions"]
        assert pred["chunks"] > 1 and pred["truncated"] is False
        assert len(probe.batches) == 1  # all chunks in one forward pass
        # The chunks, scored separately as texts of their own (each fits: nothing truncated).
        enc = full_stream(artifact.tokenizer.encode(review, add_special_tokens=False))
        chunks = layout(review, enc, max_length=artifact.max_length, mode="chunk", max_chunks=16).chunks
        assert len(chunks) == pred["chunks"]
        texts = [review[c.char_start : c.char_end] for c in chunks]
        separate = (await client.post("/predict", json={"texts": texts, "long_text": "truncate"})).json()
    # the chunks cover the whole review, in order, without overlap, each within max_length
    assert [c.start for c in chunks] == [0] + [c.end for c in chunks[:-1]] and chunks[-1].end == len(enc.ids)
    assert all(0 < c.tokens <= artifact.max_length for c in chunks)
    # cut on sentence boundaries: every chunk but the last ends where a sentence ends
    ends = set(sentence_bounds(review, enc))
    assert all(c.end in ends for c in chunks)
    # re-tokenizing a chunk's text gives exactly its tokens, so scoring it alone scores the same piece
    for c, text in zip(chunks, texts, strict=True):
        assert artifact.tokenize([text])[0][0] == enc.ids[c.start : c.end]
    rows = [probs(p, artifact) for p in separate["predictions"]]
    assert not any(p["truncated"] for p in separate["predictions"])
    # the service averages calibrated logits (log-probabilities up to a per-row constant) weighted by
    # token count, then applies softmax (bench/results/long_text.md: better than averaging probabilities)
    assert AGGREGATION == "logits"
    weighted = aggregate(rows, [c.tokens for c in chunks], AGGREGATION)
    mean_log = [
        sum(c.tokens * math.log(row[k]) for c, row in zip(chunks, rows, strict=True)) for k in range(2)
    ]
    by_hand = torch.softmax(torch.tensor(mean_log, dtype=torch.float64) / len(enc.ids), 0).tolist()
    assert weighted == pytest.approx(by_hand, abs=1e-9)
    assert probs(pred, artifact) == pytest.approx(weighted, abs=1e-6)
    assert pred["score"] == max(pred["probabilities"].values())


async def test_truncate_keeps_the_original_behaviour(
    small_artifact: Path, artifact: Artifact, review: str
) -> None:
    short = "A gorgeous, witty, seductive movie."
    expected = artifact.predict_proba([review, short]).tolist()  # the pre-chunking path, in-process
    async with serve(small_artifact) as (_, client):
        asked = await client.post("/predict", json={"texts": [review, short], "long_text": "truncate"})
        chunked = await client.post("/predict", json={"texts": [review, short], "long_text": "chunk"})
    async with serve(small_artifact, long_text="truncate") as (_, client):
        default = await client.post("/predict", json={"texts": [review, short]})
        info = (await client.get("/info")).json()
    assert info["limits"]["long_text"] == "truncate"
    for r in (asked, default):
        preds = r.json()["predictions"]
        assert [p["truncated"] for p in preds] == [True, False]
        assert [p["chunks"] for p in preds] == [1, 1]
        for p, exp in zip(preds, expected, strict=True):
            assert probs(p, artifact) == pytest.approx(exp, abs=1e-6)
    # a text within max_length is scored identically in both modes
    short_chunked = chunked.json()["predictions"][1]
    assert short_chunked["chunks"] == 1 and probs(short_chunked, artifact) == pytest.approx(
        expected[1], abs=1e-6
    )


async def test_limits_chunk_cap_and_pieces_per_request(
    small_artifact: Path, artifact: Artifact, review: str
) -> None:
    enc = full_stream(artifact.tokenizer.encode(review, add_special_tokens=False))
    chunks = layout(review, enc, max_length=artifact.max_length, mode="chunk", max_chunks=16).chunks
    async with serve(small_artifact, max_chunks_per_text=2) as (_, client):
        (pred,) = (await client.post("/predict", json={"text": review, "long_text": "chunk"})).json()[
            "predictions"
        ]
        texts = [review[c.char_start : c.char_end] for c in chunks[:2]]
        separate = (await client.post("/predict", json={"texts": texts})).json()["predictions"]
        info = (await client.get("/info")).json()
    assert info["limits"]["max_chunks_per_text"] == 2
    # only the first two chunks are scored, and the text says so
    assert pred["chunks"] == 2 and pred["truncated"] is True
    rows = [probs(p, artifact) for p in separate]
    assert probs(pred, artifact) == pytest.approx(
        aggregate(rows, [c.tokens for c in chunks[:2]], AGGREGATION)
    )
    # pieces (chunks and sentences) count in the queue: a request that could never fit gets 422, not 503
    many = " ".join(f"Sentence number {i} is fine." for i in range(12))
    async with serve(small_artifact, max_queue_texts=8, max_texts_per_request=4) as (_, client):
        r = await client.post("/predict", json={"text": many, "sentences": True})
        assert_error(r, 422, "validation_error", "13 pieces", "SENTIMENT_MAX_QUEUE_TEXTS=8")
        assert (await client.post("/predict", json={"text": many})).status_code == 200
    # the characters limit applies before any chunking
    async with serve(small_artifact, max_chars_per_text=100) as (_, client):
        r = await client.post("/predict", json={"text": review, "long_text": "chunk"})
        assert_error(r, 422, "validation_error", "SENTIMENT_MAX_CHARS_PER_TEXT=100")


async def test_sentences_of_a_mixed_review_are_scored_in_the_same_batch(
    small_artifact: Path, artifact: Artifact
) -> None:
    probe = ModelProbe()
    async with serve(small_artifact, probe) as (_, client):
        probe.reset()
        r = await client.post("/predict", json={"text": MIXED, "sentences": True})
        plain = (await client.post("/predict", json={"text": MIXED})).json()["predictions"][0]
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert "sentences" not in plain  # only when asked
    assert probs(pred, artifact) == pytest.approx(probs(plain, artifact), abs=1e-6)  # the text's own score
    sents = pred["sentences"]
    assert [(s["text"], s["start"], s["end"]) for s in sents] == [
        ("The acting is superb.", 0, 21),
        ("The plot is a mess.", 22, 41),
    ]
    assert all(MIXED[s["start"] : s["end"]] == s["text"] for s in sents)
    assert [s["label"] for s in sents] == ["positive", "negative"]
    expected = artifact.predict_proba([s["text"] for s in sents]).tolist()
    for s, exp in zip(sents, expected, strict=True):
        assert probs(s, artifact) == pytest.approx(exp, abs=1e-6)
        assert s["score"] == s["probabilities"][s["label"]] == max(s["probabilities"].values())
    # the whole text and its two sentences: three sequences, one forward pass
    assert [len(b) for b in probe.batches[:1]] == [3]


async def test_sentences_cover_the_scored_part_of_long_texts(
    small_artifact: Path, artifact: Artifact, review: str
) -> None:
    async with serve(small_artifact) as (_, client):
        r = await client.post(
            "/predict", json={"texts": [review, review], "long_text": "chunk", "sentences": True}
        )
        t = await client.post("/predict", json={"text": review, "long_text": "truncate", "sentences": True})
    chunked = r.json()["predictions"][0]
    twice = r.json()["predictions"][1]  # the same text twice: the same answer (within float noise)
    assert twice["chunks"] == chunked["chunks"] and probs(twice, artifact) == pytest.approx(
        probs(chunked, artifact)
    )
    assert [(x["start"], x["end"], x["label"]) for x in twice["sentences"]] == [
        (x["start"], x["end"], x["label"]) for x in chunked["sentences"]
    ]
    sents = chunked["sentences"]
    assert len(sents) > chunked["chunks"]
    assert all(review[s["start"] : s["end"]] == s["text"] for s in sents)
    assert [s["start"] for s in sents] == sorted(s["start"] for s in sents)
    assert sents[-1]["end"] >= len(review.rstrip()) - 1  # the whole review
    assert all(len(artifact.tokenize([s["text"]])[0][0]) <= artifact.max_length for s in sents)
    # truncate mode: only the sentences of the first max_length tokens, the last one cut there
    truncated = t.json()["predictions"][0]
    cut = truncated["sentences"]
    assert truncated["truncated"] and len(cut) < len(sents)
    assert sum(len(artifact.tokenize([s["text"]])[0][0]) for s in cut) == artifact.max_length
