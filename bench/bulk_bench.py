"""Bulk scoring benchmark (issue 24): rows/s and peak RSS (whole process tree) of scoring a file.

Datasets (built once under --data-dir):
  short   1,000,000 short texts: the tweets (train, val, test) and SST phrases and sentences, repeated
  imdb    IMDB test: 25,000 whole reviews (scored in chunks, as the service does by default)

Ways to score them:
  limit      the in-process limit: the service's batch path (tokenize and plan, batches of 64 pieces in
             arrival order, each sorted and split as the batcher does, forward, combine chunks), one
             thread, the backend the service takes by default (SENTIMENT_BACKEND, auto: ONNX Runtime),
             no I/O; shown × the cores
  score-wN   `python -m scoring FILE --workers N` (wall time from launch to exit, start-up included)
  ray        `python -m scoring FILE --engine ray --workers 2`: Ray Data, 2 scoring actors (a local Ray)
  http       the service as the Dockerfile runs it (one worker, one torch thread) and a 64-connection
             client in this process sending 16 texts per request

A whole run does not fit in one quiet slot of this shared 2-core machine, so it runs in parts
(`--part`), each measuring the limit again (before and after its runs) so that every ratio compares
figures of one part. On the busy host of the recorded run (load 6-7 on 2 cores) one worker-pass over
1,000,000 rows takes longer than a slot, so the short-text parts score the file's first 500,000 rows
(`--short-rows`); the kill-and-resume check scores all 1,000,000 (and records its memory):

  short-a  score-w2                           imdb-a   score-w2, http (first --imdb-http-seconds)
  short-b  score-w1                           imdb-b   score-w1
  short-c  ray                                imdb-c   ray
  short-d  http (first --http-seconds)        resume   kill score-w2 on the 1M file midway,
                                                       --resume, check every id once

Each part updates bench/results/bulk.json; bulk.md and bulk.png are redrawn from all parts present.
Run each through /work/bench-quiet.sh (or your own quiet machine):
  python -m bench.bulk_bench --part imdb-a
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench import DEFAULT_MODEL, REPO, RESULTS
from bench.http_client import connect, predict_request
from bench.procstats import RssSampler
from bench.servers import start_server
from bench.texts import data_root

MODEL = DEFAULT_MODEL
PARTS = ("short-a", "short-b", "short-c", "short-d", "imdb-a", "imdb-b", "imdb-c", "resume")
PLAN = {
    "short-a": ("score-w2",),
    "short-b": ("score-w1",),
    "short-c": ("ray",),
    "short-d": ("http",),
    "imdb-a": ("score-w2", "http"),
    "imdb-b": ("score-w1",),
    "imdb-c": ("ray",),
}
HALF = 500_000  # the short parts' default rows: the first half of the 1M file (see the docstring)


# --- data --------------------------------------------------------------------------------------------


def _tsv_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]


def build_data(data_dir: Path) -> dict[str, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    root = data_root()
    short, imdb = data_dir / "short-1m.csv", data_dir / "imdb-test.csv"
    if not short.exists():
        pool = [
            *(t for split in ("train", "val", "test") for t in _tsv_texts(root / "tweets" / f"{split}.tsv")),
            *_tsv_texts(root / "sst2" / "glue" / "train.tsv"),
            *(
                t
                for split in ("train", "dev", "test")
                for t in _tsv_texts(root / "sst2" / "sentences" / f"{split}.tsv")
            ),
        ]
        random.Random(0).shuffle(pool)
        tmp = short.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "text"])
            w.writerows([i, pool[i % len(pool)]] for i in range(1_000_000))
        tmp.rename(short)
    half = data_dir / "short-500k.csv"
    if not half.exists():
        with open(short, encoding="utf-8") as src, open(half.with_suffix(".tmp"), "w", encoding="utf-8") as f:
            for i, line in enumerate(src):
                if i > HALF:
                    break
                f.write(line)
        half.with_suffix(".tmp").rename(half)
    if not imdb.exists():
        tmp = imdb.with_suffix(".tmp")
        with (
            gzip.open(root / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as src,
            open(tmp, "w", encoding="utf-8", newline="") as f,
        ):
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "text"])
            w.writerows((r["id"], r["text"]) for r in map(json.loads, src))
        tmp.rename(imdb)
    return {"short": short, "short-half": half, "imdb": imdb}


def read_texts(path: Path, limit: int | None = None) -> list[str]:
    csv.field_size_limit(1 << 26)
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            out.append(row[1])
            if limit is not None and len(out) >= limit:
                break
    return out


# --- measuring ------------------------------------------------------------------------------------------


def busy_cpu_s_total() -> float:
    """CPU seconds the whole machine has been busy (every process, ours included)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = sum(int(x) for x in fields[:3]) + sum(
        int(x) for x in fields[5:8]
    )  # user nice system irq softirq steal
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) descendants: a command's whole tree, its
    worker processes included once they have been joined."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def steal_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


