"""FastAPI dependencies: the engine and the settings come from app.state, injected per route.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, which
costs two thread hand-offs per request on the event loop's busiest path (bench/results/profile.md:
where a request's CPU goes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from app.settings import Settings
from core.engine import NOT_LOADED, Engine
from core.errors import NotReady


def engine_of(state: Any) -> Engine:
    """The engine start-up built (app/lifespan.py), or NotReady (503) while it is being built."""
    engine: Engine | None = state.engine
    if engine is None:
        raise NotReady(NOT_LOADED)
    return engine


def ready_engine_of(state: Any) -> Engine:
    """The engine, or 503 (NotReady, ShuttingDown) with Retry-After while it starts or stops."""
    engine = engine_of(state)
    engine.check_ready()
    return engine


async def get_ready_engine(request: Request) -> Engine:
    return ready_engine_of(request.app.state)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ReadyEngineDep = Annotated[Engine, Depends(get_ready_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
