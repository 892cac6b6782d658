"""Reading labelled files and the built-in corpora (training/data.py)."""

from __future__ import annotations

import collections
import gzip
import re
import time
from pathlib import Path

import pytest

from training.corpora import FIVE, FIVE_TO_THREE, THREE
from training.data import (
    DataError,
    eval_split_names,
    file_checksums,
    load_builtin,
    load_user_files,
    parse_weights,
    read_labelled_file,
    read_trees,
)
from training.fetch import data_dir

# ---------------------------------------------------------------- real data


@pytest.fixture
def mirror(data_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SENTIMENT_DATA_MIRROR", str(data_mirror))
    return data_mirror


def test_sst2_builtin(mirror: Path) -> None:
    start = time.perf_counter()
    splits = load_builtin("sst2", data_dir("sst2", progress=False), seed=0)
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
    splits = load_builtin("imdb", data_dir("imdb", progress=False), seed=7, val_fraction=0.1)
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
        load_builtin("yelp", Path("."), seed=0)


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
    ("numeric.csv", "text,label\na,1\nb,-1\n", 3, ["unknown label '-1'"]),
    ("extra.csv", "text,label\nit was ok,1,0\n", 2, ["extra fields"]),
    ("multiline.csv", 'text,label\n"line one\nline two",1\nx,bad\n', 4, ["unknown label 'bad'"]),
    ("blank_lines.tsv", "sentence\tlabel\na\t0\n\nb\tx\n", 4, ["unknown label 'x'"]),
    ("bad_utf8.csv", b"text,label\na,1\nb\xff\xfe,0\n", 3, ["UTF-8"]),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', 2, ["invalid JSON"]),
    ("array.json", '[{"text": "a", "label": 1}]\n', 1, ["not a JSON array"]),
    ("bool.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": true}\n', 2, ["label True is neither"]),
    ("nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', 2, ["missing label"]),
    ("notext.jsonl", '{"text": "a", "label": 1}\n{"text": "", "label": 0}\n', 2, ["empty text"]),
    ("bad.csv.gz", "text,label\na,0\nb,x-1\n", 3, ["unknown label 'x-1'"]),
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
    with pytest.raises(DataError, match="at least two labels"):
        load_user_files(one_class, None, None, seed=0)
    tiny = write(tmp_path / "tiny.csv", "text,label\na,1\nb,0\n")
    with pytest.raises(DataError, match="too few rows"):
        load_user_files(tiny, None, None, seed=0)


# ---------------------------------------------------------------- label sets, trees, tweets, mixtures


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        (["0", "1"], ("negative", "positive")),
        (["2", "0", "1"], ("negative", "neutral", "positive")),
        (["4", "0"], ("very negative", "negative", "neutral", "positive", "very positive")),
        (["Neutral", "POS", "negative"], ("negative", "neutral", "positive")),
        (["neg", "1"], ("negative", "positive")),
        (["billing", "bug", "praise"], ("billing", "bug", "praise")),
        (["0", "3"], ("0", "1", "2", "3")),
    ],
)
def test_a_files_labels_decide_its_label_set(tmp_path: Path, labels: list[str], names: tuple) -> None:
    body = "".join(f"text {i},{y}\n" for i, y in enumerate(labels))
    split = read_labelled_file(write(tmp_path / "l.csv", "text,label\n" + body))
    assert split.label_names == names
    index = {n: i for i, n in enumerate(names)}
    alias = {"neg": "negative", "pos": "positive"}
    expect = [int(y) if y.isdigit() else index[alias.get(y.lower(), y.lower())] for y in labels]
    assert split.labels == expect


def test_explicit_label_names_fix_the_order_and_refuse_others(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "text\tlabel\nslow\tbad\nfine\tok\nlovely\tgood\nmeh\t1\n")
    split = read_labelled_file(path, label_names=("bad", "ok", "good"))
    assert split.labels == [0, 1, 2, 1]
    with pytest.raises(DataError, match=r"t\.tsv, line 3: unknown label 'ok'; accepted labels are bad/good"):
        read_labelled_file(path, label_names=("bad", "good"))


def test_user_files_with_three_named_labels(tmp_path: Path) -> None:
    rows = "".join(f"t{i},{('sad', 'meh', 'glad')[i % 3]}\n" for i in range(30))
    splits = load_user_files(write(tmp_path / "a.csv", "text,label\n" + rows), None, None, seed=1)
    assert splits["train"].label_names == splits["val"].label_names == ("glad", "meh", "sad")
    assert set(splits["val"].labels) == {0, 1, 2}  # stratified: every class held out


TREES = (
    "(3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (4 (3 lovely) (2 film))))) (2 .)))\n"
    "(1 (2 -LRB- Not) (1 (2 a) (0 (1 bad) (0 mess))))\n"
)


