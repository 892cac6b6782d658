"""Optional API-key authentication (SENTIMENT_API_KEY, SENTIMENT_PROTECT_OPS), CORS
(SENTIMENT_CORS_ORIGINS) and what error bodies may reveal. Uses the real small artifact."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.helpers import assert_error, serve

KEY = "s3cret-key-for-tests"
OPS = ("/health", "/ready", "/info", "/metrics")
ORIGIN = "https://app.example.com"
TEXT = {"text": "a great film ."}


def assert_unauthorized(r) -> None:  # type: ignore[no-untyped-def]
    assert_error(r, 401, "unauthorized", "Authorization: Bearer")
    assert r.headers["www-authenticate"] == "Bearer"
    assert KEY not in r.text


@pytest.mark.asyncio
async def test_no_key_configured_everything_is_open(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        assert (await client.post("/predict", json=TEXT)).status_code == 200
        # a stray Authorization header changes nothing
        r = await client.post("/predict", json=TEXT, headers={"Authorization": "Bearer whatever"})
        assert r.status_code == 200
        for path in OPS:
            assert (await client.get(path)).status_code == 200, path
        schema = (await client.get("/openapi.json")).json()
    assert "401" not in schema["paths"]["/predict"]["post"]["responses"]
    assert "securitySchemes" not in schema.get("components", {})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer été".encode()},  # non-ASCII: compared as bytes, no 500
        {"X-API-Key": KEY},
    ],
    ids=["missing", "wrong", "longer", "prefix", "basic", "no-scheme", "empty", "latin1", "other-header"],
)
@pytest.mark.asyncio
async def test_key_configured_refuses_missing_or_wrong_key(small_artifact: Path, headers: dict) -> None:
    async with serve(small_artifact, api_key=KEY) as (_, client):
        assert_unauthorized(await client.post("/predict", json=TEXT, headers=headers))
        # authentication comes before body validation: no hints about the API to unauthenticated clients
        assert_unauthorized(await client.post("/predict", json={"nope": 1}, headers=headers))


@pytest.mark.asyncio
async def test_key_configured_right_key_passes_and_ops_stay_open(small_artifact: Path) -> None:
    async with serve(small_artifact, api_key=KEY) as (_, client):
        r = await client.post("/predict", json=TEXT, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "positive"
        r = await client.post("/predict", json=TEXT, headers={"authorization": f"bearer {KEY}"})
        assert r.status_code == 200  # the scheme name is case-insensitive (RFC 7235)
        for path in OPS:
            assert (await client.get(path)).status_code == 200, path
        schema = (await client.get("/openapi.json")).json()
    predict = schema["paths"]["/predict"]["post"]
    assert predict["security"] == [{"apiKey": []}]
    assert predict["responses"]["401"]["headers"]["WWW-Authenticate"]
    assert predict["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`, the key set in SENTIMENT_API_KEY",
    }
    for path in OPS:
        op = schema["paths"][path]["get"]
        assert "401" not in op["responses"] and "security" not in op, path


@pytest.mark.asyncio
async def test_protect_ops_requires_the_key_on_operations_too(small_artifact: Path) -> None:
    async with serve(small_artifact, api_key=KEY, protect_ops=True) as (_, client):
        auth = {"Authorization": f"Bearer {KEY}"}
        for path in OPS:
            assert_unauthorized(await client.get(path))
            assert_unauthorized(await client.get(path, headers={"Authorization": "Bearer nope"}))
            assert (await client.get(path, headers=auth)).status_code == 200, path
        assert_unauthorized(await client.post("/predict", json=TEXT))
        assert (await client.post("/predict", json=TEXT, headers=auth)).status_code == 200
        schema = (await client.get("/openapi.json")).json()  # the document itself stays readable
    for path in OPS:
        assert "401" in schema["paths"][path]["get"]["responses"], path


def test_key_settings_are_checked_and_never_printed() -> None:
    settings = Settings(api_key=KEY)
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
    with pytest.raises(ValidationError, match=r"\(SENTIMENT_API_KEY\) is empty"):
        Settings(api_key="  ")
    with pytest.raises(ValidationError, match="needs api_key"):
        Settings(protect_ops=True)
    # another setting's error at start-up must not print the key (pydantic echoes the input by default)
    with pytest.raises(ValidationError) as raised:
        Settings(api_key=KEY, max_texts_per_request=10, max_queue_texts=5)
    assert KEY not in str(raised.value)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIMENT_API_KEY", KEY)
    monkeypatch.setenv("SENTIMENT_PROTECT_OPS", "true")
    monkeypatch.setenv("SENTIMENT_CORS_ORIGINS", f"{ORIGIN}, https://other.example")
    s = Settings()
    assert s.api_key is not None and s.api_key.get_secret_value() == KEY and s.protect_ops
    assert s.cors_origins == [ORIGIN, "https://other.example"]
    monkeypatch.setenv("SENTIMENT_CORS_ORIGINS", f'["{ORIGIN}"]')
    assert Settings().cors_origins == [ORIGIN]


# --- CORS -----------------------------------------------------------------------------------------

PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.asyncio
async def test_cors_is_off_by_default(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        r = await client.options("/predict", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in r.headers
        assert_error(r, 405, "method_not_allowed")
        r = await client.post("/predict", json=TEXT, headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.asyncio
async def test_cors_preflight_allowed_for_a_configured_origin_only(small_artifact: Path) -> None:
    async with serve(small_artifact, cors_origins=[ORIGIN], api_key=KEY) as (_, client):
        r = await client.options("/predict", headers=PREFLIGHT)  # preflights carry no credentials
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = await client.post(
            "/predict", json=TEXT, headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        # errors too, so the browser can read the message
        r = await client.post("/predict", json=TEXT, headers={"Origin": ORIGIN})
        assert_unauthorized(r)
        assert r.headers["access-control-allow-origin"] == ORIGIN
        # another origin gets no CORS grant
        r = await client.options("/predict", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = await client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# --- what errors reveal ---------------------------------------------------------------------------

_LEAKS = re.compile(r"Traceback|File \"|/work/|/tmp/|/home/|/root/|site-packages|\.py\b")


@pytest.mark.asyncio
async def test_error_bodies_never_contain_tracebacks_or_paths(small_artifact: Path) -> None:
    from tests.helpers import ModelProbe

    probe = ModelProbe(fail_marker="boom marker text")
    async with serve(small_artifact, probe, api_key=KEY, max_body_bytes=2000) as (_, client):
        auth = {"Authorization": f"Bearer {KEY}"}
        responses = [
            await client.post("/predict", json=TEXT),
            await client.post("/predict", json=TEXT, headers={"Authorization": "Bearer no"}),
            await client.post("/predict", content=b"{not json", headers=auth),
            await client.post("/predict", json={"texts": "x"}, headers=auth),
            await client.post("/predict", json={"text": "x" * 5000}, headers=auth),
            await client.post("/predict", json={"text": "boom marker text"}, headers=auth),
            await client.get("/nope"),
            await client.delete("/predict"),
        ]
    assert sorted(r.status_code for r in responses) == [401, 401, 404, 405, 413, 422, 422, 500]
    for r in responses:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) <= {"code", "message", "id", "details"}
        assert not _LEAKS.search(r.text), r.text
        assert str(small_artifact) not in r.text
