"""Downloading and converting the public archives (training/fetch.py), against a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training import fetch
from training.data import DataError, load_builtin, read_labelled_file
from training.fetch import data_dir

# ---------------------------------------------------------------- tiny archives in the public formats

GLUE_TRAIN = (
    "sentence\tlabel\nhide new secretions from the parental units \t0\n"
    "the greatest musicians \t1\nit 's a `` charming '' and often affecting journey . \t1\n"
)
GLUE_DEV = "sentence\tlabel\nunflinchingly bleak and desperate \t0\nexquisitely nuanced \t1\n"
GLUE_TEST = "index\tsentence\n0\tuneasy mishmash of styles and genres .\n"
STSA = {
    "train": "1 a stirring , funny and finally transporting re-imagining .\n0 apparently reassembled .\n",
    "dev": "0 one long string of cliches .\n1 lovely and poignant .\n",
    "test": '0 no movement , no yuks , not much of anything .\n1 crème brûlée " quoted " .\n',
}
IMDB = {  # member -> text; unsup and other files must be ignored
    "aclImdb/train/pos/0_9.txt": 'Great film.<br /><br />Loved it, "truly".',
    "aclImdb/train/pos/1_7.txt": "Good fun — café scenes.",
    "aclImdb/train/neg/10_2.txt": "Dull.<br />Very dull.",
    "aclImdb/train/neg/2_4.txt": "Meh.",
    "aclImdb/test/pos/3_10.txt": "Masterpiece.",
    "aclImdb/test/neg/5_1.txt": "Awful.",
    "aclImdb/train/unsup/0_0.txt": "No label.",
    "aclImdb/train/labeledBow.feat": "0:1 1:2",
    "aclImdb/README": "Large Movie Review Dataset v1.0\n",
}


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in (("train", GLUE_TRAIN), ("dev", GLUE_DEV), ("test", GLUE_TEST)):
            zf.writestr(f"SST-2/{name}.tsv", text)
    return buf.getvalue()


def make_tar(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Server:
    base: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    truncate: set[str] = field(default_factory=set)  # paths whose body is cut in half


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="", files={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))  # the full length, even when truncating
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path in state.truncate else body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Server) -> Path:
    """Empty cache, no mirror, and the source table pointed at the local server's tiny archives."""
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    files = {"SST-2.zip": make_zip(), "aclImdb_v1.tar.gz": make_tar(IMDB)}
    files.update({f"stsa.binary.{s}": text.encode() for s, text in STSA.items()})
    for key, source in fetch.SOURCES.items():
        data = files[source.filename]
        server.files[f"/{source.base_env.lower()}/{source.filename}"] = data
        monkeypatch.setenv(fetch.URL_ENV_PREFIX + source.base_env, f"{server.base}/{source.base_env.lower()}")
        sha = hashlib.sha256(data).hexdigest()
        monkeypatch.setitem(fetch.SOURCES, key, replace(source, sha256=sha, size=len(data)))
    return tmp_path / "cache"


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


# ---------------------------------------------------------------- tests


def test_fetch_into_empty_cache_then_reuse(cache: Path, server: Server) -> None:
    assert fetch.data_dir("sst2", progress=False) == cache
    assert fetch.data_dir("imdb", progress=False) == cache
    assert len(server.requests) == 5
    assert cache_files(cache) == [
        "imdb/aclImdb_README.txt",
        "imdb/test.jsonl.gz",
        "imdb/train.jsonl.gz",
        "sst2/glue/dev.tsv",
        "sst2/glue/train.tsv",
        "sst2/sentences/dev.tsv",
        "sst2/sentences/test.tsv",
        "sst2/sentences/train.tsv",
    ]
    # same bytes as the mirror's format: header, trailing space gone, LF endings
    assert (cache / "sst2/glue/train.tsv").read_text(encoding="utf-8") == (
        "sentence\tlabel\nhide new secretions from the parental units\t0\n"
        "the greatest musicians\t1\nit 's a `` charming '' and often affecting journey .\t1\n"
    )
    test = read_labelled_file(cache / "sst2/sentences/test.tsv")
    assert test.texts == ["no movement , no yuks , not much of anything .", 'crème brûlée " quoted " .']
    assert test.labels == [0, 1]

    with gzip.open(cache / "imdb/train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert rows == [  # neg then pos, numeric file id order, unsup ignored
        {"id": "train/neg/2_4", "text": "Meh.", "label": 0, "rating": 4},
        {"id": "train/neg/10_2", "text": "Dull.<br />Very dull.", "label": 0, "rating": 2},
        {"id": "train/pos/0_9", "text": 'Great film.<br /><br />Loved it, "truly".', "label": 1, "rating": 9},
        {"id": "train/pos/1_7", "text": "Good fun — café scenes.", "label": 1, "rating": 7},
    ]

    # a second call (and loading through load_builtin) uses the cache without downloading
    assert fetch.data_dir("sst2", progress=False) == cache
    splits = load_builtin("imdb", data_dir("imdb", progress=False), seed=0, val_fraction=0.5)
    assert [len(s) for s in splits.values()] == [2, 2, 2]
    assert sorted(splits["val"].labels) == [0, 1]
    assert len(server.requests) == 5


