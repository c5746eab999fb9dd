"""Decoding controls (aiayn.logits): each processor equals its Hugging Face class exactly, and the
decoders apply them as a step-by-step reference loop with Hugging Face's own classes does."""

from __future__ import annotations

import logging

import pytest
import torch

from aiayn.decoding import beam_search, generate, greedy_search
from aiayn.errors import ConfigError
from aiayn.logits import (
    PROCESSORS,
    DecodingControls,
    MinLength,
    NoBadSequences,
    NoRepeatNGram,
    RepetitionPenalty,
    StepContext,
    build_processors,
    make_controls,
)
from aiayn.models.gpt import GPT, GPTConfig
from aiayn.models.seq2seq import Transformer, TransformerConfig
from reference import randomize_

hf = pytest.importorskip("transformers.generation.logits_process")

pytestmark = pytest.mark.usefixtures("one_thread")

BOS, EOS = 1, 2
V = 11


def _inputs(rows: int, length: int, vocab: int = V, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random ids from a small vocabulary (so n-grams and tokens repeat) and random logits of both
    signs."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4, (rows, length), generator=g)  # few distinct ids: many repeats
    ids[rows // 2 :] = torch.randint(0, vocab, (rows - rows // 2, length), generator=g)
    logits = torch.randn(rows, vocab, generator=g) * 3
    return ids, logits


def _same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


@pytest.mark.parametrize("penalty", [1.3, 0.7, 2.0])
@pytest.mark.parametrize("length", [1, 5, 17])
def test_repetition_penalty_equals_hugging_face(penalty, length):
    ids, logits = _inputs(6, length)
    theirs = hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    _same(RepetitionPenalty(penalty)(ids, logits), theirs)
    assert not torch.equal(theirs, logits)  # the test would be empty otherwise


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [1, 2, 3, 6, 20])
def test_no_repeat_ngram_equals_hugging_face(n, length):
    for seed in range(3):
        ids, logits = _inputs(8, length, seed=seed)
        theirs = hf.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
        _same(NoRepeatNGram(n)(ids, logits), theirs)


def test_no_repeat_ngram_bans_what_it_should():
    ids = torch.tensor([[5, 6, 7, 5, 6]])  # "5 6" was followed by 7: 7 is banned after "5 6"
    out = NoRepeatNGram(3)(ids, torch.zeros(1, V))
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [7]


@pytest.mark.parametrize("min_length", [0, 1, 4, 9])
@pytest.mark.parametrize("length", [1, 4, 8])
def test_min_length_equals_hugging_face(min_length, length):
    ids, logits = _inputs(5, length)
    theirs = hf.MinLengthLogitsProcessor(min_length, EOS)(ids, logits.clone())
    _same(MinLength(min_length, EOS)(ids, logits), theirs)
    for prompt in (0, 1, 3):
        theirs = hf.MinNewTokensLengthLogitsProcessor(prompt, min_length, EOS)(ids, logits.clone())
        _same(MinLength(min_length, EOS, prompt_length=prompt)(ids, logits), theirs)


BAD = [[7], [3, 5], [0, 1, 2], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [EOS], [9, 3], [3, 5]]


@pytest.mark.parametrize("length", [1, 2, 3, 9, 30])
def test_banned_sequences_equal_hugging_face_no_bad_words(length):
    for seed in range(4):
        ids, logits = _inputs(8, length, seed=seed)
        # Rows that end in the prefixes of the banned sequences (as far as they fit).
        ids[0, -1:] = 3
        ids[1, -2:] = torch.tensor([0, 1])[-length:]
        ids[2, -9:] = 4
        theirs = hf.NoBadWordsLogitsProcessor(BAD, eos_token_id=EOS)(ids, logits.clone())
        _same(NoBadSequences(BAD, EOS)(ids, logits), theirs)
    out = NoBadSequences(BAD, EOS)(ids, logits)
    assert torch.isinf(out[0, 5]) and torch.isinf(out[:, 7]).all()
    assert torch.isinf(out[1, 2]) == (length >= 2)  # 0 1 -> 2 banned once "0 1" fits
    assert torch.equal(NoBadSequences([[EOS]], EOS)(ids, logits), logits)  # a model must stop


def test_the_registry_builds_only_the_controls_that_are_on():
    ctx = StepContext(EOS, prompt_length=1)
    assert build_processors(None, ctx) is None
    assert build_processors(DecodingControls(), ctx) is None
    everything = DecodingControls(1.2, 2, 3, ((5,), (6, 7)))
    assert [type(p) for p in build_processors(everything, ctx)] == list(PROCESSORS.values())
    only = build_processors(DecodingControls(no_repeat_ngram=3), ctx)
    assert [type(p) for p in only] == [NoRepeatNGram]
    # A model without <eos> (GPT without one) has no minimum length to keep.
    assert build_processors(DecodingControls(min_len=3), StepContext(None)) is None
    for bad in (
        dict(repetition_penalty=0.0),
        dict(repetition_penalty=float("nan")),
        dict(no_repeat_ngram=-1),
        dict(min_len=-2),
        dict(ban=((),)),
    ):
        with pytest.raises(ConfigError):
            DecodingControls(**bad)


def test_banned_texts_are_tokenised_and_unwritable_ones_skipped(caplog):
    vocab = {"a": 4, "b": 5}

    def encode(text):
        return [vocab.get(c, 3) for c in text]

    with caplog.at_level(logging.WARNING):
        controls = make_controls(encode, 3, ban=["ab", "b", "xa", ""])
    assert controls.ban == ((4, 5), (5,))
    assert "'xa'" in caplog.text and "''" in caplog.text


# ---- the decoders apply them as Hugging Face would ---------------------------------------------------


def _seq2seq() -> Transformer:
    torch.manual_seed(5)
    config = TransformerConfig(
        src_vocab_size=13,
        tgt_vocab_size=V,
        d_model=32,
        num_heads=4,
        d_ff=64,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dropout=0.0,
    )
    return randomize_(Transformer(config), std=0.4).eval()


SRC = torch.tensor([[4, 9, 5, 7, EOS, 0], [6, 6, 8, 10, 11, EOS]])
CONTROLS = DecodingControls(
    repetition_penalty=1.5, no_repeat_ngram=2, min_len=6, ban=((4,), (5, 6), (8, 9, 10))
)


def _hf_processors(controls: DecodingControls, prompt_length: int):
    return hf.LogitsProcessorList(
        [
            hf.RepetitionPenaltyLogitsProcessor(controls.repetition_penalty),
            hf.NoRepeatNGramLogitsProcessor(controls.no_repeat_ngram),
            hf.NoBadWordsLogitsProcessor([list(s) for s in controls.ban], eos_token_id=EOS),
            hf.MinNewTokensLengthLogitsProcessor(prompt_length, controls.min_len, EOS),
        ]
    )


@torch.inference_mode()
def _reference_greedy(model: Transformer, src: torch.Tensor, steps: int) -> list[list[int]]:
    """Greedy decoding written out: a full decoder pass per step, Hugging Face's processors on the
    last logits, argmax."""
    processors = _hf_processors(CONTROLS, prompt_length=1)  # <bos> is no output token
    outputs = []
    for row in src:
        real = row[row != 0][None]
        tokens = torch.tensor([[BOS]])
        for _ in range(steps):
            logits = model(real, tokens)[:, -1]
            next_tok = processors(tokens, logits).argmax(-1)
            tokens = torch.cat([tokens, next_tok[:, None]], 1)
            if next_tok.item() == EOS:
                break
        out = tokens[0, 1:].tolist()
        outputs.append(out[:-1] if out[-1] == EOS else out)
    return outputs


def test_greedy_with_controls_equals_a_reference_loop_with_hugging_faces_processors():
    model = _seq2seq()
    ours = greedy_search(model, SRC, max_len=12, controls=CONTROLS)
    assert ours == _reference_greedy(model, SRC, 12)
    assert ours != greedy_search(model, SRC, max_len=12)  # the controls changed something
    assert greedy_search(model, SRC, max_len=12, controls=CONTROLS, use_cache=False) == ours


def test_beam_search_honours_every_control():
    model = _seq2seq()
    for hyps in beam_search(model, SRC, beam_size=4, max_len=12, controls=CONTROLS):
        assert hyps
        for h in hyps:
            out = h.tokens
            assert len(out) >= CONTROLS.min_len
            assert 4 not in out
            pairs = list(zip(out, out[1:]))
            assert len(set(pairs)) == len(pairs) and (5, 6) not in pairs
            assert all(out[i : i + 3] != [8, 9, 10] for i in range(len(out)))


def test_controls_that_are_off_change_nothing():
    model = _seq2seq()
    assert greedy_search(model, SRC, max_len=12, controls=DecodingControls()) == greedy_search(
        model, SRC, max_len=12
    )
    plain = beam_search(model, SRC, beam_size=3, max_len=12)
    off = beam_search(model, SRC, beam_size=3, max_len=12, controls=DecodingControls())
    assert [[h.tokens for h in s] for s in plain] == [[h.tokens for h in s] for s in off]


def test_gpt_generation_with_controls_equals_a_reference_loop():
    torch.manual_seed(2)
    config = GPTConfig(
        vocab_size=V, max_len=64, d_model=32, num_heads=4, d_ff=64, num_layers=2, dropout=0.0
    )
    model = randomize_(GPT(config), std=0.4).eval()
    prompt = [5, 6, 7, 5]
    controls = DecodingControls(repetition_penalty=1.4, no_repeat_ngram=3, min_len=5, ban=((9,),))
    ours = generate(model, [prompt], 20, temperature=0, eos_id=EOS, controls=controls)[0]
    processors = _hf_processors(controls, prompt_length=len(prompt))
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(20):
            next_tok = processors(ids, model(ids)[:, -1]).argmax(-1)
            if next_tok.item() == EOS:
                break
            ids = torch.cat([ids, next_tok[:, None]], 1)
    assert ours == ids[0, len(prompt) :].tolist()
    assert ours != generate(model, [prompt], 20, temperature=0, eos_id=EOS)[0]
