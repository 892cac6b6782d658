"""Word-level tokenizer built with the `tokenizers` library.

SST is lower-cased and PTB-tokenised ("do n't", "great ! !") while real users
write "don't" and "Great!!". The normaliser and pre-tokeniser below map both
spellings to the same tokens, so a model trained on SST sees familiar input
when serving real text (and IMDB's `<br />` markup disappears).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Encoding, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from model.text_rules import HANDLE_PATTERN, HANDLE_TOKEN, LINK_PATTERN, LINK_TOKEN

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1

# One token per match: the clitic "n't", the clitics 's 're 've 'll 'd 'm,
# words (hyphenated compounds stay whole, as in SST), or a single punctuation mark.
_TOKEN_PATTERN_V1 = r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|[^\w\s]"
# Version 2 also keeps emoticons whole (":)", ";-(", ":d" after lower-casing, "<3", "(:"): split into
# punctuation they would lose their meaning. Emoji are single characters, so they were always a token.
_EMOTICON = r"<3|[:;=]['\-^]?[)\](\[dp/\\|3*o]|[)\](\[][\-^]?[:;=]"
_TOKEN_PATTERN_V2 = rf"{_EMOTICON}|n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|[^\w\s]"

# The normaliser's rules after NFKC and lower-casing, as (pattern, replacement). Version 2 adds a
# tweet's links and user handles, replaced as TweetEval and the training data do (model/text_rules.py).
_RULES_V1: tuple[tuple[str, str], ...] = (
    (r"<br\s*/?>", " "),  # IMDB line breaks
    ("[\u2018\u2019`]", "'"),  # curly quotes, PTB ``
    ("[\u201c\u201d]", '"'),
    ("''|\"", ' " '),  # PTB '' and plain double quote
    ("-lrb-", "("),  # PTB brackets in SST
    ("-rrb-", ")"),
    (r"n't\b", " n't"),  # don't -> do n't, can't -> ca n't
)
_RULES_V2 = ((LINK_PATTERN, f" {LINK_TOKEN} "), (HANDLE_PATTERN, HANDLE_TOKEN), *_RULES_V1)
# Version 1 serves artifacts trained before it existed (their tokenizer.json holds its rules).
TEXT_RULES = {1: (_RULES_V1, _TOKEN_PATTERN_V1), 2: (_RULES_V2, _TOKEN_PATTERN_V2)}
CURRENT_RULES = 2


def _normalizer(rules: tuple[tuple[str, str], ...]) -> normalizers.Normalizer:
    steps: list[normalizers.Normalizer] = [normalizers.NFKC(), normalizers.Lowercase()]
    for pattern, replacement in rules:
        literal = pattern.startswith("-")  # the PTB brackets were plain strings in version 1
        steps.append(normalizers.Replace(pattern if literal else Regex(pattern), replacement))
    return normalizers.Sequence(steps)


# Python's \s also matches these four, Oniguruma's (the tokenizer's) does not.
_NOT_MIRRORED = re.compile(r"[\x1c-\x1f\[]")  # and "[": the tokenizer matches "[PAD]"/"[UNK]" first


def new_tokenizer(version: int = CURRENT_RULES) -> Tokenizer:
    """An untrained tokenizer with the project's normalisation rules (of `version`)."""
    rules, pattern = TEXT_RULES[version]
    tok = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    tok.normalizer = _normalizer(rules)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    return tok


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 30_000, min_frequency: int = 1, max_length: int = 256
) -> Tokenizer:
    """Build the vocabulary from training texts only; [PAD]=0 and [UNK]=1."""
    tok = new_tokenizer()
    trainer = WordLevelTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.token_to_id(PAD_TOKEN) == PAD_ID and tok.token_to_id(UNK_TOKEN) == UNK_ID
    tok.enable_truncation(max_length=max_length)
    return tok


def rules_version(tok: Tokenizer) -> int | None:
    """Which version of this module's text rules a tokenizer has (None: other rules)."""
    theirs = json.loads(tok.to_str())
    for version in TEXT_RULES:
        ours = json.loads(new_tokenizer(version).to_str())
        if all(ours[k] == theirs[k] for k in ("normalizer", "pre_tokenizer", "post_processor")):
            return version
    return None


