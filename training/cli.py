"""`python -m training` / `sentiment-train`: train a model and export an artifact."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

from training.config import DEFAULT_TEACHER, PRESETS, SIZED_TO_DATA, STAGES, TrainConfig


def _flag(name: str) -> str:
    return {"train_file": "--train", "eval_file": "--eval", "val_file": "--val"}.get(
        name, "--" + name.replace("_", "-")
    )


def _presets_text() -> str:
    flags = {name: ", ".join(f"{_flag(k)} {v}" for k, v in p.items()) for name, p in PRESETS.items()}
    return "; ".join(f"{name}: {text}" for name, text in flags.items())


def build_parser(*, suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The CLI, generated from TrainConfig's fields (help, stage, choices); with suppress_defaults,
    parsing yields only the flags actually given."""
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the embedding + LSTM sentiment classifier and export a TorchScript artifact "
        "(model.pt, tokenizer.json, meta.json, MODEL_CARD.md, training_curve.png) that the service loads. "
        "The stages run in the order of the groups below.",
        epilog="Data comes from SENTIMENT_DATA_MIRROR (a local copy laid out like shared/data) when set, "
        "else the cache SENTIMENT_DATA_CACHE (default ~/.cache/sentiment-service/data), downloading the "
        "public archives into it on first use. Defaults shown are for sst2. Presets (applied unless the "
        f"flag is given): {_presets_text()} (files: your own --train data). "
        "Examples: python -m training --dataset imdb --epochs 3; "
        f"python -m training --preset general --teacher {DEFAULT_TEACHER} (the shipped three-class model); "
        f"python -m training --teacher {DEFAULT_TEACHER} (distil a transformer; see README)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups = {key: p.add_argument_group(title) for key, title in STAGES.items()}
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        kwargs: dict = {"dest": f.name, "help": f.metadata["help"]}
        kwargs["default"] = argparse.SUPPRESS if suppress_defaults else default
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.metadata["choices"]:
            kwargs["choices"] = list(f.metadata["choices"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            kwargs["type"] = kind
            kwargs["metavar"] = "FILE" if f.name.endswith("_file") else f.name.upper()
        groups[f.metadata["stage"]].add_argument(_flag(f.name), **kwargs)
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = TrainConfig(**vars(args))
    if cfg.train_file:
        cfg.dataset = "files"
    elif cfg.eval_file or cfg.val_file:
        parser.error("--eval and --val need --train")
    if cfg.ngram_buckets < SIZED_TO_DATA:
        parser.error("--ngram-buckets: a number of rows, 0 (no n-gram bag) or -1 (sized to the data)")
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    for name, value in PRESETS.get(cfg.preset or cfg.dataset, {}).items():
        if name not in given:
            setattr(cfg, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("training")
    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs every second of word2vec
    from training.cache import CacheError
    from training.data import DataError
    from training.distributed import context_from_env
    from training.export import ExportError, publish, write_artifact
    from training.teacher import TeacherError
    from training.train import StopAfter, train

    if not context_from_env().is_main:  # torchrun worker: train its shard, rank 0 exports
        train(cfg)
        return 0

    out_root = Path(cfg.out)
    out_root.mkdir(parents=True, exist_ok=True)
    run_name = cfg.run_name or f"{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out_root / run_name).exists():
        print(f"error: {out_root / run_name} already exists; choose another --run-name", file=sys.stderr)
        return 2
    staging = out_root / f".{run_name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        try:
            result = train(cfg, metrics_path=staging / "metrics.jsonl")
        except StopAfter as stop:
            shutil.rmtree(staging, ignore_errors=True)
            log.info("stopped after the %s stage, as asked (--stop-after); its outputs are cached in %s",
                     stop, cfg.cache_root())
            return 0
        command = "python -m training " + shlex.join(sys.argv[1:] if argv is None else argv)
        meta = write_artifact(result, cfg, staging, run_name, command)
        final = publish(staging, out_root, run_name)
    except (DataError, ExportError, CacheError, TeacherError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    m = meta["metrics"]
    log.info("artifact: %s (%.0f s)", final, result.seconds)
    for name, r in m.items():
        if isinstance(r, dict) and "accuracy" in r:
            log.info(
                "%-5s accuracy %.4f  macro-F1 %.4f  macro-recall %.4f  ECE %.4f -> %.4f (T=%.3f)",
                name,
                r["accuracy"],
                r["macro_f1"],
                r["macro_recall"],
                r["ece"],
                r["ece_calibrated"],
                result.temperature,
            )
    log.info(
        "behaviour: %d/%d hand-written cases pass",
        meta["behaviour"]["overall"]["passed"],
        meta["behaviour"]["overall"]["total"],
    )
    for w in meta["warnings"]:  # again at the end, where it is seen
        log.warning("%s", w["message"])
    return 0
