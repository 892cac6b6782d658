"""In-domain word vectors: word2vec (gensim) on unlabelled movie-review text.

SST-2 has only ~15k distinct training words and random embeddings overfit them;
vectors learned on ~7M tokens of IMDB reviews give the LSTM a head start and a
meaning for words that never occur in the labelled training split. The vocabulary
is the training split's words plus the most frequent words that have a vector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from model.tokenizer import UNK_TOKEN
from training.bag_of_words import fit_bag

log = logging.getLogger("training")


def pre_tokenize(tok: Tokenizer, texts: Sequence[str]) -> list[list[str]]:
    """Words exactly as the tokenizer splits them (normalised), without vocabulary lookup."""
    norm, pre = tok.normalizer, tok.pre_tokenizer
    return [[w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))] for t in texts]


def train_word2vec(
    tok: Tokenizer, texts: Sequence[str], *, dim: int, epochs: int, min_count: int, seed: int, workers: int
):
    from gensim.models import Word2Vec  # imported lazily: only this option needs gensim

    t0 = time.perf_counter()
    sentences = pre_tokenize(tok, texts)
    model = Word2Vec(
        sentences,
        vector_size=dim,
        window=5,
        min_count=min_count,
        workers=max(1, workers),
        epochs=epochs,
        seed=seed,
    )
    log.info(
        "word2vec: %d vectors from %d texts / %d tokens in %.0f s",
        len(model.wv),
        len(texts),
        sum(map(len, sentences)),
        time.perf_counter() - t0,
    )
    return model.wv


def extend_vocabulary(tok: Tokenizer, vectors, vocab_size: int) -> None:
    """Add words that have a pretrained vector (most frequent first) up to vocab_size."""
    vocab = tok.get_vocab()
    for word in vectors.index_to_key:  # gensim sorts by descending frequency
        if len(vocab) >= vocab_size:
            break
        if word not in vocab:
            vocab[word] = len(vocab)
    truncation = tok.truncation
    tok.model = WordLevel(vocab, unk_token=UNK_TOKEN)
    if truncation:
        tok.enable_truncation(max_length=truncation["max_length"])


def init_embedding(weight: torch.Tensor, tok: Tokenizer, vectors) -> int:
    """Copy pretrained vectors into the rows (of an embedding table) of known words; returns how many."""
    hits = 0
    with torch.no_grad():
        for word, idx in tok.get_vocab().items():
            if word in vectors.key_to_index:
                weight[idx] = torch.from_numpy(vectors[word].copy())
                hits += 1
    return hits


def tune_with_bag_of_words(
    weight: torch.Tensor,
    ids: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    num_classes: int = 2,
    mask: torch.Tensor | None = None,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
    progress: bool = False,
) -> float:
    """Give word vectors a sentiment direction before the LSTM sees them.

    word2vec puts "good" next to "bad" (same contexts); a fastText-style classifier
    (mean of word vectors -> linear) trained on labelled reviews pulls them apart.
    Cheap: 25k IMDB reviews take ~10 s an epoch. Updates `weight` in place and
    returns the classifier's final training accuracy.
    """
    gen = torch.Generator().manual_seed(seed)
    bag = torch.nn.EmbeddingBag.from_pretrained(
        weight.detach().clone(), freeze=False, mode="mean", sparse=True
    )
    head = torch.nn.Linear(weight.shape[1], num_classes)

    def forward(rows: list[int]) -> torch.Tensor:
        flat = torch.tensor([t for i in rows for t in ids[i]], dtype=torch.long)
        offsets = torch.tensor([0] + [len(ids[i]) for i in rows[:-1]]).cumsum(0)
        return head(bag(flat, offsets))

    def order() -> list[list[int]]:  # a fresh permutation each epoch, in batches
        perm = torch.randperm(len(ids), generator=gen).tolist()
        return [perm[start : start + batch_size] for start in range(0, len(perm), batch_size)]

    fit = fit_bag(
        bag, head, forward, labels, order=order, epochs=epochs, lr=lr, head_lr=10 * lr, mask=mask,
        desc="bag-of-words", progress=progress,
    )
    with torch.no_grad():
        weight.copy_(bag.weight)
    return fit.train_accuracy
