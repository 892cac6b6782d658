"""Tokenizing one text for /predict: the `tokenizers` pipeline against AsciiIds (model/tokenizer.py).

    python -m bench.tokenizer_speed [--model-dir models/default] [--rounds 7]

Per text, as the engine calls it (one request's text at a time): `token_ids` through the tokenizer
alone, and with AsciiIds in front (the texts it does not answer for still go through the tokenizer),
and the whole long-text plan (chunk mode) both ways. Three text sets: the serving benchmark's (SST-2
test sentences and IMDB review openings), ../shared/peers' texts, and whole IMDB reviews (mostly longer
than max_length: these fall back). Rounds alternate the two ways; each figure is the best round. One
process, pinned to one CPU. Writes bench/results/tokenizer_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Callable

from bench import DEFAULT_MODEL, REPO, RESULTS
from bench.texts import data_root, load_texts
from core import long_text
from model.artifact import load_artifact
from model.tokenizer import token_ids


def per_text_us(fn: Callable[[str], object], texts: list[str]) -> float:
    t0 = time.perf_counter()
    for t in texts:
        fn(t)
    return (time.perf_counter() - t0) / len(texts) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL))
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    os.sched_setaffinity(0, {os.sched_getaffinity(0).pop()})
    art = load_artifact(a.model_dir)
    tok, fast, n = art.tokenizer, art.ascii_ids, art.max_length
    if fast is None:
        sys.exit(f"{a.model_dir}: its tokenizer has other rules than model/tokenizer.py; AsciiIds is off")
    with gzip.open(data_root() / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        reviews = [json.loads(line)["text"] for i, line in enumerate(f) if i % 250 == 0]
    peers = REPO.parent / "shared" / "peers" / "texts.txt"
    sets = {"serving benchmark (400)": load_texts()}
    if peers.exists():
        sets["peers' texts (203)"] = peers.read_text(encoding="utf-8").splitlines()
    sets[f"whole IMDB reviews ({len(reviews)})"] = reviews
    kw = {"max_length": n, "mode": "chunk", "sentences": False, "max_chunks": 16}
    ways: dict[str, Callable[[str], object]] = {
        "token_ids, tokenizer": lambda t: token_ids(tok, [t]),
        "token_ids, AsciiIds first": lambda t: token_ids(tok, [t], fast),
        "plan (chunk), tokenizer": lambda t: long_text.plan(tok, [t], **kw),
        "plan (chunk), AsciiIds first": lambda t: long_text.plan(tok, [t], fast=fast, **kw),
    }
    rows = []
    for name, texts in sets.items():
        assert all(token_ids(tok, [t], fast) == token_ids(tok, [t]) for t in texts)
        best = {w: min(per_text_us(fn, texts) for _ in range(a.rounds)) for w, fn in ways.items()}
        answered = sum(fast.ids(t) is not None for t in texts) / len(texts)
        rows.append({"texts": name, "answered_by_ascii_ids": answered, "us_per_text": best})
        print(name, f"{answered:.0%} answered", {w: round(v, 1) for w, v in best.items()}, flush=True)
    RESULTS.mkdir(exist_ok=True)
    result = {"model_dir": a.model_dir, "rounds": a.rounds, "rows": rows}
    (RESULTS / "tokenizer_speed.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Tokenizing one text: `tokenizers` vs AsciiIds (bench/tokenizer_speed.py)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, one run, one CPU, best of {a.rounds} alternating rounds; "
        f"µs per text; model `{art.meta['name']}` {art.meta['version']}. Both ways give the same ids "
        "(asserted for every text here).",
        "",
        "| texts | answered by AsciiIds | " + " | ".join(ways) + " |",
        "| --- | --- | " + " | ".join("---" for _ in ways) + " |",
    ]
    for r in rows:
        cells = " | ".join(f"{r['us_per_text'][w]:.1f}" for w in ways)
        lines.append(f"| {r['texts']} | {r['answered_by_ascii_ids']:.0%} | {cells} |")
    (RESULTS / "tokenizer_speed.md").write_text("\n".join(lines) + "\n")
    print("wrote bench/results/tokenizer_speed.md")


if __name__ == "__main__":
    main()
