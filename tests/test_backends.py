"""The ONNX Runtime backend (model/backends.py, model/onnx_graph.py) against TorchScript: every logit
within 1e-4 and every label equal on real text in mixed-length batches, for the shipped model and for
networks with the other options; the same answers through /predict; a clear failure when the backend
cannot run. The whole SST-2 test set and 2,000 IMDB reviews: bench/backend_speed.py."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from app.main import create_app
from app.settings import Settings
from core import long_text
from model import backends, onnx_graph
from model.artifact import (
    META_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    Artifact,
    ArtifactError,
    load_artifact,
    sha256_file,
)
from model.backends import PARITY_TOL, BackendUnavailable, load_runner, parity_report
from model.network import NetworkConfig, SentimentLSTM
from model.tokenizer import PAD_ID, UNK_ID
from tests.helpers import serve

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default"


def real_pieces(artifact: Artifact, data_mirror: Path, n_sst: int = 400, n_imdb: int = 12) -> list[list[int]]:
    """Token ids of SST-2 test sentences (every 4th, up to n_sst) and the chunks of n_imdb IMDB test
    reviews of both labels, as the service plans them (long_text: chunk)."""
    lines = (data_mirror / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines[::4][:n_sst]]
    with gzip.open(data_mirror / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        reviews = [json.loads(line)["text"] for i, line in enumerate(f) if i % 2011 == 0][:n_imdb]
    plan = long_text.plan(
        artifact.tokenizer, texts + reviews, max_length=artifact.max_length, mode="chunk", sentences=False,
        max_chunks=16, fast=artifact.ascii_ids,
    )  # fmt: skip
    assert max(map(len, plan.ids)) == artifact.max_length  # the reviews fill whole chunks
    return plan.ids


@pytest.fixture(scope="module")
def default_artifact() -> Artifact:
    return load_artifact(DEFAULT)


def assert_parity(artifact: Artifact, pieces: list[list[int]]) -> None:
    runner = load_runner(artifact, "onnxruntime")
    assert runner.name == "onnxruntime"
    report = parity_report(artifact, runner, pieces)
    assert report["texts"] == len(pieces)
    assert report["max_abs_logit_diff"] <= PARITY_TOL, report
    assert report["label_mismatches"] == 0, report
    # the calibrated probabilities the service returns, too
    batch = sorted(pieces[:64], key=len, reverse=True)
    expected = backends.TorchScriptRunner(artifact).probabilities(batch)
    assert np.allclose(runner.probabilities(batch), expected, atol=1e-5)


def test_default_model_gives_torchscripts_logits(default_artifact: Artifact, data_mirror: Path) -> None:
    assert_parity(default_artifact, real_pieces(default_artifact, data_mirror))


def write_artifact(out: Path, cfg: NetworkConfig, labels: list[str], *, half: bool) -> Path:
    """An artifact of a freshly initialised SentimentLSTM (scripted, as training/export.py writes it)
    with the shipped tokenizer: what matters here is that both backends compute the same function."""
    torch.manual_seed(0)
    net = SentimentLSTM(cfg).eval()
    if cfg.ngram_buckets:
        torch.nn.init.normal_(net.ngrams.weight, std=0.5)
        net.ngram_weight.fill_(0.7)  # 0 (as before validation fitting) would hide the bag
    if half:
        net.half_tables()
    out.mkdir()
    torch.jit.script(net).save(str(out / MODEL_FILE))
    shutil.copy(DEFAULT / TOKENIZER_FILE, out / TOKENIZER_FILE)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "name": "test-net", "version": out.name, "labels": labels,
        "temperature": 1.3, "pad_id": PAD_ID, "unk_id": UNK_ID, "network": cfg.to_dict(),
        "files": {name: sha256_file(out / name) for name in (MODEL_FILE, TOKENIZER_FILE)},
    }  # fmt: skip
    (out / META_FILE).write_text(json.dumps(meta))
    return out


VOCAB = 30000  # the shipped tokenizer's
NETWORKS = {
    # pooling=last, no n-gram bag, 3 classes, 2 layers
    "last-2layers-3classes": (
        NetworkConfig(VOCAB, num_classes=3, embed_dim=32, hidden_dim=24, num_layers=2, pooling="last"),
        ["negative", "neutral", "positive"],
        False,
    ),
    # one direction, mean pooling, a float32 n-gram bag, 5 classes
    "mean-forward-bag-5classes": (
        NetworkConfig(VOCAB, num_classes=5, embed_dim=32, hidden_dim=24, bidirectional=False, pooling="mean",
                      ngram_buckets=4096, ngram_dim=8),
        ["very negative", "negative", "neutral", "positive", "very positive"],
        False,
    ),
    # max pooling, a float16 bag and embedding (half_tables)
    "max-half-bag": (
        NetworkConfig(VOCAB, embed_dim=32, hidden_dim=24, pooling="max", ngram_buckets=4096, ngram_dim=8),
        ["negative", "positive"],
        True,
    ),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_other_network_options_give_torchscripts_logits(name: str, tmp_path: Path, data_mirror: Path) -> None:
    cfg, labels, half = NETWORKS[name]
    artifact = load_artifact(write_artifact(tmp_path / name, cfg, labels, half=half))
    assert artifact.labels == labels
    assert_parity(artifact, real_pieces(artifact, data_mirror, n_sst=200, n_imdb=4))


def test_a_graph_that_disagrees_is_refused_and_auto_falls_back(
    default_artifact: Artifact, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A different bigram hash: only the n-gram bag's features change, which the probe must notice.
    monkeypatch.setattr(onnx_graph, "BIGRAM_PRIME", 999_983)
    refused = r"model\.pt: the onnxruntime graph derived from it gives logits .*_BACKEND=torchscript"
    with pytest.raises(ArtifactError, match=refused):
        load_runner(default_artifact, "onnxruntime")
    assert load_runner(default_artifact, "auto").name == "torchscript"
    assert "serving with TorchScript" in caplog.text


def test_missing_onnxruntime_is_a_clear_error(
    default_artifact: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(BackendUnavailable, match=r"onnxruntime package is not installed.*SENTIMENT_BACKEND="):
        load_runner(default_artifact, "onnxruntime")
    assert load_runner(default_artifact, "auto").name == "torchscript"



@pytest.mark.asyncio
async def test_predict_answers_the_same_on_both_backends(data_mirror: Path) -> None:
    lines = (data_mirror / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:60]
    with gzip.open(data_mirror / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        review = json.loads(f.readline())["text"]  # several chunks
    texts = [line.split("\t")[0] for line in lines] + [review]
    answers = {}
    for backend in ("torchscript", "onnxruntime"):
        async with serve(DEFAULT, backend=backend) as (_, client):
            info = (await client.get("/info")).json()
            assert info["backend"] == {"name": backend, "requested": backend}
            responses = [
                (await client.post("/predict", json={"texts": texts[i : i + 16], "sentences": True})).json()
                for i in range(0, len(texts), 16)
            ]
        answers[backend] = [p for r in responses for p in r["predictions"]]
    expected, got = answers["torchscript"], answers["onnxruntime"]
    assert len(got) == len(texts) and got[-1]["chunks"] > 1
    for e, g in zip(expected, got, strict=True):
        assert g["label"] == e["label"]
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)
        assert [s["label"] for s in g["sentences"]] == [s["label"] for s in e["sentences"]]


@pytest.mark.asyncio
async def test_auto_serves_onnxruntime_and_says_so() -> None:
    async with serve(DEFAULT) as (_, client):
        info = (await client.get("/info")).json()
    assert info["backend"] == {"name": "onnxruntime", "requested": "auto"}


@pytest.mark.asyncio
async def test_start_up_fails_if_onnxruntime_is_wanted_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    app = create_app(Settings(model_dir=DEFAULT, warmup=False, backend="onnxruntime"))
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime"):
        async with app.router.lifespan_context(app):
            pass
