"""The classifier: embedding -> (bi)LSTM -> pooling over time -> linear.

Optionally (`ngram_buckets` > 0) a fastText-style bag of words and hashed word bigrams sits beside
the LSTM and its logits are added with a weight fitted on the validation split ("wide and deep").
On long reviews the bag reads the whole text at a fraction of the LSTM's cost and catches the
bigram evidence ("not good", "a must") a TF-IDF bigram model lives on; training/ngrams.py trains it.

Scriptable with `torch.jit.script`. Padding never changes a prediction: the LSTM's states at real
steps never see padding (see `encode`: padded or packed, whichever is cheaper for the batch), and
pooling and the bag only look at real steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
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
        # Batches of at least padded_min_batch texts with at least padded_min_fill real tokens (and
        # single texts) take the padded path; see encode.
        self.padded_min_batch = 8
        self.padded_min_fill = 0.75

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids: int64[B, T] padded with pad_id; lengths: int64[B] (>= 1). Returns logits[B, C]."""
        lengths = lengths.to(ids.device)
        # .float(): the tables may be stored in float16 (half_tables); the network computes in float32.
        steps = self.encode(self.dropout(self.embedding(ids).float()), lengths)  # [B, T, H * directions]
        if self.pooling == "last":
            # Final state in each direction: forward at the last real token, backward at the first.
            last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, steps.size(2))
            pooled = steps.gather(1, last).squeeze(1)
            if self.lstm.bidirectional:
                h = self.lstm.hidden_size
                pooled = torch.cat([pooled[:, :h], steps[:, 0, h:]], dim=1)
        else:
            mask = (torch.arange(steps.size(1), device=ids.device)[None, :] < lengths[:, None]).unsqueeze(-1)
            mean = (steps * mask).sum(1) / lengths.to(steps.dtype)[:, None]
            if self.pooling == "mean":
                pooled = mean
            else:
                maxed = steps.masked_fill(~mask, float("-inf")).amax(1)
                pooled = maxed if self.pooling == "max" else torch.cat([maxed, mean], dim=1)
        logits = self.classifier(self.dropout(pooled))
        if self.ngram_buckets > 0:
            logits = logits + self.ngram_weight * self.ngram_logits(ids, lengths)
        return logits

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """LSTM states at every step; exact at real steps whatever the padding after them.

        Two exact ways, chosen per batch by cost. Padded: the forward direction runs on the padded
        tensor (padding comes after a text, so it cannot reach its real steps) and the backward
        direction runs forward over each text reversed in place (padding left at the end), then is
        flipped back. On CPU this is much faster for long texts (compared on IMDB epochs at 1024 tokens,
        one thread) but padding steps cost as much as real ones, and at
        2-4 texts the two directions' separate calls cost more than one packed call. So single texts
        and length-homogeneous batches of >= 8 (length-bucketed training batches) take the padded
        path, and mixed batches nn.LSTM on packed sequences, which skips padding.
        """
        batch = x.size(0)
        if batch > 1 and (
            batch < self.padded_min_batch or float(lengths.sum()) < self.padded_min_fill * batch * x.size(1)
        ):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]
        t = torch.arange(x.size(1), device=x.device)[None, :]
        rev = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t).unsqueeze(-1)  # an involution
        weights = self.lstm._flat_weights
        directions = 2 if self.lstm.bidirectional else 1
        h = self.lstm.hidden_size
        zeros = x.new_zeros(1, x.size(0), h)
        for layer in range(self.lstm.num_layers):
            if layer > 0:
                x = F.dropout(x, self.lstm.dropout, self.training)
            outs: list[torch.Tensor] = []
            for d in range(directions):
                first = 4 * (layer * directions + d)
                inp = x if d == 0 else x.gather(1, rev.expand(-1, -1, x.size(2)))
                out = torch.lstm(
                    inp, [zeros, zeros], weights[first : first + 4], True, 1, 0.0, self.training, False, True
                )[0]
                outs.append(out if d == 0 else out.gather(1, rev.expand(-1, -1, h)))
            x = torch.cat(outs, dim=2) if directions == 2 else outs[0]
        return x

    def ngram_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of the bag of words and hashed bigrams (rows past the vocabulary) of each text."""
        valid = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        feats = torch.where(valid, ids, 0)
        if ids.size(1) > 1 and self.ngram_buckets > 0:
            bigrams = self.vocab_size + (ids[:, :-1] * 1_000_003 + ids[:, 1:]) % self.ngram_buckets
            feats = torch.cat([feats, torch.where(valid[:, 1:], bigrams, 0)], dim=1)
        return self.ngram_head(self.ngrams(feats).float())

    @torch.jit.unused
    def half_tables(self) -> None:
        """Store the embedding table and the n-gram bag (most of the parameters) in float16: half the
        artifact's size; each row is rounded alone, so a text's scores never depend on its batch."""
        self.embedding.half()
        self.ngrams.half()
