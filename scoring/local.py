"""The local engine: one machine, `workers` processes scoring windows of the file while this process
reads, orders and writes.

    reader ──window──> workers (ProcessPoolExecutor, spawn; one torch thread each, the artifact loaded
      │                once per worker) ──outcomes──┐
      └──────── windows in flight, in input order ──┴──> writer + errors file ──commit──> journal

At most 2 × workers windows are in flight and each is written as soon as it and all before it are
scored, so memory stays flat whatever the file's length and the output keeps the input's order.
`workers=0` scores in this process (no pool; for small files and debugging). This process never
imports torch: a worker reports the labels the output's columns need."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring import journal
from scoring.formats import (
    ErrorLog,
    FileSpec,
    FormatError,
    Window,
    detect,
    known_suffix,
    open_reader,
    open_writer,
)
from scoring.options import RunOptions, ScorerConfig
from scoring.progress import Progress

log = logging.getLogger("scoring")


class RunError(Exception):
    """The run stopped; the message says why and what to do."""


@dataclass
class Summary:
    read: int
    scored: int
    failed: int
    labels: dict[str, int]
    seconds: float  # all runs together (a resumed run adds to the interrupted one's)
    this_run_seconds: float
    this_run_rows: int
    output: Path
    errors: Path | None  # None when no row failed

    def lines(self) -> list[str]:
        rate = self.this_run_rows / self.this_run_seconds if self.this_run_seconds > 0 else 0.0
        scored = max(1, self.scored)
        shares = [f"{label} {n:,} ({n / scored:.1%})" for label, n in sorted(self.labels.items())]
        out = [
            f"rows read {self.read:,}, scored {self.scored:,}, failed {self.failed:,} in "
            f"{self.seconds:,.1f} s ({rate:,.0f} rows/s this run)",
            "labels: " + (", ".join(shares) or "none"),
            f"output: {self.output}",
        ]
        if self.errors is not None:
            out.append(f"failed rows (line and reason): {self.errors}")
        return out


class _Workers:
    """Where windows are scored: a process pool, or this process when workers == 0."""

    def __init__(self, workers: int, config: ScorerConfig) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers == 0:
            from scoring.scorer import Scorer

            try:
                self._scorer = Scorer(config)
            except Exception as e:  # ArtifactError names the file
                raise RunError(f"cannot load the model: {e}") from None
        else:
            from scoring import scorer

            self._module = scorer
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=scorer.init_worker,
                initargs=(config,),
            )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        done: Future[Any] = Future()
        done.set_result(fn(*args))
        return done

    def describe(self) -> dict[str, Any]:
        if self._pool is None:
            return self._scorer.describe()
        try:
            return self._pool.submit(self._module.describe).result()
        except BrokenProcessPool as e:
            raise RunError(f"a worker process could not start: {e}") from None
        except Exception as e:  # the worker's ArtifactError, which names the file
            raise RunError(f"cannot load the model: {e}") from None

    def score(self, texts: list[str]) -> Future[Any]:
        if self._pool is None:
            return self._call(self._scorer.score, texts)
        return self._pool.submit(self._module.score_window, texts)

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)


def _check_fresh(opts: RunOptions, output: FileSpec, journal_file: Path) -> None:
    """Without --resume: refuse to replace an earlier run's files unless --overwrite."""
    parts = output.path.with_name(output.path.name + ".parts")
    leftovers = [p for p in (output.path, journal_file, opts.errors, parts) if p.exists()]
    if not leftovers:
        return
    if not opts.overwrite:
        interrupted = journal_file.exists()
        raise RunError(
            f"{leftovers[0]} exists"
            + ("; an interrupted run left it: pass --resume to continue it" if interrupted else "")
            + " (--overwrite starts again)"
        )
    for p in leftovers:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def run(opts: RunOptions) -> Summary:
    t0 = time.monotonic()
    source = detect(opts.input, opts.input_format)
    target = detect(opts.output, None if known_suffix(opts.output) else opts.input_format)
    if target.path.resolve() == source.path.resolve():
        raise RunError(f"{target.path}: the output would overwrite the input; name another output")
    journal_file = journal.journal_path(target.path)
    if not opts.resume:
        _check_fresh(opts, target, journal_file)
    if not source.path.is_file():
        raise FormatError(f"{source.path}: file not found")
    reader = open_reader(source, opts.text_column, opts.id_column)  # column errors before workers start
    workers = _Workers(opts.workers, opts.scorer)
    completed = False
    try:
        info = workers.describe()  # the artifact loads (or its error surfaces) before any row is read
        labels: list[str] = info["labels"]
        identity = {
            "input": journal.input_identity(source.path),
            "format": source.format,
            "text_column": opts.text_column,
            "id_column": opts.id_column,
            "prefix": opts.prefix,
            "model": info["model"],
            "labels": labels,
            "long_text": opts.scorer.long_text,
            "max_chunks": opts.scorer.max_chunks,
            "max_chars": opts.scorer.max_chars,
        }
        state = journal.load(journal_file, identity) if opts.resume else journal.State(identity)
        writer = open_writer(target, reader, labels, opts.prefix, opts.id_column, state.output)
        errors = ErrorLog(opts.errors, source.row_word, state.errors_bytes if opts.resume else None)
        if opts.resume:
            log.info("resuming after %s committed rows of %s", f"{state.records:,}", source.path)
        start_read = state.counts.read
        try:
            completed = _score(opts, source, reader, workers, writer, errors, state, journal_file, t0)
        finally:
            writer.close()
            errors.close()
    finally:
        reader.close()
        workers.close(cancel=not completed)
    c = state.counts
    return Summary(
        c.read, c.scored, c.failed, dict(c.labels), c.seconds, time.monotonic() - t0,
        c.read - start_read, target.path, opts.errors if c.failed else None,
    )  # fmt: skip


