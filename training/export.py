"""Export a trained model as an artifact directory (see model/artifact.py for the layout).

The directory is written under a hidden staging name and renamed into place only
after the parity checks pass, then `latest` is repointed atomically: a reader never
sees a half-written artifact.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tokenizers
import torch

from model.artifact import META_FILE, MODEL_FILE, SCHEMA_VERSION, TOKENIZER_FILE, sha256_file
from model.labels import UNKNOWN
from model.readability import Readability
from model.tokenizer import PAD_ID, UNK_ID, pad, token_ids
from training.behaviour import behavioural_report
from training.config import TrainConfig
from training.train import TrainResult

PARITY_TOL = 1e-5


class ExportError(RuntimeError):
    pass


def parity_batch(result: TrainResult, n: int = 64) -> list[str]:
    """A real evaluation batch: the first n validation texts."""
    return result.splits["val"].texts[:n]


def check_scripted_parity(eager: torch.nn.Module, scripted: torch.jit.ScriptModule, ids, lengths) -> float:
    with torch.no_grad():
        diff = float((eager(ids, lengths) - scripted(ids, lengths)).abs().max())
    if diff > PARITY_TOL:
        raise ExportError(f"scripted and eager logits differ by {diff:.2e} (> {PARITY_TOL})")
    return diff


def check_fresh_process(artifact_dir: Path, texts: list[str], expected: torch.Tensor) -> float:
    """Load the artifact in a new interpreter (checksums included) and compare its logits."""
    code = (
        "import json,sys,torch\n"
        "from model.artifact import load_artifact\n"
        "from model.tokenizer import pad\n"
        "a = load_artifact(sys.argv[1])\n"
        "ids, lengths = pad(a.tokenize(json.load(sys.stdin))[0])\n"
        "with torch.no_grad(): print(json.dumps(a.model(ids, lengths).tolist()))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(artifact_dir)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if proc.returncode != 0:
        raise ExportError(f"the artifact does not load in a fresh process:\n{proc.stderr[-2000:]}")
    got = torch.tensor(json.loads(proc.stdout))
    diff = float((got - expected).abs().max())
    if diff > PARITY_TOL:
        raise ExportError(f"fresh-process logits differ by {diff:.2e} (> {PARITY_TOL})")
    return diff


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax1.legend()
    ax2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ensemble_note(teacher: dict, members: list[dict]) -> str:
    if teacher.get("members", 1) < 2:
        return ""
    alone = "; ".join(", ".join(f"{k} {v:.4f}" for k, v in m["accuracy"].items()) for m in members)
    seeds = ", ".join(str(m["seed"]) for m in members)
    n = teacher["members"]
    return f" An ensemble: the mean logits of {n} such teachers (seeds {seeds}; each alone: {alone})."


def model_card(meta: dict) -> str:
    m = meta["metrics"]
    lines = [
        f"# Model card: {meta['name']} ({meta['version']})",
        "",
        f"Embedding + {'bi' if meta['network']['bidirectional'] else ''}LSTM sentiment classifier "
        f"({meta['network']['pooling']} pooling), labels {meta['labels']}, "
        f"trained on `{meta['dataset']['name']}` "
        f"in {meta['training_seconds']:.0f} s on {meta['device']}. Created {meta['created_at']}.",
        "",
        *[line for w in meta.get("warnings") or () for line in (f"**Warning:** {w['message']}", "")],
        "## Evaluation",
        "",
        "| split | n | accuracy | macro-F1 | macro-recall | ECE raw | ECE calibrated |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in m.items():
        if isinstance(r, dict) and "accuracy" in r:
            scored = r.get("scored_on_outputs")
            note = f" (scored on {', '.join(meta['labels'][i] for i in scored)} only)" if scored else ""
            lines.append(
                f"| {name}{note} | {r['n']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                f"{r.get('macro_recall', float('nan')):.4f} | {r['ece']:.4f} | {r['ece_calibrated']:.4f} |"
            )
    lines += ["", "Confusion matrices (rows: true label, columns: predicted):", ""]
    for name, r in m.items():
        if isinstance(r, dict) and "confusion_matrix" in r:
            scored = r.get("scored_on_outputs") or range(len(meta["labels"]))
            names = [meta["labels"][i] for i in scored]
            rows = [" / ".join(f"{n} {c}" for n, c in zip(names, row, strict=True))
                    for row in r["confusion_matrix"]]
            lines.append(f"- {name}: " + "; ".join(f"{t}: {row}" for t, row in zip(names, rows, strict=True)))
    splits = meta["dataset"]["splits"]
    lines += [
        "",
        f"Temperature {meta['temperature']:.3f} (fitted on the validation split; served probabilities "
        "are softmax(logits / T)). `val` chose the best epoch and the temperature"
        + (
            ", and `dev` is the same data"
            if splits.get("dev", {}).get("source") == splits["val"]["source"]
            else ""
        )
        + ", so it is optimistic; report the other splits.",
        "",
    ]
    prior = meta["metrics"].get("prior_correction")
    if prior:
        lines += [
            f"Prior correction: power {prior['power']} (`--prior-correction`; val macro-recall by power "
            f"{prior['val_macro_recall']}). The classifier's bias was shifted by {prior['bias_shift']}, "
            "which "
            "divides the probabilities by the training labels' frequencies to that power, so a label that "
            "was rare in training is not under-answered.",
            "",
        ]
    lines += [
        "## Data",
        "",
        *[f"- `{name}`: {s['n']} examples from {s['source']}" for name, s in splits.items()],
    ]
    if meta["training"]["embeddings"] == "word2vec":
        lines.append(
            "- Embeddings: word2vec on the training text"
            + (" and IMDB's 25k training reviews" if meta["dataset"]["name"] == "sst2" else "")
            + (
                f", tuned by a bag-of-words sentiment classifier for {meta['training']['bow_epochs']} epochs"
                if meta["training"]["bow_epochs"]
                else ""
            )
            + "."
        )
    if "ngram_bag" in m:
        parts = m["components"]
        sized = m["ngram_bag"].get("sized_to_data")
        lines.append(
            f"- Beside the LSTM, a bag of words and hashed bigrams ({meta['network']['ngram_buckets']} rows, "
            + (f"sized to the training split's {sized['distinct_bigrams']} distinct bigrams, " if sized
               else "")
            + f"dim {meta['network']['ngram_dim']}) adds its logits with weight {m['ngram_bag']['weight']} "
            "(fitted on val). Accuracy of each part alone: "
            + "; ".join(
                f"{name}: LSTM {p['lstm']:.4f}, bag {p['ngram_bag']:.4f}" for name, p in parts.items()
            )
            + "."
        )
    d = meta.get("distillation")
    if d:
        t, x = d["teacher"], d["transfer_set"]
        recall = t.get("macro_recall", {})
        acc = ", ".join(
            f"{k} {v:.4f}" + (f" (macro-recall {recall[k]:.4f})" if k in recall else "")
            for k, v in t["accuracy"].items()
        )
        lines += [
            "",
            "## Distillation",
            "",
            f"- Teacher: `{t['source']}` ({(t['parameters'] or 0) / 1e6:.1f} M parameters, weights sha256 "
            f"`{t['weights_sha256'][:16]}…`), fine-tuned {t['settings']['epochs']} epochs on the training "
            f"split; its accuracy: {acc}." + _ensemble_note(t, d.get("teacher_members", [])),
            f"- Transfer set: {x['size']} texts ("
            + ", ".join(f"{k} {v}" for k, v in x["counts"].items())
            + f"), sha256 `{x['sha256'][:16]}…`; teacher logits sha256 `{d['labels']['sha256'][:16]}…`.",
            f"- Student loss: {meta['training']['distil_loss']} on the teacher's logits + "
            f"{meta['training']['distil_alpha']} × cross-entropy on gold labels.",
        ]
    if meta.get("command"):
        lines += ["", f"Trained with `{meta['command']}` at commit `{meta.get('code_commit')}`."]
    lines += [
        "",
        "## Behavioural report (hand-written cases; a report, not a gate)",
        "",
        "| capability | passed | failures |",
        "| --- | --- | --- |",
    ]
    for cap, r in meta["behaviour"].items():
        fails = "; ".join(r["failures"]) or "-"
        lines.append(f"| {cap} | {r['passed']}/{r['total']} | {fails} |")
    lines += [
        "",
        "## Limits",
        "",
        f"- The network reads up to {meta['max_length']} tokens at once. The service splits a longer text "
        "into chunks at sentence ends and combines their logits (`long_text: chunk`, the default) or "
        "truncates it (`long_text: truncate`); each prediction says which (`chunks`, `truncated`).",
        "- English only. Sarcasm is weak; domains far from the training data (see the behavioural report "
        "by category) are weaker. A text whose words the vocabulary mostly does not know (gibberish, "
        "another language) is answered `unknown` with the warning `unreadable` rather than guessed.",
        f"- Word-level vocabulary of {meta['vocab_size']} words (training split, plus frequent words "
        "of the word2vec corpus): other words map to [UNK], so typos often lose their meaning.",
        "",
    ]
    return "\n".join(lines)


_ABSOLUTE = re.compile(r"(?<![\w.~:/])/(?:[\w.\-]+/)*([\w.\-]+)")


def portable(value: Any, roots: list[str]) -> Any:
    """`value` (a meta.json tree) with the machine's folders taken out of every string: paths under the
    data folder, the working directory or the repository become relative, and any other absolute path
    (an output folder, a local teacher) keeps only its last part."""
    if isinstance(value, dict):
        return {portable(k, roots): portable(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root.rstrip("/") + "/", "")
        return _ABSOLUTE.sub(r"\1", value)
    return value


def machine_roots() -> list[str]:
    """Folders whose absolute paths are the training machine's own: longest first."""
    roots = {str(Path.cwd()), str(Path(__file__).resolve().parent.parent)}
    for env in ("SENTIMENT_DATA_MIRROR", "SENTIMENT_DATA_CACHE"):
        if os.environ.get(env):
            roots.add(str(Path(os.environ[env]).expanduser().resolve()))
            roots.add(os.environ[env])
    from training.fetch import cache_dir

    roots.add(str(cache_dir()))
    return sorted(roots, key=len, reverse=True)


