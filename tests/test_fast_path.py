"""One declaration for POST /predict (app/fast_path.py): the FastAPI route and the middleware's fast path
are the same operation. A router prefix moves both and the docs with them; a dependency either runs on
both paths or is refused; both paths give the same answers, in the same check order. Uses the real small
artifact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from app.fast_path import FastPathError
from app.main import create_app
from app.routes import predict as predict_route
from app.schemas import PredictResponse
from app.security import ApiKeyDep
from app.settings import Settings

pytestmark = pytest.mark.asyncio
KEY = "s3cret-key"
AUTH = {"authorization": f"Bearer {KEY}"}
JSON = {"content-type": "application/json"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


def build(model_dir: Path, *, fast_path: bool = True, prefix: str = "/v1", **settings: Any) -> FastAPI:
    """The service with the predict router also included under `prefix`, behind the API key when one
    is configured (as create_app includes it at /predict)."""
    app = create_app(Settings(model_dir=model_dir, warmup=False, **settings), fast_path=fast_path)
    deps = [ApiKeyDep] if settings.get("api_key") else []
    app.include_router(predict_route.router, prefix=prefix, dependencies=deps)
    return app


async def test_a_prefixed_router_serves_and_documents_the_same_path(small_artifact: Path) -> None:
    body = {"texts": ["a great film .", "a dull mess ."]}
    answers = []
    for fast_path in (True, False):
        app = build(small_artifact, fast_path=fast_path)
        async with running(app) as client:
            plain = await client.post("/predict", json=body)
            prefixed = await client.post("/v1/predict", json=body)
            schema = (await client.get("/openapi.json")).json()
            metrics = (await client.get("/metrics")).text
        assert plain.status_code == prefixed.status_code == 200, prefixed.text
        assert prefixed.json() == plain.json()
        answers.append(prefixed.json())
        fast = app.middleware_stack.fast_routes  # type: ignore[union-attr]
        assert set(fast) == ({("POST", "/predict"), ("POST", "/v1/predict")} if fast_path else set())
        # documented once per path, as the same operation
        assert (
            schema["paths"]["/v1/predict"]["post"]["requestBody"]
            == schema["paths"]["/predict"]["post"]["requestBody"]
        )
        assert set(schema["paths"]["/v1/predict"]["post"]["responses"]) >= {"200", "422", "503"}
        if fast_path:  # the fast path labels its metrics with the declared path, prefix included
            assert 'route="/v1/predict"' in metrics
    assert answers[0] == answers[1]  # fast path and FastAPI route
    PredictResponse.model_validate(answers[0])


async def test_a_dependency_runs_on_both_paths_or_is_refused(small_artifact: Path) -> None:
    # the API key, which the fast path performs: checked on both paths under the prefix
    for fast_path in (True, False):
        async with running(build(small_artifact, fast_path=fast_path, api_key=KEY)) as client:
            r = await client.post("/v1/predict", json={"text": "fine"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (fast_path, r.text)
            r = await client.post("/v1/predict", json={"text": "fine"}, headers=AUTH)
            assert r.status_code == 200, (fast_path, r.text)

    # one the fast path does not perform: refused at start-up, naming it, the route and what to do
    async def audit() -> None:
        pass

    app = create_app(Settings(model_dir=small_artifact, warmup=False))
    app.include_router(predict_route.router, prefix="/v2", dependencies=[Depends(audit)])
    with pytest.raises(FastPathError, match=r"POST /v2/predict: dependency .*audit would run on the FastAPI "
                                            r"route only.*performs=.*middleware"):  # fmt: skip
        app.build_middleware_stack()


REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", b'{"text": "a great film ."}', {**JSON, **AUTH}),
    ("valid, options", b'{"texts": ["a great film . a dull one .", "ok"], "sentences": true, '
                       b'"explain": true}', {**JSON, **AUTH}),
    ("malformed JSON, no key: JSON first", b'{"text": "a great', JSON),
    ("malformed JSON", b'{"text": "a great', {**JSON, **AUTH}),
    ("not UTF-8", b'{"text": "\xff\xfe"}', {**JSON, **AUTH}),
    ("no key", b'{"text": "fine"}', JSON),
    ("wrong key", b'{"text": "fine"}', {**JSON, "authorization": "Bearer nope"}),
    ("empty body, no key: the key first", b"", JSON),
    ("empty body", b"", {**JSON, **AUTH}),
    ("not JSON content type", b'{"text": "fine"}', {"content-type": "text/plain", **AUTH}),
    ("no content type", b'{"text": "fine"}', AUTH),
    ("a JSON array", b'["fine"]', {**JSON, **AUTH}),
    ("both fields", b'{"text": "a", "texts": ["b"]}', {**JSON, **AUTH}),
    ("unknown field", b'{"text": "a", "lang": "en"}', {**JSON, **AUTH}),
    ("not strict", b'{"text": "a", "explain": 1}', {**JSON, **AUTH}),
    ("blank text", b'{"texts": ["fine", "   "]}', {**JSON, **AUTH}),
    ("too many texts", b'{"texts": ["a", "b", "c", "d", "e"]}', {**JSON, **AUTH}),
]  # fmt: skip


def _answer(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body = r.json() if r.content else None
    if isinstance(body, dict) and "error" in body:
        body["error"].pop("id")
    headers = {k: r.headers[k] for k in ("content-type", "www-authenticate", "retry-after") if k in r.headers}
    return r.status_code, body, headers


async def test_both_paths_answer_alike_in_the_same_check_order(small_artifact: Path) -> None:
    answers: dict[bool, list[tuple[int, Any, dict[str, str]]]] = {}
    for fast_path in (True, False):
        app = build(small_artifact, fast_path=fast_path, api_key=KEY, max_texts_per_request=4)
        async with running(app) as client:
            answers[fast_path] = [
                _answer(await client.post("/v1/predict", content=body, headers=headers))
                for _, body, headers in REQUESTS
            ]
    for (name, _, _), fast, routed in zip(REQUESTS, answers[True], answers[False], strict=True):
        assert fast == routed, name
    statuses = {name: a[0] for (name, _, _), a in zip(REQUESTS, answers[True], strict=True)}
    assert statuses["valid"] == statuses["valid, options"] == 200
    assert statuses["malformed JSON, no key: JSON first"] == 422
    assert statuses["no key"] == statuses["empty body, no key: the key first"] == 401
    assert statuses["empty body"] == statuses["too many texts"] == statuses["not UTF-8"] == 422
    options = answers[True][1][1]
    PredictResponse.model_validate(options)  # what render_predictions builds is the documented body
    pred = options["predictions"][0]
    assert set(pred) == set(PredictResponse.model_fields["predictions"].annotation.__args__[0].model_fields)
    assert pred["sentences"] and pred["explanation"]["tokens"]
