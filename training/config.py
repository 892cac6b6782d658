"""Training configuration: plain data with defaults that work (SST-2 on CPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# IMDB: reviews up to 1024 tokens (99% fit; truncating at 256 cost ~2 points), a smaller LSTM to keep
# an epoch near 3.5 min on 2 CPU threads, and the n-gram bag (README: 90.5% test). A flag given on the
# command line wins over a preset.
DATASET_PRESETS: dict[str, dict[str, int]] = {
    "imdb": {"max_length": 1024, "hidden_dim": 128, "epochs": 2, "ngram_buckets": 524_288},
    "files": {"max_length": 256},
}


@dataclass
class TrainConfig:
    # data
    dataset: str = "sst2"  # sst2 | imdb | files (set by --train)
    train_file: str | None = None
    eval_file: str | None = None
    val_file: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    val_fraction: float = 0.1  # held out of train when the corpus has no validation split
    max_train_examples: int | None = None  # a seeded slice, for quick runs and tests
    # artifact
    out: str = "artifacts"
    run_name: str | None = None  # default: <dataset>-<timestamp>
    # tokenizer
    vocab_size: int = 30_000
    min_frequency: int = 1
    max_length: int = 128  # tokens; longer texts are truncated
    # embeddings
    embeddings: str = "word2vec"  # word2vec (in-domain, see training/embeddings.py) | random
    embed_lr: float = 2e-4  # learning rate of the embedding table (sparse Adam); 0 freezes it
    w2v_epochs: int = 5
    w2v_min_count: int = 3
    bow_epochs: int = 2  # sentiment-tune the vectors with a bag-of-words classifier first (0: off)
    bow_lr: float = 1e-3
    # network
    embed_dim: int = 300
    hidden_dim: int = 256
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5
    pooling: str = "max_mean"
    ngram_buckets: int = 262_144  # > 0 adds an n-gram bag (words + hashed bigrams) beside the LSTM
    ngram_dim: int = 16
    ngram_epochs: int = 3
    ngram_lr: float = 5e-3
    # optimisation
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    warmup_fraction: float = 0.1
    ema_decay: float = 0.998  # validate and export an exponential moving average of the weights; 0: off
    patience: int = 2  # epochs without validation improvement before stopping
    seed: int = 13
    # hardware
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
