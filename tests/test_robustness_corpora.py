"""The robustness suite's corpora: built by code from registry packages, test sources never trained on."""

from __future__ import annotations

import pytest

from aiayn.bench.robustness_corpora import CORPORA, split_by_key


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_corpus_builds_with_unseen_test_sources(name):
    corpus = CORPORA[name]
    splits = corpus.build()
    assert len(splits["train"]) >= 1000 and len(splits["valid"]) >= 200  # small-num: 1,500
    assert len(splits["test"]) >= 400
    seen = {s for s, _ in splits["train"]}
    assert not any(s in seen for s, _ in splits["test"] + splits["valid"])
    assert all(s.strip() and t.strip() and "\t" not in s + t for s, t in splits["test"])
    assert corpus.metric in ("exact", "bleu")


def test_split_by_key_keeps_a_key_in_one_split_and_is_stable():
    items = [(str(i % 50), (f"s{i}", f"t{i}")) for i in range(500)]
    a = split_by_key(items, valid=5, test=5)
    b = split_by_key(list(reversed(items)), valid=5, test=5)
    assert {p for p in a["test"]} == {p for p in b["test"]}
    keys = {name: {s[1:] for s, _ in pairs} for name, pairs in a.items()}
    test_keys = {str(int(k) % 50) for k in keys["test"]}
    train_keys = {str(int(k) % 50) for k in keys["train"]}
    assert not test_keys & train_keys