def code_commit() -> str | None:
    """The git commit of this checkout (with "-dirty" when files differ from it), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def write_artifact(
    result: TrainResult, cfg: TrainConfig, staging: Path, run_name: str, command: str | None = None
) -> dict:
    """Write model, tokenizer, plot, card and meta into `staging` and check parity."""
    eager = result.model.cpu().eval()
    scripted = torch.jit.script(eager)
    scripted.save(str(staging / MODEL_FILE))
    result.tokenizer.save(str(staging / TOKENIZER_FILE))
    plot_curve(result.history, staging / "training_curve.png")

    texts = parity_batch(result)
    ids, lengths = pad([result.encoded["val"][i] for i in range(len(texts))])
    script_diff = check_scripted_parity(eager, scripted, ids, lengths)

    readability = Readability.of(result.tokenizer)

    def predict(batch: list[str]) -> list[str]:
        """Each text's label as the service answers it: "unknown" for a text it cannot read."""
        ids = token_ids(result.tokenizer, batch)[0]
        with torch.no_grad():
            best = eager(*pad(ids)).argmax(1).tolist()
        labels = result.labels
        return [labels[b] if readability.readable([i]) else UNKNOWN for b, i in zip(best, ids, strict=True)]

    meta = {
        "schema_version": SCHEMA_VERSION,
        "name": f"sentiment-lstm-{cfg.dataset}",
        "version": run_name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": list(result.labels),
        "max_length": cfg.max_length,
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "vocab_size": result.tokenizer.get_vocab_size(),
        "temperature": result.temperature,
        "metrics": result.metrics,
        "behaviour": behavioural_report(predict, result.labels),
        "history": result.history,
        "network": eager.config.to_dict(),
        "training": cfg.to_dict(),
        "training_seconds": round(result.seconds, 1),
        "command": command,
        "code_commit": code_commit(),
        "distillation": result.distillation,
        "device": result.device,
        "world_size": result.world_size,
        "dataset": {
            "name": cfg.dataset,
            "splits": {k: {"n": len(s), "source": s.source} for k, s in result.splits.items()},
            "sha256": result.checksums,
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "parity": {"scripted_vs_eager_max_abs": script_diff},
        "warnings": result.warnings,  # e.g. no_better_than_majority (training/train.py quality_warnings)
    }
    meta = portable(meta, machine_roots())
    (staging / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    files = sorted(p.name for p in staging.iterdir() if p.is_file() and p.name != META_FILE)
    meta["files"] = {name: sha256_file(staging / name) for name in files}
    (staging / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    with torch.no_grad():
        expected = eager(ids, lengths)
    meta["parity"]["fresh_process_max_abs"] = check_fresh_process(staging, texts, expected)
    # meta.json is not in its own checksum list, so recording the fresh-process figure is safe.
    (staging / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def publish(staging: Path, out_root: Path, run_name: str) -> Path:
    """Move the finished artifact into place and repoint `latest` atomically."""
    final = out_root / run_name
    if final.exists():
        raise ExportError(f"{final} already exists; choose another --run-name")
    os.replace(staging, final)
    tmp_link = out_root / f".latest.{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(run_name, tmp_link)
    os.replace(tmp_link, out_root / "latest")
    return final
