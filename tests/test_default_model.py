"""The embedded default model (models/default): what `make serve`, the image and Compose serve with no
training step. Its files, size, provenance, accuracy and behaviour are checked as shipped, the figures
recomputed from the real test sets. The floors are issue 20's goals where the shipped model meets them
(TweetEval macro-recall >= 0.650, SST-2 >= 87.5 %, ECE <= 0.03); its behaviour goal (90 %) is not met
yet, so that floor is the measured figure: see docs/TRAINING.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact, sha256_file
from model.labels import THREE, UNKNOWN
from model.readability import Readability
from model.tokenizer import token_ids
from training.behaviour import behavioural_report, cases_for
from training.data import read_labelled_file
from training.evaluate import classification_report

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"
MAX_BYTES = 20 * 1024 * 1024
# Measured figures: models/default/meta.json ("metrics", "behaviour") and its model card.
MIN_TWEETEVAL_MACRO_RECALL = 0.650  # TweetEval test (LSTM 58.3, FastText 62.9, RoBERTa-base 71.3)
MIN_SST2_ACCURACY = 0.875  # SST-2 sentence test, negative vs positive only
MAX_TWEETEVAL_ECE = 0.030  # TweetEval test, after temperature scaling
MIN_BEHAVIOUR_PASS = 0.83  # the hand-written cases (goal 0.90, not met)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DEFAULT / "meta.json").read_text())


@pytest.fixture(scope="module")
def artifact():
    return load_artifact(DEFAULT)


def probabilities(artifact, texts: list[str]) -> torch.Tensor:
    return torch.cat([artifact.predict_proba(texts[i : i + 256]) for i in range(0, len(texts), 256)])


def test_files_match_their_checksums_and_fit_the_size_budget(meta: dict):
    total = 0
    for name, digest in meta["files"].items():
        assert sha256_file(DEFAULT / name) == digest, name
        total += (DEFAULT / name).stat().st_size
    total += (DEFAULT / "meta.json").stat().st_size
    assert total <= MAX_BYTES, f"{total / 2**20:.1f} MiB"


def test_three_classes_and_provenance_without_machine_paths(meta: dict):
    assert meta["labels"] == list(THREE)
    assert meta["command"].startswith("python -m training ") and "--teacher" in meta["command"]
    assert meta["code_commit"]
    d = meta["distillation"]
    assert d["teacher"]["macro_recall"]["tweets-test"] > 0.6 and len(d["teacher"]["weights_sha256"]) == 64
    assert d["transfer_set"]["size"] == sum(d["transfer_set"]["counts"].values()) > 127_000
    text = (DEFAULT / "meta.json").read_text() + (DEFAULT / "MODEL_CARD.md").read_text()
    assert "/work/" not in text and "/root/" not in text and "/home/" not in text


def test_tweeteval_macro_recall_and_calibration_recomputed(meta: dict, artifact, data_mirror: Path):
    test = read_labelled_file(data_mirror / "tweets/test.tsv", label_names=THREE)
    probs = probabilities(artifact, test.texts)
    report = classification_report(probs.log(), torch.tensor(test.labels))  # probabilities are calibrated
    print(f"TweetEval test macro-recall {report['macro_recall']:.4f}, ECE {report['ece']:.4f}")
    assert report["macro_recall"] == pytest.approx(meta["metrics"]["tweets-test"]["macro_recall"], abs=2e-3)
    assert report["macro_recall"] >= MIN_TWEETEVAL_MACRO_RECALL
    assert report["ece"] <= MAX_TWEETEVAL_ECE


def test_sst2_negative_vs_positive_accuracy_recomputed(meta: dict, artifact, data_mirror: Path):
    test = read_labelled_file(data_mirror / "sst2/sentences/test.tsv")
    probs = probabilities(artifact, test.texts)[:, [0, 2]]  # negative, positive
    accuracy = float((probs.argmax(1) == torch.tensor(test.labels)).float().mean())
    print(f"SST-2 sentence test accuracy (negative vs positive) {accuracy:.4f}")
    assert accuracy == pytest.approx(meta["metrics"]["sst2-test"]["accuracy"], abs=1.5 / len(test))
    assert accuracy >= MIN_SST2_ACCURACY


def test_behaviour_cases(meta: dict, artifact):
    readability = Readability.of(artifact.tokenizer, **artifact.meta.get("readability", {}))

    def predict(texts: list[str]) -> list[str]:
        ids = token_ids(artifact.tokenizer, texts)[0]
        best = artifact.predict_proba(texts).argmax(1).tolist()
        labels = artifact.labels
        return [labels[b] if readability.readable([i]) else UNKNOWN for b, i in zip(best, ids, strict=True)]

    report = behavioural_report(predict, artifact.labels)
    overall = report["overall"]
    assert overall["total"] == len(cases_for(THREE)) >= 110
    assert overall["passed"] / overall["total"] >= MIN_BEHAVIOUR_PASS, report
    assert overall["passed"] == meta["behaviour"]["overall"]["passed"]
