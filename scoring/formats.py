"""Files in and out: CSV, TSV, JSON Lines (each optionally gzip) and Parquet, read and written in
windows of rows so memory stays flat however long the file.

Readers yield `Window`s: the rows' texts, their line numbers (the physical line where a record starts;
the row number for Parquet) and, per row, what is wrong with it if something is (too few fields, not an
object, no text, not text, not UTF-8). The text checks the service applies (empty, too long) are the
scorer's, so they stay in one place (core/engine.py `text_problem`).

Writers append each window's scored rows (the input's columns, or only the id, then the result columns)
and `commit` in steps that survive a kill: after a commit, everything up to it is on disk and the
returned state says where it ends (a byte offset; for Parquet, finished part files). A resumed run
truncates the output back to that state and appends. gzip output is written one gzip member per commit
(a multi-member gzip file is one valid stream to every reader); Parquet, which has its footer at the
end, is written as part files beside the output and joined into the one output file at the end.

Conventions shared with training's readers (training/data.py): TSV has no quoting (SST text holds bare
quote characters), CSV quotes as Excel does, a UTF-8 byte-order mark is ignored, gzip is told by its
magic bytes rather than the name, blank lines are not records."""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from scoring.columns import ResultRow, result_fields

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PYARROW_MISSING = (
    "Parquet needs pyarrow, which is not installed: pip install 'sentiment-service[scoring]' "
    "(or pip install pyarrow)"
)
# A text field longer than this many characters stops the csv module ("field larger than field limit"):
# far above any text worth scoring (--max-chars rejects long rows one by one); an unclosed quote that
# swallows the rest of the file still stops with the line it started on.
CSV_FIELD_LIMIT = 1 << 26
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


class FormatError(Exception):
    """A file that cannot be read or written as asked; the message names the file (and line)."""


@dataclass(frozen=True)
class FileSpec:
    path: Path
    format: str  # one of FORMATS
    gzip: bool = False

    @property
    def row_word(self) -> str:
        """What a position in the file is called in messages and the errors file."""
        return "row" if self.format == "parquet" else "line"


def detect(path: str | Path, fmt: str | None = None) -> FileSpec:
    """The format from `fmt` or the file name (.csv, .tsv, .jsonl/.ndjson/.json, .parquet; + .gz)."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes.pop()
    if fmt is not None:
        fmt = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise FormatError(f"{p}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    elif suffixes and suffixes[-1] in _SUFFIXES:
        fmt = _SUFFIXES[suffixes[-1]]
    else:
        raise FormatError(
            f"{p}: cannot tell the format from the file name; name it .csv, .tsv, .jsonl or .parquet "
            "(text formats optionally .gz), or pass --format"
        )
    if fmt == "parquet" and gz:
        raise FormatError(f"{p}: Parquet compresses itself; drop the .gz")
    return FileSpec(p, fmt, gz)


def known_suffix(path: str | Path) -> bool:
    """Whether the name tells the format (.csv, .tsv, .jsonl, .parquet, ... with or without .gz)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _SUFFIXES


def default_output(spec: FileSpec) -> Path:
    """reviews.csv.gz -> reviews.scored.csv.gz, beside the input."""
    name = spec.path.name
    suffix = next((s for s in _SUFFIXES if name.lower().endswith(s + (".gz" if spec.gzip else ""))), "")
    stem = name[: len(name) - len(suffix) - (3 if spec.gzip else 0)] if suffix else name
    return spec.path.with_name(f"{stem}.scored{suffix or '.' + spec.format}{'.gz' if spec.gzip else ''}")


def import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FormatError(PYARROW_MISSING) from None
    return pyarrow


def _pick(spec: FileSpec, found: Sequence[str], wanted: str, flag: str) -> int:
    """Index of column `wanted` (exactly, else ignoring case and surrounding spaces)."""
    if wanted in found:
        return list(found).index(wanted)
    lowered = [name.strip().lower() for name in found]
    if wanted.strip().lower() in lowered:
        return lowered.index(wanted.strip().lower())
    raise FormatError(
        f"{spec.path}: no column {wanted!r} (found {', '.join(repr(c) for c in found) or 'none'}); "
        f"name the right one with {flag}"
    )


