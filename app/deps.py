"""FastAPI dependencies: the engine and the settings come from app.state, injected per route.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, which
costs two thread hand-offs per request on the event loop's busiest path (bench/results/profile.md:
where a request's CPU goes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.settings import Settings
from core.engine import Engine


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_ready_engine(engine: Annotated[Engine, Depends(get_engine)]) -> Engine:
    """The engine, or 503 (NotReady, ShuttingDown) with Retry-After while it starts or stops."""
    engine.check_ready()
    return engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
ReadyEngineDep = Annotated[Engine, Depends(get_ready_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
