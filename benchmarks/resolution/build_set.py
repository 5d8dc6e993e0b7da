"""Build the entity-resolution benchmark: mentions in gold clusters, written as JSON Lines.

Sources: every gold concept of corpus/*/*.gold.json (label and gold aliases; the same
normalised label in two documents is one cluster), plus hand-made entities with the variants
real text writes (case, initials, acronyms, typos, titles, transliterations, accents) and
same-name traps of different types ('Paris' the city and 'Paris' the Trojan prince).
Deterministic (fixed seed). Usage:

    python benchmarks/resolution/build_set.py [OUT]   # default benchmarks/resolution/set.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from kg.text import normalise_label

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "resolution" / "set.jsonl"
SEED = 24

# Gold concepts whose type the gold files do not say but the document makes plain: the
# rest are "concept" (all one type, so type never separates them).
GOLD_TYPES = {"Apple": "organization", "apple": "food", "Jaguar": "organization",
              "John Maynard Keynes": "person", "Gregor Mendel": "person",
              "Ludwig Boltzmann": "person", "Claude Shannon": "person",
              "Johannes Gutenberg": "person", "Martin Luther": "person",
              "Ana Ruiz": "person", "Sherlock Holmes": "person", "Dr Watson": "person"}

# (cluster, type, canonical label, extra spellings real text uses)
MADE = [
    ("marie-curie", "person", "Marie Curie", ["M. Curie", "Madame Curie", "Curie, Marie",
                                               "Dr. Marie Curie", "Marie Skłodowska Curie"]),
    ("einstein", "person", "Albert Einstein", ["A. Einstein", "Prof. Albert Einstein",
                                               "Einstein, Albert"]),
    ("goedel", "person", "Kurt Gödel", ["Kurt Godel", "Kurt Goedel", "K. Gödel"]),
    ("schroedinger", "person", "Erwin Schrödinger", ["Erwin Schrodinger",
                                                     "Erwin Schroedinger", "E. Schrödinger"]),
    ("tchaikovsky", "person", "Pyotr Tchaikovsky", ["Pyotr Chaikovsky", "Piotr Tchaikovsky",
                                                    "P. Tchaikovsky", "Pyotr Tschaikowsky"]),
    ("dostoevsky", "person", "Fyodor Dostoevsky", ["Fyodor Dostoyevsky", "F. Dostoevsky",
                                                   "Fedor Dostoevsky"]),
    ("dvorak", "person", "Antonín Dvořák", ["Antonin Dvorak", "A. Dvořák"]),
    ("garcia-marquez", "person", "Gabriel García Márquez", ["Gabriel Garcia Marquez",
                                                            "G. García Márquez"]),
    ("lovelace", "person", "Ada Lovelace", ["A. Lovelace", "Lady Ada Lovelace"]),
    ("turing", "person", "Alan Turing", ["A. Turing", "Dr Alan Turing", "Turing, Alan"]),
    ("john-smith", "person", "John Smith", ["J. Smith", "Mr John Smith"]),
    ("jane-smith", "person", "Jane Smith", ["Mrs Jane Smith"]),
    ("ibm", "organization", "International Business Machines", ["IBM", "I.B.M."]),
    ("nasa", "organization", "National Aeronautics and Space Administration", ["NASA"]),
    ("who", "organization", "World Health Organization", ["WHO", "World Health Organisation"]),
    ("mit", "organization", "Massachusetts Institute of Technology", ["MIT"]),
    ("ecb", "organization", "European Central Bank", ["ECB"]),
    ("fbi", "organization", "Federal Bureau of Investigation", ["FBI"]),
    ("nato", "organization", "North Atlantic Treaty Organization", ["NATO",
                                                                    "North Atlantic Alliance"]),
    ("bbc", "organization", "British Broadcasting Corporation", ["BBC"]),
    ("cdc", "organization", "Centers for Disease Control", ["CDC",
                                                            "Centres for Disease Control"]),
    ("un", "organization", "United Nations", ["UN", "the United Nations"]),
    # Same-name traps: one spelling, different kinds of thing.
    ("paris-city", "place", "Paris", ["City of Paris"]),
    ("paris-prince", "person", "Paris", ["Paris of Troy"]),
    ("mercury-planet", "planet", "Mercury", ["planet Mercury"]),
    ("mercury-element", "chemical element", "mercury", ["Hg", "quicksilver"]),
    ("mercury-god", "deity", "Mercury", ["the god Mercury"]),
    ("amazon-company", "organization", "Amazon", ["Amazon.com", "Amazon Inc."]),
    ("amazon-river", "place", "Amazon", ["Amazon River", "the Amazon"]),
    ("java-island", "place", "Java", ["island of Java"]),
    ("java-language", "technology", "Java", ["Java programming language"]),
    ("python-language", "technology", "Python", ["Python language"]),
    ("python-snake", "animal", "python", ["pythons"]),
    ("turkey-country", "place", "Turkey", ["Republic of Turkey", "Türkiye"]),
    ("turkey-bird", "animal", "turkey", ["turkeys", "wild turkey"]),
    ("jaguar-animal", "animal", "jaguar", ["jaguars"]),
    ("washington-person", "person", "George Washington", ["G. Washington", "Washington"]),
    ("washington-place", "place", "Washington", ["Washington, D.C.", "Washington DC"]),
    ("jordan-person", "person", "Michael Jordan", ["M. Jordan", "Jordan"]),
    ("jordan-country", "place", "Jordan", ["Kingdom of Jordan"]),
    # Near names of different things of one type.
    ("austria", "place", "Austria", ["Republic of Austria"]),
    ("australia", "place", "Australia", ["Commonwealth of Australia"]),
    ("diabetes-1", "disease", "Type 1 diabetes", ["type 1 diabetes mellitus"]),
    ("diabetes-2", "disease", "Type 2 diabetes", ["type 2 diabetes mellitus"]),
    ("iceland", "place", "Iceland", []),
    ("ireland", "place", "Ireland", []),
]


def typo(text: str, rng: random.Random) -> str | None:
    """One keyboard slip in the longest word: swap, drop or double a letter."""
    words = text.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[longest]
    if len(word) < 5 or not word.isalpha():
        return None
    i = rng.randrange(1, len(word) - 2)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif kind == "drop":
        word = word[:i] + word[i + 1:]
    else:
        word = word[:i] + word[i] + word[i:]
    words[longest] = word
    return " ".join(words)


def variants(label: str, rng: random.Random) -> list[str]:
    """Case and typo variants of one spelling."""
    out = [label]
    if label.lower() != label:
        out.append(label.lower())
    elif " " not in label:
        out.append(label.capitalize())
    slip = typo(label, rng)
    if slip is not None:
        out.append(slip)
    return out


def gold_clusters() -> list[tuple[str, str, list[str]]]:
    """(cluster, type, spellings) from the corpus gold files, joined by shared spellings
    of one type (a label in two documents is one cluster)."""
    clusters: dict[str, tuple[str, list[str]]] = {}
    for path in sorted(ROOT.glob("corpus/*/*.gold.json")):
        for concept in json.loads(path.read_text(encoding="utf-8"))["concepts"]:
            label = concept["label"]
            kind = GOLD_TYPES.get(label, "concept")
            key = f"{kind}:{normalise_label(label)}"
            names = clusters.setdefault(key, (kind, []))[1]
            names.extend(n for n in [label, *concept["aliases"]] if n not in names)
    return [(key, kind, names) for key, (kind, names) in clusters.items()]


def build() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    mentions: list[dict[str, object]] = []
    sources = [*gold_clusters(),
               *((f"made:{c}", kind, [label, *extra]) for c, kind, label, extra in MADE)]
    for cluster, kind, names in sources:
        seen: set[str] = set()
        for name in names:
            for text in variants(name, rng):
                if text not in seen:
                    seen.add(text)
                    mentions.append({"id": f"m{len(mentions) + 1}", "text": text,
                                     "type": kind, "cluster": cluster})
    return mentions


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    mentions = build()
    out.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in mentions),
                   encoding="utf-8")
    clusters = len({m["cluster"] for m in mentions})
    print(f"{len(mentions)} mentions in {clusters} clusters -> {out}")


if __name__ == "__main__":
    main()
