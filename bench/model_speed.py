"""In-process speed of two or more artifacts in one run: texts/s at each batch size, tokenize +
forward through the service's batch path, one torch thread, pinned to one CPU.

    python -m bench.model_speed NAME=MODEL_DIR [NAME=MODEL_DIR ...] [--rounds 2] [--cpu 1]

The artifacts are measured in turns (A B A B ...) and each figure is the best of its rounds, so a
burst of foreign load on the shared machine does not decide the comparison. Writes
bench/results/model_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import REPO, RESULTS


def measure(model_dir: str, cpu: int) -> dict[str, dict[str, float]]:
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.serve_bench",
         "--inprocess", model_dir],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="NAME=MODEL_DIR")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cpu", type=int, default=1)
    a = p.parse_args()
    models = dict(m.split("=", 1) for m in a.models)
    best: dict[str, dict[str, float]] = {}
    for r in range(a.rounds):
        for name, path in models.items():
            got = measure(path, a.cpu)["server_path"]
            print(f"round {r + 1} {name}: " + ", ".join(f"b{b} {v:.0f}" for b, v in got.items()), flush=True)
            best[name] = {b: max(v, best.get(name, {}).get(b, 0.0)) for b, v in got.items()}
    sizes = {name: sum(f.stat().st_size for f in Path(path).resolve().iterdir() if f.is_file())
             for name, path in models.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "model_speed.json").write_text(json.dumps({"models": models, "texts_per_s": best,
                                                          "bytes": sizes}, indent=2))
    batches = list(next(iter(best.values())))
    lines = [
        f"# In-process model speed (texts/s, one thread on CPU {a.cpu}, best of {a.rounds} alternating "
        "rounds)",
        "",
        "| model | MB | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "| --- | --- | " + " | ".join("---" for _ in batches) + " |",
    ]
    for name, row in best.items():
        cells = " | ".join(f"{row[b]:.0f}" for b in batches)
        lines.append(f"| {name} | {sizes[name] / 1e6:.1f} | {cells} |")
    (RESULTS / "model_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
