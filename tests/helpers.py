"""What many test files share: clear example texts, the app served in-process (`serve`) with an
optional probe around the model, error-body checks, and a real uvicorn process. Import from here
(`from tests.helpers import ...`); the fixtures that build artifacts are in conftest.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from bench.servers import free_port
from core.batcher import InferFn
from model.artifact import Artifact

REPO = Path(__file__).resolve().parents[1]
__all__ = [
    "NEGATIVE", "POSITIVE", "ModelProbe", "assert_error", "free_port", "metric", "serve", "uvicorn_process",
    "wait_ready",
]  # fmt: skip

POSITIVE = [
    "A wonderful, moving film with brilliant performances.",
    "a great film .",
    "I loved it. Great acting and a beautiful story.",
    "an engrossing , moving and beautifully acted story .",
]
NEGATIVE = [
    "Bad plot, bad acting, bad everything.",
    "a dull , lifeless and utterly boring mess .",
    "The worst movie I have ever seen: stupid, tedious and awful.",
    "This movie was terrible, boring and a complete waste of time.",
    "boring and stupid .",
]


class ModelProbe:
    """Wraps the real inference function: records batches, can block them or fail on a marker text."""

    def __init__(self, fail_marker: str | None = None) -> None:
        self.fail_marker = fail_marker
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[list[int]]] = []
        self.marker_ids: list[int] | None = None

    def __call__(self, infer: InferFn, artifact: Artifact) -> InferFn:
        if self.fail_marker:
            self.marker_ids = artifact.tokenize([self.fail_marker])[0][0]

        def wrapped(ids: list[list[int]]) -> list[list[float]]:
            self.entered.set()
            self.gate.wait(30)
            self.batches.append(ids)
            if self.marker_ids is not None and self.marker_ids in ids:
                raise RuntimeError("injected fault")
            return infer(ids)

        return wrapped

    def reset(self, *, block: bool = False) -> None:
        """Forget warm-up batches; optionally hold the next batch until gate.set()."""
        self.batches.clear()
        self.entered.clear()
        if block:
            self.gate.clear()

    def saw(self, ids: list[int]) -> bool:
        return any(ids in batch for batch in self.batches)

    async def wait_entered(self) -> None:
        while not self.entered.is_set():
            await asyncio.sleep(0.002)


@asynccontextmanager
async def serve(
    model_dir: Path, probe: ModelProbe | None = None, **overrides: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    overrides.setdefault("warmup", False)  # warm-up is covered by the readiness tests; keeps this fast
    app = create_app(Settings(model_dir=model_dir, **overrides), infer_wrapper=probe)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield app, client


def assert_error(r: httpx.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code and err["id"] and err["message"], body
    for needle in needles:
        assert needle in err["message"], (needle, err["message"])
    return err


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def uvicorn_process(model_dir: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """`uvicorn app.main:app` on `port` serving `model_dir`, quick to start (no warm-up, one torch thread);
    stdout is a pipe only read at the end, so the log is kept short (no per-request lines)."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--log-level", "info"],
        cwd=REPO,
        env={
            **os.environ,
            "SENTIMENT_MODEL_DIR": str(model_dir),
            "SENTIMENT_ACCESS_LOG": "false",
            "SENTIMENT_WARMUP": "false",  # not what these tests are about; keeps start-up quick
            "SENTIMENT_TORCH_THREADS": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until `url`/ready answers 200; fails with the process's output if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not ready")
