"""Where should texts be tokenized: in the request path (event loop, one call per request) or in the
batch worker (inference thread, one call per batch)? Measures both with the real Batcher and model,
in-process (no HTTP), pinned to one CPU like the server in serve_bench.py (other CPU sets on request).

    python -m bench.tokenize_placement [--model-dir artifacts] [--cpus 1] [--seconds 4]

Writes bench/results/tokenize_placement.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from bench import REPO, RESULTS
from bench.texts import load_texts
from core.batcher import Batcher
from core.engine import make_infer
from model.artifact import Artifact, load_artifact


async def drive(
    batcher: Batcher, prepare: Any, texts: list[str], clients: int, per: int, seconds: float
) -> dict[str, float]:
    """`clients` coroutines each submit `per` texts, await the rows, repeat, for `seconds`."""
    done = 0
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        i = k * 13
        while time.perf_counter() < stop:
            batch = [texts[(i + j) % len(texts)] for j in range(per)]
            i += per
            await batcher.submit(prepare(batch)).future
            done += per

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"texts_per_s": done / wall, "cpu_us_per_text": cpu / done * 1e6}


async def measure(
    artifact: Artifact, placement: str, clients: int, per: int, seconds: float
) -> dict[str, float]:
    texts = load_texts()
    if placement == "request":
        batcher = Batcher(make_infer(artifact), max_queue_texts=4096)

        def prepare(batch: list[str]) -> list[list[int]]:
            return artifact.tokenize(batch)[0]
    else:
        forward = make_infer(artifact)

        def infer(batch: list[str]) -> list[list[float]]:
            return forward(artifact.tokenize(batch)[0])

        # Items are raw strings here: the batcher sorts and budgets by characters, so lift the budget.
        batcher = Batcher(infer, max_queue_texts=4096, max_batch_tokens=10**9)  # type: ignore[arg-type]

        def prepare(batch: list[str]) -> list[str]:  # type: ignore[misc]
            return batch

    batcher.start()
    await drive(batcher, prepare, texts, clients, per, 1.0)  # warm-up
    result = await drive(batcher, prepare, texts, clients, per, seconds)
    await batcher.close(5)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=str(REPO / "artifacts"))
    p.add_argument("--cpus", default="1", help="CPU sets to measure on, e.g. '1;0,1'")
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    import torch
    import uvloop

    torch.set_num_threads(1)  # as the server pinned to one CPU
    artifact = load_artifact(args.model_dir)
    rows = []
    for cpus in args.cpus.split(";"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        for clients, per in ((64, 1), (16, 16), (1, 1)):
            for placement in ("request", "worker"):
                r = uvloop.run(measure(artifact, placement, clients, per, args.seconds))
                rows.append(
                    {"cpus": cpus, "placement": placement, "clients": clients, "texts_per_request": per, **r}
                )
                print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tokenize_placement.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# Tokenization placement (in-process, real model, torch on one thread)",
        "",
        "| CPUs | tokenize in | clients | texts/request | texts/s | CPU µs/text |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['cpus']} | {r['placement']} | {r['clients']} | {r['texts_per_request']} | "
            f"{r['texts_per_s']:.0f} | {r['cpu_us_per_text']:.0f} |"
            for r in rows
        ),
        "",
    ]
    (RESULTS / "tokenize_placement.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
