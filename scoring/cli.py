"""`sentiment-score` / `python -m scoring`: score every text of a file (see --help)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.settings import EngineSettings
from scoring.formats import FORMATS, FormatError, default_output, detect
from scoring.journal import JournalError
from scoring.local import RunError, run
from scoring.options import RunOptions, ScorerConfig

log = logging.getLogger("scoring")
_DEFAULTS = EngineSettings.model_fields  # the service's defaults: one place for each


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentiment-score",
        description="Score every text of a file with the sentiment model, as POST /predict would, at the "
        "machine's full speed. Reads CSV, TSV, JSON Lines (each optionally .gz) or Parquet in a stream and "
        "writes the same format: the input's columns (or only --id-column) plus label, score, polarity, "
        "p_<label> for every label of the model, truncated, chunks and warnings. Rows that cannot be "
        "scored go to an errors file with their line number and the reason.",
        epilog="Examples:\n"
        "  sentiment-score reviews.csv --text-column review\n"
        "  sentiment-score tickets.jsonl.gz -o scored.jsonl.gz --id-column ticket_id --workers 4\n"
        "  sentiment-score big.parquet --resume             # continue an interrupted run\n"
        "  sentiment-score data.parquet -o out.parquet --engine ray --ray-address auto   # on a Ray cluster\n"
        "Parquet needs pyarrow (pip install 'sentiment-service[scoring]'); --engine ray needs ray "
        "(pip install 'sentiment-service[ray]'). More: docs/BULK_SCORING.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="the file to score (with --engine ray also a URI such as s3://bucket/x.parquet)")
    io = p.add_argument_group("input and output")
    io.add_argument("-o", "--output",
                    help="where to write (default: INPUT's name with .scored before the extension, e.g. "
                    "reviews.scored.csv); same format as the input. With --engine ray: a directory, "
                    "Parquet unless the name ends in .jsonl")  # fmt: skip
    io.add_argument("--format", choices=FORMATS, help="the input's format when its name does not say")
    io.add_argument("--text-column", default="text", help="the column (JSON key) holding the text "
                    "(default: text)")  # fmt: skip
    io.add_argument("--id-column", help="keep only this column of the input in the output (and name it in "
                    "the errors file); default: keep every column")  # fmt: skip
    io.add_argument("--prefix", default="", help="prefix for the result columns, e.g. pred_ when the input "
                    "already has a `label` column")  # fmt: skip
    io.add_argument("--errors", type=Path, help="the failed rows as JSON Lines: line (row for Parquet), id, "
                    "reason (default: OUTPUT.errors.jsonl; removed when no row fails)")  # fmt: skip
    io.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                    help="skip: a bad row goes to the errors file and the run goes on (default); fail: stop "
                    "at the first bad row")  # fmt: skip
    again = io.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run from what its "
                       "output already holds (OUTPUT.resume.json): no row lost or written twice")  # fmt: skip
    again.add_argument("--overwrite", action="store_true", help="replace an existing output (and an "
                       "interrupted run's files)")  # fmt: skip

    model = p.add_argument_group("model (the service's settings)")
    model.add_argument("--model", type=Path,
                       default=Path(os.environ.get("SENTIMENT_MODEL_DIR", _DEFAULTS["model_dir"].default)),
                       help="artifact directory, or a parent with a `latest` link (default: "
                       "$SENTIMENT_MODEL_DIR, else %(default)s)")  # fmt: skip
    model.add_argument("--long-text", choices=("chunk", "truncate"), default=_DEFAULTS["long_text"].default,
                       help="a text longer than the model's max length: score it in chunks and combine "
                       "them, or only its first max_length tokens (default: %(default)s, as the "
                       "service)")  # fmt: skip
    model.add_argument("--max-chunks", type=int, default=_DEFAULTS["max_chunks_per_text"].default,
                       help="most chunks scored per text (default: %(default)s, as the service)")  # fmt: skip
    model.add_argument("--max-chars", type=int, default=100_000,
                       help="a longer text is a failed row (default: %(default)s; the service takes "
                       f"{_DEFAULTS['max_chars_per_text'].default:,} per request, a limit on request "
                       "size; a file's longer text is more often a broken row than a document)")  # fmt: skip

    speed = p.add_argument_group("speed")
    speed.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: worker processes on this machine (default); ray: Ray Data, on a local "
                       "Ray or a cluster (--ray-address)")  # fmt: skip
    speed.add_argument("--workers", type=int, default=_cpus(),
                       help="worker processes, one torch thread each (default: the CPUs this process may "
                       "use, %(default)s; 0 scores in the main process)")  # fmt: skip
    speed.add_argument("--backend", choices=("auto", "torchscript", "onnxruntime"),
                       default=os.environ.get("SENTIMENT_BACKEND", _DEFAULTS["backend"].default),
                       help="the model runtime, as the service's SENTIMENT_BACKEND (default: "
                       "%(default)s; auto: ONNX Runtime when installed and it agrees with TorchScript at "
                       "load)")  # fmt: skip
    speed.add_argument("--batch-size", type=int, default=_DEFAULTS["max_batch_size"].default,
                       help="texts per forward pass (default: %(default)s)")
    speed.add_argument("--window", type=int, default=1024,
                       help="rows read, sorted by length and scored together; the output keeps the "
                       "input's order (default: %(default)s)")  # fmt: skip

    ray = p.add_argument_group("ray (--engine ray)")
    ray.add_argument("--ray-address", help="the cluster to join (e.g. auto or ray://head:10001; default: "
                     "start a local Ray)")  # fmt: skip
    ray.add_argument("--concurrency", type=int, help="scoring actors, each with its own model copy "
                     "(default: the cluster's CPUs / --num-cpus)")  # fmt: skip
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per actor (default: 1)")

    out = p.add_argument_group("progress")
    out.add_argument("--quiet", action="store_true", help="no progress and no summary")
    out.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                     help="when stderr is not a terminal, a progress line this often (default: "
                     "%(default)s)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name, value, low in (("--workers", args.workers, 0), ("--batch-size", args.batch_size, 1),
                             ("--window", args.window, 1), ("--max-chunks", args.max_chunks, 1),
                             ("--max-chars", args.max_chars, 1)):  # fmt: skip
        if value < low:
            print(f"sentiment-score: {name} must be at least {low}", file=sys.stderr)
            return 2
    config = ScorerConfig(args.model, args.long_text, args.max_chunks, args.max_chars, args.batch_size,
                          backend=args.backend)
    try:
        if args.engine == "ray":
            from scoring.ray_engine import run_ray

            summary_lines = run_ray(args, config)
        else:
            source = detect(args.input, args.format)
            output = Path(args.output) if args.output else default_output(source)
            opts = RunOptions(
                input=Path(args.input),
                output=output,
                errors=args.errors or output.with_name(output.name + ".errors.jsonl"),
                text_column=args.text_column,
                id_column=args.id_column,
                scorer=config,
                input_format=args.format,
                workers=args.workers,
                window=args.window,
                prefix=args.prefix,
                on_error=args.on_error,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=not args.quiet,
                progress_every_s=args.progress_every,
            )
            summary_lines = run(opts).lines()
    except (FormatError, JournalError, RunError) as e:
        print(f"sentiment-score: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sentiment-score: interrupted; what was committed is kept: rerun with --resume to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    for line in summary_lines:
        log.info("%s", line)
    return 0
