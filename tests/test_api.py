"""The HTTP API (app/): predictions, batching under concurrency, backpressure, faults, validation,
readiness and shutdown, start-up checks and the OpenAPI document. Uses the real small artifact."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.main import create_app
from app.routes import predict as predict_route
from app.settings import Settings
from bench.servers import free_port
from model.artifact import Artifact, ArtifactError, load_artifact
from tests.helpers import (
    NEGATIVE,
    POSITIVE,
    ModelProbe,
    assert_error,
    failed_start_up,
    metric,
    serve,
    uvicorn_server,
)

pytestmark = pytest.mark.asyncio
REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def artifact(small_artifact: Path) -> Artifact:
    return load_artifact(small_artifact)


# --- predictions ----------------------------------------------------------------------------------


async def test_clear_examples_get_the_right_labels(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        r = await client.post("/predict", json={"texts": POSITIVE + NEGATIVE})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert [p["label"] for p in preds] == ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
        assert min(p["score"] for p in preds) > 0.6, preds  # clearly, not by a hair


async def test_response_shape_single_text(small_artifact: Path, artifact: Artifact) -> None:
    async with serve(small_artifact) as (_, client):
        r = await client.post("/predict", json={"text": POSITIVE[0]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"]
    body = r.json()
    assert body["model"] == {"name": artifact.meta["name"], "version": artifact.meta["version"]}
    (pred,) = body["predictions"]  # a list even for one text
    assert set(pred) == {"label", "score", "polarity", "probabilities", "truncated", "chunks", "warnings"}
    assert set(pred["probabilities"]) == set(artifact.labels)
    probs = pred["probabilities"]
    assert pred["polarity"] == pytest.approx(probs["positive"] - probs["negative"], abs=1e-6)
    assert pred["warnings"] == []
    assert sum(pred["probabilities"].values()) == pytest.approx(1, abs=1e-6)
    assert pred["score"] == pred["probabilities"][pred["label"]] == max(pred["probabilities"].values())
    assert pred["truncated"] is False and pred["chunks"] == 1
    expected = artifact.predict_proba([POSITIVE[0]])[0].tolist()
    assert [pred["probabilities"][label] for label in artifact.labels] == pytest.approx(expected, abs=1e-6)


async def test_long_text_is_marked_truncated(small_artifact: Path, artifact: Artifact) -> None:
    long_text = " ".join(["great"] * (artifact.max_length + 10))
    async with serve(small_artifact) as (_, client):
        r = await client.post("/predict", json={"texts": [long_text, "great"], "long_text": "truncate"})
        chunked = await client.post("/predict", json={"texts": [long_text, "great"], "long_text": "chunk"})
    assert [p["truncated"] for p in r.json()["predictions"]] == [True, False]
    # chunked (tests/test_long_text.py): no sentence boundary, so cut at token boundaries; nothing lost
    assert [(p["truncated"], p["chunks"]) for p in chunked.json()["predictions"]] == [(False, 2), (False, 1)]


async def test_alone_and_in_a_batch_give_the_same_scores(small_artifact: Path, data_mirror: Path) -> None:
    lines = (data_mirror / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:40]
    others = [line.split("\t")[0] for line in lines]
    target = "It is a gorgeous film, but it drags in the middle and the ending is a letdown."
    async with serve(small_artifact) as (_, client):
        alone = (await client.post("/predict", json={"text": target})).json()["predictions"][0]
        batch = await client.post("/predict", json={"texts": [*others[:20], target, *others[20:]]})
        together = batch.json()["predictions"][20]
    for label, p in alone["probabilities"].items():
        assert together["probabilities"][label] == pytest.approx(p, abs=1e-6)


async def test_200_concurrent_requests_each_get_their_own_answer_and_are_batched(
    small_artifact: Path, artifact: Artifact, data_mirror: Path
) -> None:
    lines = (data_mirror / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:201]
    texts = [line.split("\t")[0] for line in lines]
    expected = [artifact.predict_proba([t])[0].tolist() for t in texts]  # one at a time, in-process
    async with serve(small_artifact) as (_, client):
        responses = await asyncio.gather(*(client.post("/predict", json={"text": t}) for t in texts))
        metrics = (await client.get("/metrics")).text
    for text, exp, r in zip(texts, expected, responses, strict=True):
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        got = [pred["probabilities"][label] for label in artifact.labels]
        assert got == pytest.approx(exp, abs=1e-6), text
        assert pred["label"] == artifact.labels[max(range(len(exp)), key=exp.__getitem__)]
    batches = metric(metrics, "sentiment_batch_size_count")
    assert metric(metrics, "sentiment_batch_size_sum") == 200
    assert 200 / batches > 1, f"{batches:.0f} batches for 200 texts: the batcher did not batch"
    assert metric(metrics, 'sentiment_requests_total{method="POST",route="/predict",status="200"}') == 200


async def test_lone_request_is_not_delayed_by_a_wait_timer(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        t0 = time.perf_counter()
        assert (await client.post("/predict", json={"text": "fine"})).status_code == 200
        elapsed = time.perf_counter() - t0
        queued = metric((await client.get("/metrics")).text, "sentiment_queue_seconds_sum")
    assert queued < 0.005, f"the text waited {queued * 1000:.1f} ms in the queue"
    assert elapsed < 0.25
    async with serve(small_artifact, max_wait_ms=150) as (_, client):  # the optional timer does wait
        t0 = time.perf_counter()
        await client.post("/predict", json={"text": "fine"})
        assert time.perf_counter() - t0 >= 0.15


# --- backpressure, faults, disconnects, timeouts -----------------------------------------------------


async def test_queue_full_gives_503_with_retry_after_for_single_and_batch(small_artifact: Path) -> None:
    probe = ModelProbe()
    limits = {"max_queue_texts": 2, "max_texts_per_request": 2, "max_batch_size": 1, "retry_after_s": 3}
    async with serve(small_artifact, probe, **limits) as (_, client):
        probe.reset(block=True)
        running = asyncio.create_task(client.post("/predict", json={"text": "good"}))
        await probe.wait_entered()  # in the model now, no longer queued
        queued = asyncio.create_task(client.post("/predict", json={"texts": ["fine", "okay"]}))
        await asyncio.sleep(0.05)
        for body in ({"text": "one more"}, {"texts": ["two", "more"]}):
            r = await client.post("/predict", json=body)
            assert_error(r, 503, "overloaded", "SENTIMENT_MAX_QUEUE_TEXTS=2")
            assert r.headers["retry-after"] == "3"
        probe.gate.set()
        assert (await running).status_code == 200
        assert (await queued).status_code == 200
        assert (await client.post("/predict", json={"text": "after"})).status_code == 200


async def test_failing_batch_fails_only_its_own_requests(small_artifact: Path) -> None:
    marker = "kaboom kaboom kaboom this text makes the model fail"
    probe = ModelProbe(fail_marker=marker)
    async with serve(small_artifact, probe, max_batch_size=1) as (_, client):
        results = await asyncio.gather(
            client.post("/predict", json={"text": "a good film"}),
            client.post("/predict", json={"text": marker}),
            client.post("/predict", json={"texts": ["bad film", "great film"]}),
        )
        assert [r.status_code for r in results] == [200, 500, 200]
        err = assert_error(results[1], 500, "internal_error", "batch")
        assert err["id"] in err["message"] and results[1].headers["x-request-id"] == err["id"]
        assert (await client.post("/predict", json={"text": "the next request"})).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "sentiment_batch_failures_total") == 1


def _leaving_client(app: Any, text: str) -> tuple[asyncio.Task[None], asyncio.Event, list[dict[str, Any]]]:
    """Call the app as uvicorn would for POST /predict {"text": text}; the client leaves when the
    returned event is set. Returns the app's task, that event and the messages it sent."""
    body = orjson.dumps({"text": text})
    disconnected = asyncio.Event()
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("test", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    return asyncio.create_task(app(scope, receive, send)), disconnected, sent


async def test_disconnected_client_texts_are_dropped_before_inference(small_artifact: Path) -> None:
    probe = ModelProbe()
    async with serve(small_artifact, probe) as (app, client):
        probe.reset(block=True)
        running = asyncio.create_task(client.post("/predict", json={"text": "good"}))
        await probe.wait_entered()
        gone, disconnected, sent = _leaving_client(app, "nobody will read this answer")
        await asyncio.sleep(0.05)
        service = app.state.engine
        assert service.batcher.queued_texts == 1
        disconnected.set()
        await gone
        assert service.batcher.queued_texts == 0
        probe.gate.set()
        assert (await running).status_code == 200
        dropped = service.active.artifact.tokenize(["nobody will read this answer"])[0][0]
        assert not probe.saw(dropped), "the dropped text reached the model"
        assert sent[0]["status"] == 499  # logged as client-closed; nobody receives it
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, 'sentiment_rejected_texts_total{reason="dropped"}') == 1


