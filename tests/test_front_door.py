"""What a new user meets first (issue 22, items 3 and 9): `python -m app` with no model, `--help`, a
busy port; a real long review within the limits; error messages that say what limit was hit, where the
JSON broke and what to send. On the shipped model (models/default): no training here."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.helpers import serve

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default"
JSON = {"content-type": "application/json"}


def _python_m_app(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGS` from the repository root with SENTIMENT_* settings `env` (and no others)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- python -m app ---------------------------------------------------------------------------------


def test_missing_model_is_an_error_that_says_how_to_get_one(tmp_path: Path) -> None:
    """A typo in SENTIMENT_MODEL_DIR (`artifact` for `artifacts`) exits at once, non-zero, naming the
    folder and the two ways out; nothing is trained and nothing is written."""
    missing = tmp_path / "artifact"
    result = _python_m_app(SENTIMENT_MODEL_DIR=str(missing), SENTIMENT_PORT=str(_free_port()))
    assert result.returncode != 0, result.stdout + result.stderr
    message = result.stderr.strip()
    assert f"no artifact at {missing}" in message, message
    assert "SENTIMENT_MODEL_DIR" in message and f"python -m training --out {missing}" in message, message
    assert "Traceback" not in message and "training" not in result.stdout
    assert not missing.exists() and not list(tmp_path.iterdir()), "serving must not train into the folder"


def test_help_lists_every_setting_with_its_default_and_starts_nothing() -> None:
    port = _free_port()
    result = _python_m_app("--help", SENTIMENT_PORT=str(port))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("usage: python -m app")
    for name in Settings.model_fields:
        assert f"SENTIMENT_{name.upper()}  (default: " in out, name
    assert "SENTIMENT_PORT  (default: 8000)" in out  # the default, not this environment's value
    assert "SENTIMENT_MAX_CHARS_PER_TEXT  (default: 32768)" in out
    assert "SENTIMENT_API_KEY  (default: unset)" in out
    assert "serving" not in out and not result.stderr
    unknown = _python_m_app("--port", "9000")
    assert unknown.returncode != 0 and "--help" in unknown.stderr and "SENTIMENT_" in unknown.stderr


def test_busy_port_is_one_clear_line_naming_the_port_and_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _python_m_app(SENTIMENT_MODEL_DIR=str(DEFAULT_MODEL), SENTIMENT_PORT=str(port))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0] and f"SENTIMENT_PORT={port + 1}" in lines[0], lines[0]
    assert "Errno" not in lines[0] and not lines[0].startswith("{"), lines[0]


# --- HTTP: limits and messages -----------------------------------------------------------------------



def _long_review(data_mirror: Path, chars: int) -> str:
    """A real long document: IMDB's longest reviews joined until `chars` characters (IMDB's longest
    alone is 13,704; the 3,000-word review of the issue was 17,163)."""
    path = data_mirror / "imdb" / "train.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        reviews = sorted((json.loads(line)["text"] for line in f), key=len, reverse=True)
    text = ""
    for review in reviews:
        text = f"{text}\n\n{review}" if text else review
        if len(text) >= chars:
            return text[:chars]
    raise AssertionError("not enough text")


def test_one_text_at_the_character_limit_fits_the_body_limit() -> None:
    """A text at SENTIMENT_MAX_CHARS_PER_TEXT gets the per-text 422 (or an answer), never the body's
    413, even if every character is a 6-byte JSON escape (\\u0001)."""
    s = Settings()
    envelope = len(b'{"texts": [""]}')
    assert 6 * s.max_chars_per_text + envelope <= s.max_body_bytes


@pytest.mark.asyncio
async def test_a_3000_word_review_is_scored(data_mirror: Path) -> None:
    review = _long_review(data_mirror, 17_163)
    assert len(review.split()) > 2_900
    async with serve(DEFAULT_MODEL) as (_, client):
        labels = (await client.get("/info")).json()["labels"]
        r = await client.post("/predict", json={"text": review})
        assert r.status_code == 200, r.text[:500]
        (prediction,) = r.json()["predictions"]
        assert prediction["label"] in labels
        limit = Settings().max_chars_per_text
        r = await client.post("/predict", json={"text": _long_review(data_mirror, limit + 1)})
        assert r.status_code == 422
        message = r.json()["error"]["message"]
        assert f"at most {limit} per text (SENTIMENT_MAX_CHARS_PER_TEXT={limit})" in message, message


@pytest.mark.asyncio
async def test_error_messages_say_where_and_what_to_do() -> None:
    async with serve(DEFAULT_MODEL) as (_, client):
        # a JSON syntax error keeps its position
        r = await client.post("/predict", content=b'{"text": "a good film",\n "texts": [1,}', headers=JSON)
        message = r.json()["error"]["message"]
        assert r.status_code == 422 and "line 2 column" in message and "not valid JSON" in message, message
        r = await client.post("/predict", content=b'{"text": "unterminated', headers=JSON)
        message = r.json()["error"]["message"]
        assert "Unterminated string" in message and "line 1 column 10" in message, message
        # one 5 MB text: the body limit is named, and "split the texts" is not the advice
        r = await client.post("/predict", json={"text": "a" * 5_000_000})
        message = r.json()["error"]["message"]
        assert r.status_code == 413 and "SENTIMENT_MAX_BODY_BYTES=1048576" in message, message
        assert "split the texts" not in message and "one long document: send an excerpt" in message
        assert "SENTIMENT_MAX_CHARS_PER_TEXT" in message
        # invalid UTF-8: says so once, and what to send
        r = await client.post("/predict", content=b'{"text": "\xff\xfe good"}', headers=JSON)
        message = r.json()["error"]["message"]
        assert r.status_code == 422 and "not UTF-8" in message and message.count("send") == 1, message


def test_readme_settings_table_shows_the_defaults_the_code_has() -> None:
    """Each `SENTIMENT_*` row of the README's settings table (`A` / `B` rows: one default each) shows
    the default of that field in app/settings.py or core/settings.py, so the table cannot go stale."""
    import re

    def shown(value: Any) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "empty" if value == [] else str(value)

    rows = re.findall(r"^\| (`SENTIMENT_[^|]*) \| ([^|]*) \|", (REPO / "README.md").read_text(), re.M)
    checked = 0
    for names, defaults in rows:
        fields = re.findall(r"`SENTIMENT_(\w+)`", names)
        values = [d.strip().strip("`") for d in defaults.split(" / ")] if len(fields) > 1 else [defaults]
        assert len(values) == len(fields), names
        for name, value in zip(fields, values, strict=True):
            field = Settings.model_fields[name.lower()]
            default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            assert value.strip().strip("`") == shown(default), (name, value, default)
            checked += 1
    assert checked >= 30, checked
