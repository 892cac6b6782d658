"""Optional API-key authentication (SENTIMENT_API_KEY) as a FastAPI dependency.

`create_app` attaches `require_api_key` to /predict (and to the operations routes when
SENTIMENT_PROTECT_OPS=true) only when a key is configured, so the OpenAPI document declares the
bearer scheme and the 401 response exactly on the routes that can return them."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import ApiError

# auto_error=False: we raise our own 401 with the standard error body.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="`Authorization: Bearer <key>`, the key set in SENTIMENT_API_KEY",
)

UNAUTHORIZED_MESSAGE = (
    "missing or invalid API key; send the header 'Authorization: Bearer <key>' "
    "with the key configured in SENTIMENT_API_KEY"
)


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <the configured key>`."""
    key = request.app.state.service.settings.api_key
    if key is None:  # not configured: the dependency is not attached, but stay correct if it is
        return
    # Starlette decodes header values as latin-1, so encoding back gives the bytes that were sent.
    given = credentials.credentials.encode("latin-1") if credentials is not None else b""
    expected = key.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(given, expected):
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


ApiKeyDep = Depends(require_api_key)
