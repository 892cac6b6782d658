"""The three-class general model's ablation: trained artifacts scored on the same test sets.

    python bench/general_ablation.py NAME=RUN_DIR ... [--data DIR]

Each RUN_DIR is an artifact written by `python -m training` (its meta.json `command` says how it was
trained). Every artifact is scored the same way, from its served probabilities: TweetEval test (macro-
recall, accuracy, ECE), SST-3 sentence test (accuracy, macro-F1) and SST-2 sentence test scored on
negative vs positive only. Writes bench/results/general_ablation.json and .md (rows merged by NAME).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from model.artifact import load_artifact
from model.labels import THREE
from training.corpora import FIVE_TO_THREE
from training.data import read_labelled_file
from training.evaluate import classification_report

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def probabilities(artifact, texts: list[str]) -> torch.Tensor:
    return torch.cat([artifact.predict_proba(texts[i : i + 512]) for i in range(0, len(texts), 512)])


def score(run: Path, data: Path) -> dict:
    artifact = load_artifact(run)
    if tuple(artifact.labels) != THREE:
        raise SystemExit(f"{run}: labels {artifact.labels}, not {list(THREE)}")
    tweets = read_labelled_file(data / "tweets/test.tsv", label_names=THREE)
    sst5 = read_labelled_file(data / "sst5/sentences/test.tsv", label_names=tuple(map(str, range(5))))
    sst2 = read_labelled_file(data / "sst2/sentences/test.tsv")
    tw = classification_report(probabilities(artifact, tweets.texts).log(), torch.tensor(tweets.labels))
    s3 = classification_report(probabilities(artifact, sst5.texts).log(),
                               torch.tensor([FIVE_TO_THREE[y] for y in sst5.labels]))
    neg_pos = probabilities(artifact, sst2.texts)[:, [THREE.index("negative"), THREE.index("positive")]]
    meta = json.loads((run / "meta.json").read_text())
    return {
        "command": meta.get("command"),
        "tweets_macro_recall": tw["macro_recall"], "tweets_accuracy": tw["accuracy"], "tweets_ece": tw["ece"],
        "sst3_accuracy": s3["accuracy"], "sst3_macro_f1": s3["macro_f1"],
        "sst2_neg_vs_pos": round(float((neg_pos.argmax(1) == torch.tensor(sst2.labels)).float().mean()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SENTIMENT_DATA_MIRROR", "data")),
                        help="the data folder (default: $SENTIMENT_DATA_MIRROR)")
    args = parser.parse_args()
    path = RESULTS / "general_ablation.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    for item in args.runs:
        name, _, run = item.partition("=")
        rows[name] = score(Path(run), args.data)
        print(name, rows[name], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Three-class general model: ablation",
        "",
        "Written by `bench/general_ablation.py`; every row scored by the same code from the artifact's "
        "served probabilities. TweetEval's metric is macro-recall; SST-2 is scored on negative vs positive.",
        "",
        "| run | TweetEval macro-recall | TweetEval acc | TweetEval ECE | SST-3 acc | SST-3 macro-F1 "
        "| SST-2 neg/pos |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['tweets_macro_recall']:.4f} | {r['tweets_accuracy']:.4f} | {r['tweets_ece']:.4f} "
            f"| {r['sst3_accuracy']:.4f} | {r['sst3_macro_f1']:.4f} | {r['sst2_neg_vs_pos']:.4f} |"
        )
    lines += ["", "Commands:", ""] + [f"- {name}: `{r['command']}`" for name, r in rows.items()]
    (RESULTS / "general_ablation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'general_ablation.md'}")


if __name__ == "__main__":
    main()
