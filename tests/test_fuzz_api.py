"""Property-based fuzzing from the app's own OpenAPI document (schemathesis + hypothesis): ≥ 1,000
generated requests, valid and invalid, across every operation of a real uvicorn server on 127.0.0.1.
Every response must be a documented status with a body and headers that match the schema; no 5xx.

Seeded and derandomized, so CI runs the same requests every time. For a longer, random run:
scripts/fuzz_long.sh."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_api import _free_port, _uvicorn, _wait_ready

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
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
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # no inputs (the GET operations): nothing to make invalid
                assert mode is GenerationMode.NEGATIVE, operation.label
    return seen


@pytest.mark.slow
def test_fuzz_every_operation_from_the_openapi_schema(small_artifact: Path) -> None:
    port = _free_port()
    # Default limits: the fuzzer exercises the configured ones that the schema documents.
    proc = _uvicorn(small_artifact, port)
    log: list[bytes] = []
    # Drain the server's output: a full pipe would block its logging and so every request.
    threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True).start()
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc)
        seen = fuzz(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(30)
    total = sum(seen.values())
    print(f"fuzz: seed {SEED}, {total} requests; by operation and status: {dict(sorted(seen.items()))}")
    assert b"Traceback" not in b"".join(log), b"".join(log).decode(errors="replace")[-3000:]
    assert total >= MIN_REQUESTS, seen
    assert not [k for k in seen if k[1] >= 500], seen
