"""Long documents and per-sentence scores: which token pieces of a text the model scores.

The model reads at most `max_length` tokens (128 for the default SST-2 model).

* `truncate`: one piece, the first max_length tokens (the service's original behaviour).
* `chunk`: the text is cut into pieces of at most max_length tokens, on sentence boundaries where
  possible (a sentence longer than max_length is cut at token boundaries into near-equal parts), at
  most `max_chunks` pieces (beyond them the text is marked truncated). Every piece goes into the same
  batcher job, and the text's probabilities are the softmax of the token-count-weighted mean of its
  pieces' calibrated logits (`aggregate`; bench/results/long_text.md compares it with averaging
  probabilities).
* `sentences=True` adds one piece per sentence of the scored part of the text, with character
  offsets into the original string. Pieces with the same tokens (a one-sentence text) are scored once.

Sentences are found on the token stream, so the tokenizer runs once per text and the pieces are
exactly the tokens it produced: a boundary follows `.`, `!` or `?` (and any closing quotes or
brackets) when whitespace follows, except after an abbreviation or a single letter ("Mr.", "e.g.",
"J. K."); an HTML line break or a newline is always a boundary (IMDB's paragraphs).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tokenizers import Encoding, Tokenizer

from core.errors import InvalidInput
from model.tokenizer import UNK_ID, AsciiIds, encode, token_ids

Mode = Literal["truncate", "chunk"]
Aggregation = Literal["probabilities", "logits"]

_TERMINAL = frozenset(".!?")
_CLOSING = frozenset({'"', "'", ")", "]", "}"})
# Tokens (lower-cased by the normaliser) that a full stop follows without ending the sentence.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "approx", "ca"})


@dataclass(slots=True, frozen=True)
class Span:
    """Tokens [start, end) of a text and the characters [char_start, char_end) they came from."""

    start: int
    end: int
    char_start: int
    char_end: int

    @property
    def tokens(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class Layout:
    """How one text is scored: its tokens, the chunks whose aggregate is its score, its sentences."""

    ids: list[int]
    chunks: list[Span]
    sentences: list[Span]
    truncated: bool  # some tokens are in no chunk (beyond max_length, or beyond max_chunks chunks)


@dataclass(slots=True)
class Encoded:
    """A text's full token stream (no truncation): ids, token strings and character offsets."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]


def full_stream(e: Encoding) -> Encoded:
    """Every token of a text. The artifact's tokenizer truncates at max_length and keeps the rest in
    `overflowing` (consecutive windows, no stride), so the full stream is their concatenation: the
    same ids as the truncating path for the first max_length tokens, by construction."""
    ids, tokens, offsets = list(e.ids), list(e.tokens), list(e.offsets)
    for o in e.overflowing:
        ids += o.ids
        tokens += o.tokens
        offsets += o.offsets
    return Encoded(ids, tokens, offsets)


def _is_break(text: str, gap_start: int, gap_end: int) -> bool:
    gap = text[gap_start:gap_end]
    return "\n" in gap or "<br" in gap.lower()


def _adjacent(text: str, gap_start: int, gap_end: int) -> bool:
    """No whitespace or markup between two tokens (the gap can hold characters the normaliser folded
    away, such as the second quote of PTB's '')."""
    gap = text[gap_start:gap_end]
    return not gap or not (any(c.isspace() for c in gap) or "<" in gap)


def sentence_bounds(text: str, enc: Encoded) -> list[int]:
    """Token indices where sentences end (exclusive), the last one being len(tokens)."""
    tokens, offsets = enc.tokens, enc.offsets
    n = len(tokens)
    ends: list[int] = []
    i = 0
    while i < n:
        nxt = i + 1
        if tokens[i] in _TERMINAL:
            # a run of terminal marks and closing quotes/brackets stays with its sentence
            while (
                nxt < n
                and _adjacent(text, offsets[nxt - 1][1], offsets[nxt][0])
                and (tokens[nxt] in _TERMINAL or tokens[nxt] in _CLOSING)
            ):
                nxt += 1
            if nxt < n and not _adjacent(text, offsets[nxt - 1][1], offsets[nxt][0]):  # whitespace follows
                prev = tokens[i - 1] if i > 0 else ""
                abbreviation = (
                    tokens[i] == "."
                    and nxt == i + 1
                    and (prev in _ABBREVIATIONS or (len(prev) == 1 and prev.isalpha()))
                )
                if not abbreviation or _is_break(text, offsets[nxt - 1][1], offsets[nxt][0]):
                    ends.append(nxt)
        elif nxt < n and _is_break(text, offsets[i][1], offsets[nxt][0]):
            ends.append(nxt)
        i = nxt
    if not ends or ends[-1] != n:
        ends.append(n)
    return ends


