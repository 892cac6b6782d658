"""Bulk scoring (scoring/, `python -m scoring`) on the shipped models/default and real texts: the answers
equal POST /predict's, every format round-trips, bad rows are reported with their line, a killed run
resumes with no row lost or written twice, and worker processes give the same file as the main process.
The Ray engine has its own module (tests/test_scoring_ray.py)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from bench.procstats import children_by_parent
from scoring import formats
from scoring.cli import main
from scoring.columns import prediction_of, result_columns

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default"
LABELS = json.loads((MODEL / "meta.json").read_text())["labels"]


@pytest.fixture(scope="module")
def texts(data_mirror: Path) -> list[str]:
    """Real texts of every kind the service meets: tweets, SST sentences, whole IMDB reviews (chunked),
    and a few the model cannot read or that have line breaks, quotes, commas and non-ASCII."""
    with open(data_mirror / "tweets" / "test.tsv", encoding="utf-8") as f:
        tweets = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:121]
    with open(data_mirror / "sst2" / "sentences" / "test.tsv", encoding="utf-8") as f:
        sst = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:81]
    reviews = []
    with gzip.open(data_mirror / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            text = json.loads(line)["text"]
            if i % 997 == 0 and len(text) < 10_000:  # both labels; within the API's per-text limit
                reviews.append(text)
    odd = [
        "asdf qwer zxcv",
        "Das Essen war schrecklich.",
        'She said "never again", and meant it,\nevery word.',
        "Ünïcödé façade — très bien 😀",
        "ok",
    ]
    return tweets + sst + reviews + odd


def _write(path: Path, texts: list[str]) -> None:
    """The texts with an id, in the format the name says (for Parquet, via pyarrow)."""
    spec = formats.detect(path)
    ids = [f"r{i}" for i in range(len(texts))]
    if spec.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": ids, "text": texts, "n": list(range(len(texts)))}), path)
        return
    opener = gzip.open if spec.gzip else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        if spec.format == "jsonl":
            for i, t in zip(ids, texts, strict=True):
                f.write(json.dumps({"id": i, "text": t, "n": int(i[1:])}) + "\n")
        else:
            tsv = spec.format == "tsv"
            quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
            w = csv.writer(f, delimiter="\t" if tsv else ",", lineterminator="\n", quoting=quoting,
                           quotechar=None if tsv else '"')  # fmt: skip
            w.writerow(["id", "text", "n"])
            w.writerows([i, t, int(i[1:])] for i, t in zip(ids, texts, strict=True))


def _read(path: Path) -> list[dict[str, Any]]:
    """An output file's rows with typed values (CSV/TSV cells converted back)."""
    spec = formats.detect(path)
    if spec.format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if spec.gzip else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if spec.format == "jsonl":
            return [json.loads(line) for line in f]
        tsv = spec.format == "tsv"
        quoting = csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
        rows = list(csv.DictReader(f, delimiter="\t" if tsv else ",", quoting=quoting))
    floats = {"score", "polarity", *(f"p_{label}" for label in LABELS)}
    for row in rows:
        for key in floats:
            row[key] = float(row[key]) if row[key] != "" else None
        row["truncated"] = {"true": True, "false": False}[row["truncated"]]
        row["chunks"] = int(row["chunks"])
        row["n"] = int(row["n"])
    return rows


