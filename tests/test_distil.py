"""Distillation stages end to end on a slice of real SST-2 with a tiny randomly initialised BERT
teacher saved in Hugging Face format: teacher -> transfer set -> teacher labels -> student, cached."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from model.tokenizer import UNK_ID, token_ids, train_tokenizer
from training import distil, teacher
from training.cache import CacheError, Stage
from training.cli import main as train_main
from training.cli import parse_config
from training.config import CHOSEN_ON_VAL, PRIOR_POWERS
from training.progress import LineProgress
from training.transfer import AugmentSettings, augment, build, sentences

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory, data_mirror: Path) -> Path:
    """A 1-layer BERT (hidden 32) with a word-piece vocabulary of real SST-2 words, untrained."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-teacher")
    rows = (data_mirror / "sst2/glue/train.tsv").read_text(encoding="utf-8").splitlines()[1:3000]
    words = sorted({w for r in rows for w in r.split("\t")[0].split()})
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(out)
    cfg = BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # logits of a few units, not ~0: something for a student to match
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(out)
    return out


def args(tiny_teacher: Path, out: Path, cache: Path, name: str) -> list[str]:
    return [
        "--teacher", str(tiny_teacher), "--teacher-epochs", "1", "--teacher-batch-size", "16",
        "--teacher-lr", "1e-4", "--max-train-examples", "400", "--augment-variants", "2",
        "--unlabelled-sentences", "300", "--epochs", "2", "--embed-dim", "16", "--hidden-dim", "16",
        "--ngram-buckets", "0", "--lr", "1e-2", "--w2v-epochs", "1", "--bow-epochs", "0", "--threads", "1",
        "--no-progress",
        "--cache-dir", str(cache), "--out", str(out), "--run-name", name, "--half-embeddings",
    ]