async def test_a_client_leaving_from_deep_in_the_queue_frees_its_room_at_once(
    small_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request behind a full batch is watched from the start; one that would run next is watched only
    # after WATCH_AFTER_S (made long here, so only the first kind can be dropped within the test).
    monkeypatch.setattr(predict_route, "WATCH_AFTER_S", 60.0)
    probe = ModelProbe()
    async with serve(small_artifact, probe, max_batch_size=1) as (app, client):
        probe.reset(block=True)
        running = asyncio.create_task(client.post("/predict", json={"text": "good"}))
        await probe.wait_entered()
        batcher = app.state.engine.batcher
        shallow, shallow_gone, _ = _leaving_client(app, "next in line")
        while batcher.queued_texts < 1:
            await asyncio.sleep(0.005)
        deep, deep_gone, sent = _leaving_client(app, "behind a full batch")
        while batcher.queued_texts < 2:
            await asyncio.sleep(0.005)
        deep_gone.set()
        shallow_gone.set()
        await asyncio.wait_for(deep, 5)
        assert sent[0]["status"] == 499
        assert batcher.queued_texts == 1  # the shallow one still holds its room: not watched yet
        probe.gate.set()
        assert (await running).status_code == 200
        await asyncio.wait_for(shallow, 5)  # run, then answered to nobody


async def test_timeout_gives_504_and_drops_the_texts(small_artifact: Path, artifact: Artifact) -> None:
    probe = ModelProbe()
    # 0.5 s, not less: the request after the gate opens must be answered within it on a busy CI host.
    async with serve(small_artifact, probe, request_timeout_s=0.5) as (_, client):
        probe.reset(block=True)
        running = asyncio.create_task(client.post("/predict", json={"text": "first"}))
        await probe.wait_entered()
        r = await client.post("/predict", json={"text": "too late"})
        assert_error(r, 504, "timeout", "SENTIMENT_REQUEST_TIMEOUT_S=0.5")
        probe.gate.set()
        assert (await running).status_code == 504  # it waited past the timeout too
        assert (await client.post("/predict", json={"text": "next"})).status_code == 200
        assert not probe.saw(artifact.tokenize(["too late"])[0][0]), "the timed-out text reached the model"


# --- validation -----------------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def chunks(*parts: bytes) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: _chunks(*parts)  # a fresh stream per request: sent without Content-Length


LIMITS = {"max_texts_per_request": 4, "max_chars_per_text": 50, "max_body_bytes": 1000}

VALIDATION_CASES: list[tuple[str, dict[str, Any], int, str, list[str]]] = [
    ("too many texts", {"json": {"texts": ["a"] * 5}}, 422, "validation_error",
     ["5 texts", "SENTIMENT_MAX_TEXTS_PER_REQUEST=4"]),
    ("text too long", {"json": {"text": "x" * 51}}, 422, "validation_error",
     ["51 characters", "SENTIMENT_MAX_CHARS_PER_TEXT=50", "body.text"]),
    ("one of the texts too long", {"json": {"texts": ["ok", "y" * 60]}}, 422, "validation_error",
     ["body.texts.1", "SENTIMENT_MAX_CHARS_PER_TEXT=50"]),
    ("body too large", {"content": b'{"text": "' + b"z" * 1200 + b'"}',
                        "headers": {"content-type": "application/json"}}, 413, "payload_too_large",
     ["1212 bytes", "SENTIMENT_MAX_BODY_BYTES=1000"]),
    ("body too large, chunked", {"content": chunks(b'{"texts": [', b'"a", ' * 300, b'"b"]}'),
                                 "headers": {"content-type": "application/json"}}, 413, "payload_too_large",
     ["exceeds 1000 bytes", "SENTIMENT_MAX_BODY_BYTES=1000"]),
    ("empty text", {"json": {"text": ""}}, 422, "validation_error", ["empty or only whitespace"]),
    ("whitespace text", {"json": {"texts": ["fine", " \n\t "]}}, 422, "validation_error",
     ["body.texts.1", "empty or only whitespace"]),
    ("empty list", {"json": {"texts": []}}, 422, "validation_error", ["body.texts", "at least 1"]),
    ("missing field", {"json": {}}, 422, "validation_error", ['"text"', '"texts"']),
    ("both fields", {"json": {"text": "a", "texts": ["b"]}}, 422, "validation_error", ["not both"]),
    ("unknown field", {"json": {"txt": "a"}}, 422, "validation_error", ["body.txt", "unknown field"]),
    ("text not a string", {"json": {"text": 5}}, 422, "validation_error", ["body.text", "valid string"]),
    ("texts not a list", {"json": {"texts": "abc"}}, 422, "validation_error", ["body.texts", "valid list"]),
    ("texts of numbers", {"json": {"texts": ["a", 1]}}, 422, "validation_error",
     ["body.texts.1", "valid string"]),
    ("body not an object", {"json": ["a", "b"]}, 422, "validation_error", ["JSON object"]),
    ("invalid JSON", {"content": b'{"text": ', "headers": {"content-type": "application/json"}}, 422,
     "validation_error", ["not valid JSON"]),
    ("no body", {}, 422, "validation_error", ["body is missing"]),
    ("not JSON content type", {"content": b"text=hello", "headers": {"content-type": "text/plain"}}, 422,
     "validation_error", ["Content-Type: application/json"]),
]  # fmt: skip


async def test_validation_errors_say_what_to_fix(small_artifact: Path) -> None:
    async with serve(small_artifact, **LIMITS) as (_, client):
        for name, kwargs, status, code, needles in VALIDATION_CASES:
            if callable(kwargs.get("content")):
                kwargs = {**kwargs, "content": kwargs["content"]()}
            r = await client.post("/predict", **kwargs)
            try:
                assert_error(r, status, code, *needles)
            except AssertionError as e:
                raise AssertionError(f"case {name!r}: {e}") from e
        # at the limits exactly: accepted
        ok = await client.post("/predict", json={"texts": ["w" * 50] * 4})
        assert ok.status_code == 200, ok.text


async def test_404_and_405_use_the_error_body(small_artifact: Path) -> None:
    async with serve(small_artifact) as (_, client):
        assert_error(await client.get("/nope"), 404, "not_found", "/nope")
        r = await client.get("/predict")
        assert_error(r, 405, "method_not_allowed", "GET", "POST")
        assert r.headers["allow"] == "POST"


# --- lifecycle ------------------------------------------------------------------------------------


async def test_ready_is_503_until_start_up_completes(small_artifact: Path) -> None:
    probe = ModelProbe()
    probe.gate.clear()  # hold warm-up
    app = create_app(Settings(model_dir=small_artifact), infer_wrapper=probe)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False, "status": "starting"}
        async with AsyncExitStack() as stack:
            starting = asyncio.create_task(stack.enter_async_context(app.router.lifespan_context(app)))
            await probe.wait_entered()  # loaded and warming up
            r = await client.get("/ready")
            assert r.status_code == 503 and r.headers["retry-after"]
            assert_error(await client.post("/predict", json={"text": "hi"}), 503, "not_ready")
            assert_error(await client.get("/info"), 503, "not_ready")
            assert (await client.get("/health")).status_code == 200  # alive all along
            probe.gate.set()
            await starting
            assert (await client.get("/ready")).json() == {"ready": True, "status": "ready"}