def score(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--model", str(MODEL), "--quiet"])


def _close(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two predictions equal to 1e-6 (every field)."""
    assert a["label"] == b["label"] and a["truncated"] == b["truncated"] and a["chunks"] == b["chunks"]
    assert a["warnings"] == b["warnings"]
    for key in ("score", "polarity"):
        assert (a[key] is None) == (b[key] is None) and (a[key] is None or abs(a[key] - b[key]) <= 1e-6), key
    assert a["probabilities"].keys() == b["probabilities"].keys()
    for label, p in a["probabilities"].items():
        assert abs(p - b["probabilities"][label]) <= 1e-6, label


# --- the same answers as POST /predict ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_answers_equal_the_apis(tmp_path: Path, texts: list[str]) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, texts)
    assert score(src, "-o", out, "--workers", "0", "--window", "64") == 0
    rows = _read(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(texts))]  # input order kept
    # one torch thread: two spin-waiting threads on a busy 2-core host take seconds per batch
    app = create_app(Settings(model_dir=MODEL, warmup=False, torch_threads=1))
    api: list[dict[str, Any]] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        for start in range(0, len(texts), 32):
            r = await client.post("/predict", json={"texts": texts[start : start + 32]})
            assert r.status_code == 200, r.text
            api += r.json()["predictions"]
    for row, expected in zip(rows, api, strict=True):
        _close(prediction_of(row, LABELS), expected)
    # the set covers what the comparison is about: chunked reviews, unreadable texts, every label
    assert any(p["chunks"] > 1 for p in api) and any(p["label"] == "unknown" for p in api)
    assert {p["label"] for p in api} >= set(LABELS)


# --- formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.csv.gz", "in.jsonl.gz", "in.parquet"])
def test_formats_round_trip(tmp_path: Path, texts: list[str], name: str) -> None:
    """Every format keeps the input's columns and values (quotes, commas and line breaks inside fields
    included), adds the result columns in order, and gives the same answers."""
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow", reason="Parquet needs the `scoring` extra (pyarrow)")
    some = texts[:40] + texts[-5:]
    if name.startswith("in.tsv"):  # TSV has no quoting: a tab or line break cannot be in a field
        some = [t.replace("\n", " ").replace("\t", " ") for t in some]
    src = tmp_path / name
    _write(src, some)
    out = formats.default_output(formats.detect(src))
    assert out.name == name.replace("in.", "in.scored.")
    assert score(src, "--workers", "0", "--window", "16") == 0
    rows = _read(out)
    assert list(rows[0]) == ["id", "text", "n", *result_columns(LABELS)]
    assert [(r["id"], r["text"], r["n"]) for r in rows] == [(f"r{i}", t, i) for i, t in enumerate(some)]
    reference = tmp_path / "ref.jsonl"
    _write(reference, some)
    assert score(reference, "--workers", "0") == 0
    for row, ref in zip(rows, _read(tmp_path / "ref.scored.jsonl"), strict=True):
        _close(prediction_of(row, LABELS), prediction_of(ref, LABELS))
    if name.endswith(".gz"):
        with gzip.open(out) as f:  # a valid gzip stream (one member per commit)
            assert f.read().count(b"\n") >= len(some)


def test_id_column_and_prefix(tmp_path: Path, texts: list[str]) -> None:
    src = tmp_path / "in.csv"
    _write(src, texts[:10])
    assert score(src, "--id-column", "id", "--prefix", "pred_", "--workers", "0") == 0
    with open(tmp_path / "in.scored.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["id", *result_columns(LABELS, "pred_")]


def test_refuses_clashing_columns_and_other_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text,label\nfine film,1\n")
    assert score(src, "--workers", "0") == 1
    assert "--prefix" in capsys.readouterr().err
    assert score(src, "-o", tmp_path / "out.jsonl", "--workers", "0") == 1
    assert "name it .csv" in capsys.readouterr().err
    assert score(src, "--text-column", "review", "--workers", "0") == 1
    assert "no column 'review'" in capsys.readouterr().err


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.parquet"
    src.write_bytes(b"PAR1")
    for module in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert score(src, "--workers", "0") == 1
    err = capsys.readouterr().err
    assert "pyarrow" in err and "pip install 'sentiment-service[scoring]'" in err


# --- bad rows ------------------------------------------------------------------------------------------


def _errors(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_rows_go_to_the_errors_file_with_line_and_reason(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(
        b'id,text\n1,A fine film.\n2,"two\nlines, both good."\n3,\n4,too,many\n5,caf\xe9 au lait\n'
        b"6," + b"x" * 300 + b"\n7,The end.\n"
    )
    assert score(src, "--workers", "0", "--id-column", "id", "--max-chars", "200") == 0
    assert [r["id"] for r in _read_csv(tmp_path / "in.scored.csv")] == ["1", "2", "7"]
    errors = _errors(tmp_path / "in.scored.csv.errors.jsonl")
    assert [(e["line"], e["id"]) for e in errors] == [(5, "3"), (6, "4"), (7, "5"), (8, "6")]
    reasons = [e["reason"] for e in errors]
    assert reasons[0].startswith("empty_text")
    assert "3 field(s) where the header has 2" in reasons[1]
    assert "not valid UTF-8 (byte 0xe9" in reasons[2]
    assert reasons[3].startswith("text_too_long") and "--max-chars=200" in reasons[3]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_bad_json_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": 1, "text": "Good."}\n{"id": 2, "text": 5}\nnot json\n\n[1, 2]\n{"id": 5}\n'
        '{"id": 6, "text": null}\n{"id": 7, "text": "\\ud800 broken"}\n{"id": 8, "text": "Bad."}\n'
    )
    assert score(src, "--workers", "0", "--id-column", "id") == 0
    assert [r["id"] for r in _read(tmp_path / "in.scored.jsonl")] == [1, 8]
    errors = _errors(tmp_path / "in.scored.jsonl.errors.jsonl")
    assert [e["line"] for e in errors] == [2, 3, 5, 6, 7, 8]  # line 4 is blank: not a record
    reasons = [e["reason"] for e in errors]
    assert "not text: 'text' is a int" in reasons[0] and "not valid JSON" in reasons[1]
    assert "expected a JSON object, got list" in reasons[2] and "missing or null" in reasons[3]
    assert reasons[5].startswith("invalid_unicode")


def test_on_error_fail_stops_at_the_first_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\nGood.\n\n   \nAlso good.\n")
    assert score(src, "--workers", "0", "--on-error", "fail") == 1
    err = capsys.readouterr().err
    assert f"{src}, line 4: empty_text" in err


def test_parquet_null_text_is_a_bad_row(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="Parquet needs the `scoring` extra (pyarrow)")
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["Good.", None, "Bad."], "k": [1, 2, 3]}), src)
    assert score(src, "--workers", "0") == 0
    assert [r["k"] for r in _read(tmp_path / "in.scored.parquet")] == [1, 3]
    assert _errors(tmp_path / "in.scored.parquet.errors.jsonl") == [{"row": 2, "reason": "no text: null"}]


# --- resume --------------------------------------------------------------------------------------------


def _big(data_mirror: Path, n: int) -> list[str]:
    with open(data_mirror / "sst2" / "glue" / "train.tsv", encoding="utf-8") as f:
        return [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1 : n + 1]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["in.csv", "in.parquet"])
def test_killed_run_resumes_with_no_row_lost_or_written_twice(
    tmp_path: Path, data_mirror: Path, name: str
) -> None:
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow", reason="Parquet needs the `scoring` extra (pyarrow)")
    texts = _big(data_mirror, 12_000)
    texts[5000] = " "  # one bad row: the errors file is resumed too
    src = tmp_path / name
    _write(src, texts)
    out = formats.default_output(formats.detect(src))
    journal = out.with_name(out.name + ".resume.json")
    cmd = [sys.executable, "-m", "scoring", str(src), "--model", str(MODEL), "--workers", "1",
           "--window", "64", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 120
    committed = 0
    # Parquet commits every 64 windows (4,096 rows), the text formats every window.
    while committed == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            committed = json.loads(journal.read_text())["records"]
    workers = children_by_parent().get(proc.pid, [])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < committed < len(texts), "the run was not killed midway"
    assert workers, "the run had no worker process"
    gone_by = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "orphaned workers kept running"
    if not name.endswith(".parquet"):
        with open(out, "ab") as f:
            f.write(b"r99999,half a row")  # a torn write after the last commit
    # without --resume the interrupted run's files are not replaced
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = _read(out)
    expected = [f"r{i}" for i in range(len(texts)) if i != 5000]
    assert [r["id"] for r in rows] == expected  # every row once, in order
    assert _errors(out.with_name(out.name + ".errors.jsonl"))[0]["reason"].startswith("empty_text")
    assert not journal.exists()


def test_resume_refuses_another_input_or_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text,other\nGood.,Bad.\n")
    assert score(src, "--workers", "0") == 0
    assert score(src, "--workers", "0", "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err
    journal = tmp_path / "in.scored.csv.resume.json"
    state = {"version": 1, "identity": {"text_column": "other"}, "records": 0, "output": {"bytes": 0},
             "errors_bytes": 0, "counts": {}}  # fmt: skip
    journal.write_text(json.dumps(state))
    assert score(src, "--workers", "0", "--resume") == 1
    assert "resume with the same input and options" in capsys.readouterr().err
    assert score(src, "--workers", "0", "--overwrite") == 0 and not journal.exists()


# --- worker processes ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_processes_write_the_same_file(tmp_path: Path, data_mirror: Path) -> None:
    texts = _big(data_mirror, 3000)
    src = tmp_path / "in.csv"
    _write(src, texts)
    assert score(src, "-o", tmp_path / "main.csv", "--workers", "0", "--window", "128") == 0
    assert score(src, "-o", tmp_path / "pool.csv", "--workers", "2", "--window", "128") == 0
    assert (tmp_path / "pool.csv").read_bytes() == (tmp_path / "main.csv").read_bytes()
