"""The ASGI application: `uvicorn app.main:app` (settings from SENTIMENT_* environment variables)."""

from __future__ import annotations

from fastapi import FastAPI

from app.errors import install_error_handlers
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import RequestMiddleware
from app.openapi import install_openapi
from app.responses import OrjsonResponse
from app.routes import ops, predict
from app.service import InferWrapper, Service, lifespan
from app.settings import Settings

DESCRIPTION = """
Sentiment analysis for English text (movie-review domain): an embedding + biLSTM classifier
trained on SST-2, with calibrated probabilities.

Concurrent requests are batched dynamically on the server, so sending many small requests in
parallel is efficient; sending several texts per request (`texts`) saves HTTP overhead.

Every error has the body `{"error": {"code", "message", "id"}}`; `message` says what to fix and
`id` finds the request in the server logs. 503 responses carry `Retry-After`.
"""


def create_app(settings: Settings | None = None, *, infer_wrapper: InferWrapper | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    app = FastAPI(
        title="Sentiment service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # Our own Prometheus metrics and JSON logs cover this; FastAPI's OpenTelemetry hooks would
        # otherwise look up providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_tags=[
            {"name": "predict", "description": "sentiment predictions"},
            {"name": "operations", "description": "health, readiness, info and metrics"},
        ],
    )
    app.state.service = Service(settings, metrics, infer_wrapper)
    install_error_handlers(app)
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        log_requests=settings.access_log,
    )
    app.include_router(predict.router)
    app.include_router(ops.router)
    install_openapi(app, settings)
    return app


app = create_app()
