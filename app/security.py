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
from app.settings import Settings

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


def key_matches(settings: Settings, authorization: bytes | None) -> bool:
    """Whether the raw `Authorization` header value is `Bearer <the configured key>` (True when no key
    is configured). Parsed as FastAPI's HTTPBearer does: scheme and credentials split at the first
    space, the scheme case-insensitive."""
    key = settings.api_key
    if key is None:
        return True
    scheme, _, given = (authorization or b"").partition(b" ")
    if scheme.lower() != b"bearer":
        given = b""
    return hmac.compare_digest(given, key.get_secret_value().encode("utf-8"))


def check_api_key(settings: Settings, authorization: bytes | None) -> None:
    """ApiError 401 unless the raw `Authorization` header value carries the configured key."""
    if not key_matches(settings, authorization):
        raise ApiError(401, "unauthorized", UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <the configured key>`. (`_credentials`
    declares the bearer scheme in OpenAPI; the check reads the raw header, as POST /predict's fast
    path does.)"""
    # Header values as sent: Starlette keeps the raw bytes in the scope.
    raw = next((v for k, v in request.scope["headers"] if k == b"authorization"), None)
    check_api_key(request.app.state.settings, raw)


ApiKeyDep = Depends(require_api_key)
