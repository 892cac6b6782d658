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
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checksums import sha256_file
from model.text_rules import normalise_handles_and_links
from training.corpora import (
    BINARY,
    CORPORA,
    FIVE,
    MIXTURES,
    THREE,
    TRAIN_SPLIT,
    VAL_SPLIT,
    Corpus,
    DataError,
)

TEXT_COLUMNS = ("text", "sentence", "review", "content", "tweet")
LABEL_COLUMNS = ("label", "sentiment", "labels")
# Spellings of the canonical sentiment names (training/corpora.py) that a file may use.
_ALIASES = {"neg": "negative", "pos": "positive", "neu": "neutral", "very_negative": "very negative",
            "very_positive": "very positive"}
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
# A raw label as read: a str (CSV/TSV, or a JSON string) or a JSON int.
RawLabel = str | int


@dataclass
class Split:
    name: str
    texts: list[str]
    labels: list[int]
    source: str  # file path, or a description such as "<path> (90% held-in, seed 0)"
    path: Path | None = None  # the file the rows came from, for checksums
    label_names: tuple[str, ...] = BINARY  # labels[i] indexes this
    # The label indices this split's rows can have, when fewer than all: a binary corpus in a
    # three-class model (negative, positive) is scored and trained on those columns only.
    allowed: tuple[int, ...] | None = None
    paths: tuple[Path, ...] = ()  # every file the rows came from (a mixture has several)
    # Per row, where the rows of a mixture differ in `allowed` (None: that row may have any label).
    row_allowed: list[tuple[int, ...] | None] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"split {self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        if not self.paths and self.path is not None:
            self.paths = (self.path,)

    def allowed_rows(self) -> list[tuple[int, ...] | None] | None:
        """The labels each row may have (None: all), or None when every row may have any label."""
        if self.row_allowed is not None:
            return self.row_allowed
        return None if self.allowed is None else [self.allowed] * len(self)

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


def _raw_label(value: Any, path: Path, line: int) -> RawLabel:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}, line {line}: missing label")
    if isinstance(value, str):
        return value.strip()
    if type(value) is int and value >= 0:  # not bool or float: those are more likely bugs
        return value
    raise DataError(
        f"{path}, line {line}: label {value!r} is neither a name nor a non-negative whole number"
    )


def _canonical(name: str) -> str:
    low = name.lower()
    return _ALIASES.get(low, low)


def infer_label_names(raw: Iterable[RawLabel]) -> tuple[str, ...]:
    """The label set a file's labels imply, in output order: numbers 0..K-1 alone name the binary,
    three- or five-class sentiment set by K (else "0".."K-1"); sentiment names (with or without
    numbers among them) take the smallest such set that holds them, and any other name among them is
    an unknown label (a typo such as "postive" must not become a class of its own); names none of
    which is a sentiment name are the labels, sorted."""
    values = {str(v) for v in raw}
    numbers = {int(v) for v in values if v.isdigit()}
    names = {_canonical(v) for v in values if not v.isdigit()}
    k = max(numbers, default=-1) + 1
    by_count = {2: BINARY, 3: THREE, 5: FIVE}
    if not names:
        return by_count.get(k, tuple(str(i) for i in range(k)))
    if not names & set(FIVE) and not numbers:
        return tuple(sorted(names))
    for known in (BINARY, THREE, FIVE):
        if (names & set(FIVE)) <= set(known) and k <= len(known):
            return known
    return by_count.get(max(k, 2), tuple(str(i) for i in range(k)))


def _label_index(label_names: tuple[str, ...]) -> dict[str, int]:
    index = {_canonical(n): i for i, n in enumerate(label_names)}
    index.update({str(i): i for i in range(len(label_names))})
    return index


def _resolve_labels(
    raw: list[RawLabel], lines: list[int], path: Path, label_names: tuple[str, ...] | None
) -> tuple[list[int], tuple[str, ...]]:
    names = label_names or infer_label_names(raw)
    index = _label_index(names)
    out: list[int] = []
    for value, line in zip(raw, lines, strict=True):
        label = index.get(_canonical(str(value)))
        if label is None:
            accepted = "/".join(names) + f" or 0-{len(names) - 1}"
            hint = "" if label_names else "; to train on labels of your own, name them all with --labels"
            raise DataError(
                f"{path}, line {line}: unknown label {value!r}; accepted labels are {accepted}{hint}"
            )
        out.append(label)
    return out, names


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
) -> tuple[list[str], list[RawLabel], list[int]]:
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
        labels: list[RawLabel] = []
        lines: list[int] = []
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
                append_label(_raw_label(row[l_col], path, line))
                lines.append(line)
            line = reader.line_num + 1
    except csv.Error as e:
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(f"{path}, line {reader.line_num}: malformed {kind} ({e})") from None
    return texts, labels, lines


