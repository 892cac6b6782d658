"""Benchmarks and load tools for the service, and the shared pieces they are built from.

Run them from the repository root as modules, e.g. `python -m bench.serve_bench --help`. The
entry points are the modules named in README.md and docs/; the shared pieces are:

- `bench.servers`: start the service as the Dockerfile does (or under uvicorn) and stop it
- `bench.http_client`: a raw asyncio HTTP/1.1 client and ready-made /predict requests
- `bench.load`: closed-loop load, outcomes and quantiles
- `bench.procstats`: what a process uses (RSS, CPU by thread, sockets, others on its CPU)
- `bench.metrics`: the service's /metrics as numbers
- `bench.texts`: the real texts the benchmarks send
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_MODEL = REPO / "models" / "default"


def default_model_dir() -> str:
    """$SENTIMENT_MODEL_DIR (as the service reads it), else the shipped models/default."""
    return os.environ.get("SENTIMENT_MODEL_DIR") or str(DEFAULT_MODEL)