def _not_utf8(text: str) -> str | None:
    m = _ESCAPED.search(text)
    if m is None:
        return None
    return (
        f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x} at character {m.start()}); "
        "re-save the file as UTF-8"
    )


# --- reading ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """Consecutive records of the input: those before it number `start`."""

    start: int
    lines: list[int]  # line (row, for Parquet) where each record starts
    texts: list[str | None]  # None where `problems` says why the row cannot be scored
    problems: list[str | None]
    ids: list[Any] | None  # the id column's values (with --id-column)
    rows: Any  # the records themselves, for the writer: field lists, dicts or an Arrow RecordBatch
    position: float  # share of the input read once this window is (for the ETA)

    def __len__(self) -> int:
        return len(self.lines)


class Reader:
    spec: FileSpec
    columns: list[str]  # the input's columns (for JSON Lines: the keys of the first record)
    id_name: str | None = None  # the id column as the input spells it
    total_rows: int | None = None  # known up front for Parquet only

    def windows(self, size: int, skip: int = 0) -> Iterator[Window]:
        """Windows of `size` records, after skipping the first `skip` records (a resumed run)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _open_binary(spec: FileSpec) -> tuple[BinaryIO, BinaryIO, int]:
    """(raw file, decompressed stream, raw size): gzip by its magic bytes, whatever the name says."""
    try:
        raw = open(spec.path, "rb")  # noqa: SIM115 - closed by the reader
    except FileNotFoundError:
        raise FormatError(f"{spec.path}: file not found") from None
    except OSError as e:
        raise FormatError(f"{spec.path}: cannot read: {e.strerror or e}") from None
    size = os.fstat(raw.fileno()).st_size
    if raw.peek(2)[:2] == b"\x1f\x8b":  # type: ignore[attr-defined]
        return raw, gzip.GzipFile(fileobj=raw, mode="rb"), size  # type: ignore[return-value]
    return raw, raw, size


class DelimitedReader(Reader):
    def __init__(self, spec: FileSpec, text_column: str, id_column: str | None) -> None:
        self.spec = spec
        self._raw, stream, self._size = _open_binary(spec)
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        csv.field_size_limit(CSV_FIELD_LIMIT)
        tsv = spec.format == "tsv"
        self._reader = csv.reader(
            self._text, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
            strict=True,
        )  # fmt: skip
        header = next((row for row in self._guarded(iter(self._reader)) if row), None)
        if header is None:
            raise FormatError(f"{spec.path}: the file is empty; expected a header row, then one row per text")
        self.columns = header
        self._text_at = _pick(spec, header, text_column, "--text-column")
        self.id_at = None if id_column is None else _pick(spec, header, id_column, "--id-column")
        self.id_name = None if self.id_at is None else header[self.id_at]

    def _guarded(self, rows: Iterator[list[str]]) -> Iterator[list[str]]:
        where = f"{self.spec.path}, line"
        try:
            yield from rows
        except csv.Error as e:
            kind = self.spec.format.upper()
            raise FormatError(f"{where} {self._reader.line_num}: malformed {kind} ({e})") from None
        except (OSError, EOFError) as e:  # a corrupt or truncated gzip stream
            raise FormatError(f"{where} {self._reader.line_num}: cannot read on ({e})") from None

    def windows(self, size: int, skip: int = 0) -> Iterator[Window]:
        reader, width, t_at, id_at = self._reader, len(self.columns), self._text_at, self.id_at
        tsv = self.spec.format == "tsv"
        record = 0
        lines: list[int] = []
        texts: list[str | None] = []
        problems: list[str | None] = []
        ids: list[Any] = []
        rows: list[list[str]] = []
        line = reader.line_num + 1  # first physical line of the next record (a quoted field may span lines)
        for row in self._guarded(iter(reader)):
            here, line = line, reader.line_num + 1
            if not row:
                continue
            record += 1
            if record <= skip:
                continue
            text: str | None = None
            problem: str | None = None
            if len(row) != width:
                hint = f" (an unquoted {'tab' if tsv else 'comma'} in the text?)" if len(row) > width else ""
                problem = f"{len(row)} field(s) where the header has {width}{hint}"
            else:
                text = row[t_at]
                if not text.isascii() and (problem := _not_utf8(text)) is not None:
                    text = None
            lines.append(here)
            texts.append(text)
            problems.append(problem)
            ids.append(row[id_at] if id_at is not None and id_at < len(row) else None)
            rows.append(row)
            if len(lines) >= size:
                yield Window(record - len(lines), lines, texts, problems, ids if id_at is not None else None,
                             rows, self._raw.tell() / max(1, self._size))  # fmt: skip
                lines, texts, problems, ids, rows = [], [], [], [], []
        if lines:
            kept_ids = ids if id_at is not None else None
            yield Window(record - len(lines), lines, texts, problems, kept_ids, rows, 1.0)

    def close(self) -> None:
        self._raw.close()


class JsonLinesReader(Reader):
    def __init__(self, spec: FileSpec, text_column: str, id_column: str | None) -> None:
        self.spec, self.text_column, self.id_column = spec, text_column, id_column
        self._raw, self._stream, self._size = _open_binary(spec)
        first = next((r for _, r in self._numbered() if isinstance(r, dict)), None)
        if first is None:
            raise FormatError(f"{spec.path}: no JSON object found; expected one object per line")
        self.columns = list(first)
        self.id_name = id_column
        for key, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
            if key is not None and key not in first:
                raise FormatError(
                    f"{spec.path}: the first record has no key {key!r} (found "
                    f"{', '.join(map(repr, first)) or 'none'}); name the right one with {flag}"
                )
        self._raw.close()  # start again so the first record is read like every other
        self._raw, self._stream, self._size = _open_binary(spec)

    def _numbered(self) -> Iterator[tuple[int, Any]]:
        """(line number, parsed object or the reason it is not one) per non-blank line."""
        n = 0
        try:
            for n, raw in enumerate(self._stream, start=1):
                if not raw.strip():
                    continue
                try:
                    value: Any = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    try:  # integers beyond 64 bits, which orjson refuses and json reads
                        value = orjson_fallback(raw)
                    except ValueError:
                        value = JsonProblem(f"not valid JSON ({e})")
                yield n, value
        except (OSError, EOFError) as e:
            raise FormatError(f"{self.spec.path}: cannot read past line {n} ({e})") from None

    def windows(self, size: int, skip: int = 0) -> Iterator[Window]:
        key, id_key = self.text_column, self.id_column
        record = 0
        lines: list[int] = []
        texts: list[str | None] = []
        problems: list[str | None] = []
        ids: list[Any] = []
        rows: list[Any] = []
        for n, obj in self._numbered():
            record += 1
            if record <= skip:
                continue
            text: str | None = None
            problem: str | None = None
            if isinstance(obj, JsonProblem):
                problem = obj.reason
            elif not isinstance(obj, dict):
                problem = f"expected a JSON object, got {type(obj).__name__}"
            elif (value := obj.get(key)) is None:
                problem = f"no text: key {key!r} is missing or null"
            elif not isinstance(value, str):
                problem = f"not text: {key!r} is a {type(value).__name__}"
            else:
                text = value
            lines.append(n)
            texts.append(text)
            problems.append(problem)
            ids.append(obj.get(id_key) if id_key is not None and isinstance(obj, dict) else None)
            rows.append(obj)
            if len(lines) >= size:
                yield Window(record - len(lines), lines, texts, problems, ids if id_key is not None else None,
                             rows, self._raw.tell() / max(1, self._size))  # fmt: skip
                lines, texts, problems, ids, rows = [], [], [], [], []
        if lines:
            kept_ids = ids if id_key is not None else None
            yield Window(record - len(lines), lines, texts, problems, kept_ids, rows, 1.0)

    def close(self) -> None:
        self._raw.close()


@dataclass(frozen=True, slots=True)
class JsonProblem:
    reason: str


def orjson_fallback(raw: bytes) -> Any:
    import json

    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None


class ParquetReader(Reader):
    def __init__(self, spec: FileSpec, text_column: str, id_column: str | None) -> None:
        pa = import_pyarrow()
        import pyarrow.parquet as pq

        self.spec = spec
        try:
            self._file = pq.ParquetFile(spec.path)
        except FileNotFoundError:
            raise FormatError(f"{spec.path}: file not found") from None
        except (OSError, pa.ArrowException) as e:
            raise FormatError(f"{spec.path}: not a readable Parquet file ({e})") from None
        schema = self._file.schema_arrow
        self.columns = list(schema.names)
        self.schema = schema
        self.text_column = self.columns[_pick(spec, self.columns, text_column, "--text-column")]
        self.id_column = (
            None if id_column is None else self.columns[_pick(spec, self.columns, id_column, "--id-column")]
        )
        self.id_name = self.id_column
        kind = schema.field(self.text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise FormatError(
                f"{spec.path}: column {self.text_column!r} holds {kind}, not text; name the text column "
                "with --text-column"
            )
        self.total_rows = self._file.metadata.num_rows

    def windows(self, size: int, skip: int = 0) -> Iterator[Window]:
        start = 0
        total = max(1, self.total_rows or 0)
        for batch in self._file.iter_batches(batch_size=size):
            n = batch.num_rows
            if start + n <= skip:
                start += n
                continue
            if start < skip:  # the window a resumed run starts inside
                batch = batch.slice(skip - start)
                start, n = skip, batch.num_rows
            texts: list[str | None] = batch.column(self.text_column).to_pylist()
            problems: list[str | None] = [None if t is not None else "no text: null" for t in texts]
            ids = batch.column(self.id_column).to_pylist() if self.id_column is not None else None
            yield Window(start, list(range(start + 1, start + n + 1)), texts, problems, ids, batch,
                         (start + n) / total)  # fmt: skip
            start += n

    def close(self) -> None:
        self._file.close()


def open_reader(spec: FileSpec, text_column: str, id_column: str | None) -> Reader:
    if spec.format == "parquet":
        return ParquetReader(spec, text_column, id_column)
    if spec.format == "jsonl":
        return JsonLinesReader(spec, text_column, id_column)
    return DelimitedReader(spec, text_column, id_column)


# --- writing ----------------------------------------------------------------------------------------

# A writer's committed state: {"bytes": n} for text formats, {"parts": k} for Parquet.
Committed = dict[str, int]


class Writer:
    def write(self, window: Window, outcomes: Sequence[ResultRow | None]) -> None:
        """Append the window's rows whose outcome is a result row (None: the row failed)."""
        raise NotImplementedError

    def commit(self, final: bool = False) -> Committed | None:
        """Make what was written durable; its state, or None when this is not a commit point."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the final commit: the output is complete."""

    def close(self) -> None:
        raise NotImplementedError


