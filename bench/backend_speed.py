"""TorchScript against ONNX Runtime on one artifact, in one process, one thread, pinned to one CPU:
texts/s through the service's batch path (tokenize, sort, split into passes, forward) on the
service's text mix (bench/texts.py), and parity on the whole SST-2 sentence test set and IMDB test
reviews chunked as the service chunks them (every logit, every label).

    python -m bench.backend_speed [--model-dir models/default] [--seconds 3] [--rounds 3] [--cpu 1]

The backends are measured in turns (A B A B ...) and each figure is the best of its rounds, so a burst
of foreign load on a shared machine does not decide the comparison. Also measured, to show where the
time goes: ONNX Runtime with TorchScript's pass split (what model/backends.py's own split buys), and
both backends on full-length chunks (64 × max_length tokens: the LSTM alone). Writes
bench/results/backend_speed.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import DEFAULT_MODEL, RESULTS
from bench.texts import data_root, load_texts
from bench.timing import rate
from core import long_text
from core.batcher import Batcher
from model.artifact import Artifact, load_artifact
from model.backends import OnnxRuntimeRunner, Runner, TorchScriptRunner, check_parity, parity_report

BATCHES = (1, 8, 64)


def service_path(artifact: Artifact, runner: Runner, split: tuple[float, int] | None = None) -> Callable:
    """What the service does per batch: tokenize, sort longest first, split into passes, forward in the
    inference thread (core/batcher.py), with the runner's split unless `split` is given."""
    ratio, size = split or (runner.split_pad_ratio, runner.split_min_size)
    batcher = Batcher(runner.probabilities, split_pad_ratio=ratio, split_min_size=size)

    def run(batch: list[str]) -> None:
        batcher.run_sync(sorted(artifact.tokenize(batch)[0], key=len, reverse=True))

    return run


