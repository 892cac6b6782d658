"""Label sets and the one number a prediction carries: shared by training and serving (torch-free).

A model's labels are whatever its training data had (meta.json `labels`); these are the sentiment
sets the built-in corpora use, in output order."""

from __future__ import annotations

from collections.abc import Sequence

BINARY = ("negative", "positive")
THREE = ("negative", "neutral", "positive")
FIVE = ("very negative", "negative", "neutral", "positive", "very positive")

# Answered instead of a label for a text the model cannot read (model/readability.py).
UNKNOWN = "unknown"

# How far towards positive each sentiment name lies, in [-1, 1].
_POLES = {"very negative": -1.0, "negative": -1.0, "neutral": 0.0, "positive": 1.0, "very positive": 1.0}


def polarity_weights(labels: Sequence[str]) -> list[float] | None:
    """Weights w with polarity = sum(p_i * w_i) in [-1, 1]: p(positive) - p(negative) for two or three
    classes; for five, the expected rating rescaled (very negative -1, negative -0.5, ..., very positive
    1). None for labels that are not sentiment names (a user's own label set has no polarity)."""
    names = [label.lower() for label in labels]
    if tuple(names) == FIVE:
        return [-1.0, -0.5, 0.0, 0.5, 1.0]
    if not set(names) <= set(_POLES) or "negative" not in names or "positive" not in names:
        return None
    return [_POLES[n] for n in names]


def polarity(probabilities: Sequence[float], weights: Sequence[float]) -> float:
    return max(-1.0, min(1.0, sum(p * w for p, w in zip(probabilities, weights, strict=True))))
