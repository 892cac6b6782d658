"""Character offsets of tokens in the ORIGINAL text, repaired where `tokenizers` gets them wrong.

`tokenizers` maps offsets back through the normaliser, which is right for 1:1 and NFKC changes but
not for the project's `Replace` rules whose output is longer or shorter than their match: every
character a Replace inserts is aligned to the last character of the match. So "don't" (normalised to
"do n't") gives the token "n't" the span of "t" alone, "-LRB-" gives "(" the final "-", PTB's "''"
gives '"' the second quote, and a combining accent composed by NFKC ("e" + U+0301 -> "é") is left
out of its word's span.

`repair_offsets` keeps every span whose text normalises and pre-tokenises to exactly its token, and
otherwise searches the smallest widening (at most `MAX_WIDEN` characters each side, never back into
the previous token) that does. The check uses the artifact's own normaliser and pre-tokeniser, so it
holds for any word-level tokenizer.json, not only the rules in model/tokenizer.py. A span that
cannot be matched exactly (one character that normalises to several tokens, e.g. "…" -> ". . .")
keeps what `tokenizers` gave, which then covers the character its token came from.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from model.tokenizer import UNK_TOKEN

# Longest match of a length-changing rule is "-lrb-"/"-rrb-" (5 characters, 4 to widen); combining
# marks after a letter are rarely more than a few. Bounded, so a hostile text costs little.
MAX_WIDEN = 8


def pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The words the tokenizer's model sees for `text` (normalised, pre-tokenised; no vocabulary lookup,
    so an out-of-vocabulary word is itself here, not [UNK])."""
    normalized = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer is not None else text
    if tokenizer.pre_tokenizer is None:
        return normalized.split()
    return [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


def _widen(
    tokenizer: Tokenizer, text: str, want: list[str], start: int, end: int, lo: int, hi: int
) -> tuple[int, int] | None:
    """The smallest [a, b) with lo <= a <= start, end <= b <= hi whose text is exactly `want`."""
    for extra in range(1, 2 * MAX_WIDEN + 1):
        for left in range(min(extra, MAX_WIDEN), -1, -1):  # prefer widening left: what Replace loses
            right = extra - left
            if right > MAX_WIDEN:
                break
            a, b = start - left, end + right
            if a < lo or b > hi:
                continue
            if pieces(tokenizer, text[a:b]) == want:
                return a, b
    return None


def repair_offsets(
    tokenizer: Tokenizer,
    text: str,
    tokens: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    words: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """Offsets into `text` for the first len(tokens) tokens of its encoding (`tokens`/`offsets` from a
    `tokenizers` Encoding), each covering exactly the characters its token came from where possible.

    `words` are `pieces(tokenizer, text)` if the caller has them. When they do not line up with the
    tokens (not a word-level tokenizer), the offsets are returned unchanged."""
    if words is None:
        words = pieces(tokenizer, text)
    n = len(tokens)
    if len(words) < n or any(t != w and t != UNK_TOKEN for t, w in zip(tokens, words, strict=False)):
        return [tuple(o) for o in offsets[:n]]  # type: ignore[misc]
    out: list[tuple[int, int]] = []
    prev_end = 0
    for k in range(n):
        start, end = offsets[k]
        want = [words[k]]
        got = pieces(tokenizer, text[start:end])
        if got != want and words[k] not in got:
            found = _widen(tokenizer, text, want, start, end, min(start, prev_end), len(text))
            if found is not None:
                start, end = found
        out.append((start, end))
        prev_end = max(prev_end, end)
    return out
