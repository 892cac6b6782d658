"""Where a loaded artifact's forward pass runs: TorchScript (the artifact of record) or ONNX Runtime on
a graph derived from the same weights (model/onnx_graph.py), checked against TorchScript at load.

    SENTIMENT_BACKEND=auto|torchscript|onnxruntime

`auto` (the default) takes ONNX Runtime when it is installed and its graph agrees with TorchScript on
the parity probe, else TorchScript: a rule backed by bench/results/backend_speed.md (one thread, the
service's text mix, both backends in one run), where ONNX Runtime is the faster at every batch size,
rather than a timing at start-up that a busy host would make noisy. Asking for `onnxruntime` when it
is not installed, or when its graph disagrees, fails loading with a message that says so.

A runner takes token ids (any order, any lengths; the batcher sends them longest first) and returns
one row of calibrated probabilities per text, as Artifact.probabilities does.
"""

from __future__ import annotations

import logging
import random
from typing import Literal, Protocol

import numpy as np
import torch

from model.artifact import MODEL_FILE, Artifact, ArtifactError
from model.tokenizer import PAD_ID, pad

log = logging.getLogger("model.backends")

BackendName = Literal["torchscript", "onnxruntime"]
BackendChoice = Literal["auto", "torchscript", "onnxruntime"]
PARITY_TOL = 1e-4  # most a logit may differ from TorchScript's (measured: ~3e-6 on the shipped model)
PARITY_TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "bad",
    "the plot is thin and the acting is wooden , but the last twenty minutes are so tense and so well "
    "shot that i left the theatre grinning , which is more than i can say for most films this year .",
    "not good , not bad .",
]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (its package is not installed)."""


class Runner(Protocol):
    name: BackendName
    # How the batcher cuts a sorted batch into passes (core/batcher.py's split_by_length).
    split_pad_ratio: float
    split_min_size: int

    def logits(self, ids: list[list[int]]) -> np.ndarray: ...

    def probabilities(self, ids: list[list[int]]) -> list[list[float]]: ...


class TorchScriptRunner:
    name: BackendName = "torchscript"
    # The packed LSTM skips padding; the split still saves the padded embedding and pooling work.
    split_pad_ratio = 1.5
    split_min_size = 8

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact

    @torch.inference_mode()
    def logits(self, ids: list[list[int]]) -> np.ndarray:
        return self.artifact.model(*pad(ids)).float().numpy()

    def probabilities(self, ids: list[list[int]]) -> list[list[float]]:
        return self.artifact.probabilities(ids).tolist()


class OnnxRuntimeRunner:
    name: BackendName = "onnxruntime"
    # ONNX Runtime's LSTM computes every padding step of a pass (their outputs are zeroed), so
    # passes of closer lengths pay off here (bench/results/backend_speed.md, split sweep).
    split_pad_ratio = 1.25
    split_min_size = 4

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(
                "SENTIMENT_BACKEND=onnxruntime, but the onnxruntime package is not installed "
                f"({e}); install it (pip install onnxruntime) or set SENTIMENT_BACKEND=torchscript"
            ) from None
        from model.onnx_graph import build

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads would spin on the cores the event loop and tokenizer need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            build(artifact.model, artifact.temperature), options, providers=["CPUExecutionProvider"]
        )
        self.version = ort.__version__

    def _run(self, output: str, ids: list[list[int]]) -> np.ndarray:
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        padded = np.full((len(ids), int(lengths.max())), PAD_ID, dtype=np.int64)
        for i, row in enumerate(ids):
            padded[i, : len(row)] = row
        return self.session.run([output], {"ids": padded, "lengths": lengths})[0]

    def logits(self, ids: list[list[int]]) -> np.ndarray:
        return self._run("logits", ids)

    def probabilities(self, ids: list[list[int]]) -> list[list[float]]:
        return self._run("probabilities", ids).tolist()


def parity_probe(artifact: Artifact) -> list[list[int]]:
    """One mixed-length batch: real texts of 1 to ~40 tokens and seeded random ids up to max_length."""
    ids = artifact.tokenize(PARITY_TEXTS)[0]
    rng = random.Random(0)
    vocab = artifact.tokenizer.get_vocab_size()
    for n in (artifact.max_length, 7, 2):
        ids.append([rng.randrange(2, vocab) for _ in range(n)])
    return sorted(ids, key=len, reverse=True)


def check_parity(artifact: Artifact, runner: Runner) -> float:
    """Largest logit difference from TorchScript on the parity probe; ArtifactError beyond PARITY_TOL."""
    ids = parity_probe(artifact)
    expected, got = TorchScriptRunner(artifact).logits(ids), runner.logits(ids)
    diff = float(np.abs(expected - got).max()) if expected.shape == got.shape else float("inf")
    if not diff <= PARITY_TOL:
        raise ArtifactError(
            f"{artifact.path / MODEL_FILE}: the {runner.name} graph derived from it gives logits "
            f"{diff:.2e} away from TorchScript's (> {PARITY_TOL}) on a mixed-length probe batch; "
            "serve it with SENTIMENT_BACKEND=torchscript"
        )
    return diff


def load_runner(artifact: Artifact, choice: BackendChoice, threads: int = 1) -> Runner:
    """The runner for `choice`; raises BackendUnavailable or ArtifactError if a requested backend
    cannot run this artifact (`auto` falls back to TorchScript instead, with a warning)."""
    if choice == "torchscript":
        return TorchScriptRunner(artifact)
    try:
        runner = OnnxRuntimeRunner(artifact, threads)
        diff = check_parity(artifact, runner)
    except (BackendUnavailable, ArtifactError) as e:
        if choice == "onnxruntime":
            raise
        log.warning("SENTIMENT_BACKEND=auto: serving with TorchScript (%s)", e)
        return TorchScriptRunner(artifact)
    except Exception as e:  # onnxruntime refused the graph (e.g. an operator this build lacks)
        message = f"{artifact.path / MODEL_FILE}: onnxruntime cannot run the graph derived from it ({e})"
        if choice == "onnxruntime":
            raise ArtifactError(message + "; serve it with SENTIMENT_BACKEND=torchscript") from e
        log.warning("SENTIMENT_BACKEND=auto: serving with TorchScript (%s)", message)
        return TorchScriptRunner(artifact)
    log.info("onnxruntime %s: logits within %.1e of TorchScript on the parity probe", runner.version, diff)
    return runner


def parity_report(
    artifact: Artifact, runner: Runner, pieces: list[list[int]], *, seed: int = 0, max_batch: int = 64
) -> dict[str, float | int]:
    """`runner` against TorchScript on `pieces` (token ids), in mixed batches as the service forms
    them: shuffled, cut into batches of random sizes up to max_batch, each sorted longest first.
    Returns the texts, the largest logit difference and the texts whose labels differ."""
    rng = random.Random(seed)
    order = list(range(len(pieces)))
    rng.shuffle(order)
    torchscript = TorchScriptRunner(artifact)
    worst, mismatched, start = 0.0, 0, 0
    while start < len(order):
        size = rng.choice([1, rng.randint(2, max_batch), max_batch])
        batch = sorted((pieces[i] for i in order[start : start + size]), key=len, reverse=True)
        start += size
        expected, got = torchscript.logits(batch), runner.logits(batch)
        worst = max(worst, float(np.abs(expected - got).max()))
        mismatched += int((expected.argmax(1) != got.argmax(1)).sum())
    return {"texts": len(pieces), "max_abs_logit_diff": worst, "label_mismatches": mismatched}
