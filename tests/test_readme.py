"""The README's request examples, replayed against the shipped model: each `curl ... /predict -d '{...}'`
is sent as written, and the answer must have the shape of the JSON shown after it (the same keys at
every level, the same labels, the same kinds of values), so the front door cannot go stale."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import serve

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEFAULT = REPO / "models" / "default"

pytestmark = pytest.mark.asyncio

_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
_CURL = re.compile(r"curl -s localhost:8000(/\w+).*?-d '(\{.*?\})'", re.S)


def examples() -> list[tuple[str, dict[str, Any], Any]]:
    """(path, request body, answer shown) for every curl block followed by a json block."""
    blocks = _BLOCK.findall(README.read_text(encoding="utf-8"))
    out = []
    for (kind, body), (next_kind, shown) in itertools.pairwise(blocks):
        if kind == "bash" and next_kind == "json" and (m := _CURL.search(body)):
            out.append((m.group(1), json.loads(m.group(2)), json.loads(shown)))
    return out


def same_shape(got: Any, shown: Any, where: str = "") -> list[str]:
    """Where `got` differs in shape from `shown`: keys, list lengths, value kinds, label names."""
    if isinstance(shown, dict):
        if not isinstance(got, dict) or set(got) != set(shown):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__} "
                    f"against {sorted(shown)}"]
        return [p for k in shown for p in same_shape(got[k], shown[k], f"{where}.{k}")]
    if isinstance(shown, list):
        if not isinstance(got, list) or len(got) != len(shown):
            return [f"{where}: {got!r} against a list of {len(shown)}"]
        pairs = enumerate(zip(got, shown, strict=True))
        return [p for i, (g, s) in pairs for p in same_shape(g, s, f"{where}[{i}]")]
    if shown is None or isinstance(shown, bool):
        return [] if got is shown or got == shown else [f"{where}: {got!r} against {shown!r}"]
    if isinstance(shown, int | float):
        number = isinstance(got, int | float) and not isinstance(got, bool)
        return [] if number else [f"{where}: {got!r} is not a number"]
    # names the README shows must be the shipped model's own: its labels, its name and version
    if where.endswith((".label", ".name", ".version", ".text")) or "warnings" in where:
        return [] if got == shown else [f"{where}: {got!r} against {shown!r}"]
    return [] if isinstance(got, str) else [f"{where}: {got!r} is not a string"]


def test_the_readme_shows_request_examples():
    found = examples()
    assert len(found) >= 2, "the README's examples are curl blocks each followed by the JSON it answers"


@pytest.mark.parametrize(("path", "body", "shown"), examples())
async def test_each_readme_example_answers_as_shown(path: str, body: dict, shown: Any):
    async with serve(DEFAULT) as (_, client):
        r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert same_shape(got, shown) == [], json.dumps(got, indent=1)
