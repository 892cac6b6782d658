"""What `"explain": true` costs, whether the explain lane protects plain requests, and how faithful the
explanations are, on the default model.

    python -m bench.explain_bench [--model-dir artifacts] [--duration 8]

1. Latency, one client (closed loop), plain vs explain, 1 and 16 texts per request: p50/p99 and the
   explain/plain ratio. Server pinned to one CPU, load generator (bench/serve_bench.py's) to the other.
2. Fairness: one client sending plain 1-text requests while 4 clients send explain requests of 16
   texts, with the default lane (2 x SENTIMENT_MAX_BATCH_SIZE = 128), a lane of one batch (64) and
   the lane opened wide (as if there were none).
3. Faithfulness (in-process, SST-2 dev sentences): deleting the top-k tokens by score vs k random
   tokens, for deletion occlusion (served) and [UNK] replacement (the alternative).

Writes bench/results/explain.json and explain.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
from typing import Any

from bench import RESULTS, default_model_dir
from bench.http_client import request_pool
from bench.load import Window, latency_ms, window_load
from bench.procstats import ForeignCpu
from bench.report import save
from bench.servers import start_server
from bench.texts import data_root, load_texts

TEXTS_PER_REQUEST = (1, 16)
ENV = {"SENTIMENT_TORCH_THREADS": "1", "SENTIMENT_ACCESS_LOG": "false", "SENTIMENT_LOG_LEVEL": "warning"}


def stats(window: Window) -> dict[str, Any]:
    return {**latency_ms(window.latencies), "statuses": dict(window.statuses)}


def latency_points(
    port: int, texts: list[str], duration: float, warmup: float, cpu: int, pid: int
) -> list[dict[str, Any]]:
    import uvloop

    points = []
    for per in TEXTS_PER_REQUEST:
        for explain in (False, True):
            # an explain request of 16 texts takes about a second: give it enough samples for a p99
            seconds = duration * (4 if explain and per > 1 else 1)
            reqs = request_pool(texts, per, explain=explain)
            with ForeignCpu(cpu, pid) as foreign:
                window = uvloop.run(window_load(port, reqs, 1, warmup, seconds))
            point = {"texts_per_request": per, "explain": explain, **stats(window)}
            point["foreign_cpu"] = foreign.share
            print(f"{'explain' if explain else 'plain':7s} x{per:2d}: {point}", flush=True)
            points.append(point)
    return points


def fairness_point(port: int, texts: list[str], duration: float, warmup: float) -> dict[str, Any]:
    import uvloop

    plain = request_pool(texts, 1)
    flood = request_pool(texts, 16, explain=True)

    async def both() -> tuple[Window, Window]:
        return await asyncio.gather(  # type: ignore[return-value]
            window_load(port, plain, 1, warmup, duration),
            window_load(port, flood, 4, warmup, duration, offset=3),
        )

    p, e = uvloop.run(both())
    return {
        "plain": stats(p),
        "explain": {**stats(e), "texts_per_s": 16 * len(e.latencies) / duration},
    }


# --- faithfulness (in-process) ------------------------------------------------------------------------


def faithfulness(model_dir: str, n: int = 100, draws: int = 10) -> dict[str, Any]:
    import torch

    from core.explain import occlusions
    from model.artifact import load_artifact
    from model.tokenizer import UNK_ID

    torch.set_num_threads(1)
    art = load_artifact(model_dir)
    lines = (data_root() / "sst2" / "sentences" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines if line.strip()]
    ids_all = [ids for ids in art.tokenize(texts)[0] if len(ids) >= 8]
    rng = random.Random(0)
    sample = rng.sample(ids_all, n)

    def scores(ids: list[int], method: str) -> tuple[int, list[float]]:
        variants = occlusions(ids, len(ids)) if method == "delete" else [
            [*ids[:j], UNK_ID, *ids[j + 1 :]] for j in range(len(ids))
        ]  # fmt: skip
        p = art.probabilities([ids, *variants])
        label = int(p[0].argmax())
        return label, (p[0, label] - p[1:, label]).tolist()

    def removed(ids: list[int], idx: list[int], how: str) -> list[int]:
        if how == "delete":
            return [t for j, t in enumerate(ids) if j not in idx] or [UNK_ID]
        return [UNK_ID if j in idx else t for j, t in enumerate(ids)]

    out: dict[str, Any] = {"sentences": n, "min_tokens": 8, "random_draws": draws}
    for method in ("delete", "unk"):
        for how in ("delete", "unk"):
            for k in (2, 3):
                top, rnd = [], []
                for ids in sample:
                    label, sc = scores(ids, method)
                    p0 = float(art.probabilities([ids])[0, label])
                    best = sorted(range(len(ids)), key=lambda j: -sc[j])[:k]
                    best = [j for j in best if sc[j] > 0] or best[:1]
                    top.append(p0 - float(art.probabilities([removed(ids, best, how)])[0, label]))
                    r = []
                    for _ in range(draws):
                        idx = rng.sample(range(len(ids)), len(best))
                        r.append(p0 - float(art.probabilities([removed(ids, idx, how)])[0, label]))
                    rnd.append(statistics.mean(r))
                out[f"occlude={method} remove={how} k={k}"] = {
                    "top_k_drop": statistics.mean(top), "random_drop": statistics.mean(rnd)
                }  # fmt: skip
    return out


# --- report -------------------------------------------------------------------------------------------


def write_report(results: dict[str, Any]) -> None:
    m = results["model"]
    lines = [
        "# Explanations: cost, fairness, faithfulness",
        "",
        f"Model `{m['name']}` {m['version']} (embed {m['embed_dim']}, hidden {m['hidden_dim']}). "
        f"{results['n_texts']} real texts (SST-2 test sentences and IMDB review openings), mean "
        f"{results['mean_tokens']:.1f} tokens, {results['mean_explained']:.1f} explained per text "
        f"(SENTIMENT_MAX_EXPLAIN_TOKENS={results['max_explain_tokens']}). Server pinned to CPU "
        f"{results['server_cpu']} (one torch thread), load generator to CPU {results['client_cpu']}. "
        f"{results['machine']}. One run.",
        "",
        "## Latency, one client",
        "",
        "| texts/request | plain p50 ms | plain p99 ms | explain p50 ms | explain p99 ms | ratio p50 "
        "| ratio p99 | requests (plain / explain) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for per in TEXTS_PER_REQUEST:
        plain = next(p for p in results["latency"] if p["texts_per_request"] == per and not p["explain"])
        expl = next(p for p in results["latency"] if p["texts_per_request"] == per and p["explain"])
        lines.append(
            f"| {per} | {plain['p50_ms']:.2f} | {plain['p99_ms']:.2f} | {expl['p50_ms']:.1f} | "
            f"{expl['p99_ms']:.1f} | {expl['p50_ms'] / plain['p50_ms']:.1f}x | "
            f"{expl['p99_ms'] / plain['p99_ms']:.1f}x | {plain['n']} / {expl['n']} |"
        )
    foreign = max(p["foreign_cpu"] for p in results["latency"])
    lines += [
        "",
        f"Other processes took at most {foreign:.0%} of the server CPU during these points.",
        "",
        "## Plain requests during an explain flood",
        "",
        "One client sends plain 1-text requests while 4 clients send explain requests of 16 texts.",
        "",
        "| lane (explain sequences in the queue) | plain p50 ms | plain p99 ms | plain requests "
        "| explain p50 ms | explain requests | explained texts/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in results["fairness"].items():
        lines.append(
            f"| {name} | {f['plain']['p50_ms']:.1f} | {f['plain']['p99_ms']:.1f} | {f['plain']['n']} | "
            f"{f['explain']['p50_ms']:.0f} | {f['explain']['n']} | {f['explain']['texts_per_s']:.1f} |"
        )
    fa = results["faithfulness"]
    lines += [
        "",
        "## Faithfulness",
        "",
        f"{fa['sentences']} SST-2 dev sentences of at least {fa['min_tokens']} tokens, in-process. Mean "
        "drop of p(predicted label) when the k tokens with the highest scores are removed, vs k random "
        f"tokens (mean of {fa['random_draws']} draws). *scores by*: how the scores were computed; "
        "*removed by*: how tokens are removed for the check.",
        "",
        "| scores by | removed by | k | top-k drop | random drop |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, v in fa.items():
        if key.startswith("occlude="):
            occ, rem, k = (part.split("=")[1] for part in key.split())
            occ_name = {"delete": "deletion (served)", "unk": "[UNK] replacement"}[occ]
            rem_name = {"delete": "deletion", "unk": "[UNK] replacement"}[rem]
            lines.append(
                f"| {occ_name} | {rem_name} | {k} | {v['top_k_drop']:.3f} | {v['random_drop']:.3f} |"
            )
    lines.append("")
    save("explain", results, lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="artifact (or parent with `latest`); default artifacts/")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each point")
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--server-cpu", type=int, default=1)
    args = p.parse_args()

    model_dir = args.model_dir or default_model_dir()
    from app.settings import Settings
    from model.artifact import load_artifact

    art = load_artifact(model_dir)
    cap = Settings().max_explain_tokens
    texts = load_texts()
    lengths = [len(ids) for ids in art.tokenize(texts)[0]]
    results: dict[str, Any] = {
        "model": {
            "name": art.meta["name"],
            "version": art.meta["version"],
            "embed_dim": art.meta.get("network", {}).get("embed_dim"),
            "hidden_dim": art.meta.get("network", {}).get("hidden_dim"),
        },
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "n_texts": len(texts),
        "mean_tokens": statistics.mean(lengths),
        "mean_explained": statistics.mean(min(n, cap) for n in lengths),
        "max_explain_tokens": cap,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "duration_s": args.duration,
    }
    # faithfulness first, pinned to the server's CPU while no server runs
    os.sched_setaffinity(0, {args.server_cpu})
    results["faithfulness"] = faithfulness(model_dir)
    print(json.dumps(results["faithfulness"], indent=1), flush=True)
    os.sched_setaffinity(0, {args.client_cpu})

    log = RESULTS / "explain-server.log.tmp"
    server = start_server(model_dir, log, cpu=args.server_cpu, env=ENV, app="app.main:app")
    try:
        results["latency"] = latency_points(
            server.port, texts, args.duration, args.warmup, args.server_cpu, server.pid
        )
        results["fairness"] = {
            "128 (default)": fairness_point(server.port, texts, 2 * args.duration, args.warmup)
        }
    finally:
        server.stop()
    for lane, name in (("64", "64 (one batch)"), ("100000", "100000 (no lane)")):
        env = {**ENV, "BENCH_EXPLAIN_LANE": lane, "SENTIMENT_MAX_QUEUE_TEXTS": "100000"}
        server = start_server(model_dir, log, cpu=args.server_cpu, env=env, app="bench.lane_app:app")
        try:
            results["fairness"][name] = fairness_point(server.port, texts, 2 * args.duration, args.warmup)
        finally:
            server.stop()
    print(json.dumps(results["fairness"], indent=1), flush=True)
    write_report(results)
    print((RESULTS / "explain.md").read_text())


if __name__ == "__main__":
    main()
