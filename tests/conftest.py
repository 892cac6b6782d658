"""Shared fixtures."""

from __future__ import annotations

import os
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
