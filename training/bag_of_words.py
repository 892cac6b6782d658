"""The one training loop of the two bag-of-words classifiers (mean of table rows -> linear head):
the fastText-style tuning of word vectors (training/embeddings.py) and the n-gram bag beside the LSTM
(training/ngrams.py). Each supplies its forward pass and its batch order; the loop is shared.

Sparse Adam on the table (a batch touches few of its rows), Adam on the head. With `validate`, the
best validation epoch's weights are kept; without, the last epoch's."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from training.batching import masked_cross_entropy
from training.progress import progress as reporter

log = logging.getLogger("training")


@dataclass
class BagFit:
    train_accuracy: float  # of the last epoch, on the training rows as they were trained
    best_epoch: int
    val_accuracy: float  # of the best epoch; nan without `validate`


def fit_bag(
    table: torch.nn.EmbeddingBag,
    head: torch.nn.Linear,
    forward: Callable[[list[int]], torch.Tensor],
    labels: Sequence[int],
    *,
    order: Callable[[], list[list[int]]],
    epochs: int,
    lr: float,
    head_lr: float,
    mask: torch.Tensor | None = None,
    validate: Callable[[], float] | None = None,
    desc: str = "bag of words",
    progress: bool = False,
) -> BagFit:
    """Train `table` and `head` in place. forward(rows) gives the logits of those training rows;
    order() one epoch's batches of row indices; mask (bool [N, C]) the outputs each row's label may be."""
    table.sparse = True
    optimizers = [
        torch.optim.SparseAdam(list(table.parameters()), lr=lr),
        torch.optim.Adam(head.parameters(), lr=head_lr),
    ]
    y_all = torch.tensor(list(labels), dtype=torch.long)
    best_acc, best_epoch, best_state = -1.0, 0, None
    train_accuracy = 0.0
    for epoch in range(1, epochs + 1):
        table.train()
        head.train()
        batches = order()
        bar = reporter(sum(map(len, batches)), f"{desc} {epoch}/{epochs}", enabled=progress)
        correct = seen = 0
        for batch in batches:
            logits = forward(batch)
            y = y_all[batch]
            loss = masked_cross_entropy(logits, y, None if mask is None else mask[batch])
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in optimizers:
                o.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(batch)
            bar.update(len(batch))
        bar.close()
        train_accuracy = correct / max(1, seen)
        if validate is None:
            best_epoch = epoch
            continue
        acc = validate()
        log.info("%s epoch %d: val accuracy %.4f", desc, epoch, acc)
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = copy.deepcopy((table.state_dict(), head.state_dict()))
    if best_state is not None:
        table.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    return BagFit(train_accuracy, best_epoch, best_acc if validate is not None else float("nan"))