def _limit_cmd(path: Path, sample: int, seconds: float) -> list[str]:
    return [
        sys.executable, "-m", "bench.bulk_bench", "--inner-limit", str(path),
        "--sample", str(sample), "--seconds", str(seconds),
    ]  # fmt: skip


def scoring_cmd(path: Path, out: Path, *options: str) -> list[str]:
    """`python -m scoring` of `path` into `out` with the shipped model, quiet."""
    return [
        sys.executable, "-m", "scoring", str(path), "-o", str(out), *options,
        "--quiet", "--model", str(MODEL),
    ]  # fmt: skip


# One thread means one: `tokenizers` would otherwise encode a batch on a thread per core.
_ONE_THREAD = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}


def limit(path: Path, sample: int, seconds: float) -> dict[str, Any]:
    """The in-process limit, measured in a child process with one thread."""
    out = subprocess.run(
        _limit_cmd(path, sample, seconds),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=_ONE_THREAD,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def limit_parallel(path: Path, sample: int, seconds: float, copies: int) -> float:
    """`copies` limit processes at once, their rates summed: what the cores give under today's load."""
    procs = [
        subprocess.Popen(
            _limit_cmd(path, sample, seconds), cwd=REPO, stdout=subprocess.PIPE, text=True, env=_ONE_THREAD
        )
        for _ in range(copies)
    ]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["rows_per_s"] for p in procs)


def inner_limit(path: Path, sample: int, seconds: float) -> None:
    import torch

    from core import long_text
    from core.batcher import Batcher
    from core.engine import make_infer
    from model.artifact import load_artifact
    from model.backends import load_runner

    torch.set_num_threads(1)
    artifact = load_artifact(MODEL)
    # The backend the service and the score command take by default (SENTIMENT_BACKEND, auto).
    runner = load_runner(artifact, os.environ.get("SENTIMENT_BACKEND", "auto"), threads=1)
    batcher = Batcher(make_infer(runner))
    texts = read_texts(path, sample)

    def run(batch: list[str]) -> None:
        plan = long_text.plan(
            artifact.tokenizer,
            batch,
            max_length=artifact.max_length,
            mode="chunk",
            sentences=False,
            max_chunks=16,
            fast=artifact.ascii_ids,
        )
        rows: list[list[float]] = []
        for s in range(0, len(plan.ids), 64):  # the batcher takes at most 64 pieces a pass
            piece = plan.ids[s : s + 64]
            order = sorted(range(len(piece)), key=lambda i: -len(piece[i]))
            got = batcher.run_sync([piece[i] for i in order])
            back: list[list[float]] = [[] for _ in piece]
            for i, r in zip(order, got, strict=True):
                back[i] = r
            rows += back
        long_text.reassemble(plan, rows)

    run(texts[:64])  # warm-up
    n, i = 0, 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        batch = texts[i : i + 64] or texts[:64]
        i = i + 64 if i + 64 < len(texts) else 0
        run(batch)
        n += len(batch)
    rate = n / (time.perf_counter() - t0)
    per_cpu = n / (time.process_time() - cpu0)
    print(
        json.dumps(
            {"rows_per_s": rate, "rows_per_cpu_s": per_cpu, "rows": n, "cores": len(os.sched_getaffinity(0))}
        )
    )


