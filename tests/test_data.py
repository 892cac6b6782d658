"""Reading labelled files and the built-in corpora (training/data.py)."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from training.data import (
    DataError,
    eval_split_names,
    file_checksums,
    load_builtin,
    load_user_files,
    read_labelled_file,
)

# ---------------------------------------------------------------- real data


@pytest.fixture
def mirror(data_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SENTIMENT_DATA_MIRROR", str(data_mirror))
    return data_mirror


def test_sst2_builtin(mirror: Path) -> None:
    start = time.perf_counter()
    splits = load_builtin("sst2", seed=0, progress=False)
    elapsed = time.perf_counter() - start
    assert list(splits) == ["train", "val", "dev", "test"]
    assert eval_split_names(splits) == ["dev", "test"]
    counts = {name: (len(s), sum(s.labels)) for name, s in splits.items()}
    assert counts == {"train": (67_349, 37_569), "val": (872, 444), "dev": (872, 444), "test": (1_821, 909)}
    assert splits["train"].texts[0] == "hide new secretions from the parental units"
    assert splits["train"].labels[:3] == [0, 0, 1]
    assert splits["test"].path == mirror / "sst2" / "sentences" / "test.tsv"
    assert splits["val"].texts == splits["dev"].texts and splits["val"].texts is not splits["dev"].texts
    assert elapsed < 2.0, f"SST-2 took {elapsed:.2f}s to load"
    # the mirror README's published sha256 of dev.tsv
    assert file_checksums([splits["dev"].path, splits["val"].path]) == {
        str(mirror / "sst2/glue/dev.tsv"): "f7271f7a919ea884ca8563e13ed03028aa44296d1f738c003af3142b9a2188f8"
    }


def test_imdb_builtin(mirror: Path) -> None:
    start = time.perf_counter()
    splits = load_builtin("imdb", seed=7, val_fraction=0.1, progress=False)
    elapsed = time.perf_counter() - start
    assert list(splits) == ["train", "val", "test"]
    assert eval_split_names(splits) == ["test"]
    counts = {name: (len(s), sum(s.labels)) for name, s in splits.items()}
    assert counts == {"train": (22_500, 11_250), "val": (2_500, 1_250), "test": (25_000, 12_500)}
    # the file is sorted by label; the held-in part must not be
    assert 0 < sum(splits["train"].labels[:1000]) < 1000
    assert "<br />" in "".join(splits["test"].texts[:50])
    assert "90% held-in" in splits["train"].source and "seed 7" in splits["train"].source
    assert splits["val"].path == mirror / "imdb" / "train.jsonl.gz"
    assert elapsed < 5.0, f"IMDB took {elapsed:.2f}s to load"


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'yelp'"):
        load_builtin("yelp", seed=0)


# ---------------------------------------------------------------- good files


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_csv_with_quoting(tmp_path: Path) -> None:
    path = write(
        tmp_path / "reviews.csv",
        'id,Review,Sentiment\n1,"good, really good",positive\n'
        '2,"two\nlines, ""quoted""",NEG\n\n3,plain, 1 \n',
    )
    split = read_labelled_file(path)
    assert split.texts == ["good, really good", 'two\nlines, "quoted"', "plain"]
    assert split.labels == [1, 0, 1]
    assert split.source == str(path) and split.name == "reviews.csv" and len(split) == 3


def test_tsv_keeps_quote_characters(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", "sentence\tlabel\n\"a \" quote\t0\nit 's `` fine ''\t1\n")
    split = read_labelled_file(path)
    assert split.texts == ['"a " quote', "it 's `` fine ''"]
    assert split.labels == [0, 1]


def test_jsonl_and_gzip(tmp_path: Path) -> None:
    rows = '{"text": "fine \\u2028 film", "label": 1}\n\n{"text": "bad", "label": "Negative", "x": 3}\n'
    for name in ("a.jsonl", "a.jsonl.gz", "a.json"):
        split = read_labelled_file(write(tmp_path / name, rows))
        assert split.texts == ["fine \u2028 film", "bad"] and split.labels == [1, 0]
    # a raw U+2028 inside a JSON string is legal and must not split the line
    split = read_labelled_file(write(tmp_path / "raw.jsonl", '{"content": "a\u2028b", "labels": "pos"}\n'))
    assert split.texts == ["a\u2028b"] and split.labels == [1]
    split = read_labelled_file(write(tmp_path / "t.tsv.gz", "text\tlabel\nok\tpos\n"))
    assert split.labels == [1]


def test_string_labels_columns_and_format_override(tmp_path: Path) -> None:
    path = write(
        tmp_path / "data.txt",
        "\ufeffbody\tscore\tkind\nA\t0\tpositive\nB\t1\t neg \nC\t1\tPOS\nD\t0\tNegative\n",
    )
    with pytest.raises(DataError, match="cannot tell the format"):
        read_labelled_file(path)
    split = read_labelled_file(path, fmt="tsv", text_column="body", label_column="kind")
    assert split.texts == ["A", "B", "C", "D"] and split.labels == [1, 0, 1, 0]
    split = read_labelled_file(path, fmt="tsv", text_column="BODY", label_column="score")
    assert split.labels == [0, 1, 1, 0]


