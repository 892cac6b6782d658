"""Training as a pipeline of named stages, run top to bottom by `train()`:

data -> vocabulary and embeddings -> network -> n-gram bag -> [teacher -> transfer set -> teacher
labels] -> student -> calibration; export (training/export.py) writes the artifact. The teacher
stages run only with --teacher (training/distil.py); without it the student learns the gold labels.
The student's training loop is training/student.py."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.network import NetworkConfig, SentimentLSTM
from model.tokenizer import token_ids
from training import distributed
from training.config import CHOSEN_ON_VAL, PRIOR_POWERS, SIZED_TO_DATA, TrainConfig
from training.data import (
    Split,
    file_checksums,
    load_builtin,
    load_user_files,
    parse_weights,
    relabel,
    subset,
)
from training.distil import distillation_targets, fine_tune_teachers, gold_targets
from training.evaluate import (
    accuracy,
    classification_report,
    confusion_matrix,
    fit_temperature,
    macro_recall,
    majority_baseline,
)
from training.fetch import data_dir
from training.ngrams import fit_ngram_weight, ngram_logits, sized_buckets, train_ngram_bag
from training.student import predict_logits, student_stage
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
    warnings: list[dict[str, str]] = field(default_factory=list)  # meta.json "warnings"


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
    sized = None
    if cfg.ngram_buckets == SIZED_TO_DATA:  # the caller's cfg (meta.json's "training") keeps -1
        buckets, bigrams = sized_buckets(encoded["train"])
        cfg = dataclasses.replace(cfg, ngram_buckets=buckets)
        sized = {"distinct_bigrams": bigrams, "buckets": buckets}
        log.info("n-gram bag: %d buckets, sized to the %d distinct bigrams of the training split "
                 "(--ngram-buckets N to choose)", buckets, bigrams)
    model = network_stage(cfg, vocab, len(labels))
    bag_info = ngram_stage(cfg, model, encoded, splits, show) if cfg.ngram_buckets else None
    if bag_info is not None and sized:
        bag_info["sized_to_data"] = sized
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
    metrics, temperature = calibration_stage(model, encoded, splits, bag_info, cfg.prior_correction)
    metrics["best_epoch"] = best_epoch
    warnings = quality_warnings(metrics, splits)
    for w in warnings if ctx.is_main else ():
        log.warning("%s", w["message"])
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
        warnings=warnings,
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
    if cfg.ngram_buckets < 0:
        raise ValueError(f"ngram_buckets {cfg.ngram_buckets}: sized to the data by train(), not here")
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


def calibration_stage(
    model: SentimentLSTM,
    encoded: dict[str, list[list[int]]],
    splits: dict[str, Split],
    bag_info: dict | None,
    prior_correction: float = 0.0,
) -> tuple[dict, float]:
    """Add the n-gram bag with its fitted weight, apply --prior-correction, fit the temperature on val,
    report every split."""
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
    if prior_correction:
        t0 = fit_temperature(logits["val"], val_labels)
        powers = PRIOR_POWERS if prior_correction == CHOSEN_ON_VAL else (prior_correction,)
        shifts = {p: prior_shift(splits["train"], logits["val"].size(1), p, t0) for p in powers}
        on_val = {p: macro_recall(confusion_matrix((logits["val"] + shifts[p]).argmax(1), val_labels,
                                                   logits["val"].size(1))) for p in powers}
        power = max(powers, key=lambda p: (on_val[p], -p))  # ties: the smaller correction
        shift = shifts[power]
        with torch.no_grad():
            model.classifier.bias.add_(shift)
        logits = {name: lg + shift for name, lg in logits.items()}
        metrics["prior_correction"] = {
            "power": power, "bias_shift": [round(float(x), 4) for x in shift],
            "val_macro_recall": {str(p): round(r, 5) for p, r in on_val.items()},
        }
        log.info("prior correction: power %s (val macro-recall by power: %s); classifier bias shifted by %s",
                 power, on_val, metrics["prior_correction"]["bias_shift"])
    temperature = fit_temperature(logits["val"], val_labels)
    metrics["temperature"] = round(temperature, 4)
    for name in eval_names:
        metrics[name] = classification_report(
            logits[name], torch.tensor(splits[name].labels), temperature, splits[name].allowed
        )
    return metrics, temperature


def prior_shift(train: Split, num_classes: int, power: float, temperature: float) -> torch.Tensor:
    """The logit shift that divides calibrated probabilities by the training label frequencies to
    `power`: -power * T * log(frequency), T the temperature before the shift. A label absent from the
    training split (or masked) counts once, so the shift stays finite."""
    counts = torch.bincount(torch.tensor(train.labels), minlength=num_classes).float().clamp(min=1)
    return -power * temperature * (counts / counts.sum()).log()


def quality_warnings(metrics: dict, splits: dict[str, Split]) -> list[dict[str, str]]:
    """Warnings for the log, meta.json and the model card: a model no better on validation than
    always answering its most frequent label (metrics["val"]["majority_baseline"])."""
    train, val = splits["train"], splits["val"]
    check = majority_baseline(metrics["val"], torch.tensor(val.labels), val.allowed)
    metrics["val"]["majority_baseline"] = check
    if check["beaten"]:
        return []
    name = train.label_names[int(check["label"])]
    return [{
        "code": "no_better_than_majority",
        "message": (
            f"this model is no better than always answering {name!r}, the most frequent label of the "
            f"validation texts: validation accuracy {check['model_accuracy']:.3f} against "
            f"{check['accuracy']:.3f} for that constant answer (a lead under {check['margin']:.3f}, one "
            f"standard error on {len(val)} texts, is noise), and it answers {name!r} to "
            f"{check['answered_majority']:.0%} of them. Usually too little labelled data ({len(train)} "
            "training texts): add data; with more validation texts (--val or --val-fraction) the check "
            "is surer."
        ),
    }]
