"""Operations: liveness, readiness, model and configuration info, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import ReadyEngineDep, SettingsDep
from app.openapi import error_responses
from app.responses import OrjsonResponse
from app.schemas import HealthResponse, InfoResponse, ReadyResponse
from core.engine import Engine, Phase

router = APIRouter(tags=["operations"])


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness: the process answers",
    description="Always 200 while the event loop runs; use /ready to decide whether to send traffic.",
    responses=error_responses(500),
)
async def health() -> Response:
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: the model is loaded and warmed up and the batcher runs",
    description="200 once start-up has finished; 503 before that and as soon as shutdown begins "
    "(SIGTERM), so load balancers stop sending traffic before the server stops.",
    responses={
        503: {
            "model": ReadyResponse,
            "description": "starting up or shutting down",
            "content": {"application/json": {"example": {"ready": False, "status": "draining"}}},
            "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        },
        **error_responses(500),
    },
)
async def ready(request: Request, settings: SettingsDep) -> Response:
    engine: Engine | None = request.app.state.engine  # None until start-up has built it
    if engine is not None and engine.ready:
        return OrjsonResponse({"ready": True, "status": "ready"})
    return OrjsonResponse(
        {"ready": False, "status": str(engine.phase if engine is not None else Phase.STARTING)},
        status_code=503,
        headers={"Retry-After": str(settings.retry_after_s)},
    )


@router.get(
    "/info",
    response_model=InfoResponse,
    summary="Model identity, labels, evaluation metrics, limits and batching settings",
    responses=error_responses(500, 503),
)
async def info(engine: ReadyEngineDep, s: SettingsDep) -> Response:
    active = engine.active  # the model serving now (a reload swaps it; core/model_swap.py)
    artifact = active.artifact
    return OrjsonResponse(
        {
            "model": active.identity,
            "labels": active.labels,
            "max_length": artifact.max_length,
            "temperature": artifact.temperature,
            "created_at": artifact.meta.get("created_at"),
            "metrics": artifact.meta.get("metrics", {}),
            "limits": {
                "max_texts_per_request": s.max_texts_per_request,
                "max_chars_per_text": s.max_chars_per_text,
                "max_body_bytes": s.max_body_bytes,
                "request_timeout_s": s.request_timeout_s,
                "long_text": s.long_text,
                "max_chunks_per_text": s.max_chunks_per_text,
                "max_explain_sequences": s.max_explain_sequences,
            },
            "batching": {
                "max_batch_size": s.max_batch_size,
                "max_batch_tokens": engine.batcher.max_batch_tokens,
                "max_wait_ms": s.max_wait_ms,
                "max_queue_texts": s.max_queue_texts,
                "max_bulk_queue_texts": s.max_bulk_queue_texts,
                "torch_threads": engine.torch_threads,
            },
            "backend": {"name": active.runner.name, "requested": s.backend},
        }
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Requests by route and status, end-to-end latency, queue time, inference time, batch "
    "size and padded tokens per batch, queue depth, rejected texts.",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "# TYPE sentiment_batch_size histogram\nsentiment_batch_size_count 42.0\n",
                }
            },
        },
        **error_responses(500),
    },
)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