async def test_start_up_hides_its_heap_from_the_garbage_collector(small_artifact: Path) -> None:
    import gc

    gc.unfreeze()
    app = create_app(Settings(model_dir=small_artifact))
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
        # the model, FastAPI's routes and everything imported: a full collection no longer walks them
        assert frozen > 50_000, frozen


async def test_shutdown_refuses_new_work_and_finishes_queued_work(small_artifact: Path) -> None:
    probe = ModelProbe()
    app = create_app(Settings(model_dir=small_artifact, shutdown_grace_s=10), infer_wrapper=probe)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        stack = AsyncExitStack()
        await stack.enter_async_context(app.router.lifespan_context(app))
        probe.reset(block=True)
        in_flight = [
            asyncio.create_task(client.post("/predict", json={"text": f"text {i}"})) for i in range(5)
        ]
        await probe.wait_entered()
        stopping = asyncio.create_task(stack.aclose())  # what uvicorn does after SIGTERM
        await asyncio.sleep(0.05)
        r = await client.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "draining"
        r = await client.post("/predict", json={"text": "too late"})
        assert_error(r, 503, "shutting_down")
        assert r.headers["retry-after"]
        assert not stopping.done()  # waiting for the queued texts
        probe.gate.set()
        await stopping
        assert [t.result().status_code for t in in_flight] == [200] * 5