def _score(
    opts: RunOptions,
    source: FileSpec,
    reader: Any,
    workers: _Workers,
    writer: Any,
    errors: ErrorLog,
    state: journal.State,
    journal_file: Path,
    t0: float,
) -> bool:
    counts = state.counts
    seconds_before = counts.seconds
    labels = Counter(counts.labels)
    with_id = opts.id_column is not None

    def save() -> None:
        counts.labels = dict(labels)
        counts.seconds = seconds_before + time.monotonic() - t0
        journal.save(journal_file, state)

    # The empty output (a header) and errors file are the first commit: a run killed before its first
    # window is resumable too.
    state.output = writer.commit()
    state.errors_bytes = errors.commit()
    save()
    progress = Progress(done=counts.read, every_s=opts.progress_every_s, enabled=opts.progress)
    in_flight: deque[tuple[Window, Future[Any] | None]] = deque()
    limit = 2 * max(1, workers.workers)

    def settle(window: Window, future: Future[Any] | None) -> None:
        try:
            scored = iter(future.result() if future is not None else ())
        except BrokenProcessPool:
            raise RunError(
                "a worker process died (out of memory, or killed); what was committed is kept: rerun with "
                "--resume to continue"
            ) from None
        outcomes: list[Any] = []
        for k in range(len(window)):
            problem = window.problems[k]
            outcome = problem if problem is not None else next(scored)
            if isinstance(outcome, str):
                line = window.lines[k]
                if opts.on_error == "fail":
                    raise RunError(
                        f"{source.path}, {source.row_word} {line}: {outcome} (--on-error fail; the rows "
                        "before it are committed: fix the row, then start again with --overwrite, or leave "
                        "out --on-error fail to collect bad rows in the errors file)"
                    )
                errors.add(line, outcome, window.ids[k] if window.ids is not None else None, with_id)
                counts.failed += 1
                outcomes.append(None)
            else:
                labels[outcome[0]] += 1
                counts.scored += 1
                outcomes.append(outcome)
        writer.write(window, outcomes)
        counts.read += len(window)
        committed = writer.commit()
        if committed is not None:
            state.records = window.start + len(window)
            state.output = committed
            state.errors_bytes = errors.commit()
            save()
        progress.update(counts.read, window.position, counts.failed)

    try:
        for window in reader.windows(opts.window, skip=state.records):
            texts = [t for t in window.texts if t is not None]
            in_flight.append((window, workers.score(texts) if texts else None))
            while in_flight and (len(in_flight) > limit or _done(in_flight[0][1])):
                settle(*in_flight.popleft())
        while in_flight:
            settle(*in_flight.popleft())
        state.output = writer.commit(final=True)
        state.errors_bytes = errors.commit()
        state.records = counts.read
        save()
        writer.finish()
        errors.finish()
        journal_file.unlink()
        return True
    finally:
        progress.close()


def _done(future: Future[Any] | None) -> bool:
    return future is None or future.done()
