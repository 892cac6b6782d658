"""Where a benchmark or script leaves its results: bench/results/NAME.json (every figure) and
NAME.md (the table a person reads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import RESULTS


def save(name: str, data: Any, markdown: Sequence[str]) -> Path:
    """Write RESULTS/NAME.json and RESULTS/NAME.md (the lines joined); returns the .md path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(markdown) + "\n", encoding="utf-8")
    return path
