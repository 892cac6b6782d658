"""Labelled examples: reading user files (CSV/TSV/JSONL, optionally gzipped) and the built-in corpora.

Every parse error is a `DataError` naming the file and the 1-based physical line (header included),
because a silently mislabelled row poisons training without any visible symptom.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_SPLIT, VAL_SPLIT = "train", "val"
DATASETS = ("sst2", "imdb")

# Files each built-in dataset needs, relative to the data directory (mirror or cache).
BUILTIN_FILES: dict[str, dict[str, str]] = {
    "sst2": {
        "train": "sst2/glue/train.tsv",
        "dev": "sst2/glue/dev.tsv",
        "test": "sst2/sentences/test.tsv",
    },
    "imdb": {
        "train": "imdb/train.jsonl.gz",
        "test": "imdb/test.jsonl.gz",
    },
}

TEXT_COLUMNS = ("text", "sentence", "review", "content")
LABEL_COLUMNS = ("label", "sentiment", "labels")
LABELS: dict[str, int] = {"0": 0, "1": 1, "negative": 0, "positive": 1, "neg": 0, "pos": 1}
_ACCEPTED = "0/1, negative/positive, neg/pos (case-insensitive)"
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class DataError(ValueError):
    """Unusable input data; the message names the file (and line) and what to do about it."""


@dataclass
class Split:
    name: str
    texts: list[str]
    labels: list[int]
    source: str  # file path, or a description such as "<path> (90% held-in, seed 0)"
    path: Path | None = None  # the file the rows came from, for checksums

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"split {self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


def eval_split_names(splits: Iterable[str]) -> list[str]:
    """Every split other than train and val is an evaluation split."""
    return [name for name in splits if name not in (TRAIN_SPLIT, VAL_SPLIT)]


# ---------------------------------------------------------------- reading one file


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = "jsonl" if fmt in ("json", "ndjson") else fmt
        if fmt not in ("csv", "tsv", "jsonl"):
            raise DataError(f"{path}: unknown format {fmt!r}; use csv, tsv or jsonl")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise DataError(
        f"{path}: cannot tell the format from the file name; name it .csv, .tsv or .jsonl "
        "(optionally .gz) or pass the format explicitly"
    )


def _read_text(path: Path) -> str:
    """Whole file as str. Decoding all at once is fast and lets a decode error map to its line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if data[:2] == b"\x1f\x8b":  # by magic, not suffix: a .gz name is no promise
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if data.startswith(codecs.BOM_UTF8):  # spreadsheet exports
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}, line {line}: not valid UTF-8 ({e.reason} at byte {e.start}); re-save the file as UTF-8"
        ) from None


def _pick_column(
    path: Path, found: list[str], wanted: str | None, defaults: tuple[str, ...], what: str
) -> int:
    """Index of the column in `found`; explicit names match exactly, then ignoring case."""
    lowered = {name.strip().lower(): i for i, name in reversed(list(enumerate(found)))}
    if wanted is not None:
        if wanted in found:
            return found.index(wanted)
        if wanted.strip().lower() in lowered:
            return lowered[wanted.strip().lower()]
        candidates = (wanted,)
    else:
        for name in defaults:
            if name in lowered:
                return lowered[name]
        candidates = defaults
    flag = f"--{what}-column"
    raise DataError(
        f"{path}: no {what} column (looked for {', '.join(repr(c) for c in candidates)}; "
        f"found {', '.join(repr(c) for c in found) or 'none'}); set {flag} to the right column name"
    )


def _parse_label(value: Any, path: Path, line: int) -> int:
    if isinstance(value, str):
        label = LABELS.get(value.strip().lower())
        if label is not None:
            return label
    elif type(value) is int and value in (0, 1):  # not bool or float: those are more likely bugs
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}, line {line}: missing label")
    raise DataError(f"{path}, line {line}: unknown label {value!r}; accepted labels are {_ACCEPTED}")


def _check_text(value: Any, path: Path, line: int) -> str:
    if value is None:
        raise DataError(f"{path}, line {line}: missing text")
    if not isinstance(value, str):
        raise DataError(f"{path}, line {line}: text must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{path}, line {line}: empty text")
    return value


def _read_delimited(
    path: Path, text: str, delimiter: str, text_column: str | None, label_column: str | None
) -> tuple[list[str], list[int]]:
    # SST text contains bare quote characters, so TSV must not treat them as quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    rows: Iterator[list[str]] = iter(reader)
    try:
        header = next((row for row in rows if row), None)
        if header is None:
            raise DataError(f"{path}: the file is empty; expected a header row and labelled rows")
        t_col = _pick_column(path, header, text_column, TEXT_COLUMNS, "text")
        l_col = _pick_column(path, header, label_column, LABEL_COLUMNS, "label")
        width = len(header)
        texts: list[str] = []
        labels: list[int] = []
        append_text, append_label = texts.append, labels.append
        line = reader.line_num + 1  # first physical line of the next record (records may span lines)
        for row in rows:
            if row:
                if len(row) != width:
                    what = "missing text or label" if len(row) < width else "extra fields"
                    hint = "" if len(row) < width else f" (unquoted {delimiter!r} in the text?)"
                    raise DataError(
                        f"{path}, line {line}: {what}: {len(row)} field(s) where the header has {width}{hint}"
                    )
                append_text(_check_text(row[t_col], path, line))
                append_label(_parse_label(row[l_col], path, line))
            line = reader.line_num + 1
    except csv.Error as e:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(f"{path}, line {reader.line_num}: malformed {kind} ({e})") from None
    return texts, labels


