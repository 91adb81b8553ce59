"""Generate the toy review data set that ``bertkit demo`` trains and evaluates on.

Writes ``bertkit/data/examples/demo_reviews.csv`` (train, 480 rows) and ``demo_reviews_test.csv`` (120 rows),
both with columns ``id,text,label`` and labels ``positive``/``negative``, balanced. Sentences are short
English reviews of products, restaurants and movies assembled from phrase pools. About 10% use negation
("not bad at all" is positive, "not great" negative) and about 20% contrast an aspect with the overall
verdict ("the plot dragged, but the movie was wonderful overall"), so a bag of keywords is not enough.

The test file uses a different seed and subjects held out of training, and shares no text with train.
Deterministic: rerunning reproduces the files byte for byte.

Usage::

    python bench/make_demo_data.py [--out-dir bertkit/data/examples] [--n-train 480] [--n-test 120]
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertkit.fileio import write_text_atomic  # noqa: E402

TRAIN_SEED, TEST_SEED = 1234, 98765
MIN_WORDS, MAX_WORDS = 5, 25

# Per domain: subjects (the last ones are held out of training and used only in the test file), aspects
# (judged with the generic PRED phrases), and positive/negative predicates that fit every subject.
DOMAINS: dict[str, dict[str, list[str]]] = {
    "product": {
        "subjects": ["this blender", "the headphones", "this phone case", "the vacuum cleaner", "this laptop",
                     "the coffee maker", "these running shoes", "the desk lamp", "this backpack",
                     "the wireless mouse", "the air fryer", "this keyboard", "the electric kettle",
                     "this smartwatch", "the office chair"],
        "aspects": ["the battery life", "the build quality", "the sound", "the packaging", "the material",
                    "the setup", "customer support", "the design", "the instructions", "the screen"],
        "pos": ["felt premium", "was worth every penny", "works perfectly", "arrived early and intact",
                "is sturdy and well made"],
        "neg": ["felt cheap", "broke after a week", "stopped working within a month", "arrived damaged",
                "was a waste of money"],
    },
    "restaurant": {
        "subjects": ["this restaurant", "the new sushi place", "the pizzeria downtown", "this little cafe",
                     "the taco truck", "the steakhouse", "the brunch spot", "the noodle bar", "this bakery",
                     "the ramen shop", "the seafood grill", "this bistro"],
        "aspects": ["the food", "the service", "our waiter", "the dessert", "the pasta", "the atmosphere",
                    "the portions", "the coffee", "the steak", "the wine list"],
        "pos": ["serves delicious food", "had friendly staff", "is cozy and welcoming", "never rushed us",
                "is packed for good reason"],
        "neg": ["served us cold food", "overcharged us", "got our order wrong twice", "had rude staff",
                "is dirty and loud"],
    },
    "movie": {
        "subjects": ["this movie", "the sequel", "the documentary", "this thriller", "the animated film",
                     "the new series", "this comedy", "the remake", "this horror film", "the musical",
                     "the war drama", "this mystery"],
        "aspects": ["the plot", "the acting", "the soundtrack", "the ending", "the dialogue",
                    "the special effects",
                    "the pacing", "the lead actor", "the script", "the cinematography"],
        "pos": ["kept me hooked", "was genuinely moving", "had me laughing out loud", "was beautifully shot",
                "was clever and fresh"],
        "neg": ["dragged on forever", "was predictable", "made no sense", "put me to sleep",
                "felt lazy and rushed"],
    },
}  # fmt: skip
N_HELD_OUT_SUBJECTS = 3  # per domain, test only
PLURAL = ["the headphones", "these running shoes", "the instructions", "the portions", "the special effects",
          "They"]  # fmt: skip
_AGREE = [(" was", " were"), (" wasn't", " weren't"), (" is ", " are "), (" works", " work")]

PRED = {
    "pos": ["was excellent", "was fantastic", "was surprisingly good", "exceeded my expectations",
            "was delightful", "was top notch", "was spot on", "was a real highlight", "was great",
            "was wonderful"],
    "neg": ["was terrible", "was disappointing", "was a complete letdown", "was awful",
            "was mediocre at best", "was really poor", "was frustrating", "was a mess", "was bad",
            "was underwhelming"],
}  # fmt: skip
ADJ = {
    "pos": ["amazing", "wonderful", "a pleasant surprise", "really good", "great", "lovely", "impressive"],
    "neg": ["awful", "disappointing", "a letdown", "really bad", "forgettable", "annoying", "a mess"],
}
VERB = {
    "pos": ["I loved", "I really enjoyed", "I was impressed by", "I am very happy with", "We adored"],
    "neg": ["I hated", "I regret choosing", "I was let down by", "I am very unhappy with", "We disliked"],
}
CLOSER = {
    "pos": ["Highly recommended.", "Would happily do it again.", "Five stars from me.",
            "Definitely worth it.", "I will tell my friends.", "A real treat."],
    "neg": ["Avoid it.", "Never again.", "One star.", "Save your money.", "What a disappointment.",
            "Not recommended."],
}  # fmt: skip
OPENER = ["", "", "", "Honestly, ", "Overall, ", "To be fair, ", "Frankly, ", "In my opinion, ", "Wow, "]
# Negation templates (10% of rows): a negated sentiment word, often of the opposite polarity.
NEGATION = {
    "pos": ["{A} was not bad at all.", "I can't complain about {a}, {s} is solid.",
            "{S} never disappointed us.", "Not a single problem with {s} so far.",
            "{A} wasn't perfect, but I'd still recommend {s}.",
            "I was not disappointed by {s}, {a} was lovely.", "No regrets about {s}, not bad for the price."],
    "neg": ["{A} was not great.", "I would not recommend {s} to anyone.", "{S} was not worth the money.",
            "{A} didn't live up to the hype.", "Not impressed with {s} at all.",
            "{A} was not good, and {s} never felt special.",
            "I won't bother with {s} again, nothing about it was good."],
}  # fmt: skip


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _agree(text: str) -> str:
    """Fix subject-verb agreement after plural noun phrases ("the headphones was" -> "were")."""
    for noun in PLURAL:
        for cased in (noun, _cap(noun)):
            for sing, plur in _AGREE:
                text = text.replace(cased + sing, cased + plur)
    return text


def _opp(label: str) -> str:
    return "neg" if label == "pos" else "pos"


def make_sentence(
    rng: random.Random, label: str, subjects: dict[str, list[str]], negation: bool
) -> tuple[str, str]:
    """One review with sentiment ``label`` ('pos'/'neg'); ``negation`` picks a negation template.

    Returns:
        (text, template kind).
    """
    domain = rng.choice(sorted(DOMAINS))
    pools = DOMAINS[domain]
    s = rng.choice(subjects[domain])
    a, a2 = rng.sample(pools["aspects"], 2)
    opp = _opp(label)

    def pred(lab: str) -> str:  # for aspects
        return rng.choice(PRED[lab])

    def spred(lab: str) -> str:  # for the subject as a whole
        return rng.choice(PRED[lab] + pools[lab] * 2)

    pron = "They" if s in PLURAL else "It"

    roll = rng.random()
    if negation:
        kind = "negation"
        text = rng.choice(NEGATION[label]).format(a=a, A=_cap(a), s=s, S=_cap(s))
    elif roll < 0.22:
        kind = "contrast"
        text = rng.choice(
            [
                f"{_cap(a)} {pred(opp)}, but {s} was {rng.choice(ADJ[label])} overall.",
                f"Even though {a} {pred(opp)}, {s} {spred(label)}.",
                f"{_cap(s)} seemed {rng.choice(ADJ[opp])} at first, but in the end {a} {pred(label)}.",
            ]
        )
    elif roll < 0.44:
        kind = "two_aspects"
        p1, p2 = rng.sample(PRED[label], 2)
        text = f"{rng.choice(OPENER)}{a} {p1} and {a2} {p2}."
    elif roll < 0.58:
        kind = "verb"
        second = rng.choice([f"{_cap(a)} {pred(label)}", f"{pron} {spred(label)}"])
        text = f"{rng.choice(VERB[label])} {s}. {second}."
    elif roll < 0.72:
        kind = "subject"
        text = f"{rng.choice(OPENER)}{s} {spred(label)}. {rng.choice(CLOSER[label])}"
    elif roll < 0.87:
        kind = "adjective"
        text = f"{rng.choice(OPENER)}{s} was {rng.choice(ADJ[label])}. {rng.choice(CLOSER[label])}"
    else:
        kind = "aspect_closer"
        text = f"{rng.choice(OPENER)}{a} {pred(label)}. {rng.choice(CLOSER[label])}"
    text = _agree(_cap(text.strip()))
    if rng.random() < 0.12 and text.endswith("."):
        text = text[:-1] + "!"
    return text, kind


def generate(
    n: int, seed: int, subjects: dict[str, list[str]], exclude: set[str]
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """``n`` unique shuffled (text, label) rows, half of each label; texts in ``exclude`` are skipped."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    kinds: Counter[str] = Counter()
    seen = set(exclude)
    for label in ("pos", "neg"):
        made = 0
        while made < n // 2 + (n % 2 if label == "pos" else 0):
            text, kind = make_sentence(rng, label, subjects, negation=made % 10 == 0)
            if text in seen or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                continue
            seen.add(text)
            rows.append((text, "positive" if label == "pos" else "negative"))
            kinds[kind] += 1
            made += 1
    rng.shuffle(rows)
    return rows, kinds


