"""`python -m app`: serve the API, training the default model first if there is none.

Host, port, workers and everything else come from SENTIMENT_* environment variables (app/settings.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from app.settings import Settings
from model.artifact import ArtifactError, resolve_artifact_dir


def ensure_artifact(model_dir: Path) -> None:
    """Train the default model into `model_dir` when it holds no artifact (a corrupt one is not
    replaced: start-up then fails and names the file)."""
    try:
        resolve_artifact_dir(model_dir)
        return
    except ArtifactError:
        pass
    cmd = [sys.executable, "-m", "training", "--out", str(model_dir)]
    print(f"no model at {model_dir}: training the default one first ({' '.join(cmd[1:])}) ...", flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        sys.exit(f"training failed (exit code {result.returncode}); see the messages above")


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as e:
        sys.exit(f"invalid SENTIMENT_* settings:\n{e}")
    ensure_artifact(settings.model_dir)

    import uvicorn

    from app.logs import uvicorn_log_config

    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker has its own metrics; a shared directory lets /metrics report all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sentiment-metrics-")
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(
        f"serving {settings.model_dir} on http://{shown}:{settings.port} with {settings.workers} worker(s); "
        f"API docs at http://{shown}:{settings.port}/docs",
        flush=True,
    )
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # uvicorn's httptools protocol with a header size limit, header and body timeouts and a
        # connection cap (SENTIMENT_MAX_HEADER_BYTES, ..._TIMEOUT_S, SENTIMENT_MAX_CONNECTIONS)
        http="app.transport:GuardedHttpTools",
        lifespan="on",
        access_log=False,  # the app writes its own JSON line per request
        log_config=uvicorn_log_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
