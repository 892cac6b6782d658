"""Metrics and calibration: accuracy, macro-F1, macro-recall, confusion matrix, ECE, temperature
scaling, for any number of classes."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import torch
import torch.nn.functional as F


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Rows are true labels, columns predicted labels."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((labels.long(), preds.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    return cm.tolist()


def macro_f1(cm: list[list[int]]) -> float:
    f1s = []
    for c in range(len(cm)):
        tp = cm[c][c]
        fp = sum(cm[r][c] for r in range(len(cm))) - tp
        fn = sum(cm[c]) - tp
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return sum(f1s) / len(f1s)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, allowed: tuple[int, ...] | None = None) -> float:
    """Share of rows whose most probable output (among `allowed`, when given) is their label."""
    if allowed is not None:
        cols = torch.tensor(allowed)
        return float((cols[logits[:, cols].argmax(1)] == labels).float().mean())
    return float((logits.argmax(1) == labels).float().mean())


def macro_recall(cm: list[list[int]]) -> float:
    """Mean of the per-class recalls over the classes present (TweetEval's metric)."""
    recalls = [cm[c][c] / sum(cm[c]) for c in range(len(cm)) if sum(cm[c])]
    return sum(recalls) / len(recalls)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE over equal-width confidence bins (Guo et al. 2017)."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (conf[in_bin].mean() - correct[in_bin].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising NLL of softmax(logits / T) on held-out data."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits, labels = logits.detach().float(), labels.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def classification_report(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
    allowed: tuple[int, ...] | None = None,
) -> dict[str, object]:
    """Metrics of logits against labels. With `allowed`, only those outputs are compared (a binary
    test set scored by a three-class model: negative vs positive), and the matrix is theirs."""
    extra: dict[str, object] = {}
    if allowed is not None:
        logits = logits[:, list(allowed)]
        index = {c: i for i, c in enumerate(allowed)}
        labels = torch.tensor([index[int(y)] for y in labels])
        extra["scored_on_outputs"] = list(allowed)
    probs_raw = torch.softmax(logits.float(), dim=1)
    probs_cal = torch.softmax(logits.float() / temperature, dim=1)
    preds = probs_raw.argmax(dim=1)
    cm = confusion_matrix(preds, labels, logits.shape[1])
    return {
        "n": len(labels),
        "accuracy": round(float((preds == labels).float().mean()), 5),
        "macro_f1": round(macro_f1(cm), 5),
        "macro_recall": round(macro_recall(cm), 5),
        "confusion_matrix": cm,
        "nll": round(float(F.cross_entropy(logits.float(), labels)), 5),
        "nll_calibrated": round(float(F.cross_entropy(logits.float() / temperature, labels)), 5),
        "ece": round(expected_calibration_error(probs_raw, labels), 5),
        "ece_calibrated": round(expected_calibration_error(probs_cal, labels), 5),
        **extra,
    }


def majority_baseline(
    report: dict, labels: torch.Tensor, allowed: tuple[int, ...] | None = None
) -> dict[str, object]:
    """The best constant answer, which a model must beat: the most frequent of `labels` (among
    `allowed`), scored on them; `report` is the model's classification_report of the same labels.
    `beaten` is false when the model's accuracy is not above that answer's by more than one standard
    error of it on this many texts (0.09 on 30 texts, 0.017 on 872): a lead within the noise is no lead."""
    counts = Counter(int(y) for y in labels)
    candidates = list(allowed) if allowed is not None else sorted(counts)
    majority = max(candidates, key=lambda c: counts.get(c, 0))  # ties: the first label
    n = len(labels)
    share = counts.get(majority, 0) / n if n else 0.0
    margin = math.sqrt(share * (1 - share) / n) if n else 0.0
    # the matrix's columns are the scored outputs: `allowed` in order, else every label
    column = candidates.index(majority) if allowed is not None else majority
    cm = report["confusion_matrix"]
    answered = sum(row[column] for row in cm) / n if n else 0.0
    constant = [[sum(row) if c == column else 0 for c in range(len(cm))] for row in cm]
    return {
        "label": majority,
        "accuracy": round(share, 5),
        "macro_f1": round(macro_f1(constant), 5),
        "margin": round(margin, 5),
        "model_accuracy": report["accuracy"],
        "answered_majority": round(answered, 5),  # share of the texts the model answered with it
        "beaten": n > 0 and report["accuracy"] > share + margin,
    }
