"""Hostile input against the real app (small artifact): every row gets its documented status and a
message that says what is wrong; never a 500, never a stack trace or an internal path in the body.
Oversized bodies are refused with 413 before they are read whole (checked on a real uvicorn socket)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import assert_error, serve, uvicorn_server

pytestmark = pytest.mark.asyncio

JSON = {"content-type": "application/json"}
MAX_TEXTS, MAX_CHARS, MAX_BODY = 64, 32_768, 1_048_576  # the defaults (app/settings.py)
LEAKS = ("Traceback", 'File "', "site-packages", "/work/", "/home/", "/usr/", ".py", "RuntimeError(")


def raw(body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"content": body, "headers": headers or JSON}


# (name, request kwargs, expected status, substring of the error message; "" for 200)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty text", {"json": {"text": ""}}, 422, "empty or only whitespace"),
    ("whitespace only", {"json": {"text": " \t\n\u00a0\u2003\u3000"}}, 422, "empty or only whitespace"),
    ("zero-width only", {"json": {"text": "\u200b\u200c\u2060\ufeff"}}, 422, "empty or only whitespace"),
    ("NUL only", {"json": {"text": "\u0000\u0000"}}, 422, "empty or only whitespace"),
    ("only control characters", {"json": {"text": "\x00\x01\x02"}}, 422, "empty or only whitespace"),
    ("controls and marks", {"json": {"text": " \u200e\u0007\u00ad\n"}}, 422, "empty or only whitespace"),
    ("one of the texts blank", {"json": {"texts": ["ok", "   "]}}, 422, "body.texts.1"),
    ("one of the texts invisible", {"json": {"texts": ["ok", "\u200b"]}}, 422, "body.texts.1"),
    ("1 MB text", {"json": {"text": "x" * 1_000_000}}, 422, "1000000 characters"),
    ("1 MiB+ body", {"json": {"text": "x" * MAX_BODY}}, 413, "SENTIMENT_MAX_BODY_BYTES"),
    ("too many texts", {"json": {"texts": ["a"] * (MAX_TEXTS + 1)}}, 422, f"{MAX_TEXTS + 1} texts given"),
    ("empty list", {"json": {"texts": []}}, 422, "at least 1"),
    ("text is an object", {"json": {"text": {"a": 1}}}, 422, "valid string"),
    ("text is a list", {"json": {"text": ["a"]}}, 422, "valid string"),
    ("text is a number", {"json": {"text": 1.5}}, 422, "valid string"),
    ("text is a bool", {"json": {"text": True}}, 422, "valid string"),
    ("text is null", {"json": {"text": None}}, 422, '"text"'),
    ("nested texts", {"json": {"texts": [["a", ["b"]]]}}, 422, "body.texts.0"),
    ("texts is a string", {"json": {"texts": "abc"}}, 422, "valid list"),
    ("body is a list", {"json": [{"text": "a"}]}, 422, "JSON object"),
    ("body is a string", {"json": "a good film"}, 422, "JSON object"),
    ("body is null", raw(b"null"), 422, "JSON object"),
    ("unknown field", {"json": {"text": "a", "admin": True}}, 422, "unknown field"),
    ("malformed JSON", raw(b'{"text": "a",}'), 422, "not valid JSON"),
    ("truncated JSON", raw(b'{"text": "a'), 422, "not valid JSON"),
    ("NaN literal", raw(b'{"text": NaN}'), 422, "valid string"),
    ("deeply nested JSON", raw(b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 422, "not valid JSON"),
    ("5000-digit integer", raw(b'{"text": ' + b"9" * 5000 + b"}"), 422, "not valid JSON"),
    ("text/plain", raw(b'{"text": "a"}', {"content-type": "text/plain"}), 422, "Content-Type"),
    ("form encoded", raw(b"text=a", {"content-type": "application/x-www-form-urlencoded"}), 422, "JSON"),
    ("no content type", {"content": b'{"text": "a"}'}, 422, "Content-Type"),
    ("multipart", {"files": {"text": ("a.txt", b"a good film")}}, 422, "Content-Type"),
    ("invalid UTF-8", raw(b'{"text": "\xff\xfe good"}'), 422, "UTF-8"),
    ("latin-1 declared", raw(b'{"text": "caf\xe9"}', {"content-type": "application/json; charset=latin-1"}),
     422, "UTF-8"),
    ("lone surrogate escape", raw(b'{"text": "\\ud800 good"}'), 422, "unpaired surrogate"),
    ("surrogate in a list", raw(b'{"texts": ["ok", "\\udfff"]}'), 422, "body.texts.1"),
    # accepted: odd but valid Unicode is classified, never crashes the tokenizer or the model
    ("NUL and control characters", {"json": {"text": "good\x00 film\x07\x1b[31m\r\n"}}, 200, ""),
    ("emoji and skin tones", {"json": {"text": "👍🏽 great movie 🎬🍿 👨‍👩‍👧"}}, 200, ""),
    ("combining marks (zalgo)", {"json": {"text": "g\u0301\u0302\u0303" * 200 + "ood"}}, 200, ""),
    ("right-to-left", {"json": {"text": "\u202eفيلم رائع\u202c שלום"}}, 200, ""),
    ("zero-width characters", {"json": {"text": "gr\u200beat\u200d film\ufeff\u2060"}}, 200, ""),
    ("one 32,768-character token", {"json": {"text": "a" * MAX_CHARS}}, 200, ""),
    ("64 texts of 10,000 characters", {"json": {"texts": ["bad " * 2500] * MAX_TEXTS}}, 200, ""),
    ("repeated key: the last one wins", raw(b'{"text": "awful", "text": "a great film"}'), 200, ""),
    ("UTF-8 byte-order mark", raw(b'\xef\xbb\xbf{"text": "a good film"}'), 200, ""),
]  # fmt: skip


async def test_hostile_input_table(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        for name, kwargs, status, needle in CASES:
            r = await client.post("/predict", **kwargs)
            try:
                assert r.status_code < 500, r.text[:500]
                assert not any(leak in r.text for leak in LEAKS), r.text[:500]
                if status == 200:
                    assert r.status_code == 200, r.text[:500]
                    n = len(kwargs["json"].get("texts", [0])) if "json" in kwargs else 1
                    assert len(r.json()["predictions"]) == n
                else:
                    code = "payload_too_large" if status == 413 else "validation_error"
                    assert_error(r, status, code, needle)
            except AssertionError as e:
                raise AssertionError(f"case {name!r}: {e}") from e
        # the app is unharmed: a plain request still works
        assert (await client.post("/predict", json={"text": "a good film"})).status_code == 200


def _send_and_read(port: int, head: bytes, body_parts: list[bytes], timeout: float) -> tuple[bytes, float]:
    """Send a request head and some body bytes, then wait for the answer without sending the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        start = time.perf_counter()
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data, time.perf_counter() - start


@pytest.mark.slow
async def test_oversized_bodies_get_413_before_being_read(small_artifact: Path) -> None:
    with uvicorn_server(small_artifact) as server:
        port = server.port
        # A 1 TB Content-Length with 20 bytes sent: the answer must come at once, from the header alone.
        head = (
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n"
        )
        data, seconds = await asyncio.to_thread(_send_and_read, port, head, [b'{"text": "aaaaaaaaa'], 5)
        assert data.startswith(b"HTTP/1.1 413"), data[:300]
        assert b"1000000000000 bytes" in data and seconds < 2, (data[-300:], seconds)
        # Chunked, no length: 2 MiB sent in chunks and the final chunk never sent; the server stops
        # reading past its limit and answers 413 instead of waiting for the end of the body.
        head = (
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 32
        data, seconds = await asyncio.to_thread(_send_and_read, port, head, parts, 10)
        assert data.startswith(b"HTTP/1.1 413"), data[:300]
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "payload_too_large" and "exceeds" in body["error"]["message"]
        # the server is still healthy afterwards
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.post("/predict", json={"text": "fine"})).status_code == 200