def test_checksum_mismatch_leaves_nothing(cache: Path, server: Server) -> None:
    path = "/glue/SST-2.zip"
    server.files[path] = bytes(reversed(server.files[path]))  # same size, different bytes
    with pytest.raises(DataError, match=r"SST-2\.zip: sha256 mismatch") as info:
        fetch.data_dir("sst2", progress=False)
    assert fetch.MIRROR_ENV in str(info.value)
    assert list(cache.rglob("*")) == []


def test_truncated_download_leaves_nothing(cache: Path, server: Server) -> None:
    server.truncate.add("/imdb/aclImdb_v1.tar.gz")
    with pytest.raises(DataError, match=r"aclImdb_v1\.tar\.gz: .*truncated") as info:
        fetch.data_dir("imdb", progress=False)
    assert re.search(r"\(\d+ of \d+ bytes received\)", str(info.value))
    assert list(cache.rglob("*")) == []


def test_http_error_and_size_change(cache: Path, server: Server) -> None:
    del server.files["/sst_sentences/stsa.binary.dev"]
    with pytest.raises(DataError, match=r"stsa\.binary\.dev: HTTP 404"):
        fetch.data_dir("sst2", progress=False)
    assert list(cache.rglob("*")) == []
    server.files["/imdb/aclImdb_v1.tar.gz"] += b"\0"
    with pytest.raises(DataError, match="expected; the upstream file changed"):
        fetch.data_dir("imdb", progress=False)
    assert list(cache.rglob("*")) == []


def test_incomplete_cache_is_refetched(cache: Path, server: Server) -> None:
    fetch.data_dir("sst2", progress=False)
    (cache / "sst2/sentences/test.tsv").unlink()
    fetch.data_dir("sst2", progress=False)
    assert (cache / "sst2/sentences/test.tsv").is_file()
    assert len(server.requests) == 8
    assert [p.name for p in cache.iterdir()] == ["sst2"]  # no staging leftovers


def test_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    monkeypatch.setenv(fetch.MIRROR_ENV, str(mirror))
    with pytest.raises(DataError, match="no such directory"):
        fetch.data_dir("sst2")
    (mirror / "sst2/glue").mkdir(parents=True)
    (mirror / "sst2/glue/train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(DataError) as info:
        fetch.data_dir("sst2")
    message = str(info.value)
    assert "sst2/glue/dev.tsv is missing" in message and f"{fetch.MIRROR_ENV}={mirror}" in message
    assert "local copy" in message
    for rel in ("sst2/glue/dev.tsv", "sst2/sentences/test.tsv"):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_text("sentence\tlabel\n")
    assert fetch.data_dir("sst2") == mirror


def test_source_table_is_complete() -> None:
    for keys in fetch.DATASET_SOURCES.values():
        for key in keys:
            source = fetch.SOURCES[key]
            assert re.fullmatch(r"[0-9a-f]{64}", source.sha256) and source.size
            assert source.url().startswith("https://") and source.url().endswith("/" + source.filename)


def test_converters_reproduce_the_mirror(data_mirror: Path, tmp_path: Path) -> None:
    """Rebuild public-format inputs from the real mirror; conversion must give back its exact bytes."""
    sources = tmp_path / "src"
    sources.mkdir()
    archives: dict[str, Path] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split in ("train", "dev"):
            lines = (data_mirror / f"sst2/glue/{split}.tsv").read_text(encoding="utf-8").splitlines()
            rows = "".join(line.replace("\t", " \t") + "\n" for line in lines[1:])  # GLUE's trailing space
            zf.writestr(f"SST-2/{split}.tsv", lines[0] + "\n" + rows)
    archives["glue_sst2"] = sources / "SST-2.zip"
    archives["glue_sst2"].write_bytes(buf.getvalue())
    for split in ("train", "dev", "test"):
        lines = (data_mirror / f"sst2/sentences/{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        original = "".join(f"{label} {text}\n" for text, label in (line.rsplit("\t", 1) for line in lines))
        archives[f"stsa_{split}"] = sources / f"stsa.binary.{split}"
        archives[f"stsa_{split}"].write_text(original, encoding="utf-8")
        # the mirror README's sha256 of the harvardnlp originals, i.e. the SOURCES table
        assert hashlib.sha256(original.encode()).hexdigest() == fetch.SOURCES[f"stsa_{split}"].sha256
    out = tmp_path / "out"
    fetch._convert_sst2(archives, out)
    for rel in (
        "glue/train.tsv",
        "glue/dev.tsv",
        "sentences/train.tsv",
        "sentences/dev.tsv",
        "sentences/test.tsv",
    ):
        assert (out / "sst2" / rel).read_bytes() == (data_mirror / "sst2" / rel).read_bytes(), rel

    # IMDB: a sample of real reviews per split and class, round-tripped through an aclImdb-style tar
    expected: dict[str, list[str]] = {}
    members: dict[str, str] = {}
    for split in ("train", "test"):
        with gzip.open(data_mirror / f"imdb/{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            lines = f.readlines()
        sample = lines[:20] + lines[12_500:12_520]  # sorted by label: the first of each class
        expected[split] = sample
        for line in reversed(sample):
            row = json.loads(line)
            members[f"aclImdb/{row['id']}.txt"] = row["text"]
    (sources / "aclImdb_v1.tar.gz").write_bytes(make_tar(members))
    fetch._convert_imdb({"aclimdb": sources / "aclImdb_v1.tar.gz"}, out)
    for split in ("train", "test"):
        with gzip.open(out / f"imdb/{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            assert f.readlines() == expected[split]
