"""The GPT model: built from the shared blocks, GPT-2 sizes and initialisation, masking and positions."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from aiayn import config as cfg
from aiayn.errors import AiaynError, ConfigError
from aiayn.layers import Decoder, DecoderLayer
from aiayn.models.gpt import GPT, PRESETS, GPTConfig, positions_from_mask
from reference import randomize_

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


V = 41
SMALL = GPTConfig(
    vocab_size=V,
    max_len=32,
    d_model=32,
    num_heads=4,
    d_ff=64,
    num_layers=2,
    dropout=0.0,
    attention_dropout=0.0,
)


def _model(**overrides) -> GPT:
    return randomize_(GPT(replace(SMALL, **overrides))).eval()


def test_the_block_is_the_shared_decoder_layer_without_cross_attention():
    model = GPT(SMALL)
    assert isinstance(model.decoder, Decoder)
    assert len(model.decoder.layers) == SMALL.num_layers
    for layer in model.decoder.layers:
        assert type(layer) is DecoderLayer
        assert layer.norm_first and layer.cross_attn is None
        assert layer.ffn.activation_name == "gelu_tanh"
    assert model.decoder.norm is not None  # GPT-2's final LayerNorm
    assert model.lm_head.weight is model.tok_emb.weight  # tied output projection


# Parameter counts of the four GPT-2 sizes (tied output layer counted once), as Hugging Face reports.
GPT2_PARAMETERS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", sorted(GPT2_PARAMETERS))
def test_gpt2_presets_have_gpt2s_sizes(name):
    with torch.device("meta"):
        model = GPT(cfg.get_preset("gpt", name))
    assert model.num_parameters() == GPT2_PARAMETERS[name]


def test_every_cpu_preset_builds_and_runs():
    for name, config in PRESETS.items():
        if config.d_model > 256:  # gpt2* and the larger CPU ones: counted on the meta device above
            continue
        model = GPT(replace(config, vocab_size=V)).eval()
        logits = model(torch.randint(0, V, (2, 5)))
        assert logits.shape == (2, 5, V) and torch.isfinite(logits).all(), name


def test_config_is_validated():
    with pytest.raises(ConfigError, match="divisible"):
        GPTConfig(d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="activation"):
        GPTConfig(activation="swish")
    assert cfg.from_dict("gpt", cfg.to_dict(SMALL)) == SMALL


def test_gpt2_initialisation_scales_the_residual_projections():
    torch.manual_seed(0)
    config = replace(SMALL, d_model=256, num_heads=4, d_ff=1024, num_layers=8)
    model = GPT(config)
    residual = 0.02 / math.sqrt(2 * config.num_layers)
    for layer in model.decoder.layers:
        assert layer.self_attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert layer.ffn.linear2.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert layer.ffn.linear1.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert float(layer.ffn.linear1.bias.detach().abs().max()) == 0.0
        assert float(layer.norm1.weight.detach().min()) == 1.0
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.pos_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_every_parameter_gets_a_gradient():
    model = _model().train()
    ids = torch.randint(0, V, (3, 9))
    model(ids).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_future_tokens_never_change_earlier_logits():
    model = _model()
    ids = torch.randint(0, V, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, V, (2, 5))
    torch.testing.assert_close(model(ids)[:, :7], model(changed)[:, :7])


def test_left_padding_with_key_mask_equals_the_unpadded_sequence():
    model = _model()
    ids = torch.randint(1, V, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)  # 4 pads on the left
    key_mask = torch.cat(
        [torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool)], 1
    )
    torch.testing.assert_close(model(padded, key_mask=key_mask)[:, 4:], model(ids))
    assert positions_from_mask(key_mask).tolist() == [[0] * 5 + list(range(1, 9))]


def test_last_only_and_cached_steps_match_the_full_pass():
    model = _model()
    ids = torch.randint(0, V, (2, 10))
    full = model(ids)
    torch.testing.assert_close(model(ids, last_only=True), full[:, -1:])
    cache = model.new_cache()
    steps = [model(ids[:, :6], cache=cache)] + [
        model(ids[:, t : t + 1], cache=cache) for t in range(6, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_sequences_longer_than_the_context_are_refused():
    model = _model()
    with pytest.raises(AiaynError, match="longer than the model's context"):
        model(torch.zeros(1, SMALL.max_len + 1, dtype=torch.long))


def test_flops_per_token_follows_the_formula():
    model = GPT(SMALL)
    n = sum(p.numel() for p in model.parameters()) - SMALL.max_len * SMALL.d_model
    expected = 6 * n + 12 * SMALL.num_layers * SMALL.d_model * 16
    assert model.flops_per_token(16) == expected
