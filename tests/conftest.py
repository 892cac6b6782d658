"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The real data: $SENTIMENT_DATA_MIRROR (CI sets it), else <repo>/../shared/data."""
    configured = os.environ.get("SENTIMENT_DATA_MIRROR")
    root = Path(configured) if configured else REPO.parent / "shared" / "data"
    if not (root / "sst2").is_dir():
        if configured:  # CI asked for it: a wrong path must fail, not skip
            pytest.fail(f"SENTIMENT_DATA_MIRROR={configured} has no sst2/ folder")
        pytest.skip(f"no data mirror at {root}; set SENTIMENT_DATA_MIRROR")
    return root


# The training code reads the mirror from the environment; default it for local runs.
_default_mirror = REPO.parent / "shared" / "data"
if "SENTIMENT_DATA_MIRROR" not in os.environ and _default_mirror.is_dir():
    os.environ["SENTIMENT_DATA_MIRROR"] = str(_default_mirror)

# Cached training stages (training/cache.py) go to a fresh directory per test session, so no test
# reuses what an earlier session or a developer's own runs left in ~/.cache.
if "SENTIMENT_STAGE_CACHE" not in os.environ:
    os.environ["SENTIMENT_STAGE_CACHE"] = tempfile.mkdtemp(prefix="sentiment-stage-cache-")

# Small but real: a seeded 6,000-example slice of SST-2 (and of the IMDB reviews that the default
# word2vec + bag-of-words embedding steps use), small dims, 3 epochs: ~50 s, ~0.77 dev accuracy.
# lr 1e-2, dropout 0.3 and batch 32 suit this small model (lr 3e-3 / dropout 0.5 underfits), and it
# gets obvious sentences right, which the API tests rely on. One thread: the same weights whatever the
# machine's core count (the thread count changes float summation order), and faster at these sizes.
SMALL_TRAIN_ARGS = [
    "--max-train-examples",
    "6000",
    "--epochs",
    "3",
    "--embed-dim",
    "64",
    "--hidden-dim",
    "64",
    "--lr",
    "1e-2",
    "--dropout",
    "0.3",
    "--batch-size",
    "32",
    "--seed",
    "7",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    """One artifact trained on real SST-2 data, shared by every test that needs a model."""
    from training.cli import main as train_main

    out = tmp_path_factory.mktemp("artifacts")
    assert train_main([*SMALL_TRAIN_ARGS, "--out", str(out), "--run-name", "small"]) == 0
    return out / "small"
