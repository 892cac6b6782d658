"""Distillation targets: teacher -> transfer set -> the teacher's logits on it (each stage cached).

The student (training/train.py) then learns these logits (Tang et al. 2019: MSE between logits), plus
the gold label where a text has one."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.tokenizer import UNK_TOKEN, token_ids
from training.batching import label_mask
from training.cache import CacheError, Stage, content_hash, finished_stages
from training.config import TrainConfig
from training.data import Split
from training.embeddings import pre_tokenize
from training.evaluate import classification_report
from training.teacher import EVAL_LOGITS, TeacherSettings, logits_for, teacher_stage
from training.transfer import NO_LABEL, TRANSFER_FILE, AugmentSettings, TransferSet, load, transfer_stage
from training.vocabulary import Vocabulary

log = logging.getLogger("training")
LOGITS = "logits.pt"


@dataclass
class Targets:
    """What the student trains on: token ids, gold labels (NO_LABEL where none) and, when distilling,
    the teacher's logits for the same rows."""

    ids: list[list[int]]
    labels: list[int]
    teacher: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    mask: torch.Tensor | None = None  # bool [N, C]: the outputs each row's gold label may be


def gold_targets(ids: list[list[int]], train: Split) -> Targets:
    return Targets(ids, list(train.labels), mask=label_mask(train.allowed_rows(), len(train.label_names)))


def _labelled_before(cache_root: Path, teacher_key: str, skip: Path) -> dict[str, torch.Tensor]:
    """Logits this teacher gave earlier transfer sets (a changed augmentation setting keeps most texts)."""
    memo: dict[str, torch.Tensor] = {}
    for st in finished_stages(cache_root, "labels"):
        if st.inputs.get("teacher") != teacher_key or st.dir == skip:
            continue
        source = cache_root / f"transfer-{st.inputs.get('transfer')}" / TRANSFER_FILE
        try:
            if not (st.done() and source.exists()):
                continue
        except CacheError as e:
            log.warning("teacher labels: not reusing %s: %s", st.dir, e)
            continue
        logits = torch.load(st.dir / LOGITS, weights_only=True)
        texts = load(source).texts
        if len(texts) == len(logits):
            memo.update(zip(texts, logits, strict=True))
    return memo


def labels_stage(
    cache_root: Path, teacher: Stage, transfer: Stage, ts: TransferSet, model: Any, tokenizer: Any,
    device: torch.device, *, max_length: int, show_progress: bool,
) -> tuple[Stage, torch.Tensor]:
    stage = Stage(cache_root, "labels", {"teacher": teacher.key, "transfer": transfer.key})
    if stage.done():
        logits = torch.load(stage.dir / LOGITS, weights_only=True)
        log.info("teacher labels: cached in %s (%d rows)", stage.dir, len(logits))
        return stage, logits
    t0 = time.perf_counter()
    memo = _labelled_before(cache_root, teacher.key, stage.dir)
    todo = [i for i, t in enumerate(ts.texts) if t not in memo]
    log.info("teacher labels: %d texts to label (%d known from earlier runs)", len(todo), len(ts) - len(todo))
    mask = tokenizer.mask_token or UNK_TOKEN
    fresh = logits_for(
        model, tokenizer, [ts.texts[i].replace(UNK_TOKEN, mask) for i in todo], device,
        max_length=max_length, desc="teacher labels", show_progress=show_progress,
    )
    logits = torch.empty(len(ts), fresh.size(1))
    for j, i in enumerate(todo):
        logits[i] = fresh[j]
    for i, t in enumerate(ts.texts):
        if t in memo:
            logits[i] = memo[t]
    torch.save(logits, stage.start() / LOGITS)
    seconds = round(time.perf_counter() - t0, 1)
    stage.finish([LOGITS], {"rows": len(logits), "labelled": len(todo), "seconds": seconds})
    return stage, logits


@dataclass
class Teacher:
    """One fine-tuned teacher (an ensemble member): its cached stage, model and tokenizer."""

    stage: Stage
    model: Any
    tokenizer: Any
    seed: int


def teacher_evals(splits: dict[str, Split]) -> dict[str, Split]:
    """The splits a teacher reports: every one but train (and val where it is the dev set again)."""
    return {n: s for n, s in splits.items() if n != "train" and not (n == "val" and "dev" in splits)}


def fine_tune_teachers(
    cfg: TrainConfig, splits: dict[str, Split], device: torch.device, *, show_progress: bool
) -> list[Teacher]:
    """Fine-tune (or take from the cache) --teacher-seeds teachers on the training split. The stage
    depends only on the data and the teacher settings, so it runs first: `--stop-after teacher` on a
    GPU machine, then the rest of the run anywhere with the same cache."""
    assert cfg.teacher
    train = splits["train"]
    evals = teacher_evals(splits)
    teachers = []
    for k in range(max(1, cfg.teacher_seeds)):
        settings = TeacherSettings(
            max_length=cfg.teacher_max_length, epochs=cfg.teacher_epochs, batch_size=cfg.teacher_batch_size,
            lr=cfg.teacher_lr, seed=cfg.seed + k,
        )
        stage, model, tokenizer = teacher_stage(
            cfg.teacher, (train.texts, train.labels), content_hash(train.texts, train.labels),
            {n: (s.texts, s.labels) for n, s in evals.items()}, settings, cfg.cache_root(), device,
            num_labels=len(train.label_names), show_progress=show_progress,
        )
        teachers.append(Teacher(stage, model, tokenizer, settings.seed))
    return teachers


