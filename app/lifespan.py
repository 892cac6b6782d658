"""Start-up and shutdown of the HTTP service: the engine started and closed around the server, and
SIGTERM turned into a drain (the engine refuses new work at once; the server closes its sockets after
SENTIMENT_DRAIN_DELAY_S)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI

from core.engine import Engine

log = logging.getLogger("app.lifespan")


def _install_drain_signals(
    engine: Engine, drain_delay_s: float, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """Chain a handler in front of the server's SIGTERM/SIGINT handler: mark the service draining at
    once (/ready 503, new work refused), then let the server stop accepting and finish in-flight
    requests, after `drain_delay_s` so load balancers see /ready fail first."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    delay = drain_delay_s
    installed: dict[int, Any] = {}

    def chain(prev: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            first = engine.begin_drain()
            if first and delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, prev, signum, frame)
            else:
                prev(signum, frame)

        return handler

    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)
        if callable(prev):  # a server's handler (uvicorn, gunicorn worker) to chain to
            handler = chain(prev)
            signal.signal(sig, handler)
            installed[sig] = (prev, handler)

    def restore() -> None:
        for sig, (prev, handler) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, prev)

    return restore


def freeze_heap() -> None:
    """Hide what start-up built (modules, FastAPI's routes and schemas, the model) from the cyclic
    garbage collector: a full collection walks every tracked object and stalls the event loop for it,
    and after the freeze it skips them. None was seen under load (docs/BENCHMARKS.md, "The p99 moves
    between runs"); this keeps one from stalling a long-running server."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Built complete here (model loaded and warmed up, batcher running); until then app.state.engine is
    # None and the routes answer 503 not_ready (app/deps.py).
    engine = await Engine.start(app.state.settings, app.state.metrics, app.state.infer_wrapper)
    app.state.engine = engine
    freeze_heap()
    restore_signals = _install_drain_signals(
        engine, app.state.settings.drain_delay_s, asyncio.get_running_loop()
    )
    try:
        yield
    finally:
        await engine.close()
        restore_signals()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # drop this worker from live gauges
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
        log.info("stopped")
