"""What --prior-correction would do to a trained three-class artifact, without retraining.

    python bench/prior_correction.py RUN_DIR

Shifts the artifact's calibrated log-probabilities by -P * log(training label frequency) for each
power P in training/config.py PRIOR_POWERS (what the flag folds into the classifier's bias), refits
the temperature on val, and scores val and the test sets (TweetEval macro-recall and ECE, SST-3,
SST-2 negative vs positive). Writes bench/results/prior_correction.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from model.artifact import load_artifact
from model.labels import THREE
from training.config import PRIOR_POWERS, TrainConfig
from training.evaluate import classification_report, fit_temperature
from training.train import load_splits

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    run = Path(sys.argv[1])
    artifact = load_artifact(run)
    splits = load_splits(dataclasses.replace(TrainConfig(), dataset="general", progress=False))
    counts = torch.bincount(torch.tensor(splits["train"].labels), minlength=len(THREE)).float()
    log_prior = (counts / counts.sum()).log()

    def scored(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        texts = splits[name].texts
        probs = torch.cat([artifact.predict_proba(texts[i : i + 512]) for i in range(0, len(texts), 512)])
        return probs.log(), torch.tensor(splits[name].labels)

    data = {name: scored(name) for name in ("val", "tweets-test", "sst3-test", "sst2-test")}
    rows = []
    for power in PRIOR_POWERS:
        shift = -power * log_prior
        t = fit_temperature(data["val"][0] + shift, data["val"][1])
        r = {
            name: classification_report(logits + shift, labels, t, splits[name].allowed)
            for name, (logits, labels) in data.items()
        }
        rows.append(
            f"| {power} | {r['val']['macro_recall']:.4f} | {r['tweets-test']['macro_recall']:.4f} "
            f"| {r['tweets-test']['ece_calibrated']:.4f} | {r['sst3-test']['accuracy']:.4f} "
            f"| {r['sst3-test']['macro_f1']:.4f} | {r['sst2-test']['accuracy']:.4f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join([
        f"# Prior correction on `{artifact.meta['version']}` (bench/prior_correction.py)",
        "",
        f"Training label frequencies {[round(float(x), 4) for x in log_prior.exp()]} ({', '.join(THREE)}). "
        "Each row shifts the served log-probabilities by -P x log(frequency) and refits the temperature on "
        "val; `val` is what `--prior-correction -1` chooses by.",
        "",
        "| P | val macro-recall | TweetEval macro-recall | TweetEval ECE | SST-3 acc | SST-3 macro-F1 "
        "| SST-2 neg/pos |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prior_correction.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
