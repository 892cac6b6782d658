"""The service's application with the explain lane set from BENCH_EXPLAIN_LANE, for bench/explain_bench.py
only: the service derives the lane (2 x SENTIMENT_MAX_BATCH_SIZE, core/settings.py), and the benchmark
compares it with other sizes. `uvicorn bench.lane_app:app`."""

from __future__ import annotations

import os

from app.main import create_app

app = create_app()
app.state.engine.explain_lane.size = int(os.environ["BENCH_EXPLAIN_LANE"])
