"""Faults: a broken artifact stops start-up with a message naming the file and the problem (through
`load_artifact`, the app's lifespan and a real uvicorn process), and clients that disconnect
mid-request leave no queued texts behind. Uses copies of the real small artifact."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_api import _free_port, _uvicorn, _wait_ready, metric

from app.main import create_app
from app.settings import Settings
from model.artifact import ArtifactError, load_artifact, sha256_file

pytestmark = pytest.mark.asyncio


def _rehash(copy: Path, name: str) -> None:
    """Record the (changed) file's sha256 in meta.json, so the checksum check passes and the
    fault reaches the loader behind it."""
    meta_path = copy / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][name] = sha256_file(copy / name)
    meta_path.write_text(json.dumps(meta, indent=2))


def truncate_model(copy: Path) -> tuple[str, str]:
    model = copy / "model.pt"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    _rehash(copy, "model.pt")
    return "model.pt", "not a loadable TorchScript file"


def unknown_schema_version(copy: Path) -> tuple[str, str]:
    meta_path = copy / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = 99
    meta_path.write_text(json.dumps(meta))
    return "meta.json", "schema_version 99 is not supported"


def vocabulary_mismatch(copy: Path) -> tuple[str, str]:
    path = copy / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    size = len(vocab)
    # A tokenizer from another run: 100 fewer words (ids stay contiguous, so it still loads).
    tokenizer["model"]["vocab"] = {w: i for w, i in vocab.items() if i < size - 100}
    path.write_text(json.dumps(tokenizer), encoding="utf-8")
    _rehash(copy, "tokenizer.json")
    return "tokenizer.json", f"vocabulary has {size - 100} tokens but model.pt embeds {size}"


FAULTS: dict[str, Callable[[Path], tuple[str, str]]] = {
    "truncated-model": truncate_model,
    "unknown-schema-version": unknown_schema_version,
    "vocabulary-mismatch": vocabulary_mismatch,
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_artifact_fault_stops_start_up_naming_file_and_problem(
    small_artifact: Path, tmp_path: Path, fault: str
) -> None:
    copy = tmp_path / fault
    shutil.copytree(small_artifact, copy)
    name, problem = FAULTS[fault](copy)
    expected = f"{copy / name}: "

    with pytest.raises(ArtifactError) as raised:
        load_artifact(copy)
    message = str(raised.value)
    assert message.startswith(expected) and problem in message, message
    assert "Traceback" not in message

    app = create_app(Settings(model_dir=copy))
    with pytest.raises(ArtifactError) as raised:
        async with app.router.lifespan_context(app):
            pass
    assert str(raised.value) == message
    assert not app.state.service.ready

    # and through uvicorn: the process exits with the file and the problem named, never serving
    proc = _uvicorn(copy, _free_port())
    out, _ = await asyncio.to_thread(proc.communicate, None, 90)
    text = out.decode(errors="replace")
    assert proc.returncode != 0, text
    assert expected in text and problem in text, text
    assert "Application startup failed" in text


# --- clients that go away -------------------------------------------------------------------------


def _post_and_vanish(port: int, body: bytes, *, partial: bool) -> None:
    """Send a POST /predict and close the connection without reading the answer; with `partial`,
    close half-way through the body (Content-Length promises more)."""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + (body[: len(body) // 2] if partial else body))
        time.sleep(0.01)
    # closed: the server sees http.disconnect while the texts wait or run


async def test_queue_depth_returns_to_zero_after_a_burst_of_disconnecting_clients(
    small_artifact: Path,
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Small batches, so most of the burst is still queued when its clients leave.
    proc = _uvicorn(small_artifact, port, SENTIMENT_MAX_BATCH_SIZE="8")
    log: list[bytes] = []
    threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True).start()
    try:
        await asyncio.to_thread(_wait_ready, url, proc)
        words = "an engrossing , moving and beautifully acted story but a dull mess " * 40
        body = json.dumps({"texts": [f"{i} {words}" for i in range(64)]}).encode()
        threads = [
            threading.Thread(target=_post_and_vanish, args=(port, body), kwargs={"partial": i % 4 == 0})
            for i in range(40)
        ]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join, 30)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            depth = None
            for _ in range(300):  # up to ~30 s on a busy machine
                depth = metric((await client.get("/metrics")).text, "sentiment_queue_depth")
                if depth == 0:
                    break
                await asyncio.sleep(0.1)
            assert depth == 0, f"{depth} texts still counted as queued after every client left"
            metrics = (await client.get("/metrics")).text
            # the burst really was cut short: texts of departed clients were dropped unrun
            assert metric(metrics, 'sentiment_rejected_texts_total{reason="dropped"}') > 0, metrics
            # and the server is healthy afterwards
            assert (await client.get("/ready")).status_code == 200
            r = await client.post("/predict", json={"text": "a great film ."})
            assert r.status_code == 200
            assert metric((await client.get("/metrics")).text, "sentiment_queue_depth") == 0
    finally:
        proc.terminate()
        proc.wait(30)
    assert b"Traceback" not in b"".join(log), b"".join(log).decode(errors="replace")[-3000:]
