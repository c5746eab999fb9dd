"""Tests for the built-in corpora in aiayn.data.builtin."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from aiayn.data import builtin
from aiayn.data.builtin import BUILTIN_CORPORA, SPLITS, grammar, lexicon, load_builtin_corpus
from aiayn.errors import AiaynError

# First 20 pairs of every split, hashed. A change here means every saved model, tokenizer and
# reported score on the built-in corpora silently refers to different data: only update these on
# purpose (and say so in the change), never to make the test pass.
EXPECTED_HASHES = {
    ("zh-en", "train"): "ac63ffb5c32b047e",
    ("zh-en", "valid"): "161f035f297afa10",
    ("zh-en", "test"): "43d5df72944ce691",
    ("copy", "train"): "20a996ed55e50753",
    ("copy", "valid"): "7b61ae89911c87c1",
    ("copy", "test"): "ac5ee0833ff5055b",
    ("reverse", "train"): "b2919078e6b0bccd",
    ("reverse", "valid"): "275b95437e1bcd0f",
    ("reverse", "test"): "6648825bc7be0e1f",
}


def _digest(pairs: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(pairs[:20], ensure_ascii=False).encode()).hexdigest()[:16]


def _zh_en() -> dict[str, list[tuple[str, str]]]:
    return {split: load_builtin_corpus("zh-en", split) for split in SPLITS}


# --- every corpus ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_CORPORA)
def test_deterministic_and_stable(name: str) -> None:
    for split in SPLITS:
        first = load_builtin_corpus(name, split)
        assert first == load_builtin_corpus(name, split)
        assert _digest(first) == EXPECTED_HASHES[name, split], (name, split)


def test_regeneration_is_identical() -> None:
    # The cache hides regeneration; build again from scratch and compare.
    fresh = builtin._zh_en_splits.__wrapped__()
    assert fresh == builtin._zh_en_splits()
    assert builtin._sequence_splits.__wrapped__(True) == builtin._sequence_splits(True)


@pytest.mark.parametrize("name", BUILTIN_CORPORA)
def test_splits_disjoint_and_clean(name: str) -> None:
    splits = {split: load_builtin_corpus(name, split) for split in SPLITS}
    sources = {split: {s for s, _ in pairs} for split, pairs in splits.items()}
    for split, pairs in splits.items():
        assert len(sources[split]) == len(pairs), f"duplicate source in {split}"
        for s, t in pairs:
            assert s and t and s == s.strip() and t == t.strip() and "  " not in t
            assert "\t" not in s + t and "\n" not in s + t
    assert not sources["train"] & sources["valid"]
    assert not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]


def test_returns_a_fresh_list() -> None:
    pairs = load_builtin_corpus("copy", "valid")
    pairs.clear()
    assert len(load_builtin_corpus("copy", "valid")) == 500


def test_unknown_name_or_split() -> None:
    with pytest.raises(AiaynError, match="known corpora: zh-en, copy, reverse"):
        load_builtin_corpus("en-de", "train")
    with pytest.raises(AiaynError, match="expected one of: train, valid, test"):
        load_builtin_corpus("copy", "dev")


# --- copy / reverse ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["copy", "reverse"])
def test_sequence_corpora(name: str) -> None:
    sizes = {"train": 20_000, "valid": 500, "test": 1000}
    for split in SPLITS:
        pairs = load_builtin_corpus(name, split)
        assert len(pairs) == sizes[split]
        for s, t in pairs:
            tokens = s.split(" ")
            assert 3 <= len(tokens) <= 12
            assert all(len(tok) == 1 and "a" <= tok <= "t" for tok in tokens)
            assert t.split(" ") == (tokens[::-1] if name == "reverse" else tokens)


# --- zh-en -------------------------------------------------------------------------------------------


def test_zh_en_sizes_and_speed() -> None:
    start = time.perf_counter()
    builtin._zh_en_splits.__wrapped__()
    assert time.perf_counter() - start < 4.0  # ~0.5 s; generous for a busy 2-core machine
    sizes = {split: len(pairs) for split, pairs in _zh_en().items()}
    assert 500 <= sizes["valid"] <= 520
    assert 1000 <= sizes["test"] <= 1020
    assert 30_000 <= sum(sizes.values()) <= 60_000


def test_notes_examples_in_train() -> None:
    splits = _zh_en()
    train = dict(splits["train"])
    assert train["我是一个学生"] == "I am a student"
    assert train["我爱中国"] == "I love China"
    held_out = {s for split in ("valid", "test") for s, _ in splits[split]}
    assert not held_out & {"我是一个学生", "我爱中国"}


def test_docstring_examples_are_in_the_corpus() -> None:
    everything = {s: t for pairs in _zh_en().values() for s, t in pairs}
    quoted = re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', builtin.__doc__)
    assert len(quoted) >= 10
    for zh, en in quoted:
        assert everything.get(zh) == " ".join(en.split()), zh


def _en_words(examples) -> set[str]:
    return {w for ex in examples for w in ex.target.rstrip("?").split()}


def _zh_chars(examples) -> set[str]:
    return {c for ex in examples for c in ex.source}


def test_test_combinations_unseen_in_train() -> None:
    splits = builtin._zh_en_splits()
    keys = {split: {ex.key for ex in exs} for split, exs in splits.items()}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["valid"]
    assert not keys["valid"] & keys["test"]
    # ... while every word filling a slot in a held-out combination is used in training.
    train_slots = {slot for key in keys["train"] for slot in key[1:]}
    for split in ("valid", "test"):
        assert {slot for key in keys[split] for slot in key[1:]} <= train_slots
        # And at the surface: no English word or Chinese character is new at test time.
        assert _en_words(splits[split]) <= _en_words(splits["train"])
        assert _zh_chars(splits[split]) <= _zh_chars(splits["train"])
    # The held-out splits cover many sentence families, not one corner of the grammar.
    assert len({key[0] for key in keys["test"]}) >= 10


def test_one_translation_per_source() -> None:
    examples = grammar._generate_zh_en()
    assert len({ex.source for ex in examples}) == len(examples)


_QUESTION_START = re.compile(r"^(Am|Is|Are|Was|Were|Do|Does|Did|Will|Can|What|Where|How) ")


def test_punctuation_and_case() -> None:
    for pairs in _zh_en().values():
        for zh, en in pairs:
            assert " " not in zh and not re.search(r"[A-Za-z0-9]", zh), zh
            assert en[0].isupper(), en
            question = zh.endswith("？")
            assert en.endswith("?") == question, (zh, en)
            assert bool(_QUESTION_START.match(en)) == question, (zh, en)
            assert zh[-1] not in "。.!！" and en[-1] not in ".!", (zh, en)
            assert en.count("?") <= 1 and zh.count("？") <= 1


@pytest.mark.parametrize(
    ("zh_pattern", "en_prefix"),
    [
        (r"^他(不)?是[^？]*$", "He is "),
        (r"^她(不)?是[^？]*$", "She is "),
        (r"^我(不)?是[^？]*$", "I am "),
        (r"^你(不)?是[^？]*$", "You are "),
        (r"^(他们|她们)(不)?是[^？]*$", "They are "),
        (r"^我们(不)?是[^？]*$", "We are "),
        (r"^他是.*吗？$", "Is he "),
        (r"^你们是.*吗？$", "Are you "),
        (r"^他有[^点？]*$", "He has "),
        (r"^我们有[^点？]*$", "We have "),
        (r"^他没有", "He doesn't have "),
        (r"^你们没有", "You don't have "),
        (r"^她喜欢[^？]*$", "She likes "),
        (r"^我喜欢", "I like "),
        (r"^他们喜欢[^？]*$", "They like "),
        (r"^她不喜欢", "She doesn't like "),
        (r"^他喜欢.*吗？$", "Does he like "),
        (r"^我的朋友们有[^点？]*$", "My friends have "),
        (r"^我妈妈很", "My mother is "),
        (r"^我昨天很", "I was "),
        (r"^他们昨天很", "They were "),
        (r"^你明天[^？]*$", "You will "),
        (r"^她昨天去.*了$", "She went "),
    ],
)
def test_agreement(zh_pattern: str, en_prefix: str) -> None:
    pattern = re.compile(zh_pattern)
    matched = [(zh, en) for pairs in _zh_en().values() for zh, en in pairs if pattern.search(zh)]
    assert len(matched) >= 5, zh_pattern
    for zh, en in matched:
        assert en.startswith(en_prefix), (zh, en)


_IRREGULAR = {
    "mouse": "mice",
    "sheep": "sheep",
    "fish": "fish",
    "child": "children",
    "knife": "knives",
    "man": "men",
    "woman": "women",
}


def test_articles_and_plurals() -> None:
    numbers = "two three four five six seven eight nine ten many"
    plural_after = re.compile(rf"\b(?:{'|'.join(numbers.split())}) (\w+)(?: (\w+))?")
    singular_nouns = {n.sg.split()[-1] for n in lexicon._nouns()}
    for pairs in _zh_en().values():
        for _, en in pairs:
            assert not re.search(r"\ba [aeiou]", en), en
            assert not re.search(r"\ban [^aeiou ]", en), en
            # A count of one is "a"/"an"; "twenty-one years old" is an age, not a count.
            assert not re.search(r"(?<![-\w])one \w", en), en
            for match in plural_after.finditer(en):
                last = match.group(2) or match.group(1)
                if last in {"years", "old"}:
                    continue
                assert last not in singular_nouns - set(_IRREGULAR.values()), en
    pairs = dict(p for split in _zh_en().values() for p in split)
    mice = [en for zh, en in pairs.items() if re.search("[两三四五六七八九十]只老鼠", zh)]
    assert mice and all("mice" in en for en in mice)
    assert any(en.endswith("children") for en in pairs.values())
    assert pairs["你是一个工程师"] == "You are an engineer"


def test_tense_with_time_words() -> None:
    for pairs in _zh_en().values():
        for zh, en in pairs:
            if "明天" in zh:
                assert " will " in f" {en.lower()} " and "tomorrow" in en, (zh, en)
            if "昨天" in zh:
                assert "yesterday" in en and " will " not in en, (zh, en)
            if zh.endswith("了") and "昨天" in zh:
                assert not re.search(r"\b(do|does|didn't|am|is|are)\b", en), (zh, en)
