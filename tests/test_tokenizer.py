"""AsciiIds, the Python mirror of the tokenizer for short ASCII texts: the same ids as `tokenizers`."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, normalizers
from tokenizers.trainers import WordLevelTrainer

from core import long_text
from model.tokenizer import (
    PAD_TOKEN,
    TEXT_RULES,
    UNK_TOKEN,
    AsciiIds,
    new_tokenizer,
    rules_version,
    token_ids,
)

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[1] / "models/default/tokenizer.json"


@pytest.fixture(scope="module", params=sorted(TEXT_RULES))
def tok(request, data_mirror: Path) -> Tokenizer:
    """Each version of the text rules: the shipped model's tokenizer where it has that version, else
    one trained on the corpora with it."""
    shipped = Tokenizer.from_file(str(DEFAULT_TOKENIZER))
    if rules_version(shipped) == request.param:
        return shipped
    tok = new_tokenizer(request.param)
    tok.train_from_iterator(
        _corpus(data_mirror), WordLevelTrainer(vocab_size=30_000, special_tokens=[PAD_TOKEN, UNK_TOKEN])
    )
    tok.enable_truncation(max_length=128)
    return tok


@pytest.fixture(scope="module")
def fast(tok) -> AsciiIds:
    mirror = AsciiIds.mirroring(tok)
    assert mirror is not None, "the tokenizer has one of this project's versions of the rules"
    return mirror


def _corpus(data_mirror: Path) -> list[str]:
    texts = []
    for name in ("sst2/glue/train.tsv", "sst2/glue/dev.tsv", "sst2/sentences/test.tsv", "tweets/train.tsv"):
        with open(data_mirror / name, encoding="utf-8") as f:
            texts += [r[0] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    with gzip.open(data_mirror / "imdb/train.jsonl.gz", "rt", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line in itertools.islice(f, 5000)]  # raw user-style text
    return texts


def test_same_tokens_as_the_tokenizer_on_every_sst2_text_and_5000_imdb_reviews(tok, fast, data_mirror):
    full = Tokenizer.from_str(tok.to_str())
    full.no_truncation()
    v = tok.get_vocab()
    texts = [t for t in _corpus(data_mirror) if t.isascii() and "[" not in t]
    assert len(texts) > 110_000
    rust = full.encode_batch(texts, add_special_tokens=False)
    differ = [t for t, e in zip(texts, rust, strict=True) if [v.get(w, 1) for w in fast.words(t)] != e.ids]
    assert differ == []


# Fragments that exercise every rule and every fallback: clitics, PTB spellings, markup, quotes,
# brackets and special tokens, the control characters where Python's \s and Oniguruma's differ,
# non-ASCII letters and quotes.
_FRAGMENTS = [
    "a",
    "Good",
    "film",
    "n't",
    "don't",
    "can't",
    "'s",
    "'re",
    "'",
    "''",
    '"',
    "`",
    "``",
    "-lrb-",
    "-rrb-",
    "-LRB-",
    "<br />",
    "<br>",
    "<BR/>",
    "<b>",
    " ",
    "  ",
    "\t",
    "\n",
    "\x1c",
    "\x0b",
    ".",
    "!",
    "?",
    "-",
    "well-made",
    "_",
    "9",
    "[UNK]",
    "[PAD]",
    "[",
    "]",
    "caf\u00e9",
    "\u201cno\u201d",
    "\u2019s",
    ":)",
    ":-(",
    ";D",
    "<3",
    "(:",
    ":/",
    "@someone",
    "@",
    "http://t.co/x1",
    "https://",
    "www.example.com",
    "\U0001f600",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_token_ids_are_the_same_with_and_without_the_mirror(tok, fast, text):
    assert token_ids(tok, [text], fast) == token_ids(tok, [text])


def test_it_steps_aside_for_what_it_does_not_mirror(fast, tok):
    assert fast.ids("caf\u00e9 au lait") is None  # NFKC and Unicode lower-casing stay with the tokenizer
    assert fast.ids("a [UNK] b") is None  # special tokens are matched before normalisation
    assert fast.ids("a\x1cb") is None
    assert fast.ids("good " * 129) is None  # longer than max_length: chunking needs offsets
    assert fast.ids("good " * 200) is None  # so long that it is not even tried
    assert fast.ids("good " * 128) == [tok.token_to_id("good")] * 128
    assert fast.ids("") == []
    assert fast.ids("It isn't bad.") == tok.encode("It isn't bad.", add_special_tokens=False).ids


def test_no_mirror_for_a_tokenizer_with_other_rules(tok):
    other = Tokenizer.from_str(tok.to_str())
    other.normalizer = normalizers.Lowercase()
    assert AsciiIds.mirroring(other) is None


@pytest.mark.parametrize("mode", ["truncate", "chunk"])
def test_plans_are_the_same_with_and_without_the_mirror(tok, fast, mode):
    texts = ["Loved it.", "", "caf\u00e9 was bad", "[UNK] fine", "It was long. " * 60, "A plain review!"]
    kw = {"max_length": 128, "mode": mode, "sentences": False, "max_chunks": 16}
    assert long_text.plan(tok, texts, fast=fast, **kw) == long_text.plan(tok, texts, **kw)


def test_emoticons_emoji_handles_and_links_are_tokens_of_their_own():
    tok = new_tokenizer()
    words = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(
        "Loved it :) <3 \U0001f600 @JaneDoe see https://t.co/AbC (great) 8)"))]
    assert words == ["loved", "it", ":)", "<3", "\U0001f600", "@", "user", "see", "http", "(", "great", ")",
                     "8", ")"]
