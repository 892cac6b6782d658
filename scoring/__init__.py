"""Bulk scoring: a file of texts in, the same file with each row's prediction out (`sentiment-score`,
`python -m scoring`).

    cli.py        the command: options, checks, the summary
    formats.py    CSV, TSV, JSON Lines (optionally .gz) and Parquet: streaming readers (windows of rows with
                  their line numbers and problems) and writers that commit in steps a resume can trust
    columns.py    the result columns (label, score, polarity, one probability per label, long-text fields)
    scorer.py     texts -> result rows with the service's own pipeline (core/): loaded once per worker
    local.py      the local engine: worker processes, bounded windows in flight, input order restored
    journal.py    what a run has committed, for --resume
    progress.py   rows, rows/s and ETA: redrawn on a terminal, periodic lines in a log
    ray_engine.py the same scoring on Ray Data (optional `ray` extra)

The main process of the local engine never imports torch: it reads, writes and orders; the workers
score. docs/BULK_SCORING.md has the user's view."""
