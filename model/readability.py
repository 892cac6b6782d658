"""Whether the model can read a text: the share of its words that the vocabulary knows well.

A text of unknown words (gibberish, a language the model was not trained on) is all [UNK] or rare
tokens to the network, which then answers with the bias of its training data, often confidently. The
tokenizer already knows which words it has seen: a word counts as known when it is in the vocabulary
among its `frequent` most frequent entries (the trained vocabulary is ordered by frequency; foreign
words that slipped in, such as "das" or "la" from film titles, are rare). A text is unreadable when
fewer than `min_known` of its words are known, or when it has `min_words` words or more, `min_unknown`
of them unknown, and none among the vocabulary's `common` most frequent (in English training text those are
"the", "and", "is", "it", "not", ...: a sentence of another language that borrows a few known words,
"Das Essen war schrecklich.", has none). Tokens without a letter (numbers, punctuation, emoji,
emoticons) are not words and are not counted; a text of only those is readable. The word after a "#"
(a hashtag, often words run together: #TrumpTransitionTeam) is not counted either.

Thresholds: bench/results/readability.md measures them on English test sets and on hand-written
gibberish and foreign-language texts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from model.tokenizer import UNK_ID

FREQUENT_WORDS = 30_000
MIN_KNOWN = 0.5
COMMON_WORDS = 200
MIN_WORDS = 3
MIN_UNKNOWN = 2


@dataclass(frozen=True)
class Readability:
    is_word: bytes  # per token id: 1 if the token holds a letter
    hash_id: int  # the id of "#": the token after it is a hashtag, not counted
    frequent: int = FREQUENT_WORDS
    min_known: float = MIN_KNOWN
    common: int = COMMON_WORDS
    min_words: int = MIN_WORDS
    min_unknown: int = MIN_UNKNOWN

    @classmethod
    def of(cls, tok: Tokenizer, **thresholds: float) -> Readability:
        vocab = tok.get_vocab()
        flags = bytearray(max(vocab.values(), default=0) + 1)
        for token, i in vocab.items():
            flags[i] = any(c.isalpha() for c in token) and not token.startswith("[")
        flags[UNK_ID] = 1  # an unknown token is counted as an unknown word
        hash_id = vocab.get("#", -1)
        return cls(bytes(flags), hash_id, **thresholds)  # type: ignore[arg-type]

    def counts(self, pieces: Iterable[Sequence[int]]) -> tuple[int, int, int]:
        """(word tokens, known words, common words) of a text's pieces."""
        words = known = common = 0
        is_word, frequent, top, hash_id = self.is_word, self.frequent, self.common, self.hash_id
        for ids in pieces:
            after_hash = False
            for i in ids:
                if after_hash:
                    after_hash = False
                    continue
                after_hash = i == hash_id
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
        return not (words >= self.min_words and words - known >= self.min_unknown and not common)
