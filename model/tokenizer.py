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

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1

# One token per match: the clitic "n't", the clitics 's 're 've 'll 'd 'm,
# words (hyphenated compounds stay whole, as in SST), or a single punctuation mark.
_TOKEN_PATTERN = r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|[^\w\s]"


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"<br\s*/?>"), " "),  # IMDB line breaks
            normalizers.Replace(Regex("[\u2018\u2019`]"), "'"),  # curly quotes, PTB ``
            normalizers.Replace(Regex("[\u201c\u201d]"), '"'),
            normalizers.Replace(Regex("''|\""), ' " '),  # PTB '' and plain double quote
            normalizers.Replace("-lrb-", "("),  # PTB brackets in SST
            normalizers.Replace("-rrb-", ")"),
            normalizers.Replace(Regex(r"n't\b"), " n't"),  # don't -> do n't, can't -> ca n't
        ]
    )


# The normaliser's rules as they act on plain ASCII, for AsciiIds (NFKC and the curly-quote rules
# change no ASCII character); tests/test_tokenizer.py checks the two agree on every corpus text.
_ASCII_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"<br\s*/?>", " "),
        ("`", "'"),
        ("''|\"", ' " '),
        ("-lrb-", "("),
        ("-rrb-", ")"),
        (r"n't\b", " n't"),
    )
)
# Python's \s also matches these four, Oniguruma's (the tokenizer's) does not.
_NOT_MIRRORED = re.compile(r"[\x1c-\x1f\[]")  # and "[": the tokenizer matches "[PAD]"/"[UNK]" first


def new_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the project's normalisation rules."""
    tok = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_TOKEN_PATTERN), behavior="removed", invert=True)
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

    What serving needs of most texts is only their ids. The `tokenizers` pipeline costs ~50 µs for
    a 20-word sentence (NFKC, nine normaliser passes that each track character alignments, an
    Oniguruma split); this costs a third of it (bench/results/tokenizer_speed.md). `ids` answers None, and
    the caller uses the tokenizer, for what it does not mirror exactly: non-ASCII text, a "[" (the
    special tokens), four control characters, and texts longer than max_length (they need offsets;
    beyond 6 characters per token they are not even tried)."""

    def __init__(self, tok: Tokenizer) -> None:
        self._vocab = tok.get_vocab()
        self._max_length = max_length_of(tok) or None
        # Longer texts have more than max_length tokens but for rare ones of very long words: going to
        # the tokenizer at once saves tokenizing them twice.
        self._max_chars = 6 * self._max_length if self._max_length else None
        self._pattern = re.compile(_TOKEN_PATTERN)

    @classmethod
    def mirroring(cls, tok: Tokenizer) -> AsciiIds | None:
        """An AsciiIds for a tokenizer with exactly this module's rules (any vocabulary), else None."""
        ours, theirs = json.loads(new_tokenizer().to_str()), json.loads(tok.to_str())
        same = all(ours[k] == theirs[k] for k in ("normalizer", "pre_tokenizer", "post_processor"))
        model = theirs["model"]
        word_level = model.get("type") == "WordLevel" and model.get("unk_token") == UNK_TOKEN
        specials = {t["content"] for t in theirs["added_tokens"]} <= {PAD_TOKEN, UNK_TOKEN}
        return cls(tok) if same and word_level and specials and theirs["padding"] is None else None

    def words(self, text: str) -> list[str]:
        """The tokens of an ASCII text without the checks of `ids` (no length limit)."""
        text = text.lower()
        for pattern, replacement in _ASCII_RULES:
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
