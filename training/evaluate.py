"""Metrics and calibration: accuracy, macro-F1, confusion matrix, ECE, temperature scaling."""

from __future__ import annotations

import itertools

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
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> dict[str, object]:
    probs_raw = torch.softmax(logits.float(), dim=1)
    probs_cal = torch.softmax(logits.float() / temperature, dim=1)
    preds = probs_raw.argmax(dim=1)
    cm = confusion_matrix(preds, labels, logits.shape[1])
    return {
        "n": len(labels),
        "accuracy": round(float((preds == labels).float().mean()), 5),
        "macro_f1": round(macro_f1(cm), 5),
        "confusion_matrix": cm,
        "nll": round(float(F.cross_entropy(logits.float(), labels)), 5),
        "nll_calibrated": round(float(F.cross_entropy(logits.float() / temperature, labels)), 5),
        "ece": round(expected_calibration_error(probs_raw, labels), 5),
        "ece_calibrated": round(expected_calibration_error(probs_cal, labels), 5),
    }
