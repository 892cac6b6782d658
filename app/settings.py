"""Service settings, read once at start-up from `SENTIMENT_*` environment variables (or a .env file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    # hide_input_in_errors: a configuration error must not echo SENTIMENT_API_KEY into the logs.
    model_config = SettingsConfigDict(
        env_prefix="SENTIMENT_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # model
    model_dir: Path = Field(
        Path("models/default"),
        description="artifact directory, or a parent whose `latest` symlink points at one (default: the "
        "distilled SST-2 model shipped in the repository; `artifacts` serves your latest training run)",
    )
    # batching
    max_batch_size: int = Field(64, ge=1, description="most texts in one forward pass (1 turns batching off)")
    max_batch_tokens: int = Field(
        16384, ge=1, description="most padded tokens (texts × longest text) in one forward pass"
    )
    max_wait_ms: float = Field(
        0.0, ge=0, description="hold a non-full batch open this long for more company (0: never wait)"
    )
    coalesce_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="under load only (the last batch had several texts): wait up to this fraction of the "
        "last forward pass for the clients just answered to send again, so they share the next batch",
    )
    max_queue_texts: int = Field(
        1024, ge=1, description="texts waiting for inference; beyond this requests get 503 + Retry-After"
    )
    # request limits
    max_texts_per_request: int = Field(64, ge=1, description="most texts in one request")
    max_chars_per_text: int = Field(10_000, ge=1, description="most characters in one text")
    # long texts (app/long_text.py)
    long_text: Literal["truncate", "chunk"] = Field(
        "chunk",
        description="default for texts longer than the model's max length (a request's `long_text` overrides "
        "it): score only the first max_length tokens, or score chunks of the whole text and aggregate them",
    )
    max_chunks_per_text: int = Field(
        16, ge=1, description="chunk mode scores at most this many chunks per text; the rest is truncated"
    )
    max_body_bytes: int = Field(1_048_576, ge=1, description="largest accepted request body in bytes")
    request_timeout_s: float = Field(
        30.0, gt=0, description="a request still waiting after this long gets 504 and its texts are dropped"
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After header value sent with 503 responses")
    # explanations (app/explain.py)
    max_explain_tokens: int = Field(
        64, ge=1, description="tokens explained per text (each costs one more sequence); later ones are not"
    )
    explain_queue_texts: int = Field(
        128,
        ge=1,
        description="occlusion sequences of explain requests let into the batch queue at a time; the rest "
        "wait outside it, so plain requests never queue behind more than this",
    )
    max_explain_backlog: int = Field(
        8192, ge=1, description="occlusion sequences of explain requests waiting; beyond it they get 503"
    )
    demo_page: bool = Field(True, description="serve the demo page at GET /")
    # security
    api_key: SecretStr | None = Field(
        None,
        description="when set, POST /predict requires `Authorization: Bearer <key>` (401 otherwise)",
    )
    protect_ops: bool = Field(
        False, description="also require the API key on /health, /ready, /info and /metrics"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed by CORS, comma-separated or a JSON list (empty: CORS off)",
    )
    # runtime
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads; 0: the CPUs this process may run on, divided by workers"
    )
    warmup: bool = Field(True, description="run the batch shapes the batcher will use before reporting ready")
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        description="after SIGTERM, keep answering (with /ready 503) this long before closing sockets",
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="how long queued work may take to finish on shutdown"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = Field(True, description="one JSON log line per request")
    # `python -m app` only
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes, each with its own model and batcher")

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
        if self.max_texts_per_request > self.max_queue_texts:
            # Such a request could never be admitted and would get 503 forever.
            raise ValueError(
                f"max_texts_per_request ({self.max_texts_per_request}) must not exceed "
                f"max_queue_texts ({self.max_queue_texts})"
            )
        return self

    def resolved_torch_threads(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        try:
            cpus = len(os.sched_getaffinity(0))  # honours taskset / cgroup cpusets
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(1, cpus // self.workers)
