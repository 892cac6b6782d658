"""The n-gram bag alone, by bucket count, on a CSV training file: does sizing the buckets to the data
(--ngram-buckets -1) lose accuracy? Prints the eval accuracy of 3 seeds for 1, 2, 4, 8 x the training
split's distinct bigrams (rounded up to a power of two) and the fixed default. docs/SMALL_DATA.md.

Usage: PYTHONPATH=. python docs/small_data_buckets.py EVAL.csv TRAIN.csv [TRAIN.csv ...]
(run from the repository root; the files have text,label columns)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from model.network import NetworkConfig, SentimentLSTM
from model.tokenizer import token_ids, train_tokenizer
from training.config import NGRAM_BUCKETS
from training.data import load_user_files
from training.ngrams import ngram_logits, sized_buckets, train_ngram_bag


def main(eval_file: str, train_files: list[str]) -> None:
    for name in train_files:
        s = load_user_files(Path(name), Path(eval_file), None, seed=13, val_fraction=0.1)
        tok = train_tokenizer(s["train"].texts, vocab_size=30_000, min_frequency=1, max_length=256)
        ids = {k: token_ids(tok, v.texts)[0] for k, v in s.items()}
        n = sized_buckets(ids["train"])[1]
        print(f"{name}: {len(s['train'])} train rows, vocab {tok.get_vocab_size()}, {n} distinct bigrams")
        sizes = sorted({1 << max(0, (k * n - 1).bit_length()) for k in (1, 2, 4, 8)} | {NGRAM_BUCKETS})
        y = torch.tensor(s["eval"].labels)
        for buckets in sizes:
            accs = []
            for seed in (1, 2, 3):
                torch.manual_seed(seed)
                m = SentimentLSTM(NetworkConfig(vocab_size=tok.get_vocab_size(), embed_dim=8, hidden_dim=8,
                                                ngram_buckets=buckets))
                train_ngram_bag(m, ids["train"], s["train"].labels, ids["val"], s["val"].labels,
                                epochs=3, lr=5e-3, seed=seed, progress=False)
                accs.append(float((ngram_logits(m, ids["eval"]).argmax(1) == y).float().mean()))
            print(f"  buckets {buckets:>7} ({buckets / n:5.1f} x bigrams): eval accuracy "
                  f"{' '.join(f'{a:.4f}' for a in accs)}, mean {sum(accs) / 3:.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
