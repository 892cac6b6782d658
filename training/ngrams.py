"""Train the n-gram bag that sits beside the LSTM (model/network.py) and fit its weight.

The bag is trained first and on its own: jointly, it memorises the training split within an epoch
(train accuracy 1.0) and leaves the LSTM no gradient to learn from. Trained apart, each part is a
complete classifier; their logits are summed with a weight chosen on the validation split, the
same split that picks the best epoch and fits the temperature, never the test split.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model.network import SentimentLSTM
from model.tokenizer import pad
from training.bag_of_words import fit_bag
from training.batching import bucketed_batches, score_in_batches
from training.config import BUCKETS_PER_BIGRAM, MIN_SIZED_BUCKETS, NGRAM_BUCKETS
from training.evaluate import fit_temperature

log = logging.getLogger("training")
WEIGHTS = [round(0.1 * i, 1) for i in range(0, 81)]  # candidate bag weights, 0 = LSTM alone


def ngram_logits(model: SentimentLSTM, ids: Sequence[Sequence[int]], batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return score_in_batches(model.ngram_logits, ids, model.ngram_head.out_features, batch_size)


def train_ngram_bag(
    model: SentimentLSTM,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    val_ids: Sequence[Sequence[int]],
    val_labels: Sequence[int],
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Fit model.ngrams/ngram_head (training/bag_of_words.py), keep the best validation epoch."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    bag, head = model.ngrams, model.ngram_head
    torch.nn.init.uniform_(bag.weight, -1 / bag.embedding_dim, 1 / bag.embedding_dim)
    with torch.no_grad():
        bag.weight[0].zero_()  # padding row
    lengths = [len(i) for i in train_ids]
    y_val = torch.tensor(list(val_labels))

    def forward(rows: list[int]) -> torch.Tensor:
        return model.ngram_logits(*pad([train_ids[i] for i in rows]))

    def validate() -> float:
        return float((ngram_logits(model, val_ids).argmax(1) == y_val).float().mean())

    fit = fit_bag(
        bag, head, forward, train_labels, epochs=epochs, lr=lr, head_lr=lr, validate=validate,
        order=lambda: bucketed_batches(lengths, batch_size, shuffle=True, rng=rng),
        desc="n-gram bag", progress=progress,
    )
    bag.sparse = False
    for p in (*bag.parameters(), *head.parameters()):
        p.requires_grad_(False)  # the LSTM's training leaves the bag alone
    seconds = time.perf_counter() - t0
    log.info("n-gram bag: best epoch %d, val accuracy %.4f, %.0f s", fit.best_epoch, fit.val_accuracy,
             seconds)
    return {"val_accuracy": round(fit.val_accuracy, 5), "best_epoch": fit.best_epoch,
            "seconds": round(seconds, 1)}


def sized_buckets(train_ids: Sequence[Sequence[int]]) -> tuple[int, int]:
    """--ngram-buckets -1: the bucket count for this training split, and its distinct bigrams. A few
    rows per bigram keeps collisions rare (on 2,700 SST-2 sentences 2x to 16x gave the same dev accuracy,
    docs/SMALL_DATA.md); more rows only make the artifact bigger."""
    bigrams = len({pair for row in train_ids for pair in itertools.pairwise(row)})
    wanted = 1 << max(0, BUCKETS_PER_BIGRAM * bigrams - 1).bit_length()  # a power of two, >= the product
    return min(NGRAM_BUCKETS, max(MIN_SIZED_BUCKETS, wanted)), bigrams


def fit_ngram_weight(lstm_logits: torch.Tensor, bag_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The bag weight w (grid 0..8) minimising validation cross-entropy of (lstm + w * bag) / T, with
    T fitted for each w: both parts are overconfident in their own way, so comparing them
    uncalibrated picks w = 0 even when the sum classifies better (it did on IMDB)."""

    def loss(w: float) -> float:
        combined = lstm_logits + w * bag_logits
        return float(F.cross_entropy(combined / fit_temperature(combined, labels), labels))

    losses = [loss(w) for w in WEIGHTS]
    return WEIGHTS[min(range(len(WEIGHTS)), key=losses.__getitem__)]
