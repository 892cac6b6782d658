"""Train the n-gram bag that sits beside the LSTM (model/network.py) and fit its weight.

The bag is trained first and on its own: jointly, it memorises the training split within an epoch
(train accuracy 1.0) and leaves the LSTM no gradient to learn from. Trained apart, each part is a
complete classifier; their logits are summed with a weight chosen on the validation split, the
same split that picks the best epoch and fits the temperature, never the test split.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from model.network import SentimentLSTM
from training.batching import bucketed_batches, score_in_batches, tensors
from training.evaluate import fit_temperature
from training.progress import progress as reporter

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
    """Fit model.ngrams/ngram_head (sparse Adam on the table), keep the best validation epoch."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    bag, head = model.ngrams, model.ngram_head
    torch.nn.init.uniform_(bag.weight, -1 / bag.embedding_dim, 1 / bag.embedding_dim)
    with torch.no_grad():
        bag.weight[0].zero_()  # padding row
    bag.sparse = True
    optimizers = [
        torch.optim.SparseAdam(list(bag.parameters()), lr=lr),
        torch.optim.Adam(head.parameters(), lr=lr),
    ]
    y_val = torch.tensor(list(val_labels))
    best: tuple[float, int, dict] = (-1.0, 0, {})
    for epoch in range(1, epochs + 1):
        model.train()
        batches = bucketed_batches([len(i) for i in train_ids], batch_size, shuffle=True, rng=rng)
        bar = reporter(len(batches), f"n-gram bag {epoch}/{epochs}", unit="batch", enabled=progress)
        for x, lengths, y, _ in tensors(train_ids, train_labels, batches):
            loss = F.cross_entropy(model.ngram_logits(x, lengths), y)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in optimizers:
                o.step()
            bar.update(1)
        bar.close()
        acc = float((ngram_logits(model, val_ids).argmax(1) == y_val).float().mean())
        log.info("n-gram bag epoch %d: val accuracy %.4f", epoch, acc)
        if acc > best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("ngram")}
            best = (acc, epoch, copy.deepcopy(state))
    model.load_state_dict(best[2], strict=False)
    bag.sparse = False
    for p in (*bag.parameters(), *head.parameters()):
        p.requires_grad_(False)  # the LSTM's training leaves the bag alone
    seconds = time.perf_counter() - t0
    log.info("n-gram bag: best epoch %d, val accuracy %.4f, %.0f s", best[1], best[0], seconds)
    return {"val_accuracy": round(best[0], 5), "best_epoch": best[1], "seconds": round(seconds, 1)}


def fit_ngram_weight(lstm_logits: torch.Tensor, bag_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The bag weight w (grid 0..8) minimising validation cross-entropy of (lstm + w * bag) / T, with
    T fitted for each w: both parts are overconfident in their own way, so comparing them
    uncalibrated picks w = 0 even when the sum classifies better (it did on IMDB)."""

    def loss(w: float) -> float:
        combined = lstm_logits + w * bag_logits
        return float(F.cross_entropy(combined / fit_temperature(combined, labels), labels))

    losses = [loss(w) for w in WEIGHTS]
    return WEIGHTS[min(range(len(WEIGHTS)), key=losses.__getitem__)]