def timed(cmd: list[str], rows: int) -> dict[str, Any]:
    """Run a command, its wall time and its process tree's peak RSS."""
    st0, c0, own0 = steal_s(), busy_cpu_s_total(), children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with RssSampler(proc.pid, 0.25, tree=True) as rss:
        out, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    cpu_s = children_cpu_s() - own0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}")
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": rss.peak() / 2**20,
        "cpu_s": cpu_s,
        "rows_per_cpu_s": rows / cpu_s,
        "steal_s": steal_s() - st0,
        "busy_cpu_s": busy_cpu_s_total() - c0,
        "command": " ".join(cmd[1:]),
    }


def score(path: Path, out_dir: Path, workers: int, rows: int) -> dict[str, Any]:
    out = out_dir / f"{path.stem}.w{workers}.csv"
    cmd = scoring_cmd(path, out, "--workers", str(workers), "--overwrite")
    result = timed(cmd, rows)
    out.unlink(missing_ok=True)
    return result


def ray(path: Path, out_dir: Path, rows: int) -> dict[str, Any]:
    out = out_dir / f"{path.stem}.ray.parquet"
    cmd = scoring_cmd(path, out, "--engine", "ray", "--workers", "2", "--overwrite")
    result = timed(cmd, rows)
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return result


def http(path: Path, out_dir: Path, rows: int, seconds: float | None) -> dict[str, Any]:
    """The service (one worker, one torch thread, as the Dockerfile runs it) and 64 connections of 16
    texts per request; all rows, or as many as `seconds` allow. 503s are retried after a pause."""
    texts = read_texts(path)[:rows]
    env = {
        "SENTIMENT_MAX_CHARS_PER_TEXT": "100000",
        "SENTIMENT_MAX_QUEUE_TEXTS": "16384",
        "SENTIMENT_LOG_LEVEL": "warning",
    }
    server = start_server(MODEL, out_dir / "http-server.log", env=env)
    requests = deque(predict_request(texts[i : i + 16]) for i in range(0, len(texts), 16))
    done = {"rows": 0, "retries": 0, "errors": 0}

    async def client(until: float) -> None:
        conn = await connect(server.port)
        while requests and time.perf_counter() < until:
            data = requests.popleft()
            r = await conn.request(data)
            if r.status == 503:
                done["retries"] += 1
                requests.append(data)
                await asyncio.sleep(0.05)
                continue
            if r.status != 200:
                done["errors"] += 1
                continue
            done["rows"] += r.body.count(b'"label"')
        conn.close()

    async def drive() -> float:
        t0 = time.perf_counter()
        until = t0 + seconds if seconds else float("inf")
        await asyncio.gather(*(client(until) for _ in range(64)))
        return time.perf_counter() - t0

    st0, c0, own0, self0 = steal_s(), busy_cpu_s_total(), children_cpu_s(), self_cpu_s()
    try:
        with RssSampler(server.pid, 0.25, tree=True) as rss:
            elapsed = asyncio.run(drive())
        client_cpu = self_cpu_s() - self0
    finally:
        server.stop()
    # the server's whole CPU time (start-up included, as for the score command) and the client's
    cpu_s = children_cpu_s() - own0 + client_cpu
    return {
        "rows": done["rows"],
        "seconds": elapsed,
        "rows_per_s": done["rows"] / elapsed,
        "peak_rss_mb": rss.peak() / 2**20,
        "cpu_s": cpu_s,
        "rows_per_cpu_s": done["rows"] / cpu_s,
        "retried_503": done["retries"],
        "errors": done["errors"],
        "steal_s": steal_s() - st0,
        "busy_cpu_s": busy_cpu_s_total() - c0,
        "command": "python -m app (1 worker, 1 torch thread) + 64 connections x 16 texts per request",
    }


