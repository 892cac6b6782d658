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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from bench.servers import free_port, stop_process
from core.batcher import InferFn
from model.artifact import Artifact

REPO = Path(__file__).resolve().parents[1]

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


@dataclass
class UvicornServer:
    """A running `uvicorn_process`: its process, port and output so far."""

    proc: subprocess.Popen[bytes]
    port: int
    log: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return b"".join(self.log).decode(errors="replace")


@contextmanager
def uvicorn_server(model_dir: Path, timeout: float = 120, **env: str) -> Iterator[UvicornServer]:
    """`uvicorn_process` on a free port, ready (GET /ready answers 200) when the block starts and
    stopped (SIGTERM, then SIGKILL after 30 s) when it ends. Its output is read all along into `.log`:
    a full pipe would block the server's logging and so its requests."""
    port = free_port()
    server = UvicornServer(uvicorn_process(model_dir, port, **env), port)
    proc = server.proc
    drain = threading.Thread(target=lambda: server.log.extend(proc.stdout or ()), daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + timeout
        while not _ready(server.url):
            assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{server.output()}"
            assert time.monotonic() < deadline, f"server not ready after {timeout} s:\n{server.output()}"
            time.sleep(0.1)
        yield server
    finally:
        stop_process(proc, 30)
        drain.join(10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def failed_start_up(model_dir: Path) -> str:
    """The output of `uvicorn_process` on `model_dir` when start-up must fail: it has to exit with an
    error status, saying that start-up failed, within 90 s."""
    proc = uvicorn_process(model_dir, free_port())
    out, _ = proc.communicate(None, 90)
    text = out.decode(errors="replace")
    assert proc.returncode != 0, text
    assert "Application startup failed" in text, text
    return text
