"""Length-bucketed batches: texts of similar length share a batch, so little compute goes to padding."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import torch

from model.tokenizer import pad


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    rng: random.Random | None = None,
    bucket_batches: int = 50,
) -> list[list[int]]:
    """Index batches. Shuffled: shuffle, sort within pools of `bucket_batches` batches by length,
    cut into batches, shuffle the batches. Not shuffled: sorted by length (for evaluation)."""
    idx = list(range(len(lengths)))
    if not shuffle:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = rng or random.Random()
    rng.shuffle(idx)
    pool = batch_size * bucket_batches
    batches = []
    for start in range(0, len(idx), pool):
        chunk = sorted(idx[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def tensors(
    ids: Sequence[Sequence[int]], labels: Sequence[int], batches: list[list[int]]
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]]:
    for batch in batches:
        x, lengths = pad([ids[i] for i in batch])
        yield x, lengths, torch.tensor([labels[i] for i in batch], dtype=torch.long), batch


@torch.no_grad()
def score_in_batches(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: Sequence[Sequence[int]],
    classes: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """fn(ids, lengths) over length-sorted batches; rows come back in the original order (float, CPU)."""
    out = torch.empty(len(ids), classes)
    for x, lengths, _, idx in tensors(
        ids, [0] * len(ids), bucketed_batches([len(i) for i in ids], batch_size, shuffle=False)
    ):
        out[idx] = fn(x, lengths).float().cpu()
    return out


def label_mask(
    allowed_rows: Sequence[tuple[int, ...] | None] | None, num_classes: int
) -> torch.Tensor | None:
    """Per row, which outputs its label may be (bool [N, C]): a binary corpus in a three-class
    model trains and is scored on negative and positive only. None: every row may have any label."""
    if allowed_rows is None:
        return None
    mask = torch.ones(len(allowed_rows), num_classes, dtype=torch.bool)
    for i, allowed in enumerate(allowed_rows):
        if allowed is not None:
            mask[i] = False
            mask[i, list(allowed)] = True
    return mask


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over the outputs a row's label may be (all of them without a mask)."""
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.nn.functional.cross_entropy(logits, y)
