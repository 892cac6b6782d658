"""Bulk scoring on Ray Data (scoring/ray_engine.py) on a local Ray with 2 CPUs: the same answers as the
local command, rows in input order, bad rows kept with their reason. One module, one Ray start-up (the
slow part), a small file of real texts."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it with the dev extra)"
)
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install -e '.[scoring]'")

from scoring.cli import main  # noqa: E402
from scoring.columns import result_columns  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "default"
LABELS = json.loads((MODEL / "meta.json").read_text())["labels"]
RESULTS = result_columns(LABELS)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def texts(data_mirror: Path) -> list[str]:
    with open(data_mirror / "tweets" / "test.tsv", encoding="utf-8") as f:
        tweets = [row[0] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][1:201]
    return [*tweets, 'Quoted "words", a comma,\nand a second line.', "   ", "asdf qwer zxcv"]


def _local(src: Path, out: Path) -> dict[str, dict[str, Any]]:
    assert main([str(src), "-o", str(out), "--model", str(MODEL), "--workers", "0", "--quiet"]) == 0
    with open(out, encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f)}


def _ray(src: Path, out: Path) -> list[dict[str, Any]]:
    # two actors of half a CPU each: the other CPU of the two reads and writes
    args = [str(src), "-o", str(out), "--model", str(MODEL), "--engine", "ray", "--concurrency", "2",
            "--num-cpus", "0.5", "--window", "64", "--quiet"]  # fmt: skip
    assert main(args) == 0
    if out.name.endswith(".jsonl"):
        return [json.loads(line) for f in sorted(out.glob("*.json*")) for line in f.read_text().splitlines()]
    return pq.read_table(out).to_pylist()


def test_ray_gives_the_local_commands_answers(local_ray: None, tmp_path: Path, texts: list[str]) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    local = _local(jsonl, tmp_path / "local.jsonl")
    with open(tmp_path / "in.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows([f"r{i}", t] for i, t in enumerate(texts))
    for src, out in ((jsonl, tmp_path / "ray.jsonl"), (tmp_path / "in.csv", tmp_path / "ray.parquet")):
        rows = _ray(src, out)
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(texts))], out  # input order
        assert [r["text"] for r in rows] == texts
        for r in rows:
            if r["id"] not in local:  # the whitespace-only text: a failed row here, in the errors file there
                assert r["error"].startswith("empty_text") and r["label"] is None
                continue
            assert r["error"] is None
            expected = local[r["id"]]
            for key in RESULTS:
                if isinstance(expected[key], float):
                    assert abs(r[key] - expected[key]) <= 1e-6, key
                else:
                    assert r[key] == expected[key], key
    assert len(local) == len(texts) - 1