def test_trees_become_labelled_phrases(tmp_path: Path) -> None:
    split = read_trees(write(tmp_path / "t.txt", TREES))
    phrases = dict(zip(split.texts, split.labels, strict=True))
    assert phrases["It 's a lovely film ."] == 3
    assert phrases["lovely film"] == 4 and phrases["lovely"] == 3
    assert phrases["( Not a bad mess"] == 1  # -LRB- restored, the root's label
    assert phrases["bad mess"] == 0
    assert len(split) == len(set(split.texts))  # each phrase once
    three = read_trees(tmp_path / "t.txt", label_names=THREE, label_map=FIVE_TO_THREE)
    assert dict(zip(three.texts, three.labels, strict=True))["lovely film"] == 2


@pytest.mark.parametrize(
    ("tree", "words"),
    [
        ("(3 (2 a) (2 b)\n", "missing ')'"),
        ("(3 (2 a)))\n", "text after the end of the tree"),
        ("(9 word)\n", "expected a label 0-4"),
        ("word (2 a)\n", "outside any node"),
    ],
)
def test_a_malformed_tree_names_file_and_line(tmp_path: Path, tree: str, words: str) -> None:
    path = write(tmp_path / "bad.txt", "(2 (2 fine) (2 tree))\n" + tree)
    with pytest.raises(DataError, match=rf"bad\.txt, line 2: .*{re.escape(words)}"):
        read_trees(path)


def test_real_trees_agree_with_the_sentence_files(mirror: Path, tmp_path: Path) -> None:
    """A few real trees: the root of each is a sentence of sst5/sentences with the same label."""
    head = (mirror / "sst5/trees/dev.txt").read_text(encoding="utf-8").split("\n")[:25]
    split = read_trees(write(tmp_path / "dev25.txt", "\n".join(head)))
    sentences = read_labelled_file(mirror / "sst5/sentences/dev.tsv", label_names=FIVE)
    gold = dict(zip(sentences.texts, sentences.labels, strict=True))
    roots = [t for t in split.texts if t.lower() in gold]
    assert len(roots) >= 20
    assert all(split.labels[split.texts.index(t)] == gold[t.lower()] for t in roots)


def test_sst3_tweets_and_the_general_mixture(mirror: Path) -> None:
    sst3 = load_builtin("sst3", data_dir("sst3", progress=False), seed=0)
    assert sst3["train"].label_names == THREE and len(sst3["train"]) > 150_000  # every phrase
    assert sorted(collections.Counter(sst3["test"].labels).values()) == [389, 909, 912]
    tweets = load_builtin("tweets", data_dir("tweets", progress=False), seed=0)
    assert [len(tweets[s]) for s in ("train", "val", "test")] == [47_777, 2_000, 12_284]
    assert not any(re.search(r"@(?!user\b)\w|https?://", t) for t in tweets["train"].texts)
    mix = load_builtin("general", data_dir("general", progress=False), seed=0)
    assert len(mix["train"]) == round(len(sst3["train"]) / 2) + 47_777
    assert set(mix) == {"train", "val", "sst3-test", "tweets-test", "sst2-test"}
    binary = mix["sst2-test"]  # SST-2 in a three-class model: negative and positive only
    assert binary.label_names == THREE and binary.allowed == (0, 2) and set(binary.labels) == {0, 2}
    again = load_builtin("general", data_dir("general", progress=False), seed=0)["train"]
    assert again.texts == mix["train"].texts and again.labels == mix["train"].labels  # the teacher's key


def test_a_misspelt_sentiment_label_is_an_error_not_a_class(tmp_path: Path):
    path = write(tmp_path / "typo.csv", "text,label\ngood,positive\nbad,negative\nfine,postive\n")
    with pytest.raises(DataError, match=r"typo\.csv, line 4: unknown label 'postive'.*--labels"):
        read_labelled_file(path)


def test_a_mixture_with_a_binary_corpus_keeps_its_rows_to_their_labels(mirror: Path):
    mix = load_builtin("general", data_dir("general", progress=False), seed=0,
                       weights=parse_weights("tweets=0.1,sst2=0.05"))
    train = mix["train"]
    assert len(train) == round(47_777 * 0.1) + round(67_349 * 0.05)
    rows = train.allowed_rows()
    assert rows is not None and {r for r in rows} == {None, (0, 2)}
    assert all(y in (0, 2) for y, r in zip(train.labels, rows, strict=True) if r == (0, 2))
    assert "sst2-dev" in mix and mix["sst2-dev"].allowed == (0, 2)
    with pytest.raises(DataError, match="unknown corpus 'yelp'"):
        parse_weights("yelp=1")
