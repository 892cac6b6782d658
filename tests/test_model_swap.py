"""Live model updates (POST /admin/reload, core/model_swap.py): a swap under load fails no request and
each request is tokenized, scored and labelled by one model; bad artifacts are refused while the old
model keeps serving. Uses the real small artifact and a second one derived from it."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from core.batcher import Batcher
from model.artifact import Artifact, ArtifactError, load_artifact, sha256_file
from tests.helpers import assert_error, metric, serve

KEY = "admin-key-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}


def derive(src: Path, dst: Path, version: str) -> Path:
    """A second, different artifact: the vocabulary's ids shuffled (embedding rows moved to match) and
    the classifier's bias shifted. Its probabilities differ from the source's, and ids from one
    tokenizer scored by the other model give neither model's answer: a mixed-up job shows."""
    shutil.copytree(src, dst)
    model = torch.jit.load(str(dst / "model.pt"))
    tok = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = tok["model"]["vocab"]
    perm = list(range(2, len(vocab)))  # [PAD]=0 and [UNK]=1 stay
    random.Random(0).shuffle(perm)
    perm = [0, 1, *perm]  # old id -> new id
    with torch.no_grad():
        weight = model.embedding.weight
        moved = torch.empty_like(weight)
        moved[torch.tensor(perm)] = weight
        weight.copy_(moved)
        model.classifier.bias.add_(torch.tensor([0.8, -0.8]))
    torch.jit.save(model, str(dst / "model.pt"))
    tok["model"]["vocab"] = {t: perm[i] for t, i in vocab.items()}
    (dst / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    meta = json.loads((dst / "meta.json").read_text(encoding="utf-8"))
    meta["version"] = version
    for name in ("model.pt", "tokenizer.json"):
        meta["files"][name] = sha256_file(dst / name)
    (dst / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def models(small_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/{v1, v2, latest -> v1}: v1 is the small artifact without its n-gram bag (hashed bigrams
    of shuffled ids cannot be moved to match), v2 derived from v1."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(small_artifact, root / "v1")
    model = torch.jit.load(str(root / "v1/model.pt"))
    with torch.no_grad():
        model.ngram_weight.zero_()
    torch.jit.save(model, str(root / "v1/model.pt"))
    meta = json.loads((root / "v1/meta.json").read_text(encoding="utf-8"))
    meta["files"]["model.pt"] = sha256_file(root / "v1/model.pt")
    (root / "v1/meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    derive(root / "v1", root / "v2", "small-v2")
    (root / "latest").symlink_to("v1")
    return root


def bad_copy(root: Path, name: str, src: str = "v2") -> Path:
    dst = root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root / src, dst)
    return dst


def probs(pred: dict, labels: list[str]) -> list[float]:
    return [pred["probabilities"][label] for label in labels]


@pytest.mark.asyncio
async def test_swap_under_load_fails_nothing_and_switches_each_client_once(
    models: Path, data_mirror: Path
) -> None:
    v1, v2 = load_artifact(models / "v1"), load_artifact(models / "v2")
    lines = (data_mirror / "sst2" / "sentences" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:97]
    texts = [line.split("\t")[0] for line in lines]
    expected = {
        a.meta["version"]: dict(zip(texts, a.predict_proba(texts).tolist(), strict=True)) for a in (v1, v2)
    }
    assert v1.meta["version"] != v2.meta["version"]
    for text in texts[:8]:  # the two models disagree, so a response shows which one scored it
        assert expected["small"][text] != pytest.approx(expected["small-v2"][text], abs=1e-3)

    # (client, sent at, status, version, probabilities)
    log: list[list[tuple[float, int, str | None, list[float] | None]]] = [[] for _ in range(16)]
    stop = asyncio.Event()
    async with serve(models, api_key=KEY, warmup=True) as (_, client):

        async def run(k: int) -> None:
            i = k * 5
            while not stop.is_set():
                text = texts[i % len(texts)]
                i += 1
                r = await client.post("/predict", json={"text": text}, headers=AUTH)
                body = r.json()
                if r.status_code != 200:
                    log[k].append((time.perf_counter(), r.status_code, None, None))
                    continue
                (pred,) = body["predictions"]
                version = body["model"]["version"]
                log[k].append((time.perf_counter(), 200, version, probs(pred, v1.labels)))
                assert probs(pred, v1.labels) == pytest.approx(expected[version][text], abs=1e-5), (
                    f"client {k}: {text!r} answered as {version} with another model's probabilities"
                )

        clients = [asyncio.create_task(run(k)) for k in range(16)]
        await asyncio.sleep(1.0)
        (models / "latest").unlink()
        (models / "latest").symlink_to("v2")  # the default reload follows `latest` again
        try:
            r = await client.post("/admin/reload", headers=AUTH)
        finally:
            (models / "latest").unlink()
            (models / "latest").symlink_to("v1")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*clients)
        info = (await client.get("/info")).json()
        metrics = (await client.get("/metrics")).text

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] is True and body["path"] == str((models / "v2").resolve())
    assert body["model"]["version"] == "small-v2" and body["previous"]["version"] == "small"
    assert body["seconds"]["warmup"] > 0
    failed = [entry for client_log in log for entry in client_log if entry[1] != 200]
    assert failed == [], f"{len(failed)} failed requests during the swap"
    for k, client_log in enumerate(log):
        versions = [v for _, _, v, _ in client_log]
        switches = sum(a != b for a, b in itertools.pairwise(versions))
        assert versions[0] == "small" and versions[-1] == "small-v2" and switches == 1, (k, versions)
    total = sum(map(len, log))
    assert total > 16 * 4, total
    print(
        f"swap under load: {total} requests from 16 clients, {len(failed)} failed, reload {body['seconds']}"
    )
    assert info["model"]["version"] == "small-v2"
    assert metric(metrics, 'sentiment_model_info{name="sentiment-lstm-sst2",version="small-v2"}') == 1
    assert 'version="small"}' not in metrics
    assert metric(metrics, 'sentiment_model_reloads_total{result="swapped"}') == 1


@pytest.mark.asyncio
async def test_bad_artifacts_are_refused_and_the_old_model_keeps_serving(models: Path) -> None:
    corrupt = bad_copy(models, "corrupt")
    data = bytearray((corrupt / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.pt").write_bytes(bytes(data))

    schema = bad_copy(models, "schema")
    meta = json.loads((schema / "meta.json").read_text(encoding="utf-8"))
    (schema / "meta.json").write_text(json.dumps({**meta, "schema_version": 99}), encoding="utf-8")

    mismatch = bad_copy(models, "mismatch")  # v2's model with a tokenizer of another size
    tok = json.loads((mismatch / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["vocab"] = {t: i for t, i in tok["model"]["vocab"].items() if i < 1000}
    (mismatch / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    meta = json.loads((mismatch / "meta.json").read_text(encoding="utf-8"))
    meta["files"]["tokenizer.json"] = sha256_file(mismatch / "tokenizer.json")
    (mismatch / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    labels = bad_copy(models, "labels")
    meta = json.loads((labels / "meta.json").read_text(encoding="utf-8"))
    (labels / "meta.json").write_text(json.dumps({**meta, "labels": ["neg", "pos"]}), encoding="utf-8")

    cases = [
        ("corrupt", 422, "invalid_artifact", ["corrupt/model.pt: sha256", "does not match"]),
        ("schema", 422, "invalid_artifact", ["schema/meta.json: schema_version 99"]),
        ("mismatch", 422, "invalid_artifact", ["tokenizer.json", "different runs"]),
        ("labels", 409, "incompatible_artifact", ["meta.json", "labels ['neg', 'pos'] differ"]),
        ("nothing-here", 422, "invalid_artifact", ["nothing-here", "no meta.json"]),
        ("/etc", 422, "validation_error", ["body.model_dir", "outside the model root"]),
        ("../..", 422, "validation_error", ["outside the model root"]),
    ]  # fmt: skip
    async with serve(models, api_key=KEY) as (app, client):
        before = (await client.post("/predict", json={"text": "a great film ."}, headers=AUTH)).json()
        for name, status, code, needles in cases:
            r = await client.post("/admin/reload", json={"model_dir": name}, headers=AUTH)
            err = assert_error(r, status, code, *needles)
            assert str(models.resolve()) not in err["message"], err  # no host paths in answers
            if status != 422 or code == "invalid_artifact":
                assert "current model keeps serving" in err["message"], err
            after = (await client.post("/predict", json={"text": "a great film ."}, headers=AUTH)).json()
            assert after["model"]["version"] == "small", name
            assert after["predictions"] == before["predictions"], name
            assert (await client.get("/info")).json()["model"]["version"] == "small"
        assert app.state.engine.active.artifact.path == (models / "v1").resolve()
        metrics = (await client.get("/metrics")).text
        # and a good one still loads afterwards
        r = await client.post("/admin/reload", json={"model_dir": "v2"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["model"]["version"] == "small-v2"
    assert metric(metrics, 'sentiment_model_reloads_total{result="refused"}') == len(cases)
    assert metric(metrics, 'sentiment_model_info{name="sentiment-lstm-sst2",version="small"}') == 1


@pytest.mark.asyncio
async def test_reloads_are_serialised_and_need_the_key(models: Path) -> None:
    async with serve(models, api_key=KEY) as (_, client):
        a, b = await asyncio.gather(
            client.post("/admin/reload", json={"model_dir": "v2"}, headers=AUTH),
            client.post("/admin/reload", json={"model_dir": str(models / "v2")}, headers=AUTH),
        )
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        # one loaded it, the other found it serving already
        assert sorted([a.json()["changed"], b.json()["changed"]]) == [False, True]
        assert b.json()["model"]["version"] == "small-v2"
        # no body: SENTIMENT_MODEL_DIR's `latest` (-> v1) again
        r = await client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["changed"] is True
        assert r.json()["model"]["version"] == "small"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await client.post("/admin/reload", json={"model_dir": "v2"}, headers=headers)
            assert_error(r, 401, "unauthorized", "Authorization: Bearer")
        r = await client.post("/admin/reload", json={"modeldir": "v2"}, headers=AUTH)  # a typo never reloads
        assert_error(r, 422, "validation_error", "body.modeldir")
        schema = (await client.get("/openapi.json")).json()
    op = schema["paths"]["/admin/reload"]["post"]
    assert op["security"] == [{"apiKey": []}]
    assert {"200", "401", "409", "422", "500", "503"} <= set(op["responses"])
    # without a key the admin endpoints are off, whoever asks
    async with serve(models) as (_, client):
        r = await client.post("/admin/reload", json={"model_dir": "v2"})
        assert_error(r, 403, "admin_disabled", "SENTIMENT_API_KEY")
        assert (await client.post("/predict", json={"text": "fine"})).json()["model"]["version"] == "small"
        schema = (await client.get("/openapi.json")).json()
    op = schema["paths"]["/admin/reload"]["post"]
    assert "403" in op["responses"] and "security" not in op


@pytest.mark.asyncio
async def test_batcher_never_mixes_models_in_a_forward_pass() -> None:
    """Jobs queued for model A still run on A after set_infer(B); A's and B's texts never share a batch."""
    calls: list[tuple[str, int]] = []

    def model(name: str, value: float):  # type: ignore[no-untyped-def]
        def infer(ids: list[list[int]]) -> list[list[float]]:
            calls.append((name, len(ids)))
            return [[value, 1 - value] for _ in ids]

        return infer

    a, b = model("a", 0.25), model("b", 0.75)
    batcher = Batcher(a, max_batch_size=64)
    batcher.start()
    try:
        jobs_a = [batcher.submit([[1, 2, 3]] * 3) for _ in range(4)]
        batcher.set_infer(b)
        jobs_b = [batcher.submit([[4, 5]] * 2) for _ in range(4)]
        explicit_a = batcher.submit([[6]], infer=a)  # tokenized by A before the swap, submitted late
        rows_a = await asyncio.gather(*(j.future for j in jobs_a))
        rows_b = await asyncio.gather(*(j.future for j in jobs_b))
        rows_late = await explicit_a.future
    finally:
        await batcher.close(5)
    assert all(row == [0.25, 0.75] for rows in rows_a for row in rows)
    assert all(row == [0.75, 0.25] for rows in rows_b for row in rows)
    assert rows_late == [[0.25, 0.75]]
    # batches in FIFO order: all of A's queued texts, then B's, then the late A job alone
    assert calls == [("a", 12), ("b", 8), ("a", 1)]


def test_derived_artifact_loads_and_differs(models: Path) -> None:
    v1, v2 = load_artifact(models / "v1"), load_artifact(models / "v2")
    assert isinstance(v2, Artifact) and v2.meta["version"] == "small-v2"
    text = ["a gorgeous , witty , seductive movie ."]
    assert v1.tokenize(text)[0] != v2.tokenize(text)[0]  # other ids for the same words
    p1, p2 = v1.predict_proba(text)[0].tolist(), v2.predict_proba(text)[0].tolist()
    # the same logits but for the bias shift of 0.8 - (-0.8) towards the first label (divided by T)
    shift = math.log(p2[0] / p2[1]) - math.log(p1[0] / p1[1])
    assert shift == pytest.approx(1.6 / v1.temperature, abs=1e-4)


def _with_files(root: Path, name: str, files: dict[str, str]) -> Path:
    d = bad_copy(root, name)
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    meta["files"].update(files)
    (d / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return d


@pytest.mark.asyncio
async def test_reload_never_reaches_outside_the_model_root(models: Path, tmp_path: Path) -> None:
    """Everything is resolved before the root check: a `latest` or a model.pt linking out of the root
    is refused, `files` entries naming other paths are refused before any is read (no existence or
    checksum oracle), path strings no file system takes are a 422 (not a 500), and no answer holds a
    host path."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(models / "v2", elsewhere / "art")
    (models / "x").mkdir(exist_ok=True)
    (models / "x" / "latest").unlink(missing_ok=True)
    (models / "x" / "latest").symlink_to(elsewhere / "art")
    linked = bad_copy(models, "linked")
    (linked / "model.pt").unlink()
    (linked / "model.pt").symlink_to(elsewhere / "art" / "model.pt")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model file\n", encoding="utf-8")
    up = "../" * 12 + str(secret).lstrip("/")
    _with_files(models, "dotdot", {up: "0" * 64})
    _with_files(models, "absolute", {str(secret): "0" * 64})
    cases = [
        ("x", "validation_error", ["leads outside the model root"]),
        (str(models / "x"), "validation_error", ["leads outside the model root"]),
        ("linked", "invalid_artifact", ["linked/model.pt: resolves outside the artifact folder"]),
        ("dotdot", "invalid_artifact", ["dotdot/meta.json", "not a relative file name"]),
        ("absolute", "invalid_artifact", ["absolute/meta.json", "not a relative file name"]),
        ("\u0000", "validation_error", ["control character"]),
        ('v2\n{"level": "info"}', "validation_error", ["control character"]),
        ("a" * 300, "validation_error", ["longer than 255 bytes"]),
        ("v1/" + "b" * 256 + "/x", "validation_error", ["longer than 255 bytes"]),
    ]
    async with serve(models, api_key=KEY) as (app, client):
        for model_dir, code, needles in cases:
            r = await client.post("/admin/reload", json={"model_dir": model_dir}, headers=AUTH)
            err = assert_error(r, 422, code, *needles)
            message = err["message"].replace(repr(model_dir[:200]), "")  # the client's own string aside
            for host_path in (str(models.resolve()), str(elsewhere), str(tmp_path)):
                assert host_path not in message, err
            assert "does not match" not in err["message"] and "missing" not in err["message"], err
            # the service keeps serving, the old model
            ok = await client.post("/predict", json={"text": "a great film ."}, headers=AUTH)
            assert ok.status_code == 200 and ok.json()["model"]["version"] == "small"
        assert app.state.engine.active.artifact.path == (models / "v1").resolve()
    shutil.rmtree(models / "x")


def _allow(path: Path, *model_dirs: Path) -> Path:
    path.write_text("".join(f"{sha256_file(d / 'model.pt')}  {d.name}/model.pt\n" for d in model_dirs))
    return path


@pytest.mark.asyncio
async def test_an_allow_list_refuses_unlisted_models_before_loading_them(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a model runs its code, and meta.json's checksums sit beside it: with
    SENTIMENT_MODEL_ALLOWLIST, a model.pt whose digest the operator did not list (here v2, standing in
    for a crafted TorchScript file) is refused before torch.jit.load ever opens it; listing it lets it
    load on the next reload (the list is re-read)."""
    loaded: list[str] = []
    real_load = torch.jit.load

    def recording_load(f: str, *args: Any, **kwargs: Any) -> Any:
        loaded.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", recording_load)
    allow = _allow(tmp_path / "allowed.txt", models / "v1")
    async with serve(models, api_key=KEY, model_allowlist=allow) as (app, client):
        r = await client.post("/admin/reload", json={"model_dir": "v2"}, headers=AUTH)
        assert_error(r, 422, "invalid_artifact", "v2/model.pt", "not in the model allow-list")
        assert not any("v2" in f for f in loaded), loaded
        assert app.state.engine.active.identity["version"] == "small"
        _allow(allow, models / "v1", models / "v2")
        r = await client.post("/admin/reload", json={"model_dir": "v2"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["model"]["version"] == "small-v2", r.text
    # at start-up too: the server does not start on an unlisted model, nor with the list in the model folder
    for listed, where in ((models / "v2", tmp_path / "only-v2.txt"), (models / "v1", models / "allowed.txt")):
        with pytest.raises(ArtifactError, match="allow-list"):
            async with serve(models / "v1", model_allowlist=_allow(where, listed)):
                pass
    (models / "allowed.txt").unlink()
    bad = tmp_path / "bad.txt"
    bad.write_text("# digests\nnot-a-digest  model.pt\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"bad.txt:2: expected a sha256 digest"):
        async with serve(models, model_allowlist=bad):
            pass


@pytest.mark.asyncio
async def test_each_reload_and_drain_logs_one_json_line(models: Path) -> None:
    """core.* lines go through the JSON formatter at the configured level: one line per reload (who,
    what, result) and per drain; a newline in the request cannot split a line."""
    import io
    import logging

    from app.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    core_log = logging.getLogger("core")
    async with serve(models, api_key=KEY, log_level="info") as (_, client):
        assert core_log.level == logging.INFO and not core_log.propagate
        assert any(isinstance(h.formatter, JsonFormatter) for h in core_log.handlers)
        core_log.addHandler(handler)
        try:
            hdrs = {**AUTH, "X-Request-ID": "reload-1"}
            assert (
                await client.post("/admin/reload", json={"model_dir": "v2"}, headers=hdrs)
            ).status_code == 200
            r = await client.post("/admin/reload", json={"model_dir": "v1\nforged"}, headers=AUTH)
            assert r.status_code == 422
            r = await client.post("/admin/reload", json={"model_dir": "nothing-here"}, headers=AUTH)
            assert r.status_code == 422
        finally:
            pass
    core_log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is one object
    reloads = [x for x in lines if x.get("event") == "model_reload"]
    assert [x["result"] for x in reloads] == ["swapped", "refused", "refused"], reloads
    assert reloads[0]["model_dir"] == "v2" and "reload-1" in reloads[0]["who"]
    assert reloads[0]["model"]["version"] == "small-v2" and reloads[0]["previous"]["version"] == "small"
    assert reloads[1]["model_dir"] == "v1\nforged" and reloads[1]["error"] == "InvalidInput"
    assert [x["event"] for x in lines if x.get("event") in ("drain", "drained")] == ["drain", "drained"]
