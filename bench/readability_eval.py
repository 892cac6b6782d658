"""How often the "cannot read" check (model/readability.py) fires: on English test sets (each flag
there is a wrong refusal) and on gibberish and other languages (each miss is a guess), and its cost.

    python -m bench.readability_eval [MODEL_DIR] [--frequent N] [--min-known F] [--common N]

Writes bench/results/readability.{md,json}. English: TweetEval test, SST-2 and SST-5 sentence tests,
the first 2,000 IMDB test reviews. The other texts: the behaviour set's gibberish and foreign cases and
the sentences below (hand-written, several languages)."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import time
from pathlib import Path

from tokenizers import Tokenizer

from bench import DEFAULT_MODEL, RESULTS
from model.artifact import load_artifact
from model.readability import COMMON_WORDS, FREQUENT_WORDS, MIN_KNOWN, Readability
from model.tokenizer import token_ids
from training.behaviour import CASES
from training.data import read_labelled_file
from training.fetch import data_dir

FOREIGN = [
    "Der Film war langweilig und viel zu lang.", "Ich habe mich sehr über das Geschenk gefreut.",
    "Die Lieferung kam zwei Tage zu spät.", "Schlechter Service, nie wieder!",
    "El servicio fue excelente y la comida deliciosa.", "No me gustó nada el final.",
    "El paquete llegó roto.", "¡Qué película tan bonita!",
    "Le service était lent et le repas froid.", "J'ai adoré ce livre.", "Quelle belle journée !",
    "Ce produit ne fonctionne pas.", "Il servizio è stato pessimo.", "Che bel film!",
    "Non funziona più dopo una settimana.", "O atendimento foi ótimo.", "Não gostei do produto.",
    "Het boek was erg spannend.", "De levering was te laat.", "Bardzo dobry film.",
    "To było okropne.", "Filmen var fantastisk.", "Den här produkten är dålig.",
    "Bu film çok güzeldi.", "Hizmet çok kötüydü.", "Это лучший фильм года.", "Мне не понравилось.",
    "とても良い映画でした。", "서비스가 정말 좋았어요.", "这个产品质量很差。", "هذا المنتج رائع",
    "Kitabu hiki ni kizuri sana.", "Elokuva oli todella hyvä.", "A film nagyon unalmas volt.",
]
GIBBERISH = [
    "asdkjh qwpoei zmxncb", "fjdksl", "qwerty uiop asdfgh", "blargh zorp quux", "xyzzy plugh",
    "hjkl hjkl hjkl", "mnbvcx lkjhgf poiuyt", "zzzz qqqq", "ghjkl; asdf", "aaaaaa bbbbbb cccccc",
]


def english_sets(root: Path) -> dict[str, list[str]]:
    sets = {
        "TweetEval test": read_labelled_file(root / "tweets/test.tsv").texts,
        "SST-2 test": read_labelled_file(root / "sst2/sentences/test.tsv").texts,
        "SST-5 test": read_labelled_file(root / "sst5/sentences/test.tsv", label_names=tuple("01234")).texts,
    }
    with gzip.open(root / "imdb/test.jsonl.gz", "rt", encoding="utf-8") as f:
        every_12th = itertools.islice(f, 0, 25_000, 12)
        sets["IMDB test (2,000 reviews)"] = [json.loads(x)["text"] for x in every_12th]
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", nargs="?", default=str(DEFAULT_MODEL))
    p.add_argument("--frequent", type=int, default=FREQUENT_WORDS)
    p.add_argument("--min-known", type=float, default=MIN_KNOWN)
    p.add_argument("--common", type=int, default=COMMON_WORDS)
    p.add_argument("--tokenizer", help="score with this tokenizer.json instead of the artifact's (the "
                   "vocabulary of a run in progress)")
    p.add_argument("--out", default=str(RESULTS / "readability"))
    a = p.parse_args()
    artifact = load_artifact(a.model_dir)
    tok = Tokenizer.from_file(a.tokenizer) if a.tokenizer else artifact.tokenizer
    vocabulary = a.tokenizer or artifact.meta["version"]
    r = Readability.of(tok, frequent=a.frequent, min_known=a.min_known, common=a.common)
    root = data_dir("tweets", progress=False)
    rows = []
    for name, texts in english_sets(root).items():
        ids = token_ids(tok, texts)[0]
        flagged = [t for t, i in zip(texts, ids, strict=True) if not r.readable([i])]
        rows.append({"set": name, "kind": "English", "n": len(texts), "flagged": len(flagged),
                     "rate": len(flagged) / len(texts), "examples": flagged[:5]})
    behaviour = [t for cap, t, _ in CASES if cap in ("gibberish", "foreign")]
    for name, texts in (("gibberish", GIBBERISH), ("other languages", FOREIGN), ("behaviour set", behaviour)):
        ids = token_ids(tok, texts)[0]
        missed = [t for t, i in zip(texts, ids, strict=True) if r.readable([i])]
        rows.append({"set": name, "kind": "unreadable", "n": len(texts), "flagged": len(texts) - len(missed),
                     "rate": 1 - len(missed) / len(texts), "examples": missed[:8]})
    sample = token_ids(tok, english_sets(root)["TweetEval test"][:2000])[0]
    t0 = time.perf_counter()
    for _ in range(5):
        for i in sample:
            r.readable([i])
    us = (time.perf_counter() - t0) / (5 * len(sample)) * 1e6
    thresholds = {"frequent": a.frequent, "min_known": a.min_known, "common": a.common}
    result = {"model": vocabulary, "thresholds": thresholds, "rows": rows,
              "us_per_text": round(us, 2)}
    Path(a.out + ".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = [f"# Readability check (model/readability.py) on {result['model']}", "",
             f"Thresholds: {result['thresholds']}; cost {us:.2f} µs per tweet-length text (one core, "
             "after tokenizing; shared 2-core VM).", "",
             "| set | kind | texts | flagged | rate | examples (English: wrongly flagged; else: missed) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ex = "; ".join(e[:60].replace("|", "/") for e in row["examples"])
        lines.append(
            f"| {row['set']} | {row['kind']} | {row['n']} | {row['flagged']} | {row['rate']:.2%} | {ex} |"
        )
    Path(a.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
