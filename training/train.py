"""Training as a pipeline of named stages, run top to bottom by `train()`:

data -> vocabulary and embeddings -> network -> n-gram bag -> [teacher -> transfer set -> teacher
labels] -> student -> calibration; export (training/export.py) writes the artifact. The teacher
stages run only with --teacher (training/distil.py); without it the student learns the gold labels."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from model.network import NetworkConfig, SentimentLSTM
from model.tokenizer import token_ids
from training import distributed
from training.batching import bucketed_batches, masked_cross_entropy, score_in_batches, tensors
from training.config import TrainConfig
from training.data import (
    Split,
    file_checksums,
    load_builtin,
    load_user_files,
    parse_weights,
    relabel,
    subset,
)
from training.distil import Targets, distillation_targets, fine_tune_teachers, gold_targets
from training.evaluate import accuracy, classification_report, fit_temperature
from training.fetch import data_dir
from training.ngrams import fit_ngram_weight, ngram_logits, train_ngram_bag
from training.progress import progress
from training.transfer import NO_LABEL
from training.vocabulary import Vocabulary, vocabulary_stage

log = logging.getLogger("training")
# Short-text datasets whose word2vec, bag-of-words tuning and transfer set also read IMDB's training
# reviews (never its test set): in-domain unlabelled text the labelled phrases lack.
UNLABELLED_REVIEWS = ("sst2", "sst3", "sst5", "general")


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was requested but torch sees no CUDA device; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(requested)


def load_splits(cfg: TrainConfig) -> dict[str, Split]:
    if cfg.train_file:
        splits = load_user_files(
            Path(cfg.train_file),
            Path(cfg.eval_file) if cfg.eval_file else None,
            Path(cfg.val_file) if cfg.val_file else None,
            seed=cfg.seed,
            val_fraction=cfg.val_fraction,
            text_column=cfg.text_column,
            label_column=cfg.label_column,
            label_names=tuple(cfg.labels.split(",")) if cfg.labels else None,
        )
    else:
        weights = parse_weights(cfg.mix) if cfg.mix else None
        root = data_dir(cfg.dataset, progress=cfg.progress)
        for corpus in weights or ():  # corpora added to the mixture must be on disk too
            data_dir(corpus, progress=cfg.progress)
        splits = load_builtin(
            cfg.dataset, root, seed=cfg.seed, val_fraction=cfg.val_fraction, weights=weights
        )
    if cfg.max_train_examples:
        splits["train"] = seeded_slice(splits["train"], cfg.max_train_examples, cfg.seed)
    return splits


def seeded_slice(split: Split, n: int, seed: int) -> Split:
    if len(split) <= n:
        return split
    keep = sorted(random.Random(seed).sample(range(len(split)), n))
    return subset(split, keep, split.name, f"seeded slice of {n}")


def unlabelled_corpus(cfg: TrainConfig, splits: dict[str, Split]) -> list[Split]:
    """In-domain text for word2vec and the bag-of-words tuning: the training split, plus all of
    IMDB's 25k training reviews for short-text SST-2. Never the dataset's validation or test split."""
    corpus = [splits["train"]]
    if cfg.dataset in UNLABELLED_REVIEWS:
        root = data_dir("imdb", progress=cfg.progress)
        imdb = load_builtin("imdb", root, seed=cfg.seed, val_fraction=cfg.val_fraction)
        labels = splits["train"].label_names  # binary reviews in a three-class model: no neutral
        corpus += [relabel(imdb["train"], labels, "train"), relabel(imdb["val"], labels, "val")]
        if cfg.max_train_examples:  # a quick run slices every training corpus, this one too
            corpus[1:] = [seeded_slice(corpus[1], cfg.max_train_examples, cfg.seed)]
    return corpus


def lr_lambda(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine decay to 0

    return f


def predict_logits(
    model: torch.nn.Module, ids: list[list[int]], device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Logits in the original order (batches are length-sorted internally)."""
    model.eval()
    return score_in_batches(
        lambda x, lengths: model(x.to(device), lengths), ids, model.classifier.out_features, batch_size
    )


class StopAfter(Exception):
    """--stop-after STAGE: the run ends after that stage, its outputs cached."""


@dataclass
class TrainResult:
    model: SentimentLSTM
    tokenizer: object
    labels: tuple[str, ...]
    temperature: float
    metrics: dict
    history: list[dict] = field(default_factory=list)
    encoded: dict[str, list[list[int]]] = field(default_factory=dict)
    splits: dict[str, Split] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    rank: int = 0
    distillation: dict | None = None