def _char_end(text: str, enc: Encoded, end: int) -> int:
    """End character of tokens [.., end): the last token's end, stretched over characters the
    normaliser folded into it (the second quote of PTB's '') up to whitespace or the next token."""
    stop = enc.offsets[end][0] if end < len(enc.offsets) else len(text)
    c = enc.offsets[end - 1][1]
    while c < stop and not text[c].isspace() and text[c] != "<":
        c += 1
    return c


def _span(text: str, enc: Encoded, start: int, end: int) -> Span:
    return Span(start, end, enc.offsets[start][0], _char_end(text, enc, end))


def _split_even(start: int, end: int, max_length: int) -> list[tuple[int, int]]:
    """[start, end) cut at token boundaries into the fewest near-equal parts of ≤ max_length tokens."""
    n = end - start
    parts = math.ceil(n / max_length)
    cuts = [start + (n * k) // parts for k in range(parts + 1)]
    return list(itertools.pairwise(cuts))


def layout(text: str, enc: Encoded, *, max_length: int, mode: Mode, max_chunks: int) -> Layout:
    """Chunks and sentences of one text (each ≤ max_length tokens) for the given mode."""
    n = len(enc.ids)
    if n == 0:  # nothing the tokenizer keeps (e.g. only markup): scored as [UNK], like token_ids does
        whole = Span(0, 1, 0, len(text))
        return Layout([UNK_ID], [whole], [whole], False)
    # sentences, each capped at max_length tokens
    pieces: list[tuple[int, int]] = []
    start = 0
    for end in sentence_bounds(text, enc):
        pieces += _split_even(start, end, max_length) if end - start > max_length else [(start, end)]
        start = end
    if mode == "truncate" or n <= max_length:
        chunk_bounds = [(0, min(n, max_length))]
    else:
        # greedy: as many whole sentences as fit in each chunk
        chunk_bounds = []
        for s, e in pieces:
            if chunk_bounds and e - chunk_bounds[-1][0] <= max_length:
                chunk_bounds[-1] = (chunk_bounds[-1][0], e)
            else:
                chunk_bounds.append((s, e))
        chunk_bounds = chunk_bounds[:max_chunks]
    scored_end = chunk_bounds[-1][1]
    sentences = [_span(text, enc, s, min(e, scored_end)) for s, e in pieces if s < scored_end]
    chunks = [_span(text, enc, s, e) for s, e in chunk_bounds]
    return Layout(enc.ids, chunks, sentences, scored_end < n)


def aggregate(rows: Sequence[Sequence[float]], weights: Sequence[int], how: Aggregation) -> list[float]:
    """One probability row from several pieces' rows, weighted by token count: the weighted mean of
    the probabilities, or the softmax of the weighted mean of the (calibrated) logits. log p is the
    logit / T minus a per-row constant that softmax ignores, so averaging log p averages logits."""
    if len(rows) == 1:
        return list(rows[0])
    total = float(sum(weights))
    if how == "probabilities":
        return [
            sum(w * r[k] for r, w in zip(rows, weights, strict=True)) / total for k in range(len(rows[0]))
        ]
    logs = [
        sum(w * math.log(max(r[k], 1e-30)) for r, w in zip(rows, weights, strict=True)) / total
        for k in range(len(rows[0]))
    ]
    top = max(logs)
    exps = [math.exp(x - top) for x in logs]
    z = sum(exps)
    return [x / z for x in exps]


# Measured on IMDB's 25k test reviews with the SST-2 model (bench/results/long_text.md): averaging
# logits beats averaging probabilities, by 0.2 points with 128-token chunks and 1.2 with sentences.
AGGREGATION: Aggregation = "logits"


@dataclass(slots=True)
class TextPlan:
    chunk_pieces: list[int]  # indices into Plan.ids; their weighted aggregate is the text's score
    weights: list[int]  # token count of each chunk
    truncated: bool
    sentences: list[tuple[int, int, int]] | None  # (piece index, char start, char end)


@dataclass(slots=True)
class Plan:
    """The pieces a request's texts become (submitted as one batcher job) and how to reassemble them."""

    ids: list[list[int]]
    texts: list[TextPlan]


def plan(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    mode: Mode,
    sentences: bool,
    max_chunks: int,
    fast: AsciiIds | None = None,
    max_pieces: int | None = None,
) -> Plan:
    """`fast` (the artifact's `ascii_ids`) gives the ids of the short texts it answers for; the others
    go through the tokenizer. `max_pieces`: InvalidInput as soon as the pieces exceed it, so a request
    that could never be queued costs at most one more text's layout (a sentence per piece can make
    45,000 pieces of 64 long texts)."""
    if mode == "truncate" and not sentences:
        # The original path: one piece per text, tokenized with truncation.
        ids, truncated = token_ids(tokenizer, texts, fast)
        return Plan(
            ids,
            [TextPlan([i], [len(x)], t, None) for i, (x, t) in enumerate(zip(ids, truncated, strict=True))],
        )
    out = Plan([], [])
    # Sentences need offsets: every text through the tokenizer then.
    for text, e in zip(texts, encode(tokenizer, texts, None if sentences else fast), strict=True):
        if isinstance(e, list) or (not sentences and not e.overflowing):  # one piece, no layout
            ids = (e if isinstance(e, list) else e.ids) or [UNK_ID]
            out.texts.append(TextPlan([len(out.ids)], [len(ids)], False, None))
            out.ids.append(ids)
            continue
        lay = layout(text, full_stream(e), max_length=max_length, mode=mode, max_chunks=max_chunks)
        index: dict[tuple[int, int], int] = {}  # token span -> piece: identical pieces are scored once

        def piece(span: Span, ids: list[int] = lay.ids, index: dict[tuple[int, int], int] = index) -> int:
            key = (span.start, span.end)
            if key not in index:
                index[key] = len(out.ids)
                out.ids.append(ids[span.start : span.end])
            return index[key]

        chunk_pieces = [piece(c) for c in lay.chunks]
        sentence_pieces = [(piece(s), s.char_start, s.char_end) for s in lay.sentences] if sentences else None
        out.texts.append(
            TextPlan(chunk_pieces, [c.tokens for c in lay.chunks], lay.truncated, sentence_pieces)
        )
        if max_pieces is not None and len(out.ids) > max_pieces:
            raise too_many_pieces(len(out.ids), len(out.texts), len(texts), max_pieces)
    if max_pieces is not None and len(out.ids) > max_pieces:
        raise too_many_pieces(len(out.ids), len(texts), len(texts), max_pieces)
    return out


# Characters per token of English review text are 3.6-5.7 (IMDB, the default tokenizer; 4.8 on
# average): an estimate from 6 rarely counts more pieces than the tokenizer will make.
CHARS_PER_TOKEN = 6


def estimate_pieces(texts: Sequence[str], *, max_length: int, mode: Mode, max_chunks: int) -> int:
    """The chunks a request's texts will likely make, from their lengths alone (no tokenizing): what
    admission can check before spending the planning. Sentences are not counted (a text may have one
    or hundreds); they only add pieces."""
    if mode == "truncate":
        return len(texts)
    per_chunk = max_length * CHARS_PER_TOKEN
    return sum(min(max_chunks, max(1, -(-len(t) // per_chunk))) for t in texts)


@dataclass(slots=True)
class TextResult:
    row: list[float]
    truncated: bool
    chunks: int
    sentences: list[tuple[int, int, list[float]]] | None  # (char start, char end, probabilities)


def reassemble(p: Plan, rows: Sequence[list[float]], how: Aggregation = AGGREGATION) -> list[TextResult]:
    """Per text: the aggregated probabilities, truncation, chunk count and per-sentence rows."""
    out = []
    for t in p.texts:
        row = aggregate([rows[i] for i in t.chunk_pieces], t.weights, how)
        sents = None if t.sentences is None else [(a, b, rows[i]) for i, a, b in t.sentences]
        out.append(TextResult(row, t.truncated, len(t.chunk_pieces), sents))
    return out


def too_many_pieces(pieces: int, done: int, total: int, max_queue_texts: int) -> InvalidInput:
    """A request whose pieces could never fit in the queue would get 503 forever: 422 instead."""
    counted = "" if done == total else f" (counted up to text {done - 1} of {total})"
    return InvalidInput(
        f"body: the texts split into at least {pieces} pieces to score (chunks and sentences){counted}; at "
        f"most {max_queue_texts} fit in the queue (SENTIMENT_MAX_QUEUE_TEXTS={max_queue_texts}); send fewer "
        "or shorter texts per request, or leave `sentences` off",
        details=[{"loc": ["body"], "msg": "too many pieces", "type": "too_many_pieces"}],
    )
