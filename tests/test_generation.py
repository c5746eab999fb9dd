"""Decoder-only generation: cache vs recomputation, left padding, seeds, filters, stopping, streaming."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import replace

import pytest
import torch

from aiayn.cli import main
from aiayn.data.tokenizers import CharTokenizer
from aiayn.decoding import generate, sample_next, stream_generate
from aiayn.modeldir import save_model_dir
from aiayn.models.gpt import GPT, GPTConfig
from aiayn.tasks.lm import LanguageModel
from reference import randomize_

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


V = 23
# A short context (16) so that generating 40 tokens slides the window twice.
CONFIG = GPTConfig(
    vocab_size=V,
    max_len=16,
    d_model=32,
    num_heads=4,
    d_ff=64,
    num_layers=2,
    dropout=0.0,
    attention_dropout=0.0,
)
PROMPTS = [[3, 7, 9, 4, 1, 5], [8], [11, 2, 20], [6] * 14]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return randomize_(GPT(CONFIG), std=0.3).eval()


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_kv_cache_generation_equals_recomputation_token_for_token(model, temperature):
    cached = generate(model, PROMPTS, 40, temperature=temperature, generator=_seeded())
    recomputed = generate(
        model, PROMPTS, 40, temperature=temperature, generator=_seeded(), use_cache=False
    )
    assert cached == recomputed
    assert all(len(out) == 40 for out in cached)


def test_left_padded_batch_equals_one_prompt_at_a_time(model):
    batched = generate(model, PROMPTS, 40, temperature=0)
    alone = [generate(model, [p], 40, temperature=0)[0] for p in PROMPTS]
    assert batched == alone


def test_same_seed_same_sample_and_another_seed_another(model):
    kwargs = dict(temperature=1.0, top_k=10, top_p=0.95)
    a = generate(model, PROMPTS, 30, generator=_seeded(1), **kwargs)
    b = generate(model, PROMPTS, 30, generator=_seeded(1), **kwargs)
    c = generate(model, PROMPTS, 30, generator=_seeded(2), **kwargs)
    assert a == b
    assert a != c


def test_greedy_is_argmax_and_top_k_of_one_is_greedy():
    logits = torch.randn(5, V)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, top_k=1, generator=_seeded()), logits.argmax(-1))


def test_top_k_samples_exactly_the_k_most_probable_tokens():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 2.8, 2.7, 0.5])
    draws = sample_next(logits.expand(4000, -1), top_k=4, generator=_seeded())
    assert set(draws.tolist()) == {1, 2, 4, 5}


def test_top_p_samples_exactly_the_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    draws = sample_next(probs.log().expand(4000, -1), top_p=0.7, generator=_seeded())
    # Sorted: 0.5, 0.3, 0.15, 0.05. Mass before 0.3 is 0.5 < 0.7: kept; before 0.15 it is 0.8: cut.
    assert set(draws.tolist()) == {1, 3}
    # Temperature sharpens before the filters, as in Hugging Face: a colder 0.7-nucleus is smaller.
    draws = sample_next(probs.log().expand(4000, -1), 0.25, top_p=0.7, generator=_seeded())
    assert set(draws.tolist()) == {1}


def test_eos_ends_a_prompt_without_disturbing_the_others(model):
    free = generate(model, PROMPTS, 20, temperature=1.0, generator=_seeded(3))
    eos = free[0][4]  # the 5th token of prompt 0 becomes the end-of-sequence token
    stopped = generate(model, PROMPTS, 20, temperature=0.0, eos_id=eos)
    greedy = [generate(model, [p], 20, temperature=0.0, eos_id=eos)[0] for p in PROMPTS]
    assert stopped == greedy
    for out in stopped:
        assert eos not in out


def test_stop_function_and_streaming_order(model):
    steps = list(
        stream_generate(
            model, PROMPTS[:2], 10, temperature=0, stop=lambda b, toks: b == 1 and len(toks) == 3
        )
    )
    assert len(steps) == 10
    assert [s[1] is None for s in steps] == [False] * 3 + [True] * 7
    assert all(s[0] is not None for s in steps)


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], 5)
    with pytest.raises(ValueError, match="outside"):
        generate(model, [[V]], 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], 5, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 5, top_p=0)


# ---- text level: LanguageModel and `aiayn generate` ----------------------------------------------

ALPHABET = list("abcdefgh \n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = CharTokenizer(ALPHABET)
    config = replace(CONFIG, vocab_size=tok.vocab_size, max_len=64, tie_output=False)
    torch.manual_seed(1)
    gpt = randomize_(GPT(config), std=0.1).eval()
    with torch.no_grad():
        # Like a trained LM, never end the text: feature 0 of the final state is always 1, and it
        # lifts every character's logit by 8 above <eos>'s (and the other special tokens').
        gpt.decoder.norm.weight[0], gpt.decoder.norm.bias[0] = 0.0, 1.0
        gpt.lm_head.weight[:4] = 0.0
        gpt.lm_head.weight[4:, 0] = 8.0
    directory = tmp_path_factory.mktemp("lm")
    save_model_dir(directory, "gpt", gpt, config, task="lm", tokenizers={"text": "tokenizer.json"})
    tok.save(directory, "tokenizer")
    return directory


def test_streamed_pieces_join_to_the_generated_text(model_dir):
    lm = LanguageModel.load(model_dir)
    pieces = list(lm.stream("abc", max_new_tokens=40, temperature=1.0, seed=5))
    assert len(pieces) == 40  # a character model streams one character per token
    assert "".join(pieces) == lm.generate("abc", max_new_tokens=40, temperature=1.0, seed=5)


def test_stop_string_ends_the_text_before_it(model_dir):
    lm = LanguageModel.load(model_dir)
    full = lm.generate("ab", max_new_tokens=60, temperature=1.0, seed=7)
    stop = full[20:22]
    cut = lm.generate("ab", max_new_tokens=60, temperature=1.0, seed=7, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert stop not in cut


def test_generate_command_streams_the_same_text_for_the_same_seed(model_dir):
    def run(seed: int) -> str:
        out = io.StringIO()
        args = ["generate", "--model", str(model_dir), "--prompt", "cab", "--seed", str(seed)]
        with redirect_stdout(out):
            assert main([*args, "--max-new-tokens", "30", "--temperature", "1.0"]) == 0
        return out.getvalue()

    first = run(11)
    assert first == run(11)
    assert first != run(12)
    lm = LanguageModel.load(model_dir)
    assert first == lm.generate("cab", max_new_tokens=30, temperature=1.0, seed=11) + "\n"


def test_generate_command_reports_a_missing_model_with_exit_code_2(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_an_end_token_that_is_also_pad_and_bos_stays_possible():
    # GPT-2's one <|endoftext|> is pad, bos, unk and eos: suppressing pad/bos must not suppress eos,
    # or an imported GPT-2 never stops by itself.
    from types import SimpleNamespace

    from aiayn.tasks.lm import _never_generated

    gpt2 = SimpleNamespace(pad_id=50256, bos_id=50256, unk_id=50256, eos_id=50256)
    assert _never_generated(gpt2) == []
    aiayn_own = SimpleNamespace(pad_id=0, bos_id=1, unk_id=3, eos_id=2)
    assert _never_generated(aiayn_own) == [0, 1, 3]
