"""The engine's settings: batching, limits, long texts, explanations and lifecycle.

Plain pydantic data with defaults that work; app/settings.py reads them (and the HTTP layer's own) from
`SENTIMENT_*` environment variables. Two batching figures are derived rather than set:
`explain_queue_texts` and, in core/engine.py, the batch token budget (`max_batch_tokens`, raised to
the model's `max_length` when below it, so one piece always fits)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class EngineSettings(BaseModel):
    # model
    model_dir: Path = Field(
        Path("models/default"),
        description="artifact directory, or a parent whose `latest` symlink points at one (default: the "
        "distilled SST-2 model shipped in the repository; `artifacts` serves your latest training run)",
    )
    model_allowlist: Path | None = Field(
        None,
        description="a file, outside the model folder, listing the sha256 of every model.pt that may be "
        "loaded (one per line; `sha256sum` output works). Loading a model runs its code: when set, any other "
        "model is refused, at start-up and on reload, before it is loaded. Re-read on every reload",
    )
    # batching
    max_batch_size: int = Field(64, ge=1, description="most texts in one forward pass (1 turns batching off)")
    max_batch_tokens: int = Field(
        8192,
        ge=1,
        description="most tokens in one forward pass (never below the model's max length); a quarter of it "
        "for pieces of large requests, which bounds how long a short request waits behind them",
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
    max_bulk_queue_texts: int = Field(
        2048,
        ge=1,
        description="pieces of large requests (more pieces than a request may have texts: chunks, sentences, "
        "explanations) waiting, in their own lane beside the queue (core/batcher.py); default: two requests "
        "of 64 texts × 16 chunks; beyond it such requests get 503 + Retry-After",
    )
    # request limits
    max_texts_per_request: int = Field(64, ge=1, description="most texts in one request")
    # Room for real long documents: IMDB's longest review has 13,704 characters and a 3,000-word review
    # ~17,000. What is scored stays bounded by tokens (max_chunks_per_text chunks of the model's
    # max_length); this bounds reading and tokenizing. One text at the limit fits the body limit.
    max_chars_per_text: int = Field(
        32_768,
        ge=1,
        description="most characters in one text (long texts are chunked; see max_chunks_per_text)",
    )
    # long texts (core/long_text.py)
    long_text: Literal["truncate", "chunk"] = Field(
        "chunk",
        description="default for texts longer than the model's max length (a request's `long_text` overrides "
        "it): score only the first max_length tokens, or score chunks of the whole text and aggregate them",
    )
    max_chunks_per_text: int = Field(
        16, ge=1, description="chunk mode scores at most this many chunks per text; the rest is truncated"
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="a request still waiting after this long gets 504 and its texts are dropped"
    )
    # explanations (core/explain.py)
    max_explain_tokens: int = Field(
        64, ge=1, description="tokens explained per text (each costs one more sequence); later ones are not"
    )
    max_explain_sequences: int = Field(
        2048,
        ge=1,
        description="sequences one explain request may cost (one occluded text per explained token); "
        "a request needing more gets 422 before any is run",
    )
    max_explain_backlog: int = Field(
        8192, ge=1, description="occlusion sequences of explain requests waiting; beyond it they get 503"
    )
    # runtime
    backend: Literal["auto", "torchscript", "onnxruntime"] = Field(
        "auto",
        description="where the forward pass runs: TorchScript (the artifact's model.pt), or ONNX Runtime on "
        "a graph derived from its weights and checked against it at load (model/backends.py); auto: ONNX "
        "Runtime when installed and in agreement, else TorchScript",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="intra-op threads of the backend (torch or onnxruntime); 0: the CPUs this process may "
        "run on, divided by workers",
    )
    workers: int = Field(1, ge=1, description="uvicorn worker processes, each with its own model and batcher")
    warmup: bool = Field(True, description="run the batch shapes the batcher will use before reporting ready")
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="how long queued work may take to finish on shutdown"
    )

    @property
    def explain_queue_texts(self) -> int:
        """Occlusion sequences of explain requests let into the batch queue at a time: two batches (one
        computing, one queued), so explain throughput loses nothing while a plain request never queues
        behind more than that (core/explain.py)."""
        return 2 * self.max_batch_size

    @model_validator(mode="after")
    def _admissible(self) -> EngineSettings:
        if self.max_texts_per_request > self.max_queue_texts:
            # Such a request could never be admitted and would get 503 forever.
            raise ValueError(
                f"max_texts_per_request ({self.max_texts_per_request}) must not exceed "
                f"max_queue_texts ({self.max_queue_texts})"
            )
        return self

    def model_root(self) -> Path:
        """The folder reloads may load from: model_dir, or its parent when it is itself an artifact
        (then its siblings are the other versions)."""
        d = self.model_dir
        # "meta.json": model/artifact.py's META_FILE (not imported: settings stay free of torch)
        if (d / "meta.json").exists() and not (d / "latest").exists():
            return d.parent
        return d

    def resolved_torch_threads(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        try:
            cpus = len(os.sched_getaffinity(0))  # honours taskset / cgroup cpusets
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(1, cpus // self.workers)
