"""The peer servers' benchmark set-up (../shared/peers) that bench/peers_bench.py and bench/peers_ab.py
share: where the peers live, the artifact of their size, and the service's quiet settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import REPO

PEERS = REPO.parent / "shared" / "peers"
QUIET = {"SENTIMENT_ACCESS_LOG": "false", "SENTIMENT_LOG_LEVEL": "warning"}
# trained once (a few minutes on 2 cores), reused after
ARTIFACT = Path(
    os.environ.get("SENTIMENT_PEERS_ARTIFACT", Path.home() / ".cache/sentiment-service/peers-artifact")
)
TRAIN = [
    "--dataset", "sst2", "--embed-dim", "128", "--hidden-dim", "128", "--pooling", "last",
    "--ngram-buckets", "0", "--vocab-size", "30000", "--embeddings", "random", "--epochs", "1",
    "--threads", "1",
]  # fmt: skip


def artifact() -> Path:
    """The peers-size artifact, trained with this project's own code the first time."""
    if not (ARTIFACT / "latest").exists():
        print(f"training an artifact of the peers' size into {ARTIFACT} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "training", *TRAIN, "--out", str(ARTIFACT)], cwd=REPO, check=True
        )
    return ARTIFACT / "latest"