class _Appender:
    """A file appended in commits; a resumed run first cuts it back to the last committed byte."""

    def __init__(self, path: Path, committed: Committed | None, gz: bool) -> None:
        self.path, self.gz = path, gz
        if committed is None:
            self._file = open(path, "wb")  # noqa: SIM115
        else:
            size = path.stat().st_size if path.exists() else -1
            if size < committed["bytes"]:
                raise FormatError(
                    f"{path}: {max(size, 0)} bytes, fewer than the {committed['bytes']} a previous run "
                    "committed; the file was changed since: start again with --overwrite"
                )
            self._file = open(path, "r+b")  # noqa: SIM115
            self._file.truncate(committed["bytes"])
            self._file.seek(committed["bytes"])
        self._pending: list[bytes] = []

    def add(self, data: bytes) -> None:
        self._pending.append(data)

    def commit(self) -> Committed:
        data = b"".join(self._pending)
        self._pending.clear()
        if data:
            self._file.write(gzip.compress(data, compresslevel=6, mtime=0) if self.gz else data)
            self._file.flush()  # in the OS's hands: survives the process being killed
        return {"bytes": self._file.tell()}

    def close(self) -> None:
        self._file.close()


def _cell(value: Any) -> Any:
    """A result value as the csv module should write it (None: empty; floats: repr, exact)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


class DelimitedWriter(Writer):
    def __init__(
        self, spec: FileSpec, columns: list[str], keep: int | None, committed: Committed | None
    ) -> None:
        """`columns`: the output header; `keep`: the input column index to keep (the id), or None for all."""
        self._out = _Appender(spec.path, committed, spec.gzip)
        self._keep = keep
        tsv = spec.format == "tsv"
        self._buffer = io.StringIO()
        self._csv = csv.writer(
            self._buffer, delimiter="\t" if tsv else ",", lineterminator="\n",
            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, quotechar=None if tsv else '"',
        )  # fmt: skip
        self._tsv = tsv
        if committed is None:
            self._csv.writerow(columns)

    def write(self, window: Window, outcomes: Sequence[ResultRow | None]) -> None:
        keep = self._keep
        out = []
        for row, result in zip(window.rows, outcomes, strict=True):
            if result is None:
                continue
            head = row if keep is None else [row[keep]]
            out.append([*head, *map(_cell, result)])
        try:
            self._csv.writerows(out)
        except csv.Error as e:  # TSV has no quoting: a tab or line break in a kept field cannot be written
            raise FormatError(
                f"{self._out.path}: cannot write a field as TSV ({e}); write CSV or JSON Lines instead"
            ) from None
        self._out.add(self._buffer.getvalue().encode("utf-8", "surrogateescape"))
        self._buffer.seek(0)
        self._buffer.truncate()

    def commit(self, final: bool = False) -> Committed:
        if self._buffer.tell():  # the header of a new file
            self._out.add(self._buffer.getvalue().encode("utf-8", "surrogateescape"))
            self._buffer.seek(0)
            self._buffer.truncate()
        return self._out.commit()

    def close(self) -> None:
        self._out.close()


class JsonLinesWriter(Writer):
    def __init__(
        self, spec: FileSpec, columns: list[str], keep: str | None, committed: Committed | None
    ) -> None:
        """`columns`: the result keys; `keep`: the one input key to keep (the id), or None for all."""
        self._out = _Appender(spec.path, committed, spec.gzip)
        self._result_keys = columns
        self._keep = keep

    def write(self, window: Window, outcomes: Sequence[ResultRow | None]) -> None:
        keys, keep = self._result_keys, self._keep
        dumps = orjson.dumps
        parts = []
        for obj, result in zip(window.rows, outcomes, strict=True):
            if result is None:
                continue
            record = dict(obj) if keep is None else {keep: obj.get(keep)}
            record.update(zip(keys, result, strict=True))
            parts.append(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self._out.add(b"".join(parts))

    def commit(self, final: bool = False) -> Committed:
        return self._out.commit()

    def close(self) -> None:
        self._out.close()


class ParquetWriter(Writer):
    """Part files in `<output>.parts/`, each closed (and so complete) at a commit; joined into the
    output at the end. A part holds `part_windows` windows (64 of 1,024 rows by default), so row groups
    are large; a killed run redoes at most that many."""

    def __init__(
        self,
        spec: FileSpec,
        input_schema: Any,
        labels: Sequence[str],
        prefix: str,
        keep: str | None,
        committed: Committed | None,
        part_windows: int = 64,
    ) -> None:
        pa = import_pyarrow()
        self._pa = pa
        self.path = spec.path
        self.parts_dir = spec.path.with_name(spec.path.name + ".parts")
        kinds = {"str": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "int": pa.int64()}
        kept = list(input_schema) if keep is None else [input_schema.field(keep)]
        self._keep = keep
        self._result_fields = [pa.field(prefix + name, kinds[kind]) for name, kind in result_fields(labels)]
        self.schema = pa.schema(kept + self._result_fields)
        self._part_windows = part_windows
        if committed is None:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.parts = 0
        else:
            self.parts = committed["parts"]
            for extra in self.parts_dir.glob("*"):  # parts a killed run had started after its last commit
                if extra.name >= self._part_name(self.parts):
                    extra.unlink()
            missing = [k for k in range(self.parts) if not (self.parts_dir / self._part_name(k)).exists()]
            if missing:
                raise FormatError(
                    f"{self.parts_dir}: part {missing[0]} of a previous run is missing; start again with "
                    "--overwrite"
                )
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        self._windows = 0  # written since the last commit

    @staticmethod
    def _part_name(k: int) -> str:
        return f"part-{k:06d}.parquet"

    def write(self, window: Window, outcomes: Sequence[ResultRow | None]) -> None:
        pa = self._pa
        self._windows += 1
        mask = [r is not None for r in outcomes]
        results = [r for r in outcomes if r is not None]
        if not results:
            return
        batch = window.rows.filter(pa.array(mask)) if not all(mask) else window.rows
        kept = batch.columns if self._keep is None else [batch.column(self._keep)]
        arrays = [
            pa.array(values, type=f.type)
            for values, f in zip(zip(*results, strict=True), self._result_fields, strict=True)
        ]
        table = pa.Table.from_arrays([*kept, *arrays], schema=self.schema)
        if self._writer is None:
            import pyarrow.parquet as pq

            self._tmp = self.parts_dir / (self._part_name(self.parts) + ".tmp")
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._writer.write_table(table)

    def commit(self, final: bool = False) -> Committed | None:
        """A commit point once `part_windows` windows are written (or at the end): the part is closed
        and renamed into place."""
        if not final and self._windows < self._part_windows:
            return None if self._windows else {"parts": self.parts}
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self._tmp, self.parts_dir / self._part_name(self.parts))
            self.parts += 1
        self._windows = 0
        return {"parts": self.parts}

    def finish(self) -> None:
        """Join the parts into the output (one row group per part), then remove them."""
        import pyarrow.parquet as pq

        tmp = self.path.with_name(self.path.name + ".tmp")
        with pq.ParquetWriter(tmp, self.schema) as out:
            for k in range(self.parts):
                out.write_table(pq.read_table(self.parts_dir / self._part_name(k), schema=self.schema))
        os.replace(tmp, self.path)
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_writer(
    spec: FileSpec,
    reader: Reader,
    labels: Sequence[str],
    prefix: str,
    id_column: str | None,
    committed: Committed | None,
) -> Writer:
    """The output's writer: the input's columns (or only the id), then the result columns. The output is
    of the input's family (CSV and TSV are one)."""
    from scoring.columns import result_columns

    family = {"csv": "delimited", "tsv": "delimited"}
    if family.get(spec.format, spec.format) != family.get(reader.spec.format, reader.spec.format):
        raise FormatError(
            f"{spec.path}: the output is written in the input's format ({reader.spec.format}); name it "
            f".{reader.spec.format}{'.gz' if spec.gzip else ''}"
        )
    results = result_columns(labels, prefix)
    kept = reader.columns if id_column is None else [reader.id_name]
    clash = sorted(set(kept) & set(results))
    if clash:
        raise FormatError(
            f"{reader.spec.path}: the input already has column(s) {', '.join(map(repr, clash))}, which the "
            "results would overwrite; pass --prefix (e.g. --prefix pred_) or keep only an id with --id-column"
        )
    if isinstance(reader, ParquetReader):
        return ParquetWriter(spec, reader.schema, labels, prefix, reader.id_column, committed)
    if isinstance(reader, JsonLinesReader):
        return JsonLinesWriter(spec, results, id_column, committed)
    assert isinstance(reader, DelimitedReader)
    return DelimitedWriter(spec, [*kept, *results], reader.id_at, committed)


class ErrorLog:
    """The rows that could not be scored, one JSON object per line: {"line"|"row", "id"?, "reason"}.
    Appended and committed with the output; removed at the end if no row failed."""

    def __init__(self, path: Path, row_word: str, committed: int | None) -> None:
        self.path, self._word = path, row_word
        self._out = _Appender(path, None if committed is None else {"bytes": committed}, gz=False)
        self.count = 0

    def add(self, line: int, reason: str, row_id: Any = None, with_id: bool = False) -> None:
        entry: dict[str, Any] = {self._word: line}
        if with_id:
            entry["id"] = row_id
        entry["reason"] = reason
        self._out.add(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE, default=str))
        self.count += 1

    def commit(self) -> int:
        return self._out.commit()["bytes"]

    def finish(self) -> None:
        size = self.commit()
        self._out.close()
        if size == 0:
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._out.close()
