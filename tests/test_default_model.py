"""The embedded default model (models/default): what `make serve`, the image and Compose serve with no
training step. Its files, size, provenance, accuracy and behaviour are checked as shipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact, sha256_file
from training.behaviour import CASES, behavioural_report
from training.data import read_labelled_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "models" / "default"
MAX_BYTES = 20 * 1024 * 1024
# Measured on the SST-2 sentence-level test set when the model was trained (meta.json); recomputed here.
MIN_TEST_ACCURACY = 0.880  # 0.8874 measured; the goal issue 10 set
MIN_BEHAVIOUR_PASS = 0.84  # 56/66 measured


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DEFAULT / "meta.json").read_text())


def test_files_match_their_checksums_and_fit_the_size_budget(meta: dict):
    total = 0
    for name, digest in meta["files"].items():
        assert sha256_file(DEFAULT / name) == digest, name
        total += (DEFAULT / name).stat().st_size
    total += (DEFAULT / "meta.json").stat().st_size
    assert total <= MAX_BYTES, f"{total / 2**20:.1f} MiB"


def test_provenance_is_recorded(meta: dict):
    assert meta["command"].startswith("python -m training ") and "--teacher" in meta["command"]
    assert meta["code_commit"]
    d = meta["distillation"]
    assert d["teacher"]["accuracy"]["test"] > 0.85 and len(d["teacher"]["weights_sha256"]) == 64
    assert d["transfer_set"]["size"] == sum(d["transfer_set"]["counts"].values()) > 67_000
    assert len(d["transfer_set"]["sha256"]) == 64 and len(d["labels"]["sha256"]) == 64


def test_sentence_level_test_accuracy_recomputed(meta: dict, data_mirror: Path):
    test = read_labelled_file(data_mirror / "sst2/sentences/test.tsv", name="test")
    artifact = load_artifact(DEFAULT)
    probs = torch.cat([artifact.predict_proba(test.texts[i : i + 256]) for i in range(0, len(test), 256)])
    accuracy = float((probs.argmax(1) == torch.tensor(test.labels)).float().mean())
    print(f"SST-2 sentence-level test accuracy {accuracy:.4f}")
    assert accuracy == pytest.approx(meta["metrics"]["test"]["accuracy"], abs=1.5 / len(test))
    assert accuracy >= MIN_TEST_ACCURACY


def test_behaviour_cases(meta: dict):
    artifact = load_artifact(DEFAULT)
    report = behavioural_report(lambda texts: artifact.predict_proba(texts).argmax(1).tolist())
    overall = report["overall"]
    assert overall["total"] == len(CASES) >= 60
    assert overall["passed"] / overall["total"] >= MIN_BEHAVIOUR_PASS, report
    assert overall["passed"] == meta["behaviour"]["overall"]["passed"]
