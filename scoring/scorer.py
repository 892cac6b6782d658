"""Texts -> result rows, by the service's own pipeline (core/): the same tokenizer, long-text plan,
calibrated forward pass, chunk combination, readability check and rendering as POST /predict, so a
file's answer equals the API's.

What differs is only the batching: the service batches whatever requests arrive together; here a
window of a file's texts is planned at once, its pieces sorted by length (longest first) and run in
batches of `batch_size`, which pads far less. Each piece's probabilities do not depend on its batch
(the network is exact for padded and packed batches alike, model/network.py), so the answers are
the same to float rounding (tested to 1e-6).

A worker process loads one Scorer (`init_worker`) and then scores window after window
(`score_window`); Ray's actor (scoring/ray_engine.py) holds one too."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import torch

from core import long_text
from core.engine import active_model, make_infer, predictions, readable_flags, text_problem
from model.artifact import load_artifact
from model.backends import load_runner
from scoring.columns import ResultRow, row_of
from scoring.options import ScorerConfig

# What scoring a text gives: its result row, or why it could not be scored ("kind: message").
Outcome = ResultRow | str


class Scorer:
    def __init__(self, config: ScorerConfig) -> None:
        torch.set_num_threads(config.threads)
        if config.threads == 1:
            # `tokenizers` encodes a batch on a thread per core by default: with a worker per core those
            # threads fight each other (bench/results/bulk.md, the earlier pass). One worker, one thread.
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.config = config
        self.artifact = load_artifact(config.model_dir)
        runner = load_runner(self.artifact, config.backend, config.threads)
        self.model = active_model(self.artifact, runner, make_infer(runner))
        self.labels = self.model.labels

    def describe(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "model": self.model.identity,
            "path": str(self.artifact.path),
        }

    def rows(self, ids: list[list[int]]) -> list[list[float]]:
        """Calibrated probabilities of every piece: sorted longest first, in batches of batch_size."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[float]] = [[] for _ in ids]
        size = self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            probs = self.artifact.probabilities([ids[i] for i in idx]).tolist()
            for i, row in zip(idx, probs, strict=True):
                out[i] = row
        return out

    def score(self, texts: list[str]) -> list[Outcome]:
        """One outcome per text, in order: the service's prediction as a result row, or the problem."""
        problems: list[str | None] = []
        for text in texts:
            problem = text_problem(text, self.config.max_chars, "--max-chars")
            problems.append(None if problem is None else f"{problem[0]}: {problem[1]}")
        good = [t for t, p in zip(texts, problems, strict=True) if p is None]
        rows: list[ResultRow] = []
        if good:
            artifact, config = self.artifact, self.config
            plan = long_text.plan(
                artifact.tokenizer,
                good,
                max_length=artifact.max_length,
                mode=config.long_text,
                sentences=False,
                max_chunks=config.max_chunks,
                fast=artifact.ascii_ids,
            )
            results = long_text.reassemble(plan, self.rows(plan.ids))
            preds = predictions(self.model, results, readable_flags(self.model, plan))
            rows = [row_of(p) for p in preds]
        it = iter(rows)
        return [next(it) if p is None else p for p in problems]


# --- one Scorer per worker process ---------------------------------------------------------------

_scorer: Scorer | None = None
_failed: BaseException | None = None


def _exit_with_parent(parent: int) -> None:
    """A worker whose main process was killed (SIGKILL, out of memory) would wait for work forever,
    holding its model: it exits once it has been orphaned."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def init_worker(config: ScorerConfig) -> None:
    """ProcessPoolExecutor initializer: load the artifact once. A failure is kept and raised by the
    first task, so the main process gets the ArtifactError's message rather than a broken pool."""
    global _scorer, _failed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        _scorer = Scorer(config)
    except BaseException as e:
        _failed = e


def _worker() -> Scorer:
    if _scorer is None:
        assert _failed is not None
        raise _failed
    return _scorer


def describe() -> dict[str, Any]:
    return _worker().describe()


def score_window(texts: list[str]) -> list[Outcome]:
    return _worker().score(texts)
