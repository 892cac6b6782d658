"""The classifier: embedding -> (bi)LSTM over packed sequences -> pooling -> linear.

Scriptable with `torch.jit.script`. Padding never changes a prediction: the LSTM
runs on packed sequences and pooling only looks at real time steps.
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
        return self.classifier(self.dropout(pooled))