def imdb_reviews(n: int) -> list[str]:
    """n IMDB test reviews spread evenly over the file (it is sorted by label)."""
    with gzip.open(data_root() / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        reviews = [json.loads(line)["text"] for line in f]
    return reviews[:: max(1, len(reviews) // n)][:n]


def parity_pieces(artifact: Artifact, n_imdb: int) -> tuple[list[list[int]], dict[str, int]]:
    """Every SST-2 test sentence, and n_imdb IMDB test reviews spread over both labels, chunked."""
    lines = (data_root() / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sst = [line.split("\t")[0] for line in lines if line.strip()]
    reviews = imdb_reviews(n_imdb)
    plan = long_text.plan(
        artifact.tokenizer, sst + reviews, max_length=artifact.max_length, mode="chunk", sentences=False,
        max_chunks=16, fast=artifact.ascii_ids,
    )  # fmt: skip
    return plan.ids, {"sst2_sentences": len(sst), "imdb_reviews": len(reviews), "pieces": len(plan.ids)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL))
    p.add_argument("--seconds", type=float, default=3.0, help="per figure per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu", type=int, default=1, help="the CPU this process is pinned to")
    p.add_argument("--imdb", type=int, default=2000, help="IMDB test reviews in the parity set")
    p.add_argument("--skip-parity", action="store_true")
    a = p.parse_args()

    os.sched_setaffinity(0, {a.cpu})
    torch.set_num_threads(1)
    artifact = load_artifact(a.model_dir)
    runners: dict[str, Runner] = {
        "torchscript": TorchScriptRunner(artifact),
        "onnxruntime": OnnxRuntimeRunner(artifact, threads=1),
    }
    check_parity(artifact, runners["onnxruntime"])
    import onnxruntime

    texts = [t.strip() for t in load_texts() if t.strip()]
    rng = random.Random(1)
    mixes = {b: [rng.sample(texts, b) for _ in range(200)] for b in BATCHES}
    openings = [i for i in artifact.tokenize(imdb_reviews(400))[0] if len(i) == artifact.max_length]
    full = [rng.sample(openings, 64) for _ in range(20)]

    # name -> (backend, what one call does, the work items, texts per item)
    cases: dict[str, tuple[str, Callable, list[Any], int]] = {}
    for b in BATCHES:
        for name, runner in runners.items():
            cases[f"{name} b{b}"] = (name, service_path(artifact, runner), mixes[b], b)
    ts_split = (TorchScriptRunner.split_pad_ratio, TorchScriptRunner.split_min_size)
    cases["onnxruntime b64, torchscript split"] = (
        "onnxruntime", service_path(artifact, runners["onnxruntime"], ts_split), mixes[64], 64
    )
    for name, runner in runners.items():
        cases[f"{name} 64 x {artifact.max_length} tokens"] = (name, runner.probabilities, full, 64)

    best: dict[str, float] = {}
    for r in range(a.rounds):
        for case, (_, fn, work, each) in cases.items():
            v = rate(fn, work, each, a.seconds)
            best[case] = max(v, best.get(case, 0.0))
            print(f"round {r + 1} {case}: {v:.0f} texts/s", flush=True)

    parity: dict[str, Any] = {}
    if not a.skip_parity:
        pieces, counts = parity_pieces(artifact, a.imdb)
        t0 = time.perf_counter()
        parity = {**counts, **parity_report(artifact, runners["onnxruntime"], pieces)}
        parity["seconds"] = round(time.perf_counter() - t0, 1)
        print("parity:", parity, flush=True)

    ratios = {f"b{b}": best[f"onnxruntime b{b}"] / best[f"torchscript b{b}"] for b in BATCHES}
    result = {
        "model_dir": str(Path(a.model_dir).resolve()),
        "model": {k: artifact.meta[k] for k in ("name", "version")},
        "host": f"shared 2-core VM ({platform.processor() or platform.machine()}), process pinned to CPU "
        f"{a.cpu}, 1 thread; other work on the machine (benchmarks paused it where they could)",
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "seconds_per_figure": a.seconds,
        "rounds": a.rounds,
        "texts_per_s": {k: round(v, 1) for k, v in best.items()},
        "onnxruntime_over_torchscript": {k: round(v, 3) for k, v in ratios.items()},
        "parity": parity,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backend_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "backend_speed.md").write_text(report(result, artifact.max_length))
    print(report(result, artifact.max_length))


def report(r: dict[str, Any], max_length: int) -> str:
    t = r["texts_per_s"]
    lines = [
        f"# Backend speed: TorchScript vs ONNX Runtime ({r['model']['name']} {r['model']['version']})",
        "",
        f"`python -m bench.backend_speed` (through /work/bench-quiet.sh). {r['host']}. Best of "
        f"{r['rounds']} alternating rounds of {r['seconds_per_figure']} s per figure; torch "
        f"{r['versions']['torch']}, onnxruntime {r['versions']['onnxruntime']}.",
        "",
        "Service path on the service's text mix (bench/texts.py: SST-2 test sentences and IMDB review "
        "openings): tokenize, sort, split into passes, forward, texts/s:",
        "",
        "| batch | TorchScript | ONNX Runtime | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for b in BATCHES:
        ts, ort = t[f"torchscript b{b}"], t[f"onnxruntime b{b}"]
        lines.append(f"| {b} | {ts:,.0f} | {ort:,.0f} | {ort / ts:.2f}× |")
    lines += [
        "",
        "Where the time goes:",
        "",
        "- ONNX Runtime at batch 64 with TorchScript's pass split (pad ratio 1.5, min 8) instead of its "
        f"own (1.25, 4): {t['onnxruntime b64, torchscript split']:,.0f} texts/s. ONNX Runtime's LSTM "
        "runs every padding step of a pass (the packed TorchScript LSTM skips them), so closer lengths "
        "per pass pay off for it.",
        f"- 64 texts of {max_length} tokens (IMDB review openings; no padding, the LSTM dominates): "
        f"TorchScript {t[f'torchscript 64 x {max_length} tokens']:,.0f}, ONNX Runtime "
        f"{t[f'onnxruntime 64 x {max_length} tokens']:,.0f} texts/s.",
    ]
    par = r["parity"]
    if par:
        lines += [
            "",
            f"Parity: all {par['sst2_sentences']:,} SST-2 test sentences and {par['imdb_reviews']:,} IMDB "
            f"test reviews chunked ({par['texts']:,} pieces), scored in shuffled mixed-length batches of "
            f"1-64: largest logit difference {par['max_abs_logit_diff']:.1e} (limit 1e-4), "
            f"{par['label_mismatches']} labels differ.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