def train(cfg: TrainConfig, metrics_path: Path | None = None) -> TrainResult:
    """Run the stages. Under torchrun every rank runs this; only rank 0's result is exported."""
    t_start = time.perf_counter()
    ctx, device = setup(cfg)
    show = cfg.progress and ctx.is_main
    if not ctx.is_main:
        metrics_path = None
        log.setLevel(logging.WARNING)

    splits = load_splits(cfg)  # data
    checksums = file_checksums(sorted({str(s.path) for s in splits.values() if s.path is not None}))
    log.info("data: %s", ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
    labels = splits["train"].label_names
    teachers = fine_tune_teachers(cfg, splits, device, show_progress=show) if cfg.teacher else []
    if cfg.stop_after == "teacher":
        raise StopAfter("teacher")
    corpus = unlabelled_corpus(cfg, splits) if cfg.embeddings == "word2vec" or cfg.teacher else []
    checksums.update(file_checksums(sorted({str(s.path) for s in corpus if s.path is not None})))

    vocab = vocabulary_stage(
        cfg, splits, corpus, threads=cfg.threads or torch.get_num_threads(), show_progress=show
    )
    encoded = {name: token_ids(vocab.tokenizer, s.texts)[0] for name, s in splits.items()}
    model = network_stage(cfg, vocab, len(labels))
    bag_info = ngram_stage(cfg, model, encoded, splits, show) if cfg.ngram_buckets else None
    if cfg.teacher:  # teacher -> transfer set -> teacher labels
        targets = distillation_targets(cfg, splits, vocab, corpus[1:], teachers, device, show_progress=show)
    else:
        targets = gold_targets(encoded["train"], splits["train"])
    history, best_epoch = student_stage(cfg, model, targets, encoded["val"], splits["val"].labels, device,
                                        ctx, metrics_path)
    distributed.cleanup(ctx)
    model = model.cpu().eval()
    if cfg.half_embeddings:
        model.half_tables()  # evaluated and calibrated as stored
    metrics, temperature = calibration_stage(model, encoded, splits, bag_info)
    metrics["best_epoch"] = best_epoch
    return TrainResult(
        model=model,
        tokenizer=vocab.tokenizer,
        labels=labels,
        temperature=temperature,
        metrics=metrics,
        history=history,
        encoded=encoded,
        splits=splits,
        checksums=checksums,
        seconds=time.perf_counter() - t_start,
        device=str(device),
        world_size=ctx.world_size,
        rank=ctx.rank,
        distillation=targets.info or None,
    )


def setup(cfg: TrainConfig) -> tuple[distributed.DistContext, torch.device]:
    ctx = distributed.context_from_env()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, ctx.local_rank)
    distributed.init(ctx, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return ctx, device


def network_stage(cfg: TrainConfig, vocab: Vocabulary, num_classes: int) -> SentimentLSTM:
    net_cfg = NetworkConfig(
        vocab_size=vocab.tokenizer.get_vocab_size(),
        num_classes=num_classes,
        embed_dim=cfg.embed_dim,
        hidden_dim=cfg.hidden_dim,
        num_layers=cfg.num_layers,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout,
        pooling=cfg.pooling,
        ngram_buckets=cfg.ngram_buckets,
        ngram_dim=cfg.ngram_dim,
    )
    model = SentimentLSTM(net_cfg)
    if vocab.vectors is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(vocab.vectors)
    return model


def ngram_stage(
    cfg: TrainConfig, model: SentimentLSTM, encoded: dict[str, list[list[int]]], splits: dict[str, Split],
    show: bool,
) -> dict:
    return train_ngram_bag(
        model,
        encoded["train"],
        splits["train"].labels,
        encoded["val"],
        splits["val"].labels,
        epochs=cfg.ngram_epochs,
        lr=cfg.ngram_lr,
        seed=cfg.seed,
        progress=show,
    )


def student_loss(
    cfg: TrainConfig, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None,
    mask: torch.Tensor | None = None,
):
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


def student_stage(
    cfg: TrainConfig,
    model: SentimentLSTM,
    targets: Targets,
    val_ids: list[list[int]],
    val_labels_list: list[int],
    device: torch.device,
    ctx: distributed.DistContext,
    metrics_path: Path | None,
) -> tuple[list[dict], int]:
    """Train the LSTM on the targets; keep the weights (moving average) of the best validation epoch."""
    use_amp = cfg.amp and device.type == "cuda"
    model = model.to(device)
    # The embedding table is most of the parameters but a batch touches few rows: sparse
    # gradients with SparseAdam update only those rows, several times faster than dense AdamW.
    embed_lr = cfg.effective_embed_lr()
    pretrained = cfg.embeddings == "word2vec"
    train_embedding = embed_lr > 0 or not pretrained  # random vectors must be learned
    # DDP all-reduces dense gradients on every backend; sparse ones only on some.
    sparse = train_embedding and not ctx.enabled
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
    step_model: torch.nn.Module = model
    if ctx.enabled:
        ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(model, device_ids=ids)
        torch.manual_seed(cfg.seed + ctx.rank)  # different dropout masks per rank
    batch_size = ctx.per_rank_batch_size(cfg.batch_size)
    train_ids, train_labels, soft = targets.ids, targets.labels, targets.teacher
    steps_per_epoch = len(ctx.shard(bucketed_batches([len(i) for i in train_ids], batch_size, shuffle=False)))
    schedule = lr_lambda(steps_per_epoch * cfg.epochs, cfg.warmup_fraction)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    # The moving average of the weights is what validation picks from and what is exported: the last
    # step's weights wander with the last batches (SST-2 dev moved ~1 point between runs that differ
    # only in floating-point order); the average of the last few hundred steps wanders less.
    ema = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay)
        )
        if cfg.ema_decay
        else None
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = random.Random(cfg.seed)
    val_labels = torch.tensor(val_labels_list)

    best_state, best_acc, best_epoch, history = None, -1.0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t_epoch = time.perf_counter()
        batches = bucketed_batches([len(i) for i in train_ids], batch_size, shuffle=True, rng=rng)
        batches = ctx.shard(batches)  # the same rng on every rank: disjoint shares of one order
        seen = labelled = correct = steps = 0
        loss_sum = 0.0
        bar = progress(
            sum(map(len, batches)), f"epoch {epoch}/{cfg.epochs}", enabled=cfg.progress and ctx.is_main
        )
        for x, lengths, y, idx in tensors(train_ids, train_labels, batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            t = soft[idx].to(device, non_blocking=True) if soft is not None else None
            m = targets.mask[idx].to(device, non_blocking=True) if targets.mask is not None else None
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = step_model(x, lengths)
                loss = student_loss(cfg, logits, y, t, m)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            for o in optimizers:
                scaler.unscale_(o)
            torch.nn.utils.clip_grad_norm_(rest, cfg.clip_norm)  # sparse embedding grads are not clipped
            for o in optimizers:
                scaler.step(o)
            scaler.update()
            for sch in schedulers:
                sch.step()
            if ema is not None:
                ema.update_parameters(model)
            n = len(y)
            steps += 1
            gold = y != NO_LABEL
            seen += n
            labelled += int(gold.sum())
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(1)[gold] == y[gold]).sum())
            bar.update(n)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / max(1, labelled):.4f}")
        bar.close()
        scored = ema.module if ema is not None else model
        val_logits = predict_logits(scored, val_ids, device)
        val_acc = float((val_logits.argmax(1) == val_labels).float().mean())
        val_loss = float(F.cross_entropy(val_logits, val_labels))
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / seen, 5),
            "train_accuracy": round(correct / max(1, labelled), 5),  # on the texts with a gold label
            "val_loss": round(val_loss, 5),
            "val_accuracy": round(val_acc, 5),
            "lr": optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t_epoch, 2),
            "steps": steps,  # optimiser steps, and the examples this process saw (its shard under DDP)
            "examples": seen,
        }
        history.append(row)
        if metrics_path is not None:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        log.info("epoch %d: %s", epoch, row)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(scored.state_dict())
        elif epoch - best_epoch >= cfg.patience:
            log.info("early stopping: no validation improvement for %d epochs", cfg.patience)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    return history, best_epoch


