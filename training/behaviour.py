"""A small behavioural report (CheckList-style, hand-written cases): a report, not a gate.

Each case is (capability, text, expected label). The texts are written the way
users write, not in SST's tokenisation, to show whether normalisation carries over.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

NEG, POS = 0, 1

CASES: list[tuple[str, str, int]] = [
    # negation
    ("negation", "This movie was not good.", NEG),
    ("negation", "I don't like this film at all.", NEG),
    ("negation", "It isn't bad, actually.", POS),
    ("negation", "Not a single moment of it was boring.", POS),
    ("negation", "I can't recommend it.", NEG),
    ("negation", "Never have I been so disappointed.", NEG),
    # contrast with "but"
    ("contrast", "The acting was great, but the story was dull and predictable.", NEG),
    ("contrast", "The start is slow, but the ending is wonderful.", POS),
    ("contrast", "Beautiful photography, but boring and far too long.", NEG),
    ("contrast", "I expected to hate it, but it was charming and funny.", POS),
    # intensifiers
    ("intensifier", "Absolutely brilliant!!", POS),
    ("intensifier", "Utterly terrible.", NEG),
    ("intensifier", "One of the very best films of the year.", POS),
    ("intensifier", "Extremely boring and way too long.", NEG),
    ("intensifier", "Great!!!", POS),
    # typos
    ("typo", "What a wonderfull movie.", POS),
    ("typo", "The wrst film I have ever seen.", NEG),
    ("typo", "Realy enjoyed it, great acting.", POS),
    ("typo", "Horible plot and awfull dialogue.", NEG),
    # casing
    ("casing", "I LOVED IT", POS),
    ("casing", "BORING.", NEG),
    ("casing", "A Masterpiece.", POS),
    ("casing", "AWFUL, JUST AWFUL.", NEG),
    # plain
    ("plain", "A delightful, moving film.", POS),
    ("plain", "A waste of time.", NEG),
    ("plain", "Funny, smart and touching.", POS),
    ("plain", "Dull, lifeless and badly written.", NEG),
]


def behavioural_report(predict: Callable[[list[str]], list[int]]) -> dict[str, dict]:
    """Pass rate per capability, with the failing cases listed."""
    preds = predict([text for _, text, _ in CASES])
    by_cap: dict[str, dict] = defaultdict(lambda: {"passed": 0, "total": 0, "failures": []})
    for (cap, text, expected), got in zip(CASES, preds, strict=True):
        row = by_cap[cap]
        row["total"] += 1
        if got == expected:
            row["passed"] += 1
        else:
            row["failures"].append(text)
    report = dict(by_cap)
    total = sum(r["passed"] for r in report.values())
    report["overall"] = {"passed": total, "total": len(CASES), "failures": []}
    return report
