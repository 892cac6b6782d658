"""FastAPI dependencies: the service state comes from app.state, injected per route.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, which
cost two thread hand-offs per request (measured: about a third of the per-request CPU)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import ApiError
from app.service import Phase, Service


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_ready_service(service: Annotated[Service, Depends(get_service)]) -> Service:
    """The service, or 503 with Retry-After while it starts up or shuts down."""
    if not service.ready:
        retry = {"Retry-After": str(service.settings.retry_after_s)}
        if service.phase is Phase.DRAINING:
            raise ApiError(
                503, "shutting_down", "the server is shutting down; retry on another instance", headers=retry
            )
        raise ApiError(503, "not_ready", "the model is still loading; retry shortly", headers=retry)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
ReadyServiceDep = Annotated[Service, Depends(get_ready_service)]