@pytest.mark.slow
async def test_sigterm_turns_ready_off_refuses_work_then_exits(small_artifact: Path) -> None:
    with uvicorn_server(small_artifact, SENTIMENT_DRAIN_DELAY_S="3") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.post("/predict", json={"text": "good"})).status_code == 200
            server.proc.send_signal(signal.SIGTERM)
            for _ in range(100):  # the signal arrives asynchronously
                r = await client.get("/ready")
                if r.status_code != 200:
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 503 and r.json()["status"] == "draining"
            assert_error(await client.post("/predict", json={"text": "late"}), 503, "shutting_down")
        code = await asyncio.to_thread(server.proc.wait, 60)
        # uvicorn re-raises the signal after a clean shutdown, so the exit status is "killed by SIGTERM"
        assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()


# --- start-up checks ------------------------------------------------------------------------------


@pytest.fixture
def corrupt_artifact(small_artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "corrupt"
    shutil.copytree(small_artifact, copy)
    model = copy / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return copy


@pytest.mark.slow
async def test_corrupt_artifact_stops_start_up_naming_the_file(corrupt_artifact: Path) -> None:
    app = create_app(Settings(model_dir=corrupt_artifact))
    with pytest.raises(ArtifactError, match=r"model\.pt.*sha256"):
        async with app.router.lifespan_context(app):
            pass
    # and through uvicorn: the process exits with the file named, never serving
    text = await asyncio.to_thread(failed_start_up, corrupt_artifact)
    assert str(corrupt_artifact / "model.pt") in text and "does not match" in text


async def test_missing_artifact_stops_start_up(tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=tmp_path / "nothing-here"))
    with pytest.raises(ArtifactError, match="nothing-here"):
        async with app.router.lifespan_context(app):
            pass


