"""The ASGI application: `uvicorn app.main:app` (settings from SENTIMENT_* environment variables)."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app.errors import install_error_handlers
from app.fast_path import fast_routes
from app.lifespan import lifespan
from app.logs import configure_logging
from app.middleware import RequestMiddleware
from app.openapi import error_responses, install_openapi
from app.responses import OrjsonResponse
from app.routes import admin, demo, docs, ops, predict
from app.security import ApiKeyDep
from app.settings import Settings
from core.engine import InferWrapper
from core.metrics import Metrics

DESCRIPTION = """
Sentiment analysis for English text (movie-review domain): an embedding + biLSTM classifier
trained on SST-2, with calibrated probabilities.

Concurrent requests are batched dynamically on the server, so sending many small requests in
parallel is efficient; sending several texts per request (`texts`) saves HTTP overhead.

Every error has the body `{"error": {"code", "message", "id"}}`; `message` says what to fix and
`id` finds the request in the server logs. 503 responses carry `Retry-After`.
"""


class SentimentApi(FastAPI):
    """FastAPI with RequestMiddleware (and CORS, when configured) outside FastAPI's own middleware
    stack rather than inside it: the @fast_path routes (POST /predict), which RequestMiddleware hands to
    their handlers, then skip
    ServerErrorMiddleware, the telemetry and body-limit layers too (each coroutine layer is resumed on
    every await of the request; bench/results/profile.md). Other routes go through the whole stack."""

    def __init__(
        self, *args: object, settings: Settings, metrics: Metrics, fast_path: bool = True, **kwargs: object
    ) -> None:
        self._settings, self._metrics, self._fast_path = settings, metrics, fast_path
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def build_middleware_stack(self) -> ASGIApp:
        """Built on the first ASGI call (the lifespan's start-up), once every router is included: the
        fast paths are derived from the routes as declared then (FastPathError stops start-up)."""
        s = self._settings
        routes = fast_routes(self.routes)  # checked even when off: a route must be servable both ways
        app: ASGIApp = RequestMiddleware(
            super().build_middleware_stack(),
            metrics=self._metrics,
            max_body_bytes=s.max_body_bytes,
            log_requests=s.access_log,
            fast_routes=routes if self._fast_path else {},
        )
        if s.cors_origins:
            # Outermost, so every response (413 and 503 from RequestMiddleware included) carries the
            # CORS headers.
            app = CORSMiddleware(
                app,
                allow_origins=s.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["Retry-After", "X-Request-ID", "WWW-Authenticate"],
                max_age=600,
            )
        return app


def create_app(
    settings: Settings | None = None, *, infer_wrapper: InferWrapper | None = None, fast_path: bool = True
) -> FastAPI:
    """The service. `infer_wrapper` wraps the model's inference function (tests inject faults with it);
    `fast_path=False` serves every route through FastAPI (tests compare both paths' answers)."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    app = SentimentApi(
        settings=settings,
        metrics=metrics,
        fast_path=fast_path,
        title="Sentiment service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
        # /docs and /redoc come from app/routes/docs.py: FastAPI's load their JS and CSS from a CDN.
        docs_url=None,
        redoc_url=None,
        # Our own Prometheus metrics and JSON logs cover this; FastAPI's OpenTelemetry hooks would
        # otherwise look up providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_tags=[
            {"name": "predict", "description": "sentiment predictions"},
            {"name": "operations", "description": "health, readiness, info and metrics"},
            {"name": "admin", "description": "model reloads without downtime (needs the API key)"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.infer_wrapper = infer_wrapper
    app.state.engine = None  # built complete by the lifespan (app/lifespan.py): Engine.start
    install_error_handlers(app)
    # Authentication only where a key is configured: then the route declares the bearer scheme and
    # the 401 in OpenAPI, and the check runs before readiness and body validation.
    auth: dict = {"dependencies": [ApiKeyDep], "responses": error_responses(401)}
    app.include_router(predict.router, **(auth if settings.api_key is not None else {}))
    app.include_router(ops.router, **(auth if settings.protect_ops else {}))
    docs.install_docs(app)
    if settings.demo_page:  # static HTML, no data: never behind the key (the page has a field for it)
        app.include_router(demo.router)
    # Admin always needs the key; without one it is off (403), whatever the client's address.
    app.include_router(
        admin.router,
        **(
            auth
            if settings.api_key is not None
            else {"dependencies": [Depends(admin.admin_disabled)], "responses": admin.ADMIN_DISABLED_RESPONSE}
        ),
    )
    install_openapi(app, settings)
    return app


app = create_app()