def calibration_stage(
    model: SentimentLSTM, encoded: dict[str, list[list[int]]], splits: dict[str, Split], bag_info: dict | None
) -> tuple[dict, float]:
    """Add the n-gram bag with its fitted weight, fit the temperature on val, report every split."""
    cpu = torch.device("cpu")
    eval_names = [name for name in splits if name != "train"]
    val_labels = torch.tensor(splits["val"].labels)
    logits = {name: predict_logits(model, encoded[name], cpu) for name in eval_names}
    metrics: dict = {}
    if bag_info is not None:
        # The LSTM was trained and evaluated with the bag's weight at 0; now add the bag.
        bag = {name: ngram_logits(model, encoded[name]) for name in eval_names}
        weight = fit_ngram_weight(logits["val"], bag["val"], val_labels)
        model.ngram_weight.fill_(weight)
        metrics["ngram_bag"] = {**bag_info, "weight": weight}
        metrics["components"] = {
            name: {
                part: round(accuracy(lg, torch.tensor(splits[name].labels), splits[name].allowed), 5)
                for part, lg in (("lstm", logits[name]), ("ngram_bag", bag[name]))
            }
            for name in eval_names
        }
        logits = {name: logits[name] + weight * bag[name] for name in eval_names}
        log.info("n-gram bag weight %.1f; accuracy of the parts alone: %s", weight, metrics["components"])
    temperature = fit_temperature(logits["val"], val_labels)
    metrics["temperature"] = round(temperature, 4)
    for name in eval_names:
        metrics[name] = classification_report(
            logits[name], torch.tensor(splits[name].labels), temperature, splits[name].allowed
        )
    return metrics, temperature
