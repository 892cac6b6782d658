"""The transfer set: the texts a student learns the teacher's outputs on (Tang et al. 2019,
"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", section 3.2).

Three parts, all from training data only (never a validation or test split):
- the labelled training texts themselves (they keep their gold labels);
- augmented variants of them: each word is masked (-> [UNK]) with p_mask, or replaced by a
  distributional neighbour (one of its nearest word2vec words; Tang et al. use a word with the same
  part-of-speech tag, for which there is no offline tagger here) with p_replace; then, with p_ngram,
  only a random n-gram (n = 1..5) of the variant is kept. The teacher labels each variant, so a
  replacement that flips the sentiment ("good" -> "bad") teaches the student the flip;
- unlabelled in-domain sentences: IMDB training reviews cut at sentence ends.

Texts are stored as the student tokenizer's normalised words joined by spaces, so student and
teacher read the same words; a masked word is the literal [UNK] (the student's unknown token; the
teacher sees its own [MASK])."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from model.tokenizer import UNK_TOKEN
from training.cache import Stage

log = logging.getLogger("training")
TRANSFER_FILE = "transfer.jsonl"
SENTENCE_ENDS = frozenset({".", "!", "?"})
NO_LABEL = -1


@dataclass
class AugmentSettings:
    variants: int = 4  # augmented variants per training text (Tang et al.: up to 20)
    min_words: int = 3  # texts shorter than this are not augmented (one-word phrases have no variants)
    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    neighbours: int = 10  # replacement candidates per word
    unlabelled: int = 100_000  # in-domain sentences cut from unlabelled reviews (0: none)
    min_sentence_words: int = 4
    max_sentence_words: int = 50
    seed: int = 13


@dataclass
class TransferSet:
    texts: list[str]
    labels: list[int]  # gold label, or NO_LABEL
    origin: list[str]  # "train", "augmented" or "unlabelled"

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.origin:
            out[o] = out.get(o, 0) + 1
        return out


def augment(
    words: Sequence[str], neighbours: dict[str, list[str]], s: AugmentSettings, rng: random.Random
) -> list[str]:
    """One variant of a text (a list of words)."""
    out = []
    for w in words:
        r = rng.random()
        if r < s.p_mask:
            out.append(UNK_TOKEN)
        elif r < s.p_mask + s.p_replace and neighbours.get(w):
            out.append(rng.choice(neighbours[w]))
        else:
            out.append(w)
    if rng.random() < s.p_ngram and len(out) > 1:
        n = rng.randint(1, min(5, len(out)))
        start = rng.randint(0, len(out) - n)
        out = out[start : start + n]
    return out


def sentences(words: Sequence[str], s: AugmentSettings) -> list[list[str]]:
    """A review's words cut after each sentence end, keeping sentences of a usable length."""
    out, cur = [], []
    for w in words:
        cur.append(w)
        if w in SENTENCE_ENDS:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return [x for x in out if s.min_sentence_words <= len(x) <= s.max_sentence_words]


def build(
    train_words: list[list[str]],
    train_labels: list[int],
    unlabelled_words: list[list[str]],
    neighbours: dict[str, list[str]],
    s: AugmentSettings,
) -> TransferSet:
    rng = random.Random(s.seed)
    texts, labels, origin = [], [], []
    seen: set[str] = set()

    def add(words: Sequence[str], label: int, kind: str) -> None:
        text = " ".join(words)
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(label)
            origin.append(kind)

    for words, y in zip(train_words, train_labels, strict=True):
        add(words, y, "train")
    for words in train_words:
        if len(words) >= s.min_words:
            for _ in range(s.variants):
                add(augment(words, neighbours, s, rng), NO_LABEL, "augmented")
    if s.unlabelled:
        pool = [x for review in unlabelled_words for x in sentences(review, s)]
        for words in rng.sample(pool, min(s.unlabelled, len(pool))):
            add(words, NO_LABEL, "unlabelled")
    return TransferSet(texts, labels, origin)


def save(ts: TransferSet, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for t, y, o in zip(ts.texts, ts.labels, ts.origin, strict=True):
            f.write(json.dumps({"text": t, "label": y, "origin": o}) + "\n")


def load(path: Path) -> TransferSet:
    texts, labels, origin = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(int(row["label"]))
            origin.append(row["origin"])
    return TransferSet(texts, labels, origin)


def transfer_stage(
    cache_root: Path,
    upstream: dict[str, str],
    train_words: list[list[str]],
    train_labels: list[int],
    unlabelled_words: list[list[str]],
    neighbours: dict[str, list[str]],
    s: AugmentSettings,
) -> tuple[Stage, TransferSet]:
    """The transfer set, from the cache when the same inputs (`upstream`: checksums and keys of what
    it was built from) and settings were built before."""
    stage = Stage(cache_root, "transfer", {**upstream, "settings": asdict(s)})
    if stage.done():
        ts = load(stage.dir / TRANSFER_FILE)
        log.info("transfer set: cached in %s: %d texts %s", stage.dir, len(ts), ts.counts())
        return stage, ts
    ts = build(train_words, train_labels, unlabelled_words, neighbours, s)
    save(ts, stage.start() / TRANSFER_FILE)
    stage.finish([TRANSFER_FILE], {"size": len(ts), "counts": ts.counts()})
    log.info("transfer set: %d texts %s", len(ts), ts.counts())
    return stage, ts
