"""Real review-like texts for benchmarks: SST-2 test sentences and IMDB review openings."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
from pathlib import Path

from bench import REPO


def data_root() -> Path:
    configured = os.environ.get("SENTIMENT_DATA_MIRROR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def _imdb_opening(review: str, max_chars: int) -> str:
    """The first sentences of a review, up to max_chars, cut at a sentence end where possible."""
    text = re.sub(r"<br\s*/?>", " ", review).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > max_chars // 3 else cut


def load_texts(n_sst: int = 300, n_imdb: int = 100, seed: int = 0, max_chars: int = 400) -> list[str]:
    """A seeded, shuffled mix: short PTB-tokenised SST sentences and longer raw IMDB snippets."""
    root = data_root()
    lines = (root / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sst = [line.split("\t")[0] for line in lines if line.strip()]
    imdb: list[str] = []
    with gzip.open(root / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 97 == 0:  # spread over both labels (the file is sorted by label)
                imdb.append(_imdb_opening(json.loads(line)["text"], max_chars))
    rng = random.Random(seed)
    texts = rng.sample(sst, min(n_sst, len(sst))) + rng.sample(imdb, min(n_imdb, len(imdb)))
    rng.shuffle(texts)
    return texts
