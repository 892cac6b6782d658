"""Property-based fuzzing from the app's own OpenAPI document (schemathesis + hypothesis): ≥ 1,000
generated requests, valid and invalid, across every operation of a real uvicorn server on 127.0.0.1.
Every response must pass all of schemathesis' default checks: a documented status with a body and
headers that match the schema, no 5xx, schema-valid requests accepted (`positive_data_acceptance`),
schema-invalid ones rejected (`negative_data_rejection`), and the rest.

Seeded and derandomized, so CI runs the same requests every time. For a longer, random run:
scripts/fuzz_long.sh."""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from pydantic import ValidationError
from schemathesis import GenerationMode

from app.main import create_app
from app.openapi import NOT_ONLY_WHITESPACE
from app.schemas import PredictRequest
from app.settings import Settings
from tests.helpers import uvicorn_server

# Per operation and mode; operations without inputs (the GETs) exhaust their input space at once.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "550"))
DERANDOMIZE = os.environ.get("FUZZ_RANDOM", "") != "1"  # scripts/fuzz_long.sh sets it
SEED = 20251128 if DERANDOMIZE else int.from_bytes(os.urandom(4))  # printed, to replay a failure
MIN_REQUESTS = int(os.environ.get("FUZZ_MIN_REQUESTS", "1000"))


def fuzz(base_url: str) -> Counter[tuple[str, int]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    session = requests.Session()
    seen: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @seed(SEED)
            @settings(
                max_examples=EXAMPLES,
                derandomize=DERANDOMIZE,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure fast
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=base_url, session=session, timeout=10)
                seen[(case.operation.label, response.status_code)] += 1
                case.validate_response(response)  # no `checks`: all of schemathesis' default ones

            try:
                run()
            except Unsatisfiable:
                # no inputs (the GET operations): nothing to make invalid
                assert mode is GenerationMode.NEGATIVE, operation.label
    return seen


@pytest.mark.slow
def test_fuzz_every_operation_from_the_openapi_schema(small_artifact: Path) -> None:
    # Default limits: the fuzzer exercises the configured ones that the schema documents.
    with uvicorn_server(small_artifact) as server:
        seen = fuzz(server.url)
    total = sum(seen.values())
    print(f"fuzz: seed {SEED}, {total} requests; by operation and status: {dict(sorted(seen.items()))}")
    assert "Traceback" not in server.output(), server.output()[-3000:]
    assert total >= MIN_REQUESTS, seen
    assert not [k for k in seen if k[1] >= 500], seen


# Bodies around "exactly one of text and texts" and the booleans: the published schema and the server's
# model must agree on each (schemathesis only finds a disagreement if it happens to generate it).
ONE_OF_BODIES: list[dict[str, Any]] = [
    {"text": "a fine film"},
    {"texts": ["a fine film", "a dull one"]},
    {"text": "a fine film", "texts": None},  # an explicit null counts as absent
    {"text": None, "texts": ["a fine film"]},
    {"text": "a fine film", "texts": ["a dull one"]},  # both
    {},  # neither
    {"text": None, "texts": None},
    {"text": None},
    {"long_text": "chunk", "explain": True},
    {"text": "a fine film", "explain": 1},  # not a boolean: no coercion
    {"text": "a fine film", "sentences": "true"},
]


def test_schema_accepts_the_bodies_the_server_does(tmp_path: Path) -> None:
    schema = create_app(Settings(model_dir=tmp_path)).openapi()  # no model needed for the document
    body_schema = {**schema["components"]["schemas"]["PredictRequest"], "components": schema["components"]}
    validator = jsonschema.Draft202012Validator(body_schema)  # OpenAPI 3.1 schemas are JSON Schema 2020-12
    for body in ONE_OF_BODIES:
        try:
            PredictRequest.model_validate(body)
            accepted = True
        except ValidationError:
            accepted = False
        assert validator.is_valid(body) == accepted, (body, accepted)
        one = sum(body.get(k) is not None for k in ("text", "texts")) == 1
        flags = all(isinstance(body.get(k, False), bool) for k in ("explain", "sentences"))
        assert accepted == (one and flags), body


def test_text_pattern_is_the_servers_blank_check() -> None:
    """The schema's "not blank" `pattern` accepts a one-character text exactly when the server does
    (core.engine.is_blank: whitespace, control and invisible format characters), both in Python's regex
    dialect and in JSON Schema's own, ECMA-262 (jsonschema_rs follows it; there `\\S` disagrees with
    Python on U+001C-U+001F, U+0085 and U+FEFF)."""
    from core.engine import is_blank

    pattern = re.compile(NOT_ONLY_WHITESPACE)
    disagree = [hex(i) for i in range(sys.maxunicode + 1) if bool(pattern.search(chr(i))) == is_blank(chr(i))]
    assert not disagree, disagree
    ecma = jsonschema_rs.validator_for({"type": "string", "pattern": NOT_ONLY_WHITESPACE})
    for c in "\x1c\x1d\x1e\x1f\x85\ufeff\u3000\u2028\u200b\u200d\u00ad\x00\x7f \t\naé\U0001d173":
        assert ecma.is_valid(c) is not is_blank(c), hex(ord(c))
    assert not is_blank("\U0001d173") and is_blank("\u200b\ufeff \x00")
