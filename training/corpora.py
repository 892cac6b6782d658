"""The built-in corpora and label sets: one place for their names, files and labels.

Data flows one way (as nanoGPT's `prepare` apart from training): training/fetch.py puts the files on
disk, laid out like the shared data mirror; training/data.py only parses them. Both read this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.labels import BINARY, FIVE, THREE

# Label sets, in the order of the model's outputs (model/labels.py). A user file's labels may have any
# names (training/data.py); these are the built-in corpora's, and the canonical order of sentiment names.
LABEL_SETS: dict[str, tuple[str, ...]] = {"binary": BINARY, "three": THREE, "five": FIVE}

# SST's five classes folded to three, as usual (0-1 negative, 2 neutral, 3-4 positive).
FIVE_TO_THREE = (0, 0, 1, 2, 2)

TRAIN_SPLIT, VAL_SPLIT = "train", "val"


class DataError(ValueError):
    """Unusable input data; the message names the file (and line) and what to do about it."""


@dataclass(frozen=True)
class Corpus:
    """A built-in corpus: its files relative to the data folder, how they are read, and its labels.

    `val` names the split used for model selection and calibration; `holdout` means none exists and
    a seeded share of train is held out instead."""

    name: str
    description: str
    files: dict[str, str]
    labels: tuple[str, ...]
    reader: str = "table"  # "table": a labelled CSV/TSV/JSONL file; "trees": SST PTB trees (train only)
    val: str | None = None
    label_map: tuple[int, ...] | None = None  # file label -> model label (SST-5 to three classes)
    tweets: bool = False  # user handles and links normalised as TweetEval does
    eval_splits: tuple[str, ...] = field(default=("test",))


_SST5_FILES = {
    "train": "sst5/trees/train.txt",
    "dev": "sst5/sentences/dev.tsv",
    "test": "sst5/sentences/test.tsv",
}

CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "sst2",
            "GLUE SST-2 (phrases and sentences, binary); reports dev and the sentence-level test set",
            {"train": "sst2/glue/train.tsv", "dev": "sst2/glue/dev.tsv", "test": "sst2/sentences/test.tsv"},
            BINARY,
            val="dev",
            eval_splits=("dev", "test"),
        ),
        Corpus(
            "imdb",
            "IMDB reviews (binary); 10%% of train held out for validation, reports the 25k test set",
            {"train": "imdb/train.jsonl.gz", "test": "imdb/test.jsonl.gz"},
            BINARY,
        ),
        Corpus(
            "sst5",
            "SST five classes: every labelled phrase of the training trees; sentence-level dev and test",
            _SST5_FILES,
            FIVE,
            reader="trees",
            val="dev",
        ),
        Corpus(
            "sst3",
            "SST three classes (0-1 negative, 2 neutral, 3-4 positive): tree phrases, sentence dev and test",
            _SST5_FILES,
            THREE,
            reader="trees",
            val="dev",
            label_map=FIVE_TO_THREE,
        ),
        Corpus(
            "tweets",
            "three-class tweets: SemEval-2013..2016 train, TweetEval val and test (metric: macro-recall)",
            {"train": "tweets/train.tsv", "val": "tweets/val.tsv", "test": "tweets/test.tsv"},
            THREE,
            val="val",
            tweets=True,
        ),
    )
}

# Mixtures: several corpora trained as one, their labels mapped to one set. `weights` is the share of
# each corpus's training rows taken per run (0.5: a seeded half; 2: every row twice); every corpus's
# own evaluation splits are reported, named CORPUS-SPLIT, and validation is the union of their val splits.
@dataclass(frozen=True)
class Mixture:
    name: str
    description: str
    labels: tuple[str, ...]
    weights: dict[str, float]
    # Extra evaluation sets scored on a subset of the labels: (corpus, split) -> labels compared.
    # SST-2's test is binary: a three-class model is scored on negative vs positive only.
    partial_evals: dict[str, str] = field(default_factory=dict)


MIXTURES: dict[str, Mixture] = {
    m.name: m
    for m in (
        Mixture(
            "general",
            "three classes beyond film reviews: SST phrases (half of them, a seeded sample) and tweets; "
            "reports TweetEval test, SST-3 test and SST-2 test scored negative vs positive",
            THREE,
            {"sst3": 0.5, "tweets": 1.0},
            partial_evals={"sst2": "test"},
        ),
    )
}

DATASETS = (*CORPORA, *MIXTURES)


def files_of(dataset: str) -> list[str]:
    """Every file a built-in dataset or mixture reads, relative to the data folder."""
    if dataset in MIXTURES:
        m = MIXTURES[dataset]
        names = [*m.weights, *m.partial_evals]
        return [f for n in dict.fromkeys(names) for f in files_of(n)]
    if dataset not in CORPORA:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return list(dict.fromkeys(CORPORA[dataset].files.values()))