def _read_jsonl(
    path: Path, text: str, text_column: str | None, label_column: str | None
) -> tuple[list[str], list[RawLabel], list[int]]:
    texts: list[str] = []
    labels: list[RawLabel] = []
    lines: list[int] = []
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
        labels.append(_raw_label(record.get(l_key), path, line_no))
        lines.append(line_no)
    return texts, labels, lines


def read_labelled_file(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    fmt: str | None = None,
    name: str | None = None,
    label_names: tuple[str, ...] | None = None,
) -> Split:
    """Read a CSV/TSV (with header) or JSON Lines file of labelled texts; `fmt` overrides the extension.
    Labels are names from `label_names` or their indices; without it, the file's labels decide the set
    (`infer_label_names`)."""
    path = Path(path)
    kind = _detect_format(path, fmt)
    text = _read_text(path)
    if kind == "jsonl":
        texts, raw, lines = _read_jsonl(path, text, text_column, label_column)
    else:
        delimiter = "\t" if kind == "tsv" else ","
        texts, raw, lines = _read_delimited(path, text, delimiter, text_column, label_column)
    if not texts:
        raise DataError(f"{path}: no labelled rows (the file is empty or holds only a header)")
    labels, names = _resolve_labels(raw, lines, path, label_names)
    return Split(name=name or path.name, texts=texts, labels=labels, source=str(path), path=path,
                 label_names=names)


# ---------------------------------------------------------------- SST trees

_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-lrb-": "(", "-rrb-": ")"}


def read_trees(
    path: str | Path,
    *,
    label_names: tuple[str, ...] = FIVE,
    label_map: tuple[int, ...] | None = None,
    name: str | None = None,
) -> Split:
    """Every labelled phrase of SST parse trees (one PTB tree a line, a 0-4 label on every node):
    each distinct phrase once, with the label of its first occurrence; `label_map` folds the five
    labels (to three classes, say). Words are joined by spaces, PTB brackets restored."""
    path = Path(path)
    phrases: dict[str, int] = {}
    for line_no, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        stack: list[tuple[int, list[str]]] = []
        tokens = iter(_TREE_TOKEN.findall(line))
        done = False
        for tok in tokens:
            if done:
                raise DataError(f"{path}, line {line_no}: text after the end of the tree ({tok!r})")
            if tok == "(":
                label = next(tokens, None)
                if label is None or not label.isdigit() or int(label) > 4:
                    raise DataError(f"{path}, line {line_no}: expected a label 0-4 after '(', got {label!r}")
                stack.append((int(label), []))
            elif tok == ")":
                if not stack:
                    raise DataError(f"{path}, line {line_no}: unbalanced ')'")
                label, words = stack.pop()
                if not words:
                    raise DataError(f"{path}, line {line_no}: a node with no words")
                phrases.setdefault(" ".join(words), label_map[label] if label_map else label)
                if stack:
                    stack[-1][1].extend(words)
                else:
                    done = True
            elif not stack:
                raise DataError(f"{path}, line {line_no}: a word outside any node ({tok!r})")
            else:
                stack[-1][1].append(_PTB_BRACKETS.get(tok, tok))
        if not done:
            raise DataError(f"{path}, line {line_no}: unbalanced tree (missing ')')")
    if not phrases:
        raise DataError(f"{path}: no trees")
    return Split(name or path.name, list(phrases), list(phrases.values()), str(path), path,
                 label_names=label_names)


# ---------------------------------------------------------------- splits