def load_tokenizer(path: str | Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(PAD_TOKEN) != PAD_ID or tok.token_to_id(UNK_TOKEN) != UNK_ID:
        raise ValueError(f"{path}: expected {PAD_TOKEN}=0 and {UNK_TOKEN}=1 in the vocabulary")
    return tok


def max_length_of(tok: Tokenizer) -> int:
    trunc = tok.truncation
    return int(trunc["max_length"]) if trunc else 0


def encode(tok: Tokenizer, texts: Sequence[str], fast: AsciiIds | None = None) -> list[list[int] | Encoding]:
    """Per text: its ids from `fast` where it answers (a short text, never truncated), else the
    tokenizer's Encoding (one batched call for all of those)."""
    known: list[list[int] | None] = [fast.ids(t) for t in texts] if fast else [None] * len(texts)
    rest = [t for t, ids in zip(texts, known, strict=True) if ids is None]
    encoded = iter(tok.encode_batch(rest, add_special_tokens=False) if rest else ())
    return [ids if ids is not None else next(encoded) for ids in known]


def token_ids(
    tok: Tokenizer, texts: Sequence[str], fast: AsciiIds | None = None
) -> tuple[list[list[int]], list[bool]]:
    """Token ids per text (at least one id: an empty text becomes [UNK]) and truncation flags.
    With `fast`, the texts it answers for skip the tokenizer (same ids)."""
    out = encode(tok, texts, fast)
    ids = [(x if isinstance(x, list) else x.ids) or [UNK_ID] for x in out]
    return ids, [not isinstance(x, list) and bool(x.overflowing) for x in out]


class AsciiIds:
    """The tokenizer's ids for short plain-ASCII texts, computed with Python's `re` and a dict.

    What serving needs of most texts is only their ids. The `tokenizers` pipeline does much more per
    text (NFKC, nine normaliser passes that each track character alignments, an Oniguruma split);
    this is several times cheaper (bench/results/tokenizer_speed.md). `ids` answers None, and
    the caller uses the tokenizer, for what it does not mirror exactly: non-ASCII text, a "[" (the
    special tokens), four control characters, and texts longer than max_length (they need offsets;
    beyond 6 characters per token they are not even tried)."""

    def __init__(self, tok: Tokenizer, version: int = CURRENT_RULES) -> None:
        self._vocab = tok.get_vocab()
        self._max_length = max_length_of(tok) or None
        # Longer texts have more than max_length tokens but for rare ones of very long words: going to
        # the tokenizer at once saves tokenizing them twice.
        self._max_chars = 6 * self._max_length if self._max_length else None
        rules, pattern = TEXT_RULES[version]
        # NFKC and the curly quotes change no ASCII character (the rules' ASCII parts remain, as the
        # backtick); the rest act the same in Python's re
        ascii_parts = (("".join(c for c in p if c.isascii()), r) for p, r in rules)
        self._rules = [(re.compile(p), r) for p, r in ascii_parts if p != "[]"]
        self._pattern = re.compile(pattern)

    @classmethod
    def mirroring(cls, tok: Tokenizer) -> AsciiIds | None:
        """An AsciiIds for a tokenizer with exactly one version of this module's rules (any
        vocabulary), else None."""
        theirs = json.loads(tok.to_str())
        model = theirs["model"]
        word_level = model.get("type") == "WordLevel" and model.get("unk_token") == UNK_TOKEN
        specials = {t["content"] for t in theirs["added_tokens"]} <= {PAD_TOKEN, UNK_TOKEN}
        if not (word_level and specials and theirs["padding"] is None):
            return None
        version = rules_version(tok)
        return None if version is None else cls(tok, version)

    def words(self, text: str) -> list[str]:
        """The tokens of an ASCII text without the checks of `ids` (no length limit)."""
        text = text.lower()
        for pattern, replacement in self._rules:
            text = pattern.sub(replacement, text)
        return self._pattern.findall(text)

    def ids(self, text: str) -> list[int] | None:
        if (
            (self._max_chars is not None and len(text) > self._max_chars)
            or not text.isascii()
            or _NOT_MIRRORED.search(text)
        ):
            return None
        words = self.words(text)
        if self._max_length is not None and len(words) > self._max_length:
            return None
        get = self._vocab.get
        return [get(w, UNK_ID) for w in words]


def pad(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    out = torch.full((len(ids), int(lengths.max()) if len(ids) else 0), PAD_ID, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, lengths
