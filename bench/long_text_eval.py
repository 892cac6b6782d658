"""Long documents: IMDB test accuracy when texts longer than the model's max length are truncated
versus chunked (core/long_text.py, the code the service runs), and which chunk aggregation is better.

    python -m bench.long_text_eval [--model-dir artifacts] [--limit 0] [--seed 0] [--sentences]

In-process, torch on one thread. Every distinct piece (first max_length tokens, each chunk, each
sentence with --sentences) is scored once with the artifact's calibrated probabilities, and every
variant is computed from those rows. `--limit N` evaluates a seeded random slice of N reviews.
Writes bench/results/long_text.json and .md (`--out` to change the stem, e.g. for another model).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from fractions import Fraction
from math import comb
from pathlib import Path
from typing import Any

import torch

from app.settings import Settings
from bench import REPO, RESULTS
from core.long_text import AGGREGATION, Layout, aggregate, full_stream, layout
from model.artifact import load_artifact
from training.corpora import CORPORA
from training.data import read_labelled_file
from training.fetch import data_dir


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b and c are the discordant pairs."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, float(2 * Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)))


def score_pieces(
    artifact: Any, pieces: list[list[int]], max_batch: int, max_tokens: int
) -> list[list[float]]:
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
    rows: list[list[float]] = [None] * len(pieces)  # type: ignore[list-item]
    done, step, i = 0, max(1, len(pieces) // 20), 0
    t0 = time.perf_counter()
    while i < len(order):
        longest = len(pieces[order[i]])
        size = max(1, min(max_batch, max_tokens // longest))
        batch = order[i : i + size]
        for j, row in zip(batch, artifact.probabilities([pieces[j] for j in batch]).tolist(), strict=True):
            rows[j] = row
        i += size
        if i // step > done:
            done = i // step
            print(f"  scored {i}/{len(pieces)} pieces in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="artifacts", help="artifact, or a folder with a `latest` pointer")
    ap.add_argument("--limit", type=int, default=0, help="seeded random slice of N test reviews (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-chunks", type=int, default=defaults.max_chunks_per_text, help="the service's chunk cap"
    )
    ap.add_argument("--sentences", action="store_true", help="also score every sentence on its own")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "long_text"), help="output path without extension")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    artifact = load_artifact(args.model_dir)
    max_length = artifact.max_length
    split = read_labelled_file(data_dir("imdb", progress=False) / CORPORA["imdb"].files["test"], name="test")
    index = list(range(len(split.texts)))
    if args.limit:
        index = sorted(random.Random(args.seed).sample(index, args.limit))
    texts = [split.texts[i] for i in index]
    labels = [int(split.labels[i]) for i in index]
    print(f"{artifact.meta['version']}: {len(texts)} IMDB test reviews, max_length {max_length}", flush=True)

    t0 = time.perf_counter()
    layouts: list[Layout] = []
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        encodings = artifact.tokenizer.encode_batch(batch, add_special_tokens=False)
        for text, enc in zip(batch, map(full_stream, encodings), strict=True):
            layouts.append(layout(text, enc, max_length=max_length, mode="chunk", max_chunks=10**9))
    split_s = time.perf_counter() - t0

    # every distinct token span once
    pieces: list[list[int]] = []
    where: dict[tuple[int, int, int], int] = {}

    def piece(t: int, start: int, end: int) -> int:
        key = (t, start, end)
        if key not in where:
            where[key] = len(pieces)
            pieces.append(layouts[t].ids[start:end])
        return where[key]

    trunc = [piece(t, 0, min(len(lay.ids), max_length)) for t, lay in enumerate(layouts)]
    chunks = [[piece(t, c.start, c.end) for c in lay.chunks] for t, lay in enumerate(layouts)]
    sents = (
        [[piece(t, s.start, s.end) for s in lay.sentences] for t, lay in enumerate(layouts)]
        if args.sentences
        else None
    )
    tokens_scored = sum(map(len, pieces))
    print(f"{len(pieces)} distinct pieces, {tokens_scored} tokens; split in {split_s:.1f} s", flush=True)
    t0 = time.perf_counter()
    max_tokens = defaults.max_batch_size * artifact.max_length  # the service's budget (core/engine.py)
    rows = score_pieces(artifact, pieces, max_batch=defaults.max_batch_size, max_tokens=max_tokens)
    score_s = time.perf_counter() - t0
    tokens_per_s = tokens_scored / score_s

    positive = artifact.labels.index("positive")
    long = [len(lay.ids) > max_length for lay in layouts]

    def variant(
        pick: list[list[int]], how: str, weighted: bool = True, cap: int | None = None
    ) -> dict[str, Any]:
        right: list[bool] = []
        tokens = 0
        for t, idx in enumerate(pick):
            idx = idx[:cap] if cap else idx
            weights = [len(pieces[i]) for i in idx]
            tokens += sum(weights)
            row = aggregate([rows[i] for i in idx], weights if weighted else [1] * len(idx), how)  # type: ignore[arg-type]
            right.append((row[positive] > 0.5) == (labels[t] == 1))
        n_long = sum(long)
        return {
            "accuracy": round(sum(right) / len(right), 5),
            "accuracy_long": round(
                sum(r for r, lg in zip(right, long, strict=True) if lg) / max(1, n_long), 5
            ),
            "accuracy_short": round(
                sum(r for r, lg in zip(right, long, strict=True) if not lg) / max(1, len(right) - n_long), 5
            ),
            "tokens": tokens,
            "est_seconds": round(tokens / tokens_per_s, 1),
            "_right": right,
        }

    results: dict[str, dict[str, Any]] = {
        "truncate": variant([[i] for i in trunc], "probabilities"),
        "chunk, probabilities weighted by tokens": variant(chunks, "probabilities", cap=args.max_chunks),
        "chunk, logits weighted by tokens": variant(chunks, "logits", cap=args.max_chunks),
        "chunk, probabilities unweighted": variant(
            chunks, "probabilities", weighted=False, cap=args.max_chunks
        ),
        "chunk, logits unweighted": variant(chunks, "logits", weighted=False, cap=args.max_chunks),
        f"chunk, {AGGREGATION} weighted, no chunk cap": variant(chunks, AGGREGATION),
    }
    if sents is not None:
        results["sentences, probabilities weighted by tokens"] = variant(sents, "probabilities")
        results["sentences, logits weighted by tokens"] = variant(sents, "logits")
    # paired comparisons: with truncate, and with what the service does in chunk mode
    served = f"chunk, {AGGREGATION} weighted by tokens"
    bases = {"vs_truncate": results["truncate"]["_right"], "vs_service": results[served]["_right"]}
    for r in results.values():
        for key, base in bases.items():
            b = sum(x and not y for x, y in zip(r["_right"], base, strict=True))  # right here, wrong there
            c = sum(y and not x for x, y in zip(r["_right"], base, strict=True))
            r[key] = {"fixed": b, "broken": c, "mcnemar_p": mcnemar_p(b, c)}
    for r in results.values():
        del r["_right"]

    n_chunks = [len(lay.chunks) for lay in layouts]
    n_tokens = [len(lay.ids) for lay in layouts]
    q = statistics.quantiles(n_chunks, n=100)
    chars_limit = defaults.max_chars_per_text
    within = [c for c, t in zip(n_chunks, texts, strict=True) if len(t) <= chars_limit]
    report = {
        "model": {
            "name": artifact.meta["name"],
            "version": artifact.meta["version"],
            "path": str(artifact.path),
            "max_length": max_length,
        },
        "data": {
            "split": "imdb test",
            "n": len(texts),
            "slice": f"seeded random {args.limit} (seed {args.seed})" if args.limit else "all",
            "longer_than_max_length": sum(long),
            "mean_tokens": round(statistics.mean(n_tokens), 1),
        },
        "torch_threads": args.threads,
        "max_chunks_per_text": args.max_chunks,
        "service_variant": served,
        "chunks_per_text": {
            "mean": round(statistics.mean(n_chunks), 2),
            "p50": q[49],
            "p90": q[89],
            "p99": q[98],
            "max": max(n_chunks),
            "over_cap": sum(c > args.max_chunks for c in n_chunks),
            "max_within_max_chars": max(within) if within else 0,
            "longer_than_max_chars": len(texts) - len(within),
            "max_chars_per_text": chars_limit,
        },
        "seconds": {"split": round(split_s, 1), "score": round(score_s, 1)},
        "tokens_per_s": round(tokens_per_s),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


def markdown(r: dict[str, Any]) -> str:
    d, c = r["data"], r["chunks_per_text"]
    lines = [
        f"# Long texts: truncate vs chunk on IMDB test ({r['model']['version']})",
        "",
        f"Model `{r['model']['name']}` {r['model']['version']} "
        f"(max_length {r['model']['max_length']} tokens), "
        f"{d['split']}: {d['n']} reviews ({d['slice']}), {d['longer_than_max_length']} of them longer than "
        f"max_length (mean {d['mean_tokens']} tokens). In-process, torch threads {r['torch_threads']}; "
        f"chunk cap {r['max_chunks_per_text']} per text. `est. s` = tokens scored ÷ the measured "
        f"{r['tokens_per_s']} tokens/s.",
        "",
        "| variant | accuracy | long texts | short texts | tokens scored | est. s "
        "| vs truncate: right / wrong where it is not (McNemar p) | vs the service's chunk mode |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in r["results"].items():
        vs, sv = v["vs_truncate"], v["vs_service"]
        mark = " **(service)**" if name == r["service_variant"] else ""
        lines.append(
            f"| {name}{mark} | {v['accuracy'] * 100:.2f} % | {v['accuracy_long'] * 100:.2f} % | "
            f"{v['accuracy_short'] * 100:.2f} % | {v['tokens']:,} | {v['est_seconds']} | "
            f"{vs['fixed']} / {vs['broken']} ({vs['mcnemar_p']:.2g}) | "
            f"{sv['fixed']} / {sv['broken']} ({sv['mcnemar_p']:.2g}) |"
        )
    lines += [
        "",
        f"Chunks per review: mean {c['mean']}, median {c['p50']:g}, p90 {c['p90']:g}, p99 {c['p99']:g}, "
        f"max {c['max']}; {c['over_cap']} reviews need more than the cap of {r['max_chunks_per_text']}. "
        f"Reviews within SENTIMENT_MAX_CHARS_PER_TEXT={c['max_chars_per_text']} need at most "
        f"{c['max_within_max_chars']} chunks ({c['longer_than_max_chars']} reviews are longer and would get "
        "422 from the service).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # like tests/conftest.py: the checkout's sibling data mirror when none is configured
    if "SENTIMENT_DATA_MIRROR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["SENTIMENT_DATA_MIRROR"] = str(REPO.parent / "shared" / "data")
    raise SystemExit(main())