# ---------------------------------------------------------------- bad files

BAD_FILES = [
    # name, content, line (None: whole-file problem), words the message must contain
    ("missing.csv", "text,label\nfine,1\nonly text\n", 3, ["missing text or label"]),
    ("empty_text.csv", "text,label\nfine,1\n   ,0\n", 3, ["empty text"]),
    ("unknown.csv", "text,label\na,1\nb,maybe\n", 3, ["unknown label 'maybe'", "negative/positive"]),
    ("no_label.csv", "text,label\na,\n", 2, ["missing label"]),
    ("numeric.csv", "text,label\na,2\n", 2, ["unknown label '2'"]),
    ("extra.csv", "text,label\nit was ok,1,0\n", 2, ["extra fields"]),
    ("multiline.csv", 'text,label\n"line one\nline two",1\nx,bad\n', 4, ["unknown label 'bad'"]),
    ("blank_lines.tsv", "sentence\tlabel\na\t0\n\nb\tx\n", 4, ["unknown label 'x'"]),
    ("bad_utf8.csv", b"text,label\na,1\nb\xff\xfe,0\n", 3, ["UTF-8"]),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', 2, ["invalid JSON"]),
    ("array.json", '[{"text": "a", "label": 1}]\n', 1, ["not a JSON array"]),
    ("bool.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": true}\n', 2, ["unknown label True"]),
    ("nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', 2, ["missing label"]),
    ("notext.jsonl", '{"text": "a", "label": 1}\n{"text": "", "label": 0}\n', 2, ["empty text"]),
    ("bad.csv.gz", "text,label\na,0\nb,2\n", 3, ["unknown label '2'"]),
    ("empty.csv", "", None, ["empty"]),
    ("header_only.tsv", "sentence\tlabel\n", None, ["no labelled rows"]),
    ("no_text_col.csv", "foo,label\na,1\n", None, ["no text column", "'foo'", "--text-column"]),
    ("no_label_col.csv", "text,score\na,1\n", None, ["no label column", "'score'", "--label-column"]),
    ("no_cols.jsonl", '{"body": "a", "y": 1}\n', None, ["no text column", "'body'", "--text-column"]),
]


@pytest.mark.parametrize(("name", "content", "line", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_data_names_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, line: int | None, words: list[str]
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        read_labelled_file(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message
    for word in words:
        assert word in message


def test_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a", "label": 1}\n' * 100)[:40])
    with pytest.raises(DataError, match="gzip"):
        read_labelled_file(path)
    with pytest.raises(DataError, match="not found"):
        read_labelled_file(tmp_path / "nope.csv")


# ---------------------------------------------------------------- user files and held-out val


@pytest.fixture
def user_train(tmp_path: Path) -> Path:
    rows = "".join(f"review number {i},{'pos' if i % 3 else 'neg'}\n" for i in range(300))
    return write(tmp_path / "train.csv", "text,label\n" + rows)


def test_user_val_split_is_seeded_stratified_and_disjoint(user_train: Path, tmp_path: Path) -> None:
    eval_path = write(tmp_path / "eval.jsonl", '{"text": "x", "label": 0}\n{"text": "y", "label": 1}\n')
    a = load_user_files(user_train, eval_path, None, seed=3, val_fraction=0.2)
    b = load_user_files(user_train, eval_path, None, seed=3, val_fraction=0.2)
    c = load_user_files(user_train, None, None, seed=4, val_fraction=0.2)
    assert list(a) == ["train", "val", "eval"] and list(c) == ["train", "val"]
    assert eval_split_names(a) == ["eval"]
    assert a["val"].texts == b["val"].texts and a["train"].texts == b["train"].texts
    assert a["val"].texts != c["val"].texts
    assert (len(a["train"]), len(a["val"])) == (240, 60)
    assert sum(a["val"].labels) == 40  # 200 positives * 0.2: stratified
    assert not set(a["train"].texts) & set(a["val"].texts)
    assert set(a["train"].texts) | set(a["val"].texts) == set(read_labelled_file(user_train).texts)
    # text and label stay paired through the shuffle
    for text, label in zip(a["val"].texts, a["val"].labels, strict=True):
        assert label == int(int(text.rsplit(" ", 1)[1]) % 3 != 0)


def test_user_files_explicit_val_and_one_class(user_train: Path, tmp_path: Path) -> None:
    val = write(tmp_path / "val.tsv", "text\tlabel\nv\t1\nw\t0\n")
    splits = load_user_files(user_train, None, val, seed=0)
    assert len(splits["train"]) == 300 and splits["val"].texts == ["v", "w"]
    one_class = write(tmp_path / "one.csv", "text,label\na,1\nb,1\n")
    with pytest.raises(DataError, match="both labels"):
        load_user_files(one_class, None, None, seed=0)
    tiny = write(tmp_path / "tiny.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(DataError, match="too few rows"):
        load_user_files(tiny, None, None, seed=0)