@pytest.fixture(scope="module")
def distilled(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    out, cache = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("cache")
    assert train_main(args(tiny_teacher, out, cache, "first")) == 0
    return out, cache, tiny_teacher


@pytest.mark.slow
def test_distilled_artifact_records_teacher_and_transfer_set(distilled):
    out, _, tiny = distilled
    meta = json.loads((out / "first/meta.json").read_text())
    d = meta["distillation"]
    # a local teacher is named by its folder, not by a path of the training machine
    assert d["teacher"]["source"] == tiny.name and str(tiny.parent) not in json.dumps(meta)
    assert set(d["teacher"]["accuracy"]) == {"dev", "test"}
    counts = d["transfer_set"]["counts"]
    assert counts["train"] == 400 and 0 < counts["augmented"] <= 800 and counts["unlabelled"] == 300
    assert d["transfer_set"]["size"] == sum(counts.values())
    assert meta["command"].startswith("python -m training --teacher")
    card = (out / "first/MODEL_CARD.md").read_text()
    assert "## Distillation" in card and f"`{tiny.name}`" in card
    # --half-embeddings: the stored table is float16 and the artifact still passed its parity checks
    from model.artifact import load_artifact

    assert load_artifact(out / "first").model.embedding.weight.dtype == torch.float16


@pytest.mark.slow
def test_three_class_distillation_end_to_end(tiny_teacher: Path, tmp_path: Path):
    """The general mixture (SST-3 phrases and tweets): a three-way teacher head on a two-label
    checkpoint, three-class teacher logits, a three-class student; every evaluation set reported."""
    argv = args(tiny_teacher, tmp_path / "out", tmp_path / "cache", "three")
    assert train_main([*argv, "--preset", "general", "--prior-correction", str(CHOSEN_ON_VAL)]) == 0
    meta = json.loads((tmp_path / "out/three/meta.json").read_text())
    assert meta["labels"] == ["negative", "neutral", "positive"]
    teacher_on = meta["distillation"]["teacher"]
    assert set(teacher_on["accuracy"]) == {"val", "sst3-test", "tweets-test", "sst2-test"}
    assert 0 < teacher_on["macro_recall"]["tweets-test"] < 1
    m = meta["metrics"]
    assert len(m["tweets-test"]["confusion_matrix"]) == 3 and 0 < m["tweets-test"]["macro_recall"] < 1
    assert m["sst2-test"]["scored_on_outputs"] == [0, 2] and len(m["sst2-test"]["confusion_matrix"]) == 2
    logits = torch.load(next((tmp_path / "cache").glob("labels-*/logits.pt")), weights_only=True)
    assert logits.shape[1] == 3
    # --prior-correction -1: the power with the best val macro-recall, recorded and in the card.
    prior = m["prior_correction"]
    assert set(prior["val_macro_recall"]) == {str(p) for p in PRIOR_POWERS}
    assert prior["val_macro_recall"][str(prior["power"])] == max(prior["val_macro_recall"].values())
    assert len(prior["bias_shift"]) == 3
    assert "Prior correction: power" in (tmp_path / "out/three/MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_cached_stages_are_reused(distilled, monkeypatch):
    out, cache, tiny = distilled

    def fail(*a, **k):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr(teacher, "fine_tune", fail)
    monkeypatch.setattr(distil, "logits_for", fail)
    assert train_main(args(tiny, out, cache, "second")) == 0
    a, b = (json.loads((out / n / "meta.json").read_text())["distillation"] for n in ("first", "second"))
    assert a["labels"]["sha256"] == b["labels"]["sha256"]
    assert a["transfer_set"]["sha256"] == b["transfer_set"]["sha256"]

    # a transfer set without the unlabelled sentences is a subset: the teacher labels nothing again
    def nothing_new(model, tokenizer, texts, *a, **k):
        assert texts == [], f"{len(texts)} texts labelled again"
        return torch.empty(0, 2)

    monkeypatch.setattr(distil, "logits_for", nothing_new)
    assert train_main([*args(tiny, out, cache, "subset"), "--unlabelled-sentences", "0"]) == 0
    c = json.loads((out / "subset/meta.json").read_text())["distillation"]
    assert c["transfer_set"]["size"] == a["transfer_set"]["size"] - 300


@pytest.mark.slow
def test_teacher_ensemble_distils_the_mean_of_its_members(distilled, monkeypatch):
    out, cache, tiny = distilled
    real_fine_tune, tuned = teacher.fine_tune, []

    def count(*a, **k):
        tuned.append(a[-2].seed)  # TeacherSettings
        return real_fine_tune(*a, **k)

    monkeypatch.setattr(teacher, "fine_tune", count)
    assert train_main([*args(tiny, out, cache, "ensemble"), "--teacher-seeds", "2"]) == 0
    assert tuned == [14], "member 1 (seed 13) should come from the cache; only seed 14 is new"
    single = json.loads((out / "first/meta.json").read_text())["distillation"]
    d = json.loads((out / "ensemble/meta.json").read_text())["distillation"]
    a, b = d["teacher_members"]
    assert d["teacher"]["members"] == 2 and (a["seed"], b["seed"]) == (13, 14)
    assert a["cache_key"] == single["teacher"]["cache_key"] != b["cache_key"]
    assert a["fine_tuned_sha256"] != b["fine_tuned_sha256"]  # the seeds gave two different teachers
    mean = sum(torch.load(cache / f"labels-{m['labels_cache_key']}" / "logits.pt") for m in (a, b)) / 2
    assert d["labels"]["sha256"] == distil.tensor_sha256(mean) != a["labels_sha256"]
    assert "mean logits of 2 such teachers" in (out / "ensemble/MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_corrupt_cached_stage_is_refused_naming_the_file(distilled, tmp_path, capsys):
    _, cache, tiny = distilled
    broken = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(cache), str(broken)], check=True)
    labels = sorted(broken.glob("labels-*/logits.pt"))
    assert labels
    for logits in labels:
        data = bytearray(logits.read_bytes())
        data[-10] ^= 0xFF
        logits.write_bytes(bytes(data))
    a = args(tiny, tmp_path / "out", broken, "third")
    assert train_main(a) == 1
    err = capsys.readouterr().err
    assert any(str(p) in err for p in labels) and "checksum" in err and "delete" in err
    assert not (tmp_path / "out" / "third").exists()


@pytest.mark.slow
def test_student_moves_towards_the_teacher_logits(distilled, monkeypatch):
    out, cache, tiny = distilled
    from training.student import predict_logits, student_stage
    from training.train import load_splits, network_stage, setup, unlabelled_corpus
    from training.vocabulary import vocabulary_stage

    monkeypatch.setattr(teacher, "fine_tune", lambda *a, **k: pytest.fail("teacher is cached"))
    # no weight averaging: over these 40 steps the average would still be mostly the initial weights
    cfg = parse_config([*args(tiny, out, cache, "unused"), "--ema-decay", "0"])
    ctx, device = setup(cfg)
    splits = load_splits(cfg)
    corpus = unlabelled_corpus(cfg, splits)
    vocab = vocabulary_stage(cfg, splits, corpus, threads=1, show_progress=False)
    teachers = distil.fine_tune_teachers(cfg, splits, device, show_progress=False)
    targets = distil.distillation_targets(
        cfg, splits, vocab, corpus[1:], teachers, device, show_progress=False
    )
    model = network_stage(cfg, vocab, 2)

    def gap() -> float:
        student = predict_logits(model, targets.ids, device)
        return float(torch.nn.functional.mse_loss(student, targets.teacher))

    before = gap()
    val_ids = token_ids(vocab.tokenizer, splits["val"].texts)[0]
    student_stage(cfg, model, targets, val_ids, splits["val"].labels, device, ctx, None)
    after = gap()
    # the same network trained on the gold labels alone, for scale
    distilled, model = model, network_stage(cfg, vocab, 2)
    train_ids = token_ids(vocab.tokenizer, splits["train"].texts)[0]
    student_stage(cfg, model, distil.gold_targets(train_ids, splits["train"]), val_ids,
                  splits["val"].labels, device, ctx, None)
    hard = gap()
    print(f"MSE to the teacher: before {before:.3f}, distilled {after:.3f}, gold labels {hard:.3f}")
    assert after < 0.85 * before and after < 0.75 * hard, (before, after, hard)
    assert distilled is not model


def test_augmentation_masks_replaces_and_cuts():
    s = AugmentSettings(p_mask=0.3, p_replace=0.3, p_ngram=0.0, seed=1)
    import random

    rng = random.Random(0)
    words = ["the", "acting", "was", "good", "but", "the", "plot", "was", "thin"]
    variants = [augment(words, {"good": ["great"], "thin": ["weak"]}, s, rng) for _ in range(200)]
    assert all(len(v) == len(words) for v in variants)
    assert any("[UNK]" in v for v in variants) and any("great" in v for v in variants)
    cut = AugmentSettings(p_mask=0, p_replace=0, p_ngram=1.0)
    assert all(1 <= len(augment(words, {}, cut, rng)) <= 5 for _ in range(100))
    # the student reads a masked word as its unknown token
    tok = train_tokenizer(["the acting was good"], vocab_size=100)
    assert token_ids(tok, ["the [UNK] was good"])[0][0][1] == UNK_ID
    review = ["it", "was", "bad", ".", "i", "loved", "the", "music", "though", "!", "ok"]
    assert sentences(review, AugmentSettings(min_sentence_words=3)) == [
        ["it", "was", "bad", "."],
        ["i", "loved", "the", "music", "though", "!"],
    ]


def test_transfer_set_holds_no_evaluation_text(data_mirror: Path):
    from training.data import load_builtin
    from training.embeddings import pre_tokenize
    from training.fetch import data_dir

    splits = load_builtin("sst2", data_dir("sst2", progress=False), seed=1)
    imdb = load_builtin("imdb", data_dir("imdb", progress=False), seed=1)
    tok = train_tokenizer(splits["train"].texts[:3000], vocab_size=5000)
    train_words = pre_tokenize(tok, splits["train"].texts[:3000])
    ts = build(train_words, splits["train"].labels[:3000], pre_tokenize(tok, imdb["train"].texts[:300]), {},
               AugmentSettings(variants=2, unlabelled=500))
    held_out = {" ".join(w) for w in pre_tokenize(tok, splits["test"].texts + splits["dev"].texts)}
    train_texts = {" ".join(w) for w in train_words}
    assert not (set(ts.texts) - train_texts) & held_out
    assert ts.counts()["unlabelled"] == 500


def test_line_progress_writes_plain_lines(caplog):
    caplog.set_level(logging.INFO, logger="training")
    bar = LineProgress(10, "epoch 1/1", "ex", every_s=0.0)
    for _ in range(3):
        bar.update(2)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("epoch 1/1: 6/10 ex") and "loss=0.5" in lines[-1]
    assert not any("\r" in m for m in lines)


def test_cache_refuses_an_unreadable_manifest(tmp_path):
    st = Stage(tmp_path, "x", {"a": 1})
    st.start()
    (st.dir / "out.txt").write_text("hello")
    st.finish(["out.txt"])
    assert Stage(tmp_path, "x", {"a": 1}).done() and not Stage(tmp_path, "x", {"a": 2}).done()
    st.manifest.write_text("{not json")
    with pytest.raises(CacheError, match=r"stage\.json"):
        st.done()


def test_embedding_learning_rate_follows_the_embedding_kind():
    assert parse_config([]).effective_embed_lr() == 2e-4
    random_cfg = parse_config(["--embeddings", "random", "--lr", "3e-3"])
    assert random_cfg.effective_embed_lr() == 3e-3
    assert parse_config(["--embeddings", "random", "--embed-lr", "0"]).effective_embed_lr() == 0


@pytest.mark.slow
def test_help_groups_flags_by_stage_and_shows_presets():
    env = {**os.environ, "COLUMNS": "400"}  # no line wrapping inside a flag
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True, env=env).stdout
    for title in ("vocabulary and embeddings:", "n-gram bag:", "teacher (distillation", "transfer set",
                  "student (the LSTM"):
        assert title in out
    flat = " ".join(out.split())
    assert "imdb: --max-length 1024" in flat and "files: --max-length 256" in flat
    assert "--teacher" in out and "--distil-loss {mse,kl}" in out
