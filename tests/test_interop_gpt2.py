"""aiayn's GPT computes exactly what Hugging Face's GPT2LMHeadModel computes, with the same weights.

The Hugging Face model is built offline from a config (no hub access). Weights are drawn with a large
spread (``randomize_``) so that next-token distributions are peaked and greedy choices are not ties.
"""

from __future__ import annotations

import pytest
import torch

from aiayn.decoding import generate
from aiayn.errors import AiaynError

transformers = pytest.importorskip("transformers")
from aiayn.interop.gpt2 import config_from_hf, from_hf_gpt2, to_hf_gpt2  # noqa: E402
from reference import randomize_  # noqa: E402

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


V = 97
EOS = V - 1


def _hf_model(**overrides):
    config = transformers.GPT2Config(
        vocab_size=V,
        n_positions=96,
        n_embd=48,
        n_layer=3,
        n_head=4,
        bos_token_id=EOS,
        eos_token_id=EOS,
        **overrides,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    randomize_(model, std=0.15)
    return model


@pytest.fixture(scope="module")
def pair():
    hf = _hf_model()
    return hf, from_hf_gpt2(hf)


def test_logits_equal_hugging_face(pair):
    hf, ours = pair
    ids = torch.randint(0, V, (3, 40))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_left_padded_logits_equal_hugging_face(pair):
    hf, ours = pair
    ids = torch.randint(0, V - 1, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, key_mask=mask.bool())
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)


def test_greedy_generation_gives_the_same_50_tokens(pair):
    hf, ours = pair
    prompt = torch.randint(0, V - 1, (1, 7))
    with torch.no_grad():
        out = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=50,
            min_new_tokens=50,
            do_sample=False,
            pad_token_id=EOS,
        )
    expected = out[0, 7:].tolist()
    assert len(expected) == 50
    got = generate(ours, [prompt[0].tolist()], 50, temperature=0)[0]
    assert got == expected


def test_left_padded_batch_generation_equals_hugging_face(pair):
    hf, ours = pair
    prompts = [[5, 17, 23, 42, 8, 9], [61, 3], [11, 12, 13, 14]]
    P = max(map(len, prompts))
    ids = torch.tensor([[EOS] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            pad_token_id=EOS,
        )
    expected = out[:, P:].tolist()
    assert generate(ours, prompts, 20, temperature=0) == expected


def test_export_round_trips_exactly(pair):
    hf, ours = pair
    back = to_hf_gpt2(ours, bos_token_id=EOS, eos_token_id=EOS)
    theirs, again = hf.state_dict(), back.state_dict()
    assert set(theirs) == set(again)
    for name, tensor in theirs.items():
        assert torch.equal(tensor, again[name]), name
    assert back.lm_head.weight is back.transformer.wte.weight


def test_untied_and_exact_gelu_variants_convert_too():
    hf = _hf_model(tie_word_embeddings=False, activation_function="gelu", n_inner=80)
    ours = from_hf_gpt2(hf)
    assert not ours.config.tie_output and ours.config.d_ff == 80
    assert ours.config.activation == "gelu"
    ids = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
        back = to_hf_gpt2(ours)
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_unsupported_gpt2_variants_are_refused():
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10)
    config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(AiaynError, match="scale_attn_by_inverse_layer_idx"):
        config_from_hf(config)
