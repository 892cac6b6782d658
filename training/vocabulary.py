"""The vocabulary and embeddings stage: tokenizer, word vectors and each word's nearest neighbours.

Cached (training/cache.py) by the training text, the word2vec corpus and the settings: word2vec with
several worker threads is not bit-reproducible, and everything after it (the transfer set's
replacements, hence the teacher's labels) is keyed by what this stage produced, so reusing it is what
lets a rerun reuse those too."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.tokenizer import load_tokenizer, token_ids, train_tokenizer
from training.batching import label_mask
from training.cache import Stage, content_hash
from training.config import TrainConfig
from training.data import Split, concat
from training.embeddings import (
    extend_vocabulary,
    init_embedding,
    pre_tokenize,
    train_word2vec,
    tune_with_bag_of_words,
)

log = logging.getLogger("training")
TOKENIZER, VECTORS, NEIGHBOURS = "tokenizer.json", "embedding.pt", "neighbours.json"


@dataclass
class Vocabulary:
    tokenizer: Tokenizer
    vectors: torch.Tensor | None  # [vocab, embed_dim] initial embedding rows; None: random init
    neighbours: dict[str, list[str]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    key: str = ""


def nearest_neighbours(
    tok: Tokenizer, vectors: torch.Tensor, words: Sequence[str], k: int, chunk: int = 2048
) -> dict[str, list[str]]:
    """The k nearest vocabulary words (cosine) of each word in `words` that is in the vocabulary."""
    vocab = tok.get_vocab()
    inv = {i: w for w, i in vocab.items()}
    ids = sorted({vocab[w] for w in words if w in vocab and vocab[w] > 1})
    cand = torch.tensor(sorted(i for i in inv if i > 1))  # no [PAD], [UNK]
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), chunk):
        rows = torch.tensor(ids[start : start + chunk])
        sims = unit[rows] @ unit[cand].T
        sims[rows[:, None] == cand[None, :]] = -2.0  # a word is not its own neighbour
        top = sims.topk(k, dim=1).indices
        for r, t in zip(rows.tolist(), top.tolist(), strict=True):
            out[inv[r]] = [inv[int(cand[j])] for j in t]
    return out


def vocabulary_stage(
    cfg: TrainConfig, splits: dict[str, Split], corpus: list[Split], *, threads: int, show_progress: bool,
    neighbours: int = 10,
) -> Vocabulary:
    """Tokenizer trained on the training split; with word2vec, vectors on `corpus` (unlabelled
    in-domain text), frequent corpus words added to the vocabulary, the vectors tuned for sentiment
    by a bag-of-words classifier on the corpus's labels, and each training word's neighbours."""
    train = splits["train"]
    settings = {
        k: getattr(cfg, k)
        for k in ("vocab_size", "min_frequency", "max_length", "embeddings", "w2v_epochs", "w2v_min_count",
                  "bow_epochs", "bow_lr", "embed_dim", "seed")
    }
    inputs = {"train": content_hash(train.texts, train.labels), "settings": settings, "k": neighbours}
    if cfg.embeddings == "word2vec":
        inputs["corpus"] = [content_hash(s.texts, s.labels) for s in corpus]
    stage = Stage(cfg.cache_root(), "vocabulary", inputs)
    if stage.done():
        info = stage.info()
        tok = load_tokenizer(stage.dir / TOKENIZER)
        vectors = neigh = None
        if (stage.dir / VECTORS).exists():
            vectors = torch.load(stage.dir / VECTORS, weights_only=True)
            neigh = json.loads((stage.dir / NEIGHBOURS).read_text(encoding="utf-8"))
        log.info("vocabulary: cached in %s (%d tokens)", stage.dir, tok.get_vocab_size())
        return Vocabulary(tok, vectors, neigh or {}, info, stage.key)

    tok = train_tokenizer(
        train.texts, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, max_length=cfg.max_length
    )
    work = stage.start()
    info: dict = {}
    files = [TOKENIZER]
    vectors, neigh = None, {}
    if cfg.embeddings == "word2vec":
        wv = train_word2vec(
            tok, [t for s in corpus for t in s.texts], dim=cfg.embed_dim, epochs=cfg.w2v_epochs,
            min_count=cfg.w2v_min_count, seed=cfg.seed, workers=threads,
        )
        extend_vocabulary(tok, wv, cfg.vocab_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        vectors = torch.randn(tok.get_vocab_size(), cfg.embed_dim, generator=gen)  # nn.Embedding's init
        vectors[0] = 0.0  # padding
        hits = init_embedding(vectors, tok, wv)
        info["word2vec_hits"] = hits
        log.info("embeddings: %d of %d words start from word2vec vectors", hits, tok.get_vocab_size())
        if cfg.bow_epochs:
            t0 = time.perf_counter()
            info["bow_train_accuracy"] = tune_with_bag_of_words(
                vectors,
                [i for s in corpus for i in token_ids(tok, s.texts)[0]],
                [y for s in corpus for y in s.labels],
                num_classes=len(train.label_names),
                mask=label_mask(concat(corpus, "corpus", "corpus").allowed_rows(), len(train.label_names)),
                epochs=cfg.bow_epochs, lr=cfg.bow_lr, seed=cfg.seed, progress=show_progress,
            )
            log.info(
                "embeddings: bag-of-words sentiment tuning on %d reviews, train accuracy %.3f, %.0f s",
                sum(map(len, corpus)), info["bow_train_accuracy"], time.perf_counter() - t0,
            )
        train_words = {w for ws in pre_tokenize(tok, train.texts) for w in ws}
        neigh = nearest_neighbours(tok, vectors, sorted(train_words), neighbours)
        torch.save(vectors, work / VECTORS)
        (work / NEIGHBOURS).write_text(json.dumps(neigh), encoding="utf-8")
        files += [VECTORS, NEIGHBOURS]
    tok.save(str(work / TOKENIZER))
    stage.finish(files, info)
    log.info("vocabulary: %d tokens, max length %d", tok.get_vocab_size(), cfg.max_length)
    return Vocabulary(tok, vectors, neigh, info, stage.key)
