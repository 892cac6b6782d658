"""The classifier: embedding -> (bi)LSTM over packed sequences -> pooling -> linear.

Optionally (`ngram_buckets` > 0) a fastText-style bag of words and hashed word bigrams sits beside
the LSTM and its logits are added with a weight fitted on the validation split ("wide and deep").
On long reviews the bag reads the whole text at a fraction of the LSTM's cost and catches the
bigram evidence ("not good", "a must") a TF-IDF bigram model lives on; training/ngrams.py trains it.

Scriptable with `torch.jit.script`. Padding never changes a prediction: the LSTM
runs on packed sequences and pooling and the bag only look at real time steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

POOLINGS = ("last", "max", "mean", "max_mean")


@dataclass
class NetworkConfig:
    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 300
    hidden_dim: int = 256
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5  # on embeddings, between LSTM layers and before the classifier
    pooling: str = "max_mean"
    pad_id: int = 0
    ngram_buckets: int = 0  # hashed bigram rows of the n-gram bag; 0: no bag
    ngram_dim: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


class SentimentLSTM(nn.Module):
    __jit_ignored_attributes__ = ["config"]  # noqa: RUF012  (plain data, not part of the graph)

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.config = cfg
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
        self.pooling = cfg.pooling
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        directions = 2 if cfg.bidirectional else 1
        features = cfg.hidden_dim * directions * (2 if cfg.pooling == "max_mean" else 1)
        self.classifier = nn.Linear(features, cfg.num_classes)
        # The bag always exists (TorchScript wants fixed attributes); with no buckets it is tiny and
        # its weight is 0. Row 0 is padding: EmbeddingBag leaves it out of the mean.
        self.vocab_size = cfg.vocab_size
        self.ngram_buckets = cfg.ngram_buckets
        rows = cfg.vocab_size + cfg.ngram_buckets if cfg.ngram_buckets > 0 else 1
        self.ngrams = nn.EmbeddingBag(rows, cfg.ngram_dim, mode="mean", padding_idx=0)
        self.ngram_head = nn.Linear(cfg.ngram_dim, cfg.num_classes)
        self.register_buffer("ngram_weight", torch.zeros(()))  # fitted on validation after training

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids: int64[B, T] padded with pad_id; lengths: int64[B] (>= 1). Returns logits[B, C]."""
        emb = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.pooling == "last":
            # Final state of the top layer in each direction (forward: last real token,
            # backward: first token).
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.lstm.bidirectional else h_n[-1]
        else:
            steps, _ = pad_packed_sequence(out, batch_first=True)  # [B, max(lengths), H]
            mask = (
                torch.arange(steps.size(1), device=steps.device)[None, :] < lengths.to(steps.device)[:, None]
            ).unsqueeze(-1)
            mean = (steps * mask).sum(1) / lengths.to(steps.device, steps.dtype)[:, None]
            if self.pooling == "mean":
                pooled = mean
            else:
                maxed = steps.masked_fill(~mask, float("-inf")).amax(1)
                pooled = maxed if self.pooling == "max" else torch.cat([maxed, mean], dim=1)
        logits = self.classifier(self.dropout(pooled))
        if self.ngram_buckets > 0:
            logits = logits + self.ngram_weight * self.ngram_logits(ids, lengths)
        return logits

    def ngram_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of the bag of words and hashed bigrams (rows past the vocabulary) of each text."""
        valid = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        feats = torch.where(valid, ids, 0)
        if ids.size(1) > 1 and self.ngram_buckets > 0:
            bigrams = self.vocab_size + (ids[:, :-1] * 1_000_003 + ids[:, 1:]) % self.ngram_buckets
            feats = torch.cat([feats, torch.where(valid[:, 1:], bigrams, 0)], dim=1)
        return self.ngram_head(self.ngrams(feats))