def _holdout(split: Split, *, seed: int, val_fraction: float) -> tuple[Split, Split]:
    """Stratified, seeded train/val split; both parts are shuffled (the IMDB file is sorted by label)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    rng = random.Random(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in sorted(set(split.labels)):
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
    return (
        subset(split, train_idx, TRAIN_SPLIT, f"{100 - pct:g}% held-in, seed {seed}"),
        subset(split, val_idx, VAL_SPLIT, f"{pct:g}% held-out, seed {seed}"),
    )


def subset(split: Split, idx: list[int], name: str, desc: str) -> Split:
    """The rows idx of a split, renamed, its source saying how they were chosen."""
    rows = split.row_allowed
    return Split(name, [split.texts[i] for i in idx], [split.labels[i] for i in idx],
                 f"{split.source} ({desc})", split.path, split.label_names, split.allowed, split.paths,
                 None if rows is None else [rows[i] for i in idx])


def _renamed(split: Split, name: str) -> Split:
    return Split(name, list(split.texts), list(split.labels), split.source, split.path, split.label_names,
                 split.allowed, split.paths, split.row_allowed)


def _read_corpus_file(corpus: Corpus, root: Path, split: str) -> Split:
    path = root / corpus.files[split]
    if corpus.reader == "trees" and split == TRAIN_SPLIT:
        return read_trees(path, label_names=corpus.labels, label_map=corpus.label_map, name=split)
    # SST's sentence files carry the five-class labels as numbers: read them as such, then fold.
    file_labels = FIVE if corpus.label_map else corpus.labels
    out = read_labelled_file(path, name=split, label_names=file_labels)
    if corpus.label_map:
        out = Split(split, out.texts, [corpus.label_map[y] for y in out.labels], out.source, path,
                    label_names=corpus.labels)
    if corpus.tweets:
        out.texts = [normalise_handles_and_links(t) for t in out.texts]
    return out


def load_corpus(name: str, root: Path, *, seed: int, val_fraction: float = 0.1) -> dict[str, Split]:
    """Named splits of a built-in corpus read from the data folder `root` (training/fetch.py puts the
    files there), in order train, val, then evaluation splits (training/corpora.py lists them)."""
    corpus = CORPORA[name]
    train = _read_corpus_file(corpus, root, TRAIN_SPLIT)
    if corpus.val is None:
        train, val = _holdout(train, seed=seed, val_fraction=val_fraction)
    else:
        val = _renamed(_read_corpus_file(corpus, root, corpus.val), VAL_SPLIT)
    splits = {TRAIN_SPLIT: train, VAL_SPLIT: val}
    for split in corpus.eval_splits:
        splits[split] = val if split == corpus.val else _read_corpus_file(corpus, root, split)
        splits[split] = _renamed(splits[split], split)
    return splits


def relabel(split: Split, labels: tuple[str, ...], name: str) -> Split:
    """A split re-labelled into another label set by name (binary into three classes, say)."""
    index = {n: i for i, n in enumerate(labels)}
    missing = [n for n in split.label_names if n not in index]
    if missing:
        raise DataError(f"{split.source}: labels {missing} are not in the mixture's labels {list(labels)}")
    to = [index[n] for n in split.label_names]
    allowed = None if len(to) == len(labels) else tuple(sorted(to))
    return Split(name, split.texts, [to[y] for y in split.labels], split.source, split.path, labels,
                 allowed, split.paths)


def _weighted(split: Split, weight: float, seed: int) -> Split:
    """Each row floor(weight) times, plus a seeded sample for the fraction."""
    if weight <= 0:
        raise DataError(f"{split.source}: a mixture weight must be positive, got {weight}")
    whole, frac = int(weight), weight - int(weight)
    idx = [i for _ in range(whole) for i in range(len(split))]
    if frac:
        idx += sorted(random.Random(seed).sample(range(len(split)), round(len(split) * frac)))
    return subset(split, idx, split.name, f"weight {weight:g}, seed {seed}") if weight != 1 else split


def concat(parts: list[Split], name: str, source: str) -> Split:
    """Splits of one label set as one; where their `allowed` differ, it is kept per row."""
    allowed = {p.allowed for p in parts}
    rows = None
    if len(allowed) > 1 or any(p.row_allowed is not None for p in parts):
        rows = [a for p in parts for a in (p.allowed_rows() or [None] * len(p))]
    return Split(
        name, [t for p in parts for t in p.texts], [y for p in parts for y in p.labels], source, None,
        parts[0].label_names, allowed.pop() if len(allowed) == 1 else None,
        tuple(dict.fromkeys(f for p in parts for f in p.paths)), rows,
    )


def parse_weights(text: str) -> dict[str, float]:
    """"sst3=1,tweets=2" as {"sst3": 1.0, "tweets": 2.0}; errors say what is wrong."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in CORPORA:
            raise DataError(f"--mix {text}: unknown corpus {name!r}; choose among {', '.join(CORPORA)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise DataError(f"--mix {text}: {part!r} needs a number, as in {name}=0.5") from None
    return weights


def load_mixture(
    name: str, root: Path, *, seed: int, val_fraction: float = 0.1, weights: dict[str, float] | None = None
) -> dict[str, Split]:
    """A mixture (training/corpora.py): the weighted union of its corpora's train splits (shuffled with
    the seed), the union of their val splits, and every corpus's evaluation splits as CORPUS-SPLIT.
    `weights` replaces the mixture's own (and may add corpora)."""
    mix = MIXTURES[name]
    trains, vals, evals = [], [], {}
    for corpus, weight in (weights or mix.weights).items():
        parts = load_corpus(corpus, root, seed=seed, val_fraction=val_fraction)
        parts = {k: relabel(v, mix.labels, k) for k, v in parts.items()}
        trains.append(_weighted(parts[TRAIN_SPLIT], weight, seed))
        vals.append(parts[VAL_SPLIT])
        evals.update({f"{corpus}-{k}": _renamed(v, f"{corpus}-{k}") for k, v in parts.items()
                      if k not in (TRAIN_SPLIT, VAL_SPLIT)})
    for corpus, split in mix.partial_evals.items():
        part = load_corpus(corpus, root, seed=seed, val_fraction=val_fraction)[split]
        evals[f"{corpus}-{split}"] = relabel(part, mix.labels, f"{corpus}-{split}")
    train = concat(trains, TRAIN_SPLIT, f"mixture {name}: {weights or mix.weights}")
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    train = subset(train, order, TRAIN_SPLIT, f"shuffled, seed {seed}")
    return {TRAIN_SPLIT: train, VAL_SPLIT: concat(vals, VAL_SPLIT, f"mixture {name}: val splits"), **evals}


def load_builtin(
    dataset: str, root: Path, *, seed: int, val_fraction: float = 0.1, weights: dict[str, float] | None = None
) -> dict[str, Split]:
    """A built-in corpus or mixture from the data folder `root` (see training/fetch.data_dir)."""
    if dataset in MIXTURES:
        return load_mixture(dataset, root, seed=seed, val_fraction=val_fraction, weights=weights)
    if weights:
        raise DataError(f"--mix applies to a mixture dataset ({', '.join(MIXTURES)}), not {dataset}")
    if dataset not in CORPORA:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join((*CORPORA, *MIXTURES))}")
    return load_corpus(dataset, root, seed=seed, val_fraction=val_fraction)


