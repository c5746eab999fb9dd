"""Properties of the encoder-decoder Transformer that must hold for any weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aiayn.masks import make_local_mask
from aiayn.models.seq2seq import PRESETS, Transformer, TransformerConfig, count_parameters
from reference import randomize_

B, S, T = 3, 8, 7


def _model(**overrides) -> Transformer:
    base = dict(
        src_vocab_size=31,
        tgt_vocab_size=37,
        d_model=32,
        num_heads=4,
        d_ff=48,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dropout=0.0,
    )
    base.update(overrides)
    return randomize_(Transformer(TransformerConfig(**base))).eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_future_target_tokens_never_change_earlier_outputs(norm_first):
    model = _model(norm_first=norm_first)
    src = torch.randint(1, 31, (B, S))
    tgt = torch.randint(1, 37, (B, T))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(1, 37, (B, T - 4))
    torch.testing.assert_close(model(src, tgt)[:, :4], model(src, changed)[:, :4])


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_source_padding_never_changes_outputs(positional):
    model = _model(positional=positional)
    src = torch.randint(1, 31, (B, S))
    tgt = torch.randint(1, 37, (B, T))
    padded = torch.cat([src, torch.zeros(B, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(model(src, tgt), model(padded, tgt), atol=1e-5, rtol=1e-5)
    # Target padding on the right never changes the real positions either.
    tgt_padded = torch.cat([tgt, torch.zeros(B, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(src, tgt), model(src, tgt_padded)[:, :T], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_incremental_decoding_with_cache_equals_full_recomputation(norm_first):
    model = _model(norm_first=norm_first)
    src = torch.randint(1, 31, (B, S))
    src[1, -2:] = 0
    tgt = torch.randint(1, 37, (B, T))
    full = model(src, tgt)
    key_mask = src != 0
    memory = model.encode(src, key_mask)
    cache = model.new_cache()
    steps = [model.decode(tgt[:, :1], memory, key_mask, cache)]
    for t in range(1, T):
        steps.append(model.decode(tgt[:, t : t + 1], None, key_mask, cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_local_attention_window_equals_full_attention_with_local_mask():
    model = _model(attention_window=2)
    x = torch.randn(B, S, 32)
    got, _ = model.encoder(x)
    h = x
    for layer in model.encoder.layers:
        h, _ = layer(h, attn_mask=make_local_mask(S, window=2))
    torch.testing.assert_close(got, model.encoder.norm(h))
    wide = _model(attention_window=S)  # a window covering everything is full attention
    wide.load_state_dict(model.state_dict())
    full = _model()
    full.load_state_dict(model.state_dict())
    src, tgt = torch.randint(1, 31, (B, S)), torch.randint(1, 37, (B, T))
    torch.testing.assert_close(wide(src, tgt), full(src, tgt))


def test_attention_maps_rows_sum_to_one():
    model = _model()
    src, tgt = torch.randint(1, 31, (B, S)), torch.randint(1, 37, (B, T))
    src[0, -2:] = 0
    maps = model.attention_maps(src, tgt)
    assert len(maps.encoder) == 2 and len(maps.decoder_self) == 2 and len(maps.cross) == 2
    assert maps.cross[0].shape == (B, 4, T, S)
    torch.testing.assert_close(maps.cross[1].sum(-1), torch.ones(B, 4, T))
    assert (maps.cross[0][0, :, :, -2:] == 0).all(), "padding receives no attention"
    assert (maps.decoder_self[0].triu(1) == 0).all(), "the decoder never looks ahead"


@pytest.mark.parametrize("share", [False, True])
def test_every_parameter_gets_a_gradient_and_layers_differ(share):
    model = Transformer(
        TransformerConfig(
            src_vocab_size=40,
            tgt_vocab_size=40,
            d_model=32,
            num_heads=4,
            d_ff=48,
            num_encoder_layers=2,
            num_decoder_layers=2,
            share_embeddings=share,
        )
    ).train()
    src, tgt = torch.randint(1, 40, (B, S)), torch.randint(1, 40, (B, T))
    model(src, tgt).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    a, b = model.encoder.layers
    assert not torch.equal(a.self_attn.q_proj.weight, b.self_attn.q_proj.weight)
    assert not torch.equal(a.ffn.linear1.weight, b.ffn.linear1.weight)
    assert model.lm_head.weight is model.tgt_emb.weight
    assert (model.src_emb.weight is model.tgt_emb.weight) == share


def test_dropout_only_in_training():
    model = _model(dropout=0.3)
    src, tgt = torch.randint(1, 31, (B, S)), torch.randint(1, 37, (B, T))
    torch.testing.assert_close(model(src, tgt), model(src, tgt))
    model.train()
    assert not torch.allclose(model(src, tgt), model(src, tgt))


@pytest.mark.parametrize("name,paper_millions", [("base", 65), ("big", 213)])
def test_preset_parameter_counts_match_torch_transformer(name, paper_millions):
    config = PRESETS[name]
    with torch.device("meta"):
        ours = Transformer(config)
        ref = nn.Transformer(
            config.d_model,
            config.num_heads,
            config.num_encoder_layers,
            config.num_decoder_layers,
            config.d_ff,
            batch_first=True,
        )
        shared = nn.Embedding(config.src_vocab_size, config.d_model)  # tied in and out
    expected = count_parameters(ref) + count_parameters(shared)
    assert count_parameters(ours) == expected
    assert abs(expected / 1e6 - paper_millions) / paper_millions < 0.05  # the paper's Table 3


def test_config_validation():
    from aiayn.errors import ConfigError

    with pytest.raises(ConfigError):
        TransformerConfig(d_model=30, num_heads=4)
    with pytest.raises(ConfigError):
        TransformerConfig(share_embeddings=True, src_vocab_size=3, tgt_vocab_size=4)
    with pytest.raises(ConfigError):
        TransformerConfig(dropout=1.5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("cross", [True, False])
def test_lean_decoding_step_equals_the_general_layer_path(norm_first, cross):
    """In eval mode a cached one-token step takes DecoderLayer's lean path; with dropout 0, train
    mode takes the general path: same arithmetic, so the outputs agree to float round-off."""
    from aiayn.layers import Decoder, DecoderLayer

    torch.manual_seed(0)
    layers = [DecoderLayer(32, 4, 48, 0.0, "gelu", norm_first, cross_attention=cross) for _ in "ab"]
    decoder = randomize_(Decoder(layers))
    memory = torch.randn(B, S, 32) if cross else None
    memory_mask = torch.ones(B, S, dtype=torch.bool)
    memory_mask[1, -3:] = False
    key_mask = torch.ones(B, T, dtype=torch.bool)
    key_mask[2, :2] = False  # left padding, as in batched GPT generation
    x = torch.randn(B, T, 32)
    outs = {}
    with torch.no_grad():
        for mode in ("train", "eval"):
            decoder.train(mode == "train")
            # A 3-token prefill (the general path in both modes), then one token per step.
            cache, steps, bounds = (
                decoder.new_cache(),
                [],
                [(0, 3)] + [(t, t + 1) for t in range(3, T)],
            )
            for a, b in bounds:
                h, _, _ = decoder(
                    x[:, a:b],
                    memory if a == 0 else None,
                    key_mask=key_mask[:, :b],
                    memory_key_mask=memory_mask if cross else None,
                    cache=cache,
                )
                steps.append(h)
            outs[mode] = torch.cat(steps, 1)
    torch.testing.assert_close(outs["eval"], outs["train"], atol=1e-5, rtol=1e-5)


def test_logits_at_computes_logits_only_where_asked():
    model = _model()
    src = torch.randint(1, 31, (B, S))
    tgt = torch.randint(1, 37, (B, T))
    wanted = torch.rand(B, T) > 0.3
    torch.testing.assert_close(model.logits_at(src, tgt, where=wanted), model(src, tgt)[wanted])
