"""The student stage: the LSTM learns the targets (gold labels, or a teacher's logits plus the gold labels).

`student_stage` is the loop, readable top to bottom; what it calls is below it: the optimisers (with the
learning-rate schedule, loss scaling and clipping), the moving average of the weights, the loss, the
epoch's running figures and the best-epoch keeper with early stopping."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from model.network import SentimentLSTM
from training import distributed
from training.batching import bucketed_batches, masked_cross_entropy, score_in_batches, tensors
from training.config import TrainConfig
from training.distil import Targets
from training.progress import progress
from training.transfer import NO_LABEL

log = logging.getLogger("training")


def student_stage(
    cfg: TrainConfig,
    model: SentimentLSTM,
    targets: Targets,
    val_ids: list[list[int]],
    val_labels: list[int],
    device: torch.device,
    ctx: distributed.DistContext,
    metrics_path: Path | None,
) -> tuple[list[dict], int]:
    """Train the LSTM on the targets; keep the weights (moving average) of the best validation epoch.
    Returns the per-epoch rows (also appended to metrics_path) and the best epoch."""
    model = model.to(device)
    opt = make_optimizers(cfg, model, sparse=not ctx.enabled, amp=cfg.amp and device.type == "cuda")
    step_model = data_parallel(model, ctx, device, cfg.seed)
    batch_size = ctx.per_rank_batch_size(cfg.batch_size)
    sizes = [len(i) for i in targets.ids]
    steps_per_epoch = len(ctx.shard(bucketed_batches(sizes, batch_size, shuffle=False)))
    opt.schedule(lr_lambda(steps_per_epoch * cfg.epochs, cfg.warmup_fraction))
    ema = weight_average(model, cfg.ema_decay)
    best = BestEpoch(cfg.patience)
    rng = random.Random(cfg.seed)
    y_val = torch.tensor(val_labels)
    history: list[dict] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t_epoch = time.perf_counter()
        # the same rng on every rank: disjoint shares of one order
        batches = ctx.shard(bucketed_batches(sizes, batch_size, shuffle=True, rng=rng))
        tally = EpochTally()
        bar = progress(
            sum(map(len, batches)), f"epoch {epoch}/{cfg.epochs}", enabled=cfg.progress and ctx.is_main
        )
        for x, lengths, y, idx in tensors(targets.ids, targets.labels, batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            soft, mask = rows(targets.teacher, idx, device), rows(targets.mask, idx, device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=opt.amp):
                logits = step_model(x, lengths)
                loss = student_loss(cfg, logits, y, soft, mask)
            opt.step(loss)
            if ema is not None:
                ema.update_parameters(model)
            tally.add(loss, logits, y)
            bar.update(len(y))
            bar.set_postfix(loss=f"{tally.loss:.4f}", acc=f"{tally.accuracy:.4f}")
        bar.close()
        scored = ema.module if ema is not None else model
        val_loss, val_acc = evaluate(scored, val_ids, y_val, device)
        row = {
            "epoch": epoch,
            "train_loss": round(tally.loss, 5),
            "train_accuracy": round(tally.accuracy, 5),  # on the texts with a gold label
            "val_loss": round(val_loss, 5),
            "val_accuracy": round(val_acc, 5),
            "lr": opt.lr,
            "seconds": round(time.perf_counter() - t_epoch, 2),
            "steps": tally.steps,  # optimiser steps, and the examples this process saw (its shard under DDP)
            "examples": tally.seen,
        }
        history.append(row)
        record(row, metrics_path)
        if best.update(epoch, val_acc, scored):
            log.info("early stopping: no validation improvement for %d epochs", cfg.patience)
            break
    model.load_state_dict(best.weights())
    return history, best.epoch


@dataclass
class Optimizers:
    """The student's optimisers, stepped as one: zero, (scaled) backward, clip, step, schedule."""

    optimizers: list[torch.optim.Optimizer]
    clipped: list[torch.nn.Parameter]  # the dense parameters; sparse embedding gradients are not clipped
    clip_norm: float
    amp: bool  # float16 autocast (CUDA only), with loss scaling
    scaler: torch.amp.GradScaler  # a no-op without amp
    schedulers: list[torch.optim.lr_scheduler.LambdaLR] = field(default_factory=list)

    @property
    def lr(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"]

    def schedule(self, fn: Callable[[int], float]) -> None:
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, fn) for o in self.optimizers]

    def step(self, loss: torch.Tensor) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for o in self.optimizers:
            self.scaler.unscale_(o)
        torch.nn.utils.clip_grad_norm_(self.clipped, self.clip_norm)
        for o in self.optimizers:
            self.scaler.step(o)
        self.scaler.update()
        for sch in self.schedulers:
            sch.step()


