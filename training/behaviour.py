"""A small behavioural report (CheckList-style, hand-written cases): a report, not a gate.

Each case is (capability, text, expected label). The texts are written the way
users write, not in SST's tokenisation, to show whether normalisation carries over, and
reach past film reviews (products, restaurants, news, schedules, tweets) to show how far the model
carries. A case whose expected label the model does not have (neutral, for a binary model) is left
out of its report; gibberish and other languages expect "unknown" (model/readability.py) of every
model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from model.labels import UNKNOWN

NEG, NEU, POS = "negative", "neutral", "positive"

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
    # factual statements: times, sizes, prices, schedules
    ("factual", "The movie is 120 minutes long.", NEU),
    ("factual", "The meeting is at 3 pm in room 204.", NEU),
    ("factual", "Our flight was delayed by two hours.", NEU),
    ("factual", "The package weighs 2.5 kg and measures 30 by 20 cm.", NEU),
    ("factual", "Tickets cost $12 for adults and $8 for children.", NEU),
    ("factual", "The store opens at 9 am on weekdays.", NEU),
    ("factual", "The train leaves from platform 4 at 10:15.", NEU),
    ("factual", "The laptop has 16 GB of memory and a 512 GB drive.", NEU),
    ("factual", "The order was shipped on Monday.", NEU),
    ("factual", "The film was released in 1998.", NEU),
    # news-style sentences
    ("news", "Revenue grew 5% to EUR 20m.", NEU),
    ("news", "The central bank kept interest rates unchanged on Thursday.", NEU),
    ("news", "The company will announce its quarterly results next week.", NEU),
    ("news", "The city council approved the new budget for 2025.", NEU),
    ("news", "The president met the prime minister in Berlin.", NEU),
    ("news", "Shares closed at 45 dollars after the announcement.", NEU),
    # questions
    ("question", "What time does the store close on Sunday?", NEU),
    ("question", "Is there a version of this app for Android?", NEU),
    ("question", "How do I reset my password?", NEU),
    ("question", "Can I change the delivery address after ordering?", NEU),
    ("question", "Does anyone know when the next episode airs?", NEU),
    ("question", "Which size should I order?", NEU),
    # mixed opinions: as much for as against
    ("mixed", "Some parts were good and some were bad.", NEU),
    ("mixed", "The food was great but the service was terrible.", NEU),
    ("mixed", "I liked the beginning and hated the ending.", NEU),
    ("mixed", "It has its good moments and its bad ones.", NEU),
    # neutral tweets
    ("neutral tweet", "@user I'll be at the office tomorrow if you want to drop by.", NEU),
    ("neutral tweet", "Watching the game tonight with @user, kickoff at 8.", NEU),
    ("neutral tweet", "New blog post about our trip to Lisbon: http://t.co/abc123", NEU),
    ("neutral tweet", "Heading to the airport now #travel", NEU),
    ("neutral tweet", "Anyone going to the conference on Friday?", NEU),
    ("neutral tweet", "Just updated my phone to the latest version.", NEU),
    # gibberish: not words at all
    ("gibberish", "asdf qwer zxcv", UNKNOWN),
    ("gibberish", "xkcd blorp fnord zzyzx qwopl", UNKNOWN),
    ("gibberish", "jfkdls ghtyru", UNKNOWN),
    ("gibberish", "lorem ipsum dolor sit amet consectetur", UNKNOWN),
    # other languages
    ("foreign", "Das Essen war schrecklich.", UNKNOWN),
    ("foreign", "La película fue aburrida.", UNKNOWN),
    ("foreign", "Le film était vraiment ennuyeux.", UNKNOWN),
    ("foreign", "Het eten was verschrikkelijk.", UNKNOWN),
    ("foreign", "O filme foi muito chato.", UNKNOWN),
    ("foreign", "Das ist der beste Film des Jahres.", UNKNOWN),
    ("foreign", "Me encantó esta película.", UNKNOWN),
    ("foreign", "Этот фильм был ужасен.", UNKNOWN),
    ("foreign", "这部电影很无聊。", UNKNOWN),
]


def cases_for(labels: Sequence[str]) -> list[tuple[str, str, str]]:
    """The cases a model with these labels can pass."""
    return [c for c in CASES if c[2] in labels or c[2] == UNKNOWN]


def behavioural_report(predict: Callable[[list[str]], list[str]], labels: Sequence[str]) -> dict[str, dict]:
    """Pass rate per capability, with the failing cases listed. `predict` gives each text's label (or
    "unknown")."""
    cases = cases_for(labels)
    preds = predict([text for _, text, _ in cases])
    by_cap: dict[str, dict] = defaultdict(lambda: {"passed": 0, "total": 0, "failures": []})
    for (cap, text, expected), got in zip(cases, preds, strict=True):
        row = by_cap[cap]
        row["total"] += 1
        if got == expected:
            row["passed"] += 1
        else:
            row["failures"].append(text)
    report = dict(by_cap)
    total = sum(r["passed"] for r in report.values())
    report["overall"] = {"passed": total, "total": len(cases), "failures": []}
    return report