def load_user_files(
    train: Path,
    eval: Path | None,
    val: Path | None,
    *,
    seed: int,
    val_fraction: float = 0.1,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: tuple[str, ...] | None = None,
) -> dict[str, Split]:
    """User files as splits train, val (held out of train when not given) and, if given, eval. The
    training file decides the label set (or `label_names`); val and eval must use the same one."""

    def read(path: Path, name: str, names: tuple[str, ...] | None) -> Split:
        return read_labelled_file(
            path, text_column=text_column, label_column=label_column, name=name, label_names=names
        )

    full = read(train, TRAIN_SPLIT, label_names)
    if len(set(full.labels)) < 2:
        only = full.label_names[full.labels[0]]
        raise DataError(f"{train}: every row has label {only!r}; training needs at least two labels")
    if val is None:
        train_split, val_split = _holdout(full, seed=seed, val_fraction=val_fraction)
    else:
        train_split, val_split = full, read(val, VAL_SPLIT, full.label_names)
    splits = {TRAIN_SPLIT: train_split, VAL_SPLIT: val_split}
    if eval is not None:
        splits["eval"] = read(eval, "eval", full.label_names)
    return splits


def file_checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of each distinct source file, keyed by path, for the artifact's meta.json."""
    return {str(p): sha256_file(Path(p)) for p in dict.fromkeys(str(p) for p in paths)}
