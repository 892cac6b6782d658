"""What a scoring run is asked to do (torch-free: the main process and Ray's driver build these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class ScorerConfig:
    """How each worker scores: the artifact and the service's long-text settings."""

    model_dir: Path
    long_text: Literal["truncate", "chunk"]
    max_chunks: int
    max_chars: int
    batch_size: int
    threads: int = 1
    backend: Literal["auto", "torchscript", "onnxruntime"] = "auto"  # as SENTIMENT_BACKEND


@dataclass(frozen=True)
class RunOptions:
    input: Path
    output: Path
    errors: Path
    text_column: str
    id_column: str | None
    scorer: ScorerConfig
    input_format: str | None = None
    workers: int = 1
    window: int = 1024
    prefix: str = ""
    on_error: Literal["skip", "fail"] = "skip"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    progress_every_s: float = 10.0
