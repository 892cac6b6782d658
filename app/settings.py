"""Service settings, read once at start-up from `SENTIMENT_*` environment variables (or a .env file):
the engine's (core/settings.py) plus the HTTP layer's own (body size, Retry-After, security, server)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.settings import EngineSettings


class Settings(BaseSettings, EngineSettings):
    # hide_input_in_errors: a configuration error must not echo SENTIMENT_API_KEY into the logs.
    model_config = SettingsConfigDict(
        env_prefix="SENTIMENT_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    max_body_bytes: int = Field(1_048_576, ge=1, description="largest accepted request body in bytes")
    retry_after_s: int = Field(1, ge=0, description="Retry-After header value sent with 503 responses")
    demo_page: bool = Field(True, description="serve the demo page at GET /")
    # security
    api_key: SecretStr | None = Field(
        None,
        description="when set, POST /predict and /admin/* require `Authorization: Bearer <key>` (401 "
        "otherwise); unset, /admin/* answers 403",
    )
    protect_ops: bool = Field(
        False, description="also require the API key on /health, /ready, /info and /metrics"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed by CORS, comma-separated or a JSON list (empty: CORS off)",
    )
    # runtime
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="after SIGTERM, keep answering (with /ready 503) this long before closing sockets",
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = Field(True, description="one JSON log line per request")
    # transport (app/transport.py; `python -m app`, or uvicorn --http app.transport:GuardedHttpTools)
    max_header_bytes: int = Field(
        32_768, ge=1024, description="longest request line and headers in bytes; longer ones get 431"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds from a connection's start or a request's first byte to its last header",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="seconds from a request's last header to the end of its body; then 408"
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="open connections per worker (at most the file-descriptor limit minus 64); more get 503",
    )
    # `python -m app` only
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            # An empty key would silently leave the service open (or locked): refuse it.
            raise ValueError("api_key (SENTIMENT_API_KEY) is empty; set a key or unset the variable")
        if self.protect_ops and self.api_key is None:
            raise ValueError(
                "protect_ops (SENTIMENT_PROTECT_OPS) needs api_key (SENTIMENT_API_KEY); without a key "
                "nothing would be protected"
            )
        return self
