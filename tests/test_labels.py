"""Any label set, end to end: a five-class SST artifact trained by the same code and served by the API
(labels in /info, the OpenAPI schema and predictions, polarity), and texts the model cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.artifact import load_artifact
from model.labels import BINARY, FIVE, THREE, UNKNOWN, polarity, polarity_weights
from model.readability import Readability
from model.tokenizer import token_ids
from tests.helpers import serve
from training.cli import main as train_main

TINY = ["--max-train-examples", "4000", "--epochs", "1", "--embeddings", "random", "--embed-dim", "32",
        "--hidden-dim", "32", "--ngram-buckets", "4096", "--ngram-epochs", "1", "--threads", "1",
        "--no-progress", "--seed", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def five_class(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    out = tmp_path_factory.mktemp("five")
    assert train_main([*TINY, "--preset", "sst5", "--out", str(out), "--run-name", "sst5"]) == 0
    return out / "sst5"


def test_polarity_weights_by_label_set():
    assert polarity_weights(BINARY) == [-1.0, 1.0]
    assert polarity_weights(THREE) == [-1.0, 0.0, 1.0]
    assert polarity_weights(FIVE) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert polarity_weights(["billing", "bug", "praise"]) is None
    assert polarity([0.1, 0.2, 0.7], [-1.0, 0.0, 1.0]) == pytest.approx(0.6)


@pytest.mark.slow
def test_a_five_class_artifact_records_its_labels_and_metrics(five_class: Path):
    artifact = load_artifact(five_class)
    assert artifact.labels == list(FIVE)
    metrics = artifact.meta["metrics"]["test"]
    assert metrics["n"] == 2210 and len(metrics["confusion_matrix"]) == 5
    assert 0 <= metrics["macro_recall"] <= 1
    assert artifact.predict_proba(["a fine film"]).shape == (1, 5)
    assert "/work/" not in (five_class / "MODEL_CARD.md").read_text()  # no absolute machine paths
    assert "/work/" not in (five_class / "meta.json").read_text()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_five_class_model_is_served_with_its_labels(five_class: Path):
    async with serve(five_class) as (_, client):
        info = (await client.get("/info")).json()
        schema = (await client.get("/openapi.json")).json()
        r = await client.post("/predict", json={"texts": ["A moving, beautiful film.", "Dull and tedious."],
                                                "sentences": True})
    assert info["labels"] == list(FIVE)
    enum = schema["components"]["schemas"]["Prediction"]["properties"]["label"]["enum"]
    assert enum == [*FIVE, UNKNOWN]
    for pred in r.json()["predictions"]:
        assert list(pred["probabilities"]) == list(FIVE)
        assert pred["label"] in FIVE and pred["warnings"] == []
        p = [pred["probabilities"][name] for name in FIVE]
        expected = sum(x * w for x, w in zip(p, [-1, -0.5, 0, 0.5, 1], strict=True))
        assert pred["polarity"] == pytest.approx(expected)
        assert pred["sentences"][0]["label"] in FIVE and pred["sentences"][0]["polarity"] is not None


@pytest.mark.asyncio
async def test_a_text_it_cannot_read_is_flagged_not_guessed(small_artifact: Path):
    texts = ["asdf qwer zxcv", "A great film.", "La película fue aburrida.", "!!!"]
    async with serve(small_artifact) as (_, client):
        r = await client.post("/predict", json={"texts": texts, "explain": True})
    assert r.status_code == 200, r.text
    gibberish, normal, foreign, marks = r.json()["predictions"]
    for pred in (gibberish, foreign):
        assert pred["label"] == UNKNOWN and pred["score"] is None and pred["polarity"] is None
        assert pred["warnings"] == ["unreadable"] and len(pred["probabilities"]) == 2
        assert pred["explanation"]["target"] in BINARY  # what the model itself would have said
    assert normal["label"] in BINARY and normal["warnings"] == []  # the batch's other texts as usual
    assert marks["warnings"] == []  # no words at all: nothing to judge


def test_readability_counts_known_and_common_words(small_artifact: Path):
    artifact = load_artifact(small_artifact)
    r = Readability.of(artifact.tokenizer)
    ids = token_ids(artifact.tokenizer, ["the film was good", "zzqx blorf", "!! ?"])[0]
    assert r.readable([ids[0]]) and not r.readable([ids[1]]) and r.readable([ids[2]])
    assert r.counts([ids[1]]) == (2, 0, 0)