def to_csv(rows: list[tuple[str, str]], prefix: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "text", "label"])
    for i, (text, label) in enumerate(rows, 1):
        writer.writerow([f"{prefix}{i:04d}", text, label])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bertkit" / "data" / "examples")
    parser.add_argument("--n-train", type=int, default=480)
    parser.add_argument("--n-test", type=int, default=120)
    args = parser.parse_args(argv)

    train_subjects = {d: p["subjects"][:-N_HELD_OUT_SUBJECTS] for d, p in DOMAINS.items()}
    train, train_kinds = generate(args.n_train, TRAIN_SEED, train_subjects, exclude=set())
    # test: all subjects (including the held-out ones), another seed, no text shared with train
    all_subjects = {d: p["subjects"] for d, p in DOMAINS.items()}
    test, test_kinds = generate(args.n_test, TEST_SEED, all_subjects, exclude={t for t, _ in train})

    for name, rows, kinds, prefix in (
        ("demo_reviews.csv", train, train_kinds, "r"),
        ("demo_reviews_test.csv", test, test_kinds, "t"),
    ):
        text = to_csv(rows, prefix)
        path = args.out_dir / name
        write_text_atomic(path, text)
        labels = Counter(label for _, label in rows)
        words = [len(t.split()) for t, _ in rows]
        print(
            f"{path}: {len(rows)} rows, {len(text.encode())} bytes, labels {dict(labels)}, "
            f"words {min(words)}-{max(words)}, negation {kinds['negation'] / len(rows):.0%}, "
            f"contrast {kinds['contrast'] / len(rows):.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