# --- operations and docs --------------------------------------------------------------------------


async def test_health_info_and_metrics(small_artifact: Path, artifact: Artifact) -> None:
    async with serve(small_artifact, max_batch_size=32) as (_, client):
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).json() == {"ready": True, "status": "ready"}
        info = (await client.get("/info")).json()
        assert info["model"]["version"] == artifact.meta["version"]
        assert info["labels"] == artifact.labels
        assert info["metrics"] == artifact.meta["metrics"]
        assert info["batching"]["max_batch_size"] == 32
        assert info["limits"]["max_texts_per_request"] == Settings().max_texts_per_request
        await client.post("/predict", json={"texts": ["good", "bad"]})
        r = await client.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        for name in (
            "sentiment_requests_total",
            "sentiment_request_duration_seconds_bucket",
            "sentiment_queue_seconds_bucket",
            "sentiment_inference_seconds_bucket",
            "sentiment_batch_size_bucket",
            "sentiment_queue_depth",
        ):
            assert name in r.text, name


async def test_docs_and_openapi_declare_examples_and_every_error(small_artifact: Path) -> None:
    async with serve(small_artifact, max_texts_per_request=8, max_chars_per_text=300) as (_, client):
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        schema = (await client.get("/openapi.json")).json()
    error_ref = "#/components/schemas/ErrorResponse"
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            assert "200" in responses and "500" in responses, (method, path)
            for status, resp in responses.items():
                if status.startswith(("4", "5")) and not (path == "/ready" and status == "503"):
                    assert resp["content"]["application/json"]["schema"]["$ref"] == error_ref, (path, status)
                    assert resp["content"]["application/json"]["examples"], (path, status)
    predict = schema["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "413", "422", "500", "503", "504"}
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert set(predict["requestBody"]["content"]["application/json"]["examples"]) >= {
        "one text",
        "several texts",
        "explained",
    }
    explanation = schema["components"]["schemas"]["Explanation"]
    assert explanation["examples"] and set(explanation["required"]) == {
        "method", "target", "tokens", "explained_tokens", "total_tokens"
    }  # fmt: skip
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's own 422 shape is replaced by ours
    for name in ("PredictResponse", "InfoResponse", "ReadyResponse", "HealthResponse"):
        assert components[name]["examples"], name
    for name, model in components.items():
        for field, prop in model.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"
    texts = next(
        b for b in components["PredictRequest"]["properties"]["texts"]["anyOf"] if b.get("type") == "array"
    )
    assert texts["maxItems"] == 8 and texts["items"]["maxLength"] == 300
    assert set(schema["paths"]) >= {"/predict", "/health", "/ready", "/info", "/metrics", "/admin/reload"}


# --- python -m app --------------------------------------------------------------------------------


async def test_python_m_app_serves_with_settings_from_the_environment(
    small_artifact: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import app.__main__ as entry

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(target=target, **kw))
    monkeypatch.setenv("SENTIMENT_MODEL_DIR", str(small_artifact))
    monkeypatch.setenv("SENTIMENT_HOST", "0.0.0.0")
    port = free_port()
    monkeypatch.setenv("SENTIMENT_PORT", str(port))  # the start checks that it can listen there
    entry.main([])
    assert f"http://127.0.0.1:{port}/docs" in capsys.readouterr().out
    assert seen["target"] == "app.main:app"
    assert (seen["host"], seen["port"], seen["workers"]) == ("0.0.0.0", port, 1)
    assert (seen["loop"], seen["access_log"]) == ("uvloop", False)
    assert seen["http"] == "app.transport:GuardedHttpTools"  # uvicorn's httptools with transport limits


def test_engine_has_no_http_and_every_engine_error_has_one_status() -> None:
    """core/ imports nothing of the HTTP stack, and app/errors.py's table covers every engine error."""
    import ast

    import core.errors as engine_errors
    from app.errors import ENGINE_ERRORS

    for path in sorted((REPO / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            http = {"app", "fastapi", "starlette", "uvicorn", "httpx"}
            assert not [n for n in names if n.split(".")[0] in http], (path, names)
    base = engine_errors.EngineError
    raised = {c for c in vars(engine_errors).values() if isinstance(c, type) and issubclass(c, base)} - {base}
    assert raised == set(ENGINE_ERRORS), raised ^ set(ENGINE_ERRORS)
    assert all(400 <= status < 600 for status, _, _ in ENGINE_ERRORS.values())
    retry = {c.__name__ for c, (_, _, r) in ENGINE_ERRORS.items() if r}
    assert retry == {"Overloaded", "NotReady", "ShuttingDown"}, retry
