"""GET /docs (Swagger UI) and GET /redoc (ReDoc), with every file they load served by this service.

FastAPI's own pages load Swagger UI's and ReDoc's JavaScript and CSS (and a favicon) from public CDNs,
so /docs was blank offline, behind an egress firewall, or wherever the CDN is blocked. Here they come
from the fastapi-offline package's static folder (Swagger UI 5 and ReDoc 2 builds; only its files are
used, not its app factory), mounted at /docs/assets. The pages stay out of the OpenAPI document, and
like FastAPI's they are never behind the API key. URLs carry the ASGI root_path, so the pages also
work behind a path prefix."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_PATH = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js

router = APIRouter(include_in_schema=False)


def _urls(request: Request) -> tuple[str, str]:
    """(the OpenAPI document's URL, the assets' URL prefix), under the request's root_path."""
    root = request.scope.get("root_path", "").rstrip("/")
    return root + (request.app.openapi_url or "/openapi.json"), root + ASSETS_PATH


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi_url, assets = _urls(request)
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
        # validatorUrl null: no "valid" badge, which Swagger UI would load from validator.swagger.io,
        # sending it the document's URL.
        swagger_ui_parameters={"validatorUrl": None, **(request.app.swagger_ui_parameters or {})},
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    openapi_url, assets = _urls(request)
    return get_redoc_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{assets}/redoc.standalone.js",
        redoc_favicon_url=f"{assets}/favicon.png",
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """The pages and their files; the app must be created with docs_url=None and redoc_url=None."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    app.include_router(router)
