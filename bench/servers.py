"""Start and stop the service for a benchmark or a reliability script: on a free port of 127.0.0.1,
as the Dockerfile's CMD runs it (`python -m app`: one worker, one torch thread) or under a given
uvicorn application, optionally pinned to one CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import REPO
from bench.procstats import rss_bytes


def on_cpu(cpu: int | None) -> Callable[[], None] | None:
    """A Popen preexec_fn that pins the child to `cpu` (None: no pinning)."""
    return (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit status."""
        return stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    """SIGTERM unless it has exited already, then SIGKILL if it has not exited within `timeout`;
    returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_server(
    model_dir: str | Path,
    log_path: Path,
    *,
    cpu: int | None = None,
    env: dict[str, str] | None = None,
    app: str | None = None,
    ready_timeout: float = 180,
    cwd: Path = REPO,
) -> Server:
    """`python -m app` (the Dockerfile's CMD) with the Dockerfile's ENV (one worker, one torch thread),
    on a free port of 127.0.0.1, pinned to `cpu` when given; waits until /ready answers 200.
    `app`: run this uvicorn application ("module:attribute") instead, on uvloop and httptools without
    an access log. `cwd`: the source tree to run (another checkout, for before/after comparisons)."""
    from model.artifact import resolve_artifact_dir

    resolve_artifact_dir(Path(model_dir))  # fails here, naming the folder, rather than in the child
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SENTIMENT_HOST": "127.0.0.1",
        "SENTIMENT_PORT": str(port),
        "SENTIMENT_WORKERS": "1",
        "SENTIMENT_TORCH_THREADS": "1",
        "SENTIMENT_MODEL_DIR": str(model_dir),
        **(env or {}),
    }
    command = [sys.executable, "-m", "app"]
    if app is not None:
        command = [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115  (the child keeps its own descriptor)
    proc = subprocess.Popen(
        command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=on_cpu(cpu)
    )
    log.close()
    server = Server(proc, port, log_path, full_env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise TimeoutError(f"server not ready after {ready_timeout} s:\n{server.log_text()[-3000:]}")


@contextlib.contextmanager
def pinned_to(cpu: int | None) -> Iterator[None]:
    """Run this (client) process on `cpu` for the duration; the server gets another one."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
