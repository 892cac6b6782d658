"""Whether the model can read a text: the share of its words that the vocabulary knows well.

A text of unknown words (gibberish, a language the model was not trained on) is all [UNK] or rare
tokens to the network, which then answers with the bias of its training data, often confidently. The
tokenizer already knows which words it has seen: a word counts as known when it is in the vocabulary
among its `frequent` most frequent entries (the trained vocabulary is ordered by frequency; foreign
words that slipped in, such as "das" or "la" from film titles, are rare). A text is unreadable when
fewer than `min_known` of its words are known, or when it has `min_words` words or more, some of them
unknown, and none among the vocabulary's `common` most frequent (in English training text those are
"the", "and", "is", "it", "not", ...: a sentence of another language that borrows a few known words,
"Das Essen war schrecklich.", has none). Tokens without a letter (numbers, punctuation, emoji,
emoticons) are not words and are not counted; a text of only those is readable.

Thresholds: bench/results/readability.md measures them on English test sets and on hand-written
gibberish and foreign-language texts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from model.tokenizer import UNK_ID

FREQUENT_WORDS = 20_000
MIN_KNOWN = 0.5
COMMON_WORDS = 100
MIN_WORDS = 3


@dataclass(frozen=True)
class Readability:
    is_word: bytes  # per token id: 1 if the token holds a letter
    frequent: int = FREQUENT_WORDS
    min_known: float = MIN_KNOWN
    common: int = COMMON_WORDS
    min_words: int = MIN_WORDS

    @classmethod
    def of(cls, tok: Tokenizer, **thresholds: float) -> Readability:
        vocab = tok.get_vocab()
        flags = bytearray(max(vocab.values(), default=0) + 1)
        for token, i in vocab.items():
            flags[i] = any(c.isalpha() for c in token) and not token.startswith("[")
        flags[UNK_ID] = 1  # an unknown token is counted as an unknown word
        return cls(bytes(flags), **thresholds)  # type: ignore[arg-type]

    def counts(self, pieces: Iterable[Sequence[int]]) -> tuple[int, int, int]:
        """(word tokens, known words, common words) of a text's pieces."""
        words = known = common = 0
        is_word, frequent, top = self.is_word, self.frequent, self.common
        for ids in pieces:
            for i in ids:
                if is_word[i]:
                    words += 1
                    if i != UNK_ID:
                        known += i < frequent
                        common += i < top
        return words, known, common

    def readable(self, pieces: Iterable[Sequence[int]]) -> bool:
        words, known, common = self.counts(pieces)
        if not words:
            return True
        if known < self.min_known * words:
            return False
        return not (words >= self.min_words and known < words and not common)