def distillation_targets(
    cfg: TrainConfig, splits: dict[str, Split], vocab: Vocabulary, unlabelled: list[Split],
    teachers: list[Teacher], device: torch.device, *, show_progress: bool,
) -> Targets:
    """Build the transfer set and label it with the teacher(s); return student targets. With several
    teachers (--teacher-seeds N) the labels are the mean of their logits (each member cached alone)."""
    root = cfg.cache_root()
    train = splits["train"]
    evals = teacher_evals(splits)
    aug = AugmentSettings(
        variants=cfg.augment_variants, p_mask=cfg.p_mask, p_replace=cfg.p_replace, p_ngram=cfg.p_ngram,
        unlabelled=cfg.unlabelled_sentences, seed=cfg.seed,
    )
    tok = vocab.tokenizer
    train_words = pre_tokenize(tok, train.texts)
    reviews = [w for s in unlabelled for w in pre_tokenize(tok, s.texts)] if aug.unlabelled else []
    upstream = {
        "train": content_hash(train.texts, train.labels),
        "unlabelled": [content_hash(s.texts) for s in unlabelled] if aug.unlabelled else [],
        "vocabulary": vocab.key,  # the neighbours used for replacement
    }
    x_stage, ts = transfer_stage(root, upstream, train_words, train.labels, reviews, vocab.neighbours, aug)
    members: list[dict[str, Any]] = []
    member_logits: list[torch.Tensor] = []
    eval_logits: dict[str, list[torch.Tensor]] = {n: [] for n in evals}
    for teacher in teachers:
        t_stage, model, tokenizer = teacher.stage, teacher.model, teacher.tokenizer
        l_stage, logits = labels_stage(
            root, t_stage, x_stage, ts, model, tokenizer, device, max_length=cfg.teacher_max_length,
            show_progress=show_progress,
        )
        for n, lg in _eval_logits(t_stage, model, tokenizer, evals, device, cfg.teacher_max_length).items():
            eval_logits[n].append(lg)
        member_logits.append(logits)
        members.append({
            "seed": teacher.seed,
            "fine_tuned_sha256": t_stage.checksums(),
            "accuracy": t_stage.info().get("metrics", {}),
            "seconds": t_stage.info().get("seconds"),
            "cache_key": t_stage.key,
            "labels_sha256": l_stage.checksums()[LOGITS],
            "labels_cache_key": l_stage.key,
        })
    teachers.clear()  # the models are not needed past labelling
    logits = torch.stack(member_logits).mean(0)  # one member: its own logits
    reports = {  # of the ensemble (of the one teacher when there is one)
        n: classification_report(torch.stack(lg).mean(0), torch.tensor(ev.labels), 1.0, ev.allowed)
        for n, lg in eval_logits.items()
        for ev in [evals[n]]
    }
    accuracy = {n: r["accuracy"] for n, r in reports.items()}
    ids = token_ids(tok, ts.texts)[0]
    agree = [int(logits[i].argmax()) == y for i, y in enumerate(ts.labels) if y != NO_LABEL]
    first = members[0]
    info = {
        "teacher": {
            "source": cfg.teacher,
            "weights_sha256": t_stage.inputs["weights"],
            "members": len(members),  # > 1: the mean of that many fine-tuned teachers' logits
            "fine_tuned_sha256": first["fine_tuned_sha256"],
            "accuracy": accuracy,
            "macro_recall": {n: r["macro_recall"] for n, r in reports.items()},
            "macro_f1": {n: r["macro_f1"] for n, r in reports.items()},
            "parameters": t_stage.info().get("parameters"),
            "seconds": round(sum(m["seconds"] or 0 for m in members), 1),
            "settings": {**t_stage.inputs["settings"], "seed": cfg.seed},
            "cache_key": first["cache_key"],
        },
        "transfer_set": {
            "size": len(ts), "counts": ts.counts(), "settings": x_stage.inputs["settings"],
            "sha256": x_stage.checksums()[TRANSFER_FILE], "cache_key": x_stage.key,
        },
        "labels": {"sha256": first["labels_sha256"] if len(members) == 1 else tensor_sha256(logits),
                   "cache_key": first["labels_cache_key"],
                   "teacher_train_agreement": round(sum(agree) / max(1, len(agree)), 5)},
    }
    if len(members) > 1:
        info["teacher_members"] = members
    log.info("distillation: %d transfer texts %s; teacher accuracy %s (members: %s)", len(ts), ts.counts(),
             accuracy, [m["accuracy"] for m in members])
    return Targets(ids, ts.labels, logits, info)


def _eval_logits(
    t_stage: Stage, model: Any, tokenizer: Any, evals: dict[str, Split], device: torch.device, max_length: int
) -> dict[str, torch.Tensor]:
    """The teacher's logits on the evaluation splits: stored by its stage, or (a stage cached before
    they were stored) computed again."""
    path = t_stage.dir / EVAL_LOGITS
    if path.exists():
        return torch.load(path, weights_only=True)
    return {n: logits_for(model, tokenizer, sp.texts, device, max_length=max_length, show_progress=False)
            for n, sp in evals.items()}


def tensor_sha256(t: torch.Tensor) -> str:
    """Checksum of a tensor's float32 values (the ensemble's mean logits exist only in memory)."""
    return hashlib.sha256(t.float().contiguous().numpy().tobytes()).hexdigest()
