"""A small behavioural report (CheckList-style, hand-written cases): a report, not a gate.

Each case is (capability, text, expected label). The texts are written the way
users write, not in SST's tokenisation, to show whether normalisation carries over, and
reach past film reviews (products, restaurants) to show how far the model carries.
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
    ("negation", "Nothing about this phone works the way it should.", NEG),
    ("negation", "The food was not bad at all.", POS),
    ("negation", "I wouldn't call it a masterpiece, and I wouldn't watch it again.", NEG),
    ("negation", "There is no reason to skip this one.", POS),
    # contrast with "but"
    ("contrast", "The acting was great, but the story was dull and predictable.", NEG),
    ("contrast", "The start is slow, but the ending is wonderful.", POS),
    ("contrast", "Beautiful photography, but boring and far too long.", NEG),
    ("contrast", "I expected to hate it, but it was charming and funny.", POS),
    ("contrast", "The room was small, but spotless and the staff were lovely.", POS),
    ("contrast", "Great battery life, but the screen cracked within a week.", NEG),
    ("contrast", "The waiter was friendly, but the steak was cold and tough.", NEG),
    ("contrast", "It looks cheap, but it works perfectly.", POS),
    # intensifiers
    ("intensifier", "Absolutely brilliant!!", POS),
    ("intensifier", "Utterly terrible.", NEG),
    ("intensifier", "One of the very best films of the year.", POS),
    ("intensifier", "Extremely boring and way too long.", NEG),
    ("intensifier", "Great!!!", POS),
    ("intensifier", "By far the most delicious pasta I have ever had.", POS),
    ("intensifier", "Incredibly rude staff.", NEG),
    ("intensifier", "So, so good.", POS),
    # faint praise: polite words, a negative verdict
    ("faint praise", "It was fine, I guess, but I won't be going back.", NEG),
    ("faint praise", "Not the worst film I've seen this year, but close.", NEG),
    ("faint praise", "The best thing about the movie was the popcorn.", NEG),
    ("faint praise", "It's okay if you have nothing better to do.", NEG),
    ("faint praise", "Competent, forgettable, and far too long.", NEG),
    # faint criticism: a complaint, a positive verdict
    ("faint criticism", "My only complaint is that it ended too soon.", POS),
    ("faint criticism", "A bit pricey, but worth every penny.", POS),
    ("faint criticism", "The plot has a few holes, but I loved every minute.", POS),
    ("faint criticism", "Hardly perfect, yet wonderful all the same.", POS),
    ("faint criticism", "Slightly slow start, then an excellent, gripping story.", POS),
    # idioms
    ("idiom", "This film is a breath of fresh air.", POS),
    ("idiom", "The sequel is a total train wreck.", NEG),
    ("idiom", "The service was top notch.", POS),
    ("idiom", "That restaurant is a rip-off.", NEG),
    ("idiom", "It blew me away.", POS),
    ("idiom", "The ending fell flat.", NEG),
    # product reviews
    ("product", "The headphones broke after two days. Total waste of money.", NEG),
    ("product", "Works great, easy to set up, and the battery lasts for days.", POS),
    ("product", "Stopped charging after a month and support never replied.", NEG),
    ("product", "Sturdy, well made and exactly as described.", POS),
    ("product", "Cheap plastic that feels like it will snap any second.", NEG),
    ("product", "The best purchase I've made all year.", POS),
    # restaurant reviews
    ("restaurant", "The food was delicious and the staff were so welcoming.", POS),
    ("restaurant", "We waited an hour for cold, bland food.", NEG),
    ("restaurant", "Fresh ingredients, generous portions, friendly service.", POS),
    ("restaurant", "The soup was salty and the bread was stale.", NEG),
    ("restaurant", "A lovely little place; we'll definitely be back.", POS),
    ("restaurant", "Overpriced, noisy and the waiter ignored us.", NEG),
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