def make_optimizers(cfg: TrainConfig, model: SentimentLSTM, *, sparse: bool, amp: bool) -> Optimizers:
    """AdamW on the LSTM and classifier; the embedding table trained by its own optimiser, or frozen
    (--embed-lr 0 with pretrained vectors). The n-gram bag is already trained and frozen.

    The embedding table is most of the parameters but a batch touches few rows: sparse gradients with
    SparseAdam update only those rows, several times faster than dense AdamW. DDP all-reduces dense
    gradients on every backend, sparse ones only on some: `sparse=False` under DDP."""
    embed_lr = cfg.effective_embed_lr()
    pretrained = cfg.embeddings == "word2vec"
    train_embedding = embed_lr > 0 or not pretrained  # random vectors must be learned
    sparse = sparse and train_embedding
    model.embedding.sparse = sparse
    model.embedding.weight.requires_grad_(train_embedding)
    rest = [p for n, p in model.named_parameters() if not n.startswith(("embedding.", "ngram"))]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ]
    if train_embedding:
        embed_params, embed_lr = [model.embedding.weight], embed_lr or cfg.lr
        optimizers.append(
            torch.optim.SparseAdam(embed_params, lr=embed_lr)
            if sparse
            else torch.optim.AdamW(embed_params, lr=embed_lr, weight_decay=0.0)
        )
    return Optimizers(optimizers, rest, cfg.clip_norm, amp, torch.amp.GradScaler("cuda", enabled=amp))


def data_parallel(
    model: torch.nn.Module, ctx: distributed.DistContext, device: torch.device, seed: int
) -> torch.nn.Module:
    """Under torchrun: the model wrapped in DistributedDataParallel, each rank with its own dropout
    masks. Otherwise the model itself."""
    if not ctx.enabled:
        return model
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(seed + ctx.rank)
    return wrapped


def lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Linear warm-up over warmup_fraction of the steps, then cosine decay to 0."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return f


def weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights (None when decay is 0). The average is what
    validation picks from and what is exported: the last step's weights wander with the last batches
    (SST-2 dev moved ~1 point between runs that differ only in floating-point order); the average of
    the last few hundred steps wanders less."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
    )


def rows(t: torch.Tensor | None, idx: list[int], device: torch.device) -> torch.Tensor | None:
    """A batch's rows of a per-example tensor (teacher logits, label mask), on the device."""
    return None if t is None else t[idx].to(device, non_blocking=True)


def student_loss(
    cfg: TrainConfig, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gold labels alone; or the teacher's logits (MSE, or KL at a temperature) on every text plus
    distil_alpha x the gold-label cross-entropy on the texts that have one. The gold cross-entropy of
    a row whose corpus lacks some labels (`mask`) is taken over the labels it has."""
    logits = logits.float()
    if soft is None:
        return masked_cross_entropy(logits, y, mask)
    if cfg.distil_loss == "mse":
        loss = F.mse_loss(logits, soft)
    else:
        t = cfg.distil_temperature
        loss = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(soft / t, 1), reduction="batchmean") * t * t
    gold = y != NO_LABEL
    if cfg.distil_alpha and bool(gold.any()):
        gold_mask = None if mask is None else mask[gold]
        loss = loss + cfg.distil_alpha * masked_cross_entropy(logits[gold], y[gold], gold_mask)
    return loss


@dataclass
class EpochTally:
    """An epoch's running training loss (over every text) and accuracy (over the texts with a gold label)."""

    steps: int = 0
    seen: int = 0
    labelled: int = 0
    correct: int = 0
    loss_sum: float = 0.0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        gold = y != NO_LABEL
        self.steps += 1
        self.seen += len(y)
        self.labelled += int(gold.sum())
        self.loss_sum += float(loss.detach()) * len(y)
        self.correct += int((logits.argmax(1)[gold] == y[gold]).sum())

    @property
    def loss(self) -> float:
        return self.loss_sum / self.seen

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.labelled)


def predict_logits(
    model: torch.nn.Module, ids: list[list[int]], device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Logits in the original order (batches are length-sorted internally)."""
    model.eval()
    return score_in_batches(
        lambda x, lengths: model(x.to(device), lengths), ids, model.classifier.out_features, batch_size
    )


def evaluate(
    model: torch.nn.Module, ids: list[list[int]], labels: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """Validation loss and accuracy."""
    logits = predict_logits(model, ids, device)
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


class BestEpoch:
    """Keeps the weights of the epoch with the best validation accuracy, and says when to stop early:
    after `patience` epochs without a better one."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.epoch = 0
        self.accuracy = -1.0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, accuracy: float, model: torch.nn.Module) -> bool:
        """Record an epoch; True when training should stop."""
        if accuracy > self.accuracy:
            self.epoch, self.accuracy = epoch, accuracy
            self.state = copy.deepcopy(model.state_dict())
            return False
        return epoch - self.epoch >= self.patience

    def weights(self) -> dict[str, torch.Tensor]:
        if self.state is None:
            raise ValueError("no epoch gave a validation accuracy (--epochs 0? an empty validation split?)")
        return self.state


def record(row: dict, metrics_path: Path | None) -> None:
    """Log an epoch's row and append it to metrics.jsonl."""
    if metrics_path is not None:
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    log.info("epoch %d: %s", row["epoch"], row)
