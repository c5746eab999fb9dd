"""Tests for aiayn.data.tokenizers: fixed special ids, round trips, save/load, errors, speed."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from aiayn.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
)
from aiayn.errors import AiaynError, CheckpointError, ConfigError

ENGLISH = [
    "Do you like tea?",
    "I am a student.",
    "I didn't know that, did you?",
    "Hello, world!",
    "It's three o'clock.",
    "Tom doesn't like coffee; he likes tea.",
    "Where are you going?",
    "I like tea very much.",
    "HELLO! Tom said hello.",
]
CHINESE = [
    "我是一个学生。",
    "你喜欢茶吗？",
    "我不知道，你呢？",
    "他是老师",
    "汤姆不喜欢咖啡，他喜欢茶。",
    "你去哪里？",
    "汤姆说：你好！",
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train((ENGLISH + CHINESE) * 10, vocab_size=300)


def test_special_ids_are_fixed() -> None:
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<unk>")


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_special_tokens_at_fixed_ids(kind: str, bpe: BPETokenizer) -> None:
    tok: Tokenizer = bpe if kind == "bpe" else CharTokenizer.train("hello")
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)


@pytest.mark.parametrize(
    "text",
    [
        *ENGLISH,
        *CHINESE,
        "I am a student",
        "我是一个学生",
        "Do you like tea?",
        "我喜欢tea。",
        "I like 茶 very much.",
        "Tom说：你好！",
    ],
)
def test_bpe_round_trip(bpe: BPETokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert UNK_ID not in ids
    assert bpe.decode(ids) == text


def test_bpe_chinese_one_token_per_character(bpe: BPETokenizer) -> None:
    # The leading "▁" is the sentence-start marker; every character after it is its own token.
    assert bpe.tokens("我是一个学生") == ["▁", *"我是一个学生"]
    assert "▁" not in "".join(bpe.tokens("我喜欢茶")[1:])


def test_bpe_punctuation_is_split_off_words(bpe: BPETokenizer) -> None:
    tokens = bpe.tokens("Do you like tea?")
    assert tokens[-1] == "?"
    assert bpe.tokens("tea.")[0] == bpe.tokens("tea?")[0]


def test_bpe_case_preserved(bpe: BPETokenizer) -> None:
    assert bpe.decode(bpe.encode("Hello hello HELLO")) == "Hello hello HELLO"


def test_bpe_whitespace_is_normalized(bpe: BPETokenizer) -> None:
    assert bpe.decode(bpe.encode("  Do   you\tlike\ntea? ")) == "Do you like tea?"
    assert bpe.encode("  Do you") == bpe.encode("Do you")


def test_bpe_encode_adds_no_bos_eos_and_decode_skips_specials(bpe: BPETokenizer) -> None:
    ids = bpe.encode("I am a student")
    assert BOS_ID not in ids and EOS_ID not in ids
    assert bpe.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "I am a student"


def test_bpe_special_token_text_is_not_control(bpe: BPETokenizer) -> None:
    assert EOS_ID not in bpe.encode("<eos>")


def test_bpe_unknown_character_is_unk(bpe: BPETokenizer) -> None:
    assert UNK_ID in bpe.encode("I like 🍵")


def test_bpe_decode_accepts_tensor_and_rejects_bad_ids(bpe: BPETokenizer) -> None:
    ids = bpe.encode("Hello, world!")
    assert bpe.decode(torch.tensor(ids)) == "Hello, world!"
    with pytest.raises(AiaynError, match="out of range"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(AiaynError, match="out of range"):
        bpe.id_to_token(-1)


def test_bpe_vocab_size_sane(bpe: BPETokenizer) -> None:
    alphabet = set("".join(ENGLISH + CHINESE).replace(" ", ""))
    assert len(SPECIAL_TOKENS) + len(alphabet) < bpe.vocab_size <= 300
    assert bpe.id_to_token(bpe.vocab_size - 1)


def test_bpe_encode_batch_matches_encode(bpe: BPETokenizer) -> None:
    texts = ENGLISH + CHINESE
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]


def test_bpe_train_rejects_tiny_vocab() -> None:
    with pytest.raises(ConfigError):
        BPETokenizer.train(["a b"], vocab_size=4)


def test_bpe_save_load(bpe: BPETokenizer, tmp_path) -> None:
    path = bpe.save(tmp_path, "src")
    assert path == tmp_path / "src.json"
    assert [p.name for p in tmp_path.iterdir()] == ["src.json"]  # one file, no temp left over
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    texts = [*ENGLISH, *CHINESE, "I like 🍵", "<eos>"]
    assert loaded.encode_batch(texts) == bpe.encode_batch(texts)
    assert loaded.vocab_size == bpe.vocab_size
    # The file is plain Hugging Face json.
    assert HFTokenizer.from_file(str(path)).encode("Do you like tea?").ids == bpe.encode(
        "Do you like tea?"
    )


def test_char_train_vocab_is_sorted_set() -> None:
    tok = CharTokenizer.train("hello world\n")
    assert tok.chars == sorted(set("hello world\n"))
    assert tok.vocab_size == len(SPECIAL_TOKENS) + len(set("hello world\n"))
    assert tok.encode("eh") == [4 + tok.chars.index("e"), 4 + tok.chars.index("h")]
    assert CharTokenizer.train(["ab", "bc"]).chars == ["a", "b", "c"]


def test_char_unknown_is_unk_and_decode_skips_specials() -> None:
    tok = CharTokenizer.train("abc")
    assert tok.encode("aXc\U0010ffff") == [4, UNK_ID, 6, UNK_ID]
    assert tok.tokens("aX") == ["a", "<unk>"]
    assert tok.decode([BOS_ID, 4, 5, EOS_ID, PAD_ID]) == "ab"
    with pytest.raises(AiaynError, match="out of range"):
        tok.decode([7])


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=100))
def test_char_round_trip_property(text: str) -> None:
    tok = CharTokenizer.train(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert UNK_ID not in ids
    assert tok.decode(ids) == text
    assert tok.encode_array(text).tolist() == ids


def test_char_save_load(tmp_path) -> None:
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    tok = CharTokenizer.train(text)
    path = tok.save(tmp_path, "chars")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["chars"] == tok.chars
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.encode(text + "§") == tok.encode(text + "§")


def test_char_encode_speed() -> None:
    # 5 MB of Shakespeare-like text (~100 distinct characters) must encode in well under 2 s.
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "é", "æ"]
    text = "".join(rng.choices(alphabet, k=5_000_000))
    tok = CharTokenizer.train(text)
    start = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - start
    assert len(ids) == len(text)
    assert elapsed < 2.0, f"encoding 5 MB took {elapsed:.2f} s"
    assert isinstance(tok.encode_array(text), np.ndarray)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"model": {"type": "BPE", "vocab"', "not valid json"),
        ("", "not valid json"),
        ("[1, 2]", "not a tokenizer"),
        ('{"kind": "something-else"}', "unknown kind"),
        ('{"kind": "aiayn-char", "version": 1, "special_tokens": ["a"], "chars": []}', "special"),
        (
            '{"kind": "aiayn-char", "version": 1, "special_tokens": '
            '["<pad>", "<bos>", "<eos>", "<unk>"], "chars": ["ab"]}',
            "single characters",
        ),
        ('{"model": {"type": "BPE", "vocab": 5}}', "corrupt"),
    ],
)
def test_load_corrupt_file_raises_checkpoint_error(tmp_path, content: str, match: str) -> None:
    path = tmp_path / "tok.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=match) as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


def test_load_truncated_bpe_file(bpe: BPETokenizer, tmp_path) -> None:
    path = bpe.save(tmp_path, "tok")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="tok.json"):
        load_tokenizer(path)


def test_load_foreign_bpe_without_aiayn_specials(tmp_path) -> None:
    from tokenizers.models import BPE

    path = tmp_path / "foreign.json"
    HFTokenizer(BPE(vocab={"a": 0, "b": 1}, merges=[])).save(str(path))
    with pytest.raises(CheckpointError, match="foreign.json.*special token"):
        load_tokenizer(path)


def test_load_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found") as info:
        load_tokenizer(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    with pytest.raises(CheckpointError, match="directory"):
        load_tokenizer(tmp_path)


def test_random_letters_get_characters_prose_gets_pieces():
    # Letters to sort: every pair of letters is frequent, none belongs together; BPE would merge
    # hundreds of random pairs (766 pieces measured), which hides the letters from the model.
    from aiayn.data.vocab import MIN_ASSOCIATION_BITS, learn_vocabulary, neighbour_association

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    strings = ["".join(rng.choice(letters) for _ in range(12)) for _ in range(3000)]
    assert neighbour_association(strings) < MIN_ASSOCIATION_BITS
    chars = learn_vocabulary(strings)
    assert chars.vocab_size == 4 + 26 + 1  # the special tokens, the letters, "▁": no merges
    prose = ["the cat sat on the mat and then the dog ate the hat of the man"] * 200 + [
        "in the beginning there was the word and the word was with them"
    ] * 200
    assert neighbour_association(prose) > MIN_ASSOCIATION_BITS
    assert learn_vocabulary(prose).vocab_size > 4 + len(set("".join(prose)))
    # A shared vocabulary is characters when either side is random, though the other is not.
    ordered = ["".join(sorted(s)) for s in strings]
    joint = learn_vocabulary(strings + ordered, sides=(strings, ordered))
    assert joint.vocab_size == 4 + 26 + 1


def test_a_corpus_rewritten_letter_by_letter_gets_characters():
    # A Caesar cipher of prose: each target letter is told by the source letter at the same place.
    # Its words recur and its letters associate as prose does, so the frequency rule alone would
    # learn pieces (1,327 on Bible phrases, 84.1% exact; the letters are what the model must map).
    from aiayn.data.vocab import (
        LETTER_BY_LETTER,
        aligned_character_information,
        maps_letter_by_letter,
    )
    from aiayn.tasks.translation import learn_tokenizers
    from aiayn.training.distributed import DistContext

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "and", "then", "dog", "ate", "hat", "of", "man"]
    phrases = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) for _ in range(3000)]

    def caesar(text: str) -> str:
        return "".join(chr((ord(c) - 97 + 3) % 26 + 97) if c.isalpha() else c for c in text)

    cipher = [(p, caesar(p)) for p in phrases]
    assert aligned_character_information(cipher) > LETTER_BY_LETTER
    assert maps_letter_by_letter(cipher)
    src, tgt = learn_tokenizers(DistContext(), cipher, joint=True)
    assert src is tgt and not any(len(t) > 1 and t.isalpha() for t in src.hf_tokenizer.get_vocab())
    # Translation-like pairs (the target is not the source rewritten) keep the frequency rule.
    shuffled = [(p, phrases[(i + 7) % len(phrases)]) for i, p in enumerate(phrases)]
    assert aligned_character_information(shuffled) < 0.3
    assert not maps_letter_by_letter(shuffled)
    # So do long lines, where characters would make sequences several times longer.
    long = [(p * 30, caesar(p * 30)) for p in phrases[:100]]
    assert not maps_letter_by_letter(long)


def test_a_corpus_built_in_place_from_the_source_letters_gets_characters():
    # Vowels dropped, each word reversed: no target letter is told by the source letter at the same
    # place (the aligned measure is low), but each is found near its place in its own source. With
    # pieces, 3 CPU minutes made 82.1% (vowels) and 76.2% (reversed words) exact.
    from aiayn.data.vocab import (
        LETTER_BY_LETTER,
        REWRITES_IN_PLACE,
        aligned_character_information,
        local_character_overlap,
        maps_letter_by_letter,
    )

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(300)]
    phrases = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 5))) for _ in range(3000)]
    devowelled = [
        (p, " ".join("".join(c for c in w if c not in "aeiou") or w for w in p.split()))
        for p in phrases
    ]
    reversed_words = [(p, " ".join(w[::-1] for w in p.split())) for p in phrases]
    for pairs in (devowelled, reversed_words):
        assert aligned_character_information(pairs) < LETTER_BY_LETTER
        assert local_character_overlap(pairs) >= REWRITES_IN_PLACE
        assert maps_letter_by_letter(pairs)
    # Reordering whole words (sorting them, translation's reordering) keeps pieces: the letters
    # move further than a word's length, and the words are units worth a piece.
    sorted_words = [(p, " ".join(sorted(p.split()))) for p in phrases]
    shuffled = [(p, phrases[(i + 7) % len(phrases)]) for i, p in enumerate(phrases)]
    for pairs in (sorted_words, shuffled):
        assert local_character_overlap(pairs) < REWRITES_IN_PLACE
        assert not maps_letter_by_letter(pairs)


def test_text_written_in_punctuation_gets_pieces_of_punctuation_runs():
    # Morse code: every character is punctuation, so one piece per punctuation character (right
    # for prose) left nothing to merge: a target of 100 tokens for five words, 0.0% exact.
    from aiayn.data.vocab import learn_vocabulary, mostly_punctuation

    code = dict(
        zip("abcdefghij", [".-", "-...", "-.-.", "-..", ".", "..-.", "--.", "....", "..", ".---"])
    )
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(60)]
    phrases = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(2000)]
    morse = [" / ".join(" ".join(code[c] for c in w) for w in p.split()) for p in phrases]
    assert mostly_punctuation(morse) and not mostly_punctuation(phrases)
    tok = learn_vocabulary(morse)
    pieces = [tok.id_to_token(i) for i in tok.encode(morse[0])]
    assert "▁-.-." in tok.hf_tokenizer.get_vocab() or "-.-." in tok.hf_tokenizer.get_vocab()
    assert len(pieces) <= morse[0].count(" ") + 1  # at most one piece per letter's code
    assert all(tok.decode(tok.encode(m)) == m for m in morse[:50])
    # Prose keeps one piece per punctuation character: "tea." and "tea?" share "▁tea".
    prose = learn_vocabulary(["do you like tea? i like tea. we like tea, and you"] * 100)
    assert prose.encode("tea.")[:-1] == prose.encode("tea?")[:-1]
    assert prose.id_to_token(prose.encode("tea...")[-1]) == "."


def test_a_source_spelled_out_word_by_word_gets_characters_and_its_own_vocabulary(tmp_path):
    # Morse code of phrases: one target word per source character. Source pieces hid the letters
    # the target spells out (87.5% exact with 650 source pieces).
    from aiayn.data.vocab import spells_out_characters
    from aiayn.tasks.translation import learn_tokenizers
    from aiayn.training.distributed import DistContext

    code = dict(
        zip("abcdefghij", [".-", "-...", "-.-.", "-..", ".", "..-.", "--.", "....", "..", ".---"])
    )
    nato = dict(
        zip(
            "abcdefghij",
            [
                "alfa",
                "bravo",
                "charlie",
                "delta",
                "echo",
                "foxtrot",
                "golf",
                "hotel",
                "india",
                "juliett",
            ],
        )
    )
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(80)]
    phrases = [" ".join(rng.choice(words) for _ in range(3)) for _ in range(2000)]
    morse = [(p, " / ".join(" ".join(code[c] for c in w) for w in p.split())) for p in phrases]
    spelling = [(w, " ".join(nato[c] for c in w)) for w in words for _ in range(25)]
    assert spells_out_characters(morse) and spells_out_characters(spelling)
    for pairs in (morse, spelling):
        src, tgt = learn_tokenizers(DistContext(), pairs, joint=False)
        assert src is not tgt
        assert not any(len(t) > 1 and t.isalpha() for t in src.hf_tokenizer.get_vocab())
        assert len(tgt.encode(pairs[0][1])) <= len(pairs[0][1].split())  # a piece per word at most
    # Translation, a reversal of spaced letters, and numbers in words keep their vocabularies.
    shuffled = [(p, phrases[(i + 7) % len(phrases)]) for i, p in enumerate(phrases)]
    reversal = [(" ".join(w), " ".join(reversed(w))) for w in words]
    numbers = [(str(n), str(n * 7)) for n in range(1000)]
    assert not any(spells_out_characters(p) for p in (shuffled, reversal, numbers))
