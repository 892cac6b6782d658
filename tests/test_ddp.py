"""torchrun with 2 CPU processes (gloo): DistributedDataParallel trains like a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_TRAIN_ARGS

REPO = Path(__file__).resolve().parents[1]
# The shared small-run settings, with random embeddings: word2vec's worker threads are not
# bit-reproducible, and this test compares two runs.
ARGS = [*SMALL_TRAIN_ARGS, "--embeddings", "random"]


def run(cmd: list[str], out: Path, name: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*cmd, *ARGS, "--out", str(out), "--run-name", name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / name / "meta.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path: Path, data_mirror: Path):
    single = run([sys.executable, "-m", "training"], tmp_path / "single", "one")
    ddp = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "training",
        ],
        tmp_path / "ddp",
        "two",
    )
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    # only rank 0 exports: exactly one artifact and one `latest` in the DDP output
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["latest", "two"]
    s, d = single["metrics"]["dev"]["accuracy"], ddp["metrics"]["dev"]["accuracy"]
    print(
        f"dev accuracy 1 process {s:.4f} ({single['training_seconds']} s), "
        f"2 processes {d:.4f} ({ddp['training_seconds']} s)"
    )
    assert s > 0.65 and d > 0.65
    assert abs(s - d) < 0.05
    # the same global batch: as many optimiser steps per epoch as one process (the batch count is
    # cut to a multiple of the world size), each rank seeing half of the examples
    assert len(ddp["history"]) == len(single["history"])
    for one, two in zip(single["history"], ddp["history"], strict=True):
        assert abs(two["steps"] - one["steps"]) <= 1, (one, two)
        assert abs(two["examples"] - one["examples"] / 2) <= 32, (one, two)
