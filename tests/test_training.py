"""End-to-end training on a slice of real SST-2: CLI, metrics, export, artifact checks."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from model.artifact import ArtifactError, load_artifact, sha256_file
from training.cli import _flag as cli_flag
from training.cli import main as train_main
from training.cli import parse_config
from training.config import TrainConfig
from training.data import Split
from training.evaluate import expected_calibration_error, fit_temperature, macro_f1
from training.train import prior_shift

REPO = Path(__file__).resolve().parents[1]


def a_value_other_than(name: str, default: object, choices: tuple | None) -> object:
    """A value for the field that is not its default, of the field's own type."""
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, float):
        return default + 0.25
    if isinstance(default, int):
        return default + 3
    kind = {f.name: str(f.type) for f in fields(TrainConfig)}[name]
    if kind.startswith("float"):
        return 0.125
    if kind.startswith("int"):
        return 7
    return "x.csv" if name.endswith("_file") else "some-text"


@pytest.mark.slow
def test_help_explains_every_flag_and_each_lands_in_the_config():
    out = subprocess.run(
        [sys.executable, "-m", "training", "--help"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert "SENTIMENT_DATA_MIRROR" in out
    squeezed = "".join(out.split())  # argparse wraps lines (and hyphenated words) to the terminal width
    defaults = TrainConfig()
    names = [f.name for f in fields(TrainConfig)]
    assert len(names) > 50
    for f in fields(TrainConfig):
        flag, default = cli_flag(f.name), getattr(defaults, f.name)
        assert f" {flag} " in out or f" {flag}," in out or f"{flag}\n" in out, flag
        shown = "".join(f.metadata["help"].replace("%%", "%").split())  # argparse expands %% to %
        assert shown in squeezed, f"{flag}: its help text is not in --help"
        if isinstance(default, bool):
            argv, value = [f"--no-{flag[2:]}" if default else flag], not default
        else:
            value = a_value_other_than(f.name, default, f.metadata["choices"])
            argv = [flag, str(value)]
        if f.name in ("eval_file", "val_file"):
            argv += ["--train", "t.csv"]  # they need --train
        cfg = parse_config(argv)
        got = getattr(cfg, f.name)
        assert got == value and type(got) is type(value), (flag, got, value)


def test_data_sized_defaults_apply_to_your_own_files_only():
    assert parse_config([]).ngram_buckets == 262_144  # built-in corpora keep the recipe's value
    assert parse_config(["--preset", "general"]).ngram_buckets == 65_536
    assert parse_config(["--train", "t.csv"]).ngram_buckets == -1  # sized to the data
    assert parse_config(["--train", "t.csv", "--ngram-buckets", "4096"]).ngram_buckets == 4096
    with pytest.raises(SystemExit):
        parse_config(["--ngram-buckets", "-2"])
    from training.ngrams import sized_buckets

    # 3 distinct bigrams (1,2) (2,3) (3,1): the floor; 300 distinct: the power of two >= 1200
    assert sized_buckets([[1, 2, 3, 1, 2], [2, 3]]) == (1024, 3)
    assert sized_buckets([[i, i + 1] for i in range(300)]) == (2048, 300)
    assert sized_buckets([[i, i + 1] for i in range(200_000)]) == (262_144, 200_000)  # the cap


def test_small_run_learns_and_exports_a_complete_artifact(small_artifact: Path, data_mirror: Path):
    meta = json.loads((small_artifact / "meta.json").read_text())
    # clearly above chance on the real dev set after a ~1 minute run
    assert meta["metrics"]["dev"]["accuracy"] > 0.70, meta["metrics"]["dev"]
    assert meta["metrics"]["test"]["n"] == 1821
    for name in ("model.pt", "tokenizer.json", "MODEL_CARD.md", "training_curve.png", "metrics.jsonl"):
        assert meta["files"][name] == sha256_file(small_artifact / name)
    assert meta["labels"] == ["negative", "positive"]
    assert meta["training"]["seed"] == 7 and meta["training"]["max_train_examples"] == 6000
    # the checksums name the real files read, relative to the data folder (no path of this machine):
    # the SST-2 training file and the IMDB reviews for word2vec
    recorded = meta["dataset"]["sha256"]
    assert {"sst2/glue/train.tsv", "sst2/glue/dev.tsv", "sst2/sentences/test.tsv"} <= set(recorded)
    assert "imdb/train.jsonl.gz" in recorded
    for path, digest in recorded.items():
        assert sha256_file(data_mirror / path) == digest, path
    assert meta["parity"]["scripted_vs_eager_max_abs"] <= 1e-5
    assert meta["parity"]["fresh_process_max_abs"] <= 1e-5
    assert 0.05 < meta["temperature"] < 20
    epochs = [json.loads(line) for line in (small_artifact / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert (small_artifact.parent / "latest").resolve() == small_artifact.resolve()
    card = (small_artifact / "MODEL_CARD.md").read_text()
    assert "Behavioural report" in card and "negation" in card
    # clearly better than always answering the majority label: no warning
    assert meta["metrics"]["val"]["majority_baseline"]["beaten"] and meta["warnings"] == []
    assert "Warning" not in card


@pytest.mark.slow
def test_artifact_scores_real_sentences_in_a_fresh_process(small_artifact: Path):
    code = (
        "import sys, json; from model.artifact import load_artifact\n"
        "a = load_artifact(sys.argv[1])\n"
        "print(json.dumps(a.predict_proba(['a gorgeous , witty , seductive movie .', "
        "'the story is dull , predictable and boring .']).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(small_artifact.parent)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    probs = json.loads(out)
    assert probs[0][1] > 0.5 > probs[1][1]
    in_process = load_artifact(small_artifact).predict_proba(
        ["a gorgeous , witty , seductive movie .", "the story is dull , predictable and boring ."]
    )
    torch.testing.assert_close(torch.tensor(probs), in_process, rtol=0, atol=1e-6)


def copy_artifact(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_corrupt_model_file_is_named(small_artifact: Path, tmp_path: Path):
    bad = copy_artifact(small_artifact, tmp_path / "bad")
    data = bytearray((bad / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.pt.*sha256"):
        load_artifact(bad)


def test_unknown_schema_version_and_missing_files_are_named(small_artifact: Path, tmp_path: Path):
    bad = copy_artifact(small_artifact, tmp_path / "schema")
    meta = json.loads((bad / "meta.json").read_text())
    meta["schema_version"] = 99
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"meta\.json.*schema_version 99"):
        load_artifact(bad)
    missing = copy_artifact(small_artifact, tmp_path / "missing")
    (missing / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json.*missing"):
        load_artifact(missing)
    with pytest.raises(ArtifactError, match="train a model first"):
        load_artifact(tmp_path / "nowhere")


def test_bad_training_file_fails_with_file_and_line(tmp_path: Path, capsys):
    bad = tmp_path / "reviews.csv"
    bad.write_text("text,label\ngreat film,positive\nawful,maybe\n", encoding="utf-8")
    code = train_main(["--train", str(bad), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "reviews.csv" in err and "line 3" in err
    assert not any((tmp_path / "out").iterdir()), "no half-written artifact may remain"


@pytest.mark.slow
def test_user_files_train_end_to_end(tmp_path: Path, data_mirror: Path):
    # a CSV with string labels and custom column names, built from real SST sentences
    for src, dst, n in (("train.tsv", "train.csv", 800), ("dev.tsv", "dev.csv", 300)):
        rows = (data_mirror / "sst2/sentences" / src).read_text(encoding="utf-8").splitlines()[1 : n + 1]
        with open(tmp_path / dst, "w", encoding="utf-8") as f:
            f.write("review,sentiment\n")
            for r in rows:
                text, label = r.rsplit("\t", 1)
                sentiment = "positive" if label == "1" else "negative"
                f.write('"{}",{}\n'.format(text.replace('"', '""'), sentiment))
    code = train_main(
        [
            "--train",
            str(tmp_path / "train.csv"),
            "--eval",
            str(tmp_path / "dev.csv"),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--out",
            str(tmp_path / "art"),
            "--epochs",
            "1",
            "--embed-dim",
            "16",
            "--hidden-dim",
            "16",
            "--no-progress",
            "--run-name",
            "mine",
            "--ngram-buckets",
            "4096",
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "art/mine/meta.json").read_text())
    assert meta["dataset"]["name"] == "files"
    # the n-gram bag was trained, weighted and exported (export checked scripted/eager parity)
    assert meta["network"]["ngram_buckets"] == 4096
    assert 0 <= meta["metrics"]["ngram_bag"]["weight"] <= 8
    assert set(meta["metrics"]["components"]["eval"]) == {"lstm", "ngram_bag"}
    assert "hashed bigrams" in (tmp_path / "art/mine/MODEL_CARD.md").read_text()
    assert meta["metrics"]["eval"]["n"] == 300
    assert meta["dataset"]["splits"]["train"]["n"] + meta["dataset"]["splits"]["val"]["n"] == 800


@pytest.mark.slow
def test_ngram_bag_learns_real_reviews_and_its_weight_follows_its_use(data_mirror: Path):
    from model.network import NetworkConfig, SentimentLSTM
    from model.tokenizer import token_ids, train_tokenizer
    from training.data import load_builtin
    from training.fetch import data_dir
    from training.ngrams import fit_ngram_weight, ngram_logits, train_ngram_bag
    from training.train import seeded_slice

    splits = load_builtin("sst2", data_dir("sst2", progress=False), seed=1)
    train = seeded_slice(splits["train"], 4000, 1)
    tok = train_tokenizer(train.texts, vocab_size=20_000, min_frequency=1, max_length=64)
    ids = {k: token_ids(tok, s.texts)[0] for k, s in (("train", train), ("val", splits["val"]))}
    model = SentimentLSTM(
        NetworkConfig(vocab_size=tok.get_vocab_size(), embed_dim=8, hidden_dim=8, ngram_buckets=1 << 14)
    )
    info = train_ngram_bag(
        model,
        ids["train"],
        train.labels,
        ids["val"],
        splits["val"].labels,
        epochs=2,
        lr=5e-3,
        seed=1,
        progress=False,
    )
    labels = torch.tensor(splits["val"].labels)
    bag = ngram_logits(model, ids["val"])
    accuracy = float((bag.argmax(1) == labels).float().mean())
    assert accuracy == pytest.approx(info["val_accuracy"], abs=1e-4) and accuracy > 0.65
    assert not any(p.requires_grad for p in model.ngrams.parameters())  # frozen for the LSTM's training
    # an "LSTM" of noise: the bag gets a large weight; a bag of noise gets none
    assert fit_ngram_weight(torch.randn_like(bag), bag, labels) >= 1.0
    assert fit_ngram_weight(bag, torch.randn_like(bag), labels) == 0.0


def test_metrics_on_known_values():
    cm = [[3, 1], [2, 4]]
    # F1(neg) = 6/9, F1(pos) = 8/11
    assert macro_f1(cm) == pytest.approx((6 / 9 + 8 / 11) / 2)
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 1])
    # bins: 0.9 (correct), 0.8 (wrong), 0.7 (correct) -> (|0.9-1| + |0.8-0| + |0.7-1|) / 3
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.8 + 0.3) / 3, abs=1e-6)


def test_temperature_scaling_softens_overconfident_logits():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (2000,))
    clean = torch.nn.functional.one_hot(labels, 2).float() * 2 - 1  # +-1 margins
    flip = torch.rand(2000) < 0.2  # 20% label noise: true confidence ~0.8
    noisy_labels = torch.where(flip, 1 - labels, labels)
    overconfident = clean * 10
    t = fit_temperature(overconfident, noisy_labels)
    assert t > 3  # softmax(20 / T) should come down to ~0.8 => T ~ 14
    probs = torch.softmax(overconfident / t, 1)
    assert expected_calibration_error(probs, noisy_labels) < 0.05


def test_masked_cross_entropy_ignores_the_labels_a_corpus_lacks():
    from training.batching import label_mask, masked_cross_entropy

    logits = torch.tensor([[2.0, 5.0, 1.0], [0.5, 0.1, 3.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    mask = label_mask([(0, 2), None], 3)
    loss = masked_cross_entropy(logits, y, mask)
    # row 0 (a binary corpus): cross-entropy over negative and positive only; row 1: over all three
    expected = (torch.nn.functional.cross_entropy(logits[:1, [0, 2]], torch.tensor([0]))
                + torch.nn.functional.cross_entropy(logits[1:], y[1:])) / 2
    assert float(loss) == pytest.approx(float(expected))
    loss.backward()
    assert logits.grad[0, 1] == 0  # the missing class gets no gradient from that row


def test_majority_baseline_tells_a_constant_answer_from_a_real_lead():
    from training.evaluate import classification_report, majority_baseline

    labels = torch.tensor([0] * 40 + [1] * 60)  # "1" is the majority

    def check_for(right: int) -> dict:
        """A model right on the first `right` rows (all label 0 first), wrong on the rest."""
        logits = torch.nn.functional.one_hot(torch.where(torch.arange(100) < right, labels, 1 - labels), 2)
        return majority_baseline(classification_report(logits.float(), labels), labels)

    constant = majority_baseline(
        classification_report(torch.tensor([[0.0, 1.0]] * 100), labels), labels
    )
    assert constant["label"] == 1 and constant["accuracy"] == 0.6 and constant["answered_majority"] == 1.0
    assert constant["macro_f1"] == pytest.approx((2 * 0.6 / 1.6) / 2, abs=1e-5)  # F1 0.75 and 0
    assert constant["margin"] == pytest.approx((0.6 * 0.4 / 100) ** 0.5, abs=1e-5)  # 0.049
    assert not constant["beaten"]
    assert not check_for(64)["beaten"]  # 0.64: a lead within one standard error
    assert check_for(70)["beaten"]  # 0.70
    # a three-class model scored on a binary split (outputs 0 and 2): the model answers 0 everywhere
    binary = torch.tensor([0, 2, 2, 0, 2])
    report = classification_report(torch.tensor([[1.0, 5.0, 0.0]] * 5), binary, 1.0, (0, 2))
    check = majority_baseline(report, binary, (0, 2))
    assert check["label"] == 2 and check["accuracy"] == 0.6 and check["answered_majority"] == 0.0


@pytest.mark.slow
def test_small_user_file_gets_a_small_model_and_a_warning(tmp_path: Path, data_mirror: Path):
    # the new user's case: 300 real SST-2 sentences as a CSV, every default
    rows = (data_mirror / "sst2/sentences/train.tsv").read_text(encoding="utf-8").splitlines()[1:301]
    with open(tmp_path / "train.csv", "w", encoding="utf-8") as f:
        f.write("text,label\n")
        for r in rows:
            text, label = r.rsplit("\t", 1)
            f.write('"{}",{}\n'.format(text.replace('"', '""'), "positive" if label == "1" else "negative"))
    out = tmp_path / "art"
    code = train_main(["--train", str(tmp_path / "train.csv"), "--out", str(out), "--run-name", "r",
                       "--threads", "1", "--no-progress"])
    assert code == 0
    meta = json.loads((out / "r/meta.json").read_text())
    # the bag is sized to the data: a power of two in [4, 8) x the distinct bigrams, not 262144
    sized = meta["metrics"]["ngram_bag"]["sized_to_data"]
    buckets = meta["network"]["ngram_buckets"]
    assert meta["training"]["ngram_buckets"] == -1 and sized["buckets"] == buckets
    assert 4 * sized["distinct_bigrams"] <= buckets < 8 * sized["distinct_bigrams"] < 262_144
    assert buckets & (buckets - 1) == 0
    assert (out / "r/model.pt").stat().st_size < 12e6  # 23.6 MB with 262144 buckets
    # the vocabulary is the training split's words, far under the 30000 maximum
    assert meta["vocab_size"] < 3000
    # it learned nothing usable from 270 texts, and says so in meta.json and the card
    check = meta["metrics"]["val"]["majority_baseline"]
    assert not check["beaten"]
    assert [w["code"] for w in meta["warnings"]] == ["no_better_than_majority"]
    majority = meta["labels"][check["label"]]
    assert majority == "positive"  # 17 of the 30 validation rows
    card = (out / "r/MODEL_CARD.md").read_text()
    assert "**Warning:**" in card and f"always answering '{majority}'" in card


def test_prior_shift_favours_the_labels_rare_in_training():
    """--prior-correction: the shift divides calibrated probabilities by the label frequencies to a
    power, so with power 1 a text the model finds as likely as the training mix answers uniformly."""
    train = Split("train", ["t"] * 10, [0] + [1] * 2 + [2] * 7, "test")
    shift = prior_shift(train, 3, 1.0, temperature=2.0)
    assert shift[0] > shift[1] > shift[2]
    frequencies = torch.tensor([0.1, 0.2, 0.7])
    balanced = torch.softmax((2.0 * frequencies.log() + shift) / 2.0, dim=0)
    assert torch.allclose(balanced, torch.full((3,), 1 / 3), atol=1e-6)
    assert torch.equal(prior_shift(train, 3, 0.0, 1.0), torch.zeros(3))
    assert torch.isfinite(prior_shift(Split("train", ["t"], [0], "test"), 3, 1.0, 1.0)).all()  # unseen labels
