"""Word-level tokenizer built with the `tokenizers` library.

SST is lower-cased and PTB-tokenised ("do n't", "great ! !") while real users
write "don't" and "Great!!". The normaliser and pre-tokeniser below map both
spellings to the same tokens, so a model trained on SST sees familiar input
when serving real text (and IMDB's `<br />` markup disappears).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
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


def token_ids(tok: Tokenizer, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
    """Token ids per text (at least one id: an empty text becomes [UNK]) and truncation flags."""
    encs = tok.encode_batch(list(texts), add_special_tokens=False)
    ids = [e.ids or [UNK_ID] for e in encs]
    return ids, [bool(e.overflowing) for e in encs]


def pad(ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    out = torch.full((len(ids), int(lengths.max()) if len(ids) else 0), PAD_ID, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, lengths