def resume_check(path: Path, out_dir: Path, kill_after: float) -> dict[str, Any]:
    """Kill `score --workers 2` on the 1M file after `kill_after` s, resume, and check every id once."""
    out = out_dir / "resume.csv"
    cmd = scoring_cmd(path, out, "--workers", "2")
    for leftover in (out, out.with_name(out.name + ".resume.json")):
        leftover.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, cwd=REPO)
    journal_file = out.with_name(out.name + ".resume.json")

    def committed() -> int:
        try:
            return json.loads(journal_file.read_text())["records"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0

    with RssSampler(proc.pid, 0.25, tree=True) as first:
        time.sleep(kill_after)
        while committed() == 0 and proc.poll() is None:  # midway means some rows committed
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # the main process; its workers exit once orphaned
        proc.wait()
    journal = json.loads(journal_file.read_text())
    size_killed = out.stat().st_size
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--resume"], cwd=REPO)
    with RssSampler(proc.pid, 0.25, tree=True) as second:
        if proc.wait() != 0:
            raise RuntimeError("the resumed run failed")
    resumed_s = time.perf_counter() - t0
    seen: list[int] = []
    with open(out, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r)
        seen = [int(row[0]) for row in r]
    expected = 1_000_000
    distinct = len(set(seen))
    lost = len(set(range(expected)) - set(seen))
    out.unlink()
    return {
        "killed_after_s": kill_after,
        "committed_when_killed": journal["records"],
        "bytes_when_killed": size_killed,
        "bytes_committed": journal["output"]["bytes"],
        "resume_seconds": resumed_s,
        "rows_out": len(seen),
        "lost": lost,
        "peak_rss_mb": max(first.peak(), second.peak()) / 2**20,
        "resumed_rows_per_s": (expected - journal["records"]) / resumed_s,
        "duplicated": len(seen) - distinct,
        "in_order": seen == sorted(seen),
    }


# --- report --------------------------------------------------------------------------------------------


def cpu_ratio(m: dict[str, Any], lim: dict[str, Any]) -> str:
    if "rows_per_cpu_s" not in m or "rows_per_cpu_s" not in lim:
        return "-"
    return f"{m['rows_per_cpu_s'] / lim['rows_per_cpu_s']:.0%} of the limit's"


def report(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bulk.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Bulk scoring (bench/bulk_bench.py)",
        "",
        "Host: a shared 2-core VM (AMD EPYC, no GPU). Other sessions' training jobs and tests run beside "
        "the benchmark (/work/bench-quiet.sh only keeps other benchmarks out), so each part measures its "
        "own in-process limit, before and after its runs, and every ratio compares figures of one part: "
        "the limit is the mean of the two single-thread measurements (one `tokenizers` thread too), "
        "× the 2 cores; `2 at once` is two limit processes run together, summed (what the cores gave "
        "under the load of that moment). rows/s: rows ÷ wall time from launch to exit (start-up "
        "included); RSS: peak of the whole process tree (for Ray: every Ray process, the object store's "
        "shared memory counted in each). `CPU s`: CPU time of the command's whole process tree (for "
        "http: the server's and the client's), start-up included; `rows per CPU s ÷ limit's`: its rows "
        "per CPU second over the limit's, which the load of other jobs does not move: the wall-time "
        "ratio it would reach with the cores to itself. `busy CPU s`: CPU time the whole machine used "
        "during the run (2 × the seconds is all there is).",
        "",
        "| part | dataset | way | rows | seconds | rows/s | ÷ limit × cores | peak RSS MB | CPU s "
        "| rows per CPU s ÷ limit's | busy CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for part in PARTS:
        r = results.get(part)
        if not r or part == "resume":
            continue
        lim = r["limit"]
        cores = lim["cores"]
        lines.append(
            f"| {part} ({r['when']}) | {r['dataset']} | in-process limit × {cores} "
            f"(before {lim['before']:,.0f}, "
            f"after {lim['after']:,.0f}; {cores} at once {lim['parallel_copies_sum']:,.0f}) | | | "
            f"{lim['rows_per_s'] * cores:,.0f} | 1.00 | | | "
            + (f"{lim['rows_per_cpu_s']:,.0f} rows per CPU s | |" if "rows_per_cpu_s" in lim else "- | |")
        )
        for way, m in r["ways"].items():
            ratio = m["rows_per_s"] / (lim["rows_per_s"] * cores)
            cpu = f"{m['cpu_s']:,.0f}" if "cpu_s" in m else "-"
            per_cpu = (
                f"{m['rows_per_cpu_s'] / lim['rows_per_cpu_s']:.2f}"
                if "cpu_s" in m and "rows_per_cpu_s" in lim
                else "-"
            )
            lines.append(
                f"| | | {way} | {m['rows']:,} | {m['seconds']:,.1f} | {m['rows_per_s']:,.0f} | "
                f"{ratio:.2f} | {m['peak_rss_mb']:,.0f} | {cpu} | {per_cpu} | {m.get('busy_cpu_s', 0):,.0f} |"
            )
    lines += ["", "Targets (issue 24), each from one part:", ""]
    sa, ia, sc = results.get("short-a"), results.get("imdb-a"), results.get("short-c")
    # short-b scores the first 500,000 rows (see PLAN)
    if sa:
        m, lim = sa["ways"]["score-w2"], sa["limit"]["rows_per_s"]
        lines.append(
            f"- short texts ({m['rows']:,} rows), score with 2 workers: "
            f"{m['rows_per_s'] / (2 * lim):.0%} of 2 × the "
            f"single-thread batch-64 limit (target ≥ 85 %; per CPU second: {cpu_ratio(m, sa['limit'])}); "
            f"peak RSS {m['peak_rss_mb']:,.0f} MB "
            "(target ≤ 1,536 MB)"
        )
    if ia:
        m, h = ia["ways"]["score-w2"], ia["ways"]["http"]
        lines.append(
            f"- IMDB test, score with 2 workers ÷ the HTTP service: {m['rows_per_s'] / h['rows_per_s']:.2f}× "
            "(target ≥ 2×)"
        )
    if sc:
        m, lim = sc["ways"]["ray"], sc["limit"]["rows_per_s"]
        lines.append(
            f"- short texts ({m['rows']:,} rows), Ray Data on 2 CPUs: "
            f"{m['rows_per_s'] / (2 * lim):.0%} of 2 × the limit (target ≥ 70 %; its CPU time is not "
            "measured: Ray's processes are not all this process's children)"
        )
    rs = results.get("resume")
    if rs:
        lines += [
            "",
            f"Kill and resume ({rs['when']}): `score --workers 2` on the 1M file killed (SIGKILL) after "
            f"{rs['killed_after_s']:.0f} s with {rs['committed_when_killed']:,} rows committed "
            f"({rs['bytes_when_killed'] - rs['bytes_committed']:,} bytes written past the last commit, "
            f"cut off on resume); `--resume` finished in {rs['resume_seconds']:.0f} s: {rs['rows_out']:,} "
            f"rows, {rs['lost']} lost, {rs['duplicated']} duplicated, in order: {rs['in_order']}; peak RSS "
            f"{rs['peak_rss_mb']:,.0f} MB, the resumed run {rs['resumed_rows_per_s']:,.0f} rows/s "
            "(start-up included).",
        ]
    if results.get("notes"):
        lines += ["", "## Partial and earlier parts", "", *(f"- {note}" for note in results["notes"])]
    lines += ["", "![rows/s](bulk.png)", ""]
    (RESULTS / "bulk.md").write_text("\n".join(lines))
    plot(results)


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, dataset, parts in (
        (axes[0], "short texts (tweets, SST)", ("short-a", "short-b", "short-c", "short-d")),
        (axes[1], "IMDB test (25,000 reviews)", ("imdb-a", "imdb-b", "imdb-c")),
    ):
        names, values, limits = [], [], []
        for part in parts:
            r = results.get(part)
            if not r:
                continue
            limits.append(r["limit"]["rows_per_s"] * r["limit"]["cores"])
            for way, m in r["ways"].items():
                names.append(way)
                values.append(m["rows_per_s"])
        if not names:
            continue
        order = sorted(range(len(names)), key=lambda i: values[i])
        ax.barh([names[i] for i in order], [values[i] for i in order], color="#4c72b0")
        for k, i in enumerate(order):
            ax.text(values[i], k, f" {values[i]:,.0f}", va="center", fontsize=8)
        for lim in limits:
            ax.axvline(lim, color="#c44e52", linestyle="--", linewidth=1)
        ax.set_title(f"{dataset}\n(dashed: in-process limit × 2 cores, per part)", fontsize=10)
        ax.set_xlabel("rows/s")
    fig.tight_layout()
    fig.savefig(RESULTS / "bulk.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=PARTS)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BULK_BENCH_DIR", "/tmp/bulk-bench")))
    p.add_argument("--limit-seconds", type=float, default=20.0)
    p.add_argument("--http-seconds", type=float, default=60.0, help="short-d: how long the HTTP client runs")
    p.add_argument("--short-rows", type=int, default=HALF, help="rows of the 1M file the short parts score")
    p.add_argument(
        "--imdb-http-seconds", type=float, default=150.0, help="imdb-a: how long the HTTP client runs"
    )
    p.add_argument("--kill-after", type=float, default=60.0, help="resume: seconds before the kill")
    p.add_argument("--inner-limit", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--sample", type=int, default=50_000, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=20.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner_limit:
        inner_limit(args.inner_limit, args.sample, args.seconds)
        return
    if args.part is None:
        p.error("--part is required (the parts are listed above)")
    files = build_data(args.data_dir)
    results = json.loads((RESULTS / "bulk.json").read_text()) if (RESULTS / "bulk.json").exists() else {}
    part, out_dir = args.part, args.data_dir
    when = time.strftime("%Y-%m-%d %H:%M")
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    print(f"[{part}] load {' '.join(load_before)}", flush=True)
    if part == "resume":
        results[part] = {"when": when, **resume_check(files["short"], out_dir, args.kill_after)}
    else:
        dataset = "imdb" if part.startswith("imdb") else "short"
        rows = 25_000 if dataset == "imdb" else args.short_rows
        path = files[dataset] if rows in (25_000, 1_000_000) else files["short-half"]
        if dataset == "short" and rows not in (HALF, 1_000_000):
            p.error("--short-rows: 500000 or 1000000")
        sample = 3_000 if dataset == "imdb" else 50_000
        before = limit(path, sample, args.limit_seconds)
        print(f"[{part}] limit {before['rows_per_s']:,.0f} rows/s × {before['cores']}", flush=True)
        ways: dict[str, Any] = {}
        plan = PLAN[part]
        for way in plan:
            if way.startswith("score-w"):
                ways[way] = score(path, out_dir, int(way[-1]), rows)
            elif way == "ray":
                ways[way] = ray(path, out_dir, rows)
            else:
                ways[way] = http(
                    path, out_dir, rows, args.http_seconds if dataset == "short" else args.imdb_http_seconds
                )
            m = ways[way]
            print(
                f"[{part}] {way}: {m['rows']:,} rows in {m['seconds']:.1f} s = "
                f"{m['rows_per_s']:,.0f} rows/s, peak RSS {m['peak_rss_mb']:,.0f} MB",
                flush=True,
            )
        after = limit(path, sample, args.limit_seconds)
        parallel = limit_parallel(path, sample, args.limit_seconds, before["cores"])
        # the limit: the mean of the measurements before and after (the host's load drifts)
        lim = {
            "rows_per_s": (before["rows_per_s"] + after["rows_per_s"]) / 2,
            "before": before["rows_per_s"],
            "after": after["rows_per_s"],
            "cores": before["cores"],
            "parallel_copies_sum": parallel,
            "rows_per_cpu_s": (before["rows_per_cpu_s"] + after["rows_per_cpu_s"]) / 2,
        }
        print(
            f"[{part}] limit before {before['rows_per_s']:,.0f}, after {after['rows_per_s']:,.0f}, "
            f"{before['cores']} copies at once {parallel:,.0f} rows/s",
            flush=True,
        )
        for way, m in ways.items():
            ratio = m["rows_per_s"] / (lim["rows_per_s"] * lim["cores"])
            print(f"[{part}] {way} ÷ (limit × cores): {ratio:.2f}", flush=True)
        results[part] = {
            "when": when,
            "dataset": dataset,
            "limit": lim,
            "ways": ways,
            "loadavg_before": load_before,
        }
    report(results)
    print(f"[{part}] written {RESULTS / 'bulk.md'}", flush=True)


if __name__ == "__main__":
    main()