def _read_jsonl(
    path: Path, text: str, text_column: str | None, label_column: str | None
) -> tuple[list[str], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    t_key: str | None = None
    l_key: str | None = None
    # split on "\n" only: str.splitlines() would also break at U+2028 etc., which JSON strings may hold raw
    for line_no, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            hint = (
                "; expected JSON Lines (one object per line), not a JSON array"
                if raw.lstrip()[:1] == "["
                else ""
            )
            raise DataError(f"{path}, line {line_no}: invalid JSON ({e.msg}){hint}") from None
        if not isinstance(record, dict):
            hint = (
                "; expected JSON Lines (one object per line), not a JSON array"
                if isinstance(record, list)
                else ""
            )
            raise DataError(
                f"{path}, line {line_no}: expected a JSON object, got {type(record).__name__}{hint}"
            )
        if t_key is None or l_key is None:  # columns are chosen from the first record
            keys = list(record)
            t_key = keys[_pick_column(path, keys, text_column, TEXT_COLUMNS, "text")]
            l_key = keys[_pick_column(path, keys, label_column, LABEL_COLUMNS, "label")]
        texts.append(_check_text(record.get(t_key), path, line_no))
        labels.append(_parse_label(record.get(l_key), path, line_no))
    return texts, labels


def read_labelled_file(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    fmt: str | None = None,
    name: str | None = None,
) -> Split:
    """Read a CSV/TSV (with header) or JSON Lines file of labelled texts; `fmt` overrides the extension."""
    path = Path(path)
    kind = _detect_format(path, fmt)
    text = _read_text(path)
    if kind == "jsonl":
        texts, labels = _read_jsonl(path, text, text_column, label_column)
    else:
        texts, labels = _read_delimited(path, text, "\t" if kind == "tsv" else ",", text_column, label_column)
    if not texts:
        raise DataError(f"{path}: no labelled rows (the file is empty or holds only a header)")
    return Split(name=name or path.name, texts=texts, labels=labels, source=str(path), path=path)


# ---------------------------------------------------------------- splits


def _holdout(split: Split, *, seed: int, val_fraction: float) -> tuple[Split, Split]:
    """Stratified, seeded train/val split; both parts are shuffled (the IMDB file is sorted by label)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = random.Random(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in (0, 1):
        idx = [i for i, y in enumerate(split.labels) if y == label]
        rng.shuffle(idx)
        n_val = round(len(idx) * val_fraction)
        if len(idx) >= 2:  # keep every class in both parts where possible
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx += idx[:n_val]
        train_idx += idx[n_val:]
    if not val_idx:
        raise DataError(f"{split.source}: too few rows to hold out a validation split; pass a val file")
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    pct = round(val_fraction * 100, 2)

    def part(name: str, idx: list[int], desc: str) -> Split:
        return Split(
            name=name,
            texts=[split.texts[i] for i in idx],
            labels=[split.labels[i] for i in idx],
            source=f"{split.source} ({desc}, seed {seed})",
            path=split.path,
        )

    return (
        part(TRAIN_SPLIT, train_idx, f"{100 - pct:g}% held-in"),
        part(VAL_SPLIT, val_idx, f"{pct:g}% held-out"),
    )


def _renamed(split: Split, name: str) -> Split:
    return Split(name, list(split.texts), list(split.labels), split.source, split.path)


def load_builtin(
    dataset: str, *, seed: int, val_fraction: float = 0.1, progress: bool = True
) -> dict[str, Split]:
    """Named splits of a built-in corpus, in order train, val, then evaluation splits.

    sst2: train = GLUE train, val = GLUE dev (model selection, temperature), eval dev = GLUE dev and
    test = the labelled sentence-level test set (GLUE's own test has no labels).
    imdb: train/val = stratified seeded split of the official train set, test = official test.
    """
    from training.fetch import data_dir  # lazy: fetch imports this module

    if dataset not in BUILTIN_FILES:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    root = data_dir(dataset, progress=progress)
    files = BUILTIN_FILES[dataset]
    if dataset == "sst2":
        train = read_labelled_file(root / files["train"], name=TRAIN_SPLIT)
        dev = read_labelled_file(root / files["dev"], name="dev")
        test = read_labelled_file(root / files["test"], name="test")
        return {TRAIN_SPLIT: train, VAL_SPLIT: _renamed(dev, VAL_SPLIT), "dev": dev, "test": test}
    full = read_labelled_file(root / files["train"], name=TRAIN_SPLIT)
    train, val = _holdout(full, seed=seed, val_fraction=val_fraction)
    test = read_labelled_file(root / files["test"], name="test")
    return {TRAIN_SPLIT: train, VAL_SPLIT: val, "test": test}


def load_user_files(
    train: Path,
    eval: Path | None,
    val: Path | None,
    *,
    seed: int,
    val_fraction: float = 0.1,
    text_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Split]:
    """User files as splits train, val (held out of train when not given) and, if given, eval."""

    def read(path: Path, name: str) -> Split:
        return read_labelled_file(path, text_column=text_column, label_column=label_column, name=name)

    full = read(train, TRAIN_SPLIT)
    if len(set(full.labels)) < 2:
        raise DataError(f"{train}: every row has label {full.labels[0]}; training needs both labels")
    if val is None:
        train_split, val_split = _holdout(full, seed=seed, val_fraction=val_fraction)
    else:
        train_split, val_split = full, read(val, VAL_SPLIT)
    splits = {TRAIN_SPLIT: train_split, VAL_SPLIT: val_split}
    if eval is not None:
        splits["eval"] = read(eval, "eval")
    return splits


def file_checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each distinct source file, keyed by path, for the artifact's meta.json."""
    from model.artifact import sha256_file  # lazy: model.artifact pulls in torch

    return {str(p): sha256_file(Path(p)) for p in dict.fromkeys(str(p) for p in paths)}
