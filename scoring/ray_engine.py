"""Bulk scoring on Ray Data (`sentiment-score --engine ray`; the optional `ray` extra): past one machine.

    ray.data.read_{parquet,csv,json}  ->  map_batches(ScoreBatches, concurrency=N, num_cpus=C,
    batch_size=B)  ->  write_parquet / write_json (a directory of files)

`ScoreBatches` is an actor class, Ray's pattern for batch inference with a model: each actor loads the
artifact once (scoring/scorer.py, one torch thread) and scores batch after batch with the service's
pipeline, so its answers are the local command's and /predict's. Rows that cannot be scored stay in the
output with the result columns null and the reason in an `error` column (the local command writes
them to an errors file instead). The output keeps the input's order (Ray Data's preserve_order).

The model directory must be readable at the same path on every node: shared storage, or the job's
working directory (`ray job submit --working-dir .`), as docs/BULK_SCORING.md shows."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from scoring.columns import result_fields
from scoring.formats import detect
from scoring.local import RunError
from scoring.options import ScorerConfig

RAY_MISSING = "--engine ray needs Ray Data, which is not installed: pip install 'sentiment-service[ray]'"
ERROR_COLUMN = "error"


class ScoreBatches:
    """The Ray Data actor: one model copy, batches of rows in (Arrow tables), the same rows plus the
    result columns and `error` out. With `id_column`, only that input column is kept."""

    def __init__(self, config: ScorerConfig, text_column: str, id_column: str | None, prefix: str) -> None:
        import pyarrow as pa

        from scoring.scorer import Scorer

        self.pa = pa
        self.scorer = Scorer(config)
        self.text_column, self.id_column = text_column, id_column
        kinds = {"str": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "int": pa.int64()}
        self.fields = [
            pa.field(prefix + name, kinds[kind]) for name, kind in result_fields(self.scorer.labels)
        ] + [pa.field(prefix + ERROR_COLUMN, pa.string())]

    def __call__(self, batch: Any) -> Any:
        pa = self.pa
        texts = batch.column(self.text_column).to_pylist()
        good = [t for t in texts if isinstance(t, str)]
        scored = iter(self.scorer.score(good))
        width = len(self.fields) - 1
        rows: list[tuple[Any, ...]] = []
        for t in texts:
            outcome = next(scored) if isinstance(t, str) else f"not text: {type(t).__name__}"
            rows.append((None,) * width + (outcome,) if isinstance(outcome, str) else (*outcome, None))
        by_column = zip(*rows, strict=True)
        columns = [pa.array(values, type=f.type) for values, f in zip(by_column, self.fields, strict=True)]
        kept = batch.select([self.id_column]) if self.id_column is not None else batch
        for f, column in zip(self.fields, columns, strict=True):
            kept = kept.append_column(f, column)
        return kept


def _read(ray: Any, paths: str, fmt: str | None, text_column: str) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    spec = detect(paths, fmt)
    if spec.format == "parquet":
        return ray.data.read_parquet(paths)
    if spec.format == "jsonl":
        return ray.data.read_json(paths, lines=True)
    tsv = spec.format == "tsv"
    return ray.data.read_csv(
        paths,
        parse_options=pacsv.ParseOptions(
            delimiter="\t" if tsv else ",", quote_char=False if tsv else '"', newlines_in_values=not tsv
        ),
        # the text is text even when a column of them looks numeric
        convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}),
    )


def score_dataset(
    ds: Any,
    config: ScorerConfig,
    *,
    text_column: str,
    id_column: str | None = None,
    prefix: str = "",
    concurrency: int = 1,
    num_cpus: float = 1.0,
    batch_size: int = 1024,
) -> Any:
    """The scored dataset (lazy): for use in your own Ray Data pipeline too."""
    return ds.map_batches(
        ScoreBatches,
        fn_constructor_kwargs={
            "config": config, "text_column": text_column, "id_column": id_column, "prefix": prefix,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
    )  # fmt: skip


def run_ray(args: argparse.Namespace, config: ScorerConfig) -> list[str]:
    """`sentiment-score --engine ray`: the summary lines."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RunError(RAY_MISSING) from None
    if args.output is None:
        raise RunError("--engine ray writes a directory of files: name it with -o (e.g. -o scored.parquet)")
    if args.resume:
        raise RunError("--resume is for the local engine; Ray retries failed tasks itself")
    out = str(args.output)  # a path, or a URI (s3://, gs://, ...) that Path would mangle
    local_out = None if "://" in out else Path(out)
    as_json = out.endswith((".jsonl", ".json"))
    if local_out is not None and local_out.exists() and not args.overwrite:
        raise RunError(f"{out} exists (--overwrite replaces it)")
    model_dir = config.model_dir.resolve() if config.model_dir.exists() else config.model_dir
    config = ScorerConfig(model_dir, config.long_text, config.max_chunks, config.max_chars, config.batch_size,
                          backend=config.backend)
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not args.quiet}
        if args.ray_address:
            kwargs["address"] = args.ray_address
        else:
            # One logical CPU more than the scoring actors take, for the read and write tasks (they mostly
            # wait on I/O); without it the actors hold every CPU and the read never starts.
            kwargs["num_cpus"] = max(1, args.workers) + 1
        ray.init(**kwargs)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = not args.quiet
        # Default: as many actors as fit, leaving one CPU for reading and writing.
        cpus = ray.cluster_resources().get("CPU", 1)
        concurrency = args.concurrency or max(1, int((cpus - 1) // args.num_cpus))
        t0 = time.monotonic()
        ds = _read(ray, str(args.input), args.format, args.text_column)
        scored = score_dataset(
            ds, config, text_column=args.text_column, id_column=args.id_column, prefix=args.prefix,
            concurrency=concurrency, num_cpus=args.num_cpus, batch_size=args.window,
        )  # fmt: skip
        if local_out is not None and local_out.exists():
            import shutil

            shutil.rmtree(local_out) if local_out.is_dir() else local_out.unlink()
        if as_json:
            scored.write_json(out)
        else:
            scored.write_parquet(out)
        seconds = time.monotonic() - t0
        return summary(ray, out, as_json, args.prefix, seconds, concurrency)
    finally:
        if started:
            ray.shutdown()


def summary(ray: Any, out: str, as_json: bool, prefix: str, seconds: float, concurrency: int) -> list[str]:
    """Counts read back from the output (only its label and error columns, for Parquet)."""
    columns = [prefix + "label", prefix + ERROR_COLUMN]
    ds = ray.data.read_json(out, lines=True) if as_json else ray.data.read_parquet(out)
    counts: dict[str, int] = {}
    failed = 0
    for batch in ds.select_columns(columns).iter_batches(batch_format="pyarrow", batch_size=65_536):
        for label, error in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            if error is not None:
                failed += 1
            else:
                counts[label] = counts.get(label, 0) + 1
    scored = sum(counts.values())
    read = scored + failed
    shares = ", ".join(f"{k} {n:,} ({n / max(1, scored):.1%})" for k, n in sorted(counts.items()))
    return [
        f"rows read {read:,}, scored {scored:,}, failed {failed:,} in {seconds:,.1f} s "
        f"({read / max(seconds, 1e-9):,.0f} rows/s; {concurrency} actors)",
        f"labels: {shares or 'none'}",
        f"output: {out}/ (failed rows have the reason in `{prefix}{ERROR_COLUMN}`)",
    ]
