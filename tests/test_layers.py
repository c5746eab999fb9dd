"""Encoder/decoder layers and the whole encoder-decoder against torch.nn with copied weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aiayn.layers import DecoderLayer, EncoderLayer, FeedForward
from aiayn.masks import make_causal_mask
from aiayn.models.seq2seq import Transformer, TransformerConfig
from aiayn.positional import sinusoidal_table
from reference import copy_decoder_layer, copy_encoder_layer, randomize_

B, S, T, D, H, F = 3, 9, 6, 32, 4, 64


def _key_mask(length: int) -> torch.Tensor:
    mask = torch.ones(B, length, dtype=torch.bool)
    mask[0, -3:] = False
    mask[1, -1:] = False
    return mask


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_equals_torch(norm_first, activation):
    ours = randomize_(EncoderLayer(D, H, F, 0.0, activation, norm_first)).eval()
    ref = nn.TransformerEncoderLayer(
        D, H, F, 0.0, activation, batch_first=True, norm_first=norm_first
    ).eval()
    copy_encoder_layer(ours, ref)
    x, key_mask = torch.randn(B, S, D), _key_mask(S)
    got, _ = ours(x, key_mask=key_mask)
    exp = ref(x, src_key_padding_mask=~key_mask)
    real = key_mask[..., None].expand_as(
        got
    )  # torch's fast path zeroes padded rows; compare real ones
    torch.testing.assert_close(got[real], exp[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_equals_torch(norm_first, activation):
    ours = randomize_(DecoderLayer(D, H, F, 0.0, activation, norm_first)).eval()
    ref = nn.TransformerDecoderLayer(
        D, H, F, 0.0, activation, batch_first=True, norm_first=norm_first
    ).eval()
    copy_decoder_layer(ours, ref)
    x, mem, mem_mask = torch.randn(B, T, D), torch.randn(B, S, D), _key_mask(S)
    got, _, _ = ours(x, mem, memory_key_mask=mem_mask)
    exp = ref(
        x, mem, tgt_mask=~make_causal_mask(T), memory_key_padding_mask=~mem_mask, tgt_is_causal=True
    )
    torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


def test_feed_forward_is_position_wise():
    ffn = FeedForward(D, F).eval()
    x = torch.randn(B, T, D)
    out = ffn(x)
    torch.testing.assert_close(out[:, 2], ffn(x[:, 2:3])[:, 0])
    torch.testing.assert_close(out, ffn.linear2(torch.relu(ffn.linear1(x))))


def _tiny_config(**overrides) -> TransformerConfig:
    base = dict(
        src_vocab_size=23,
        tgt_vocab_size=29,
        d_model=D,
        num_heads=H,
        d_ff=F,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dropout=0.0,
    )
    base.update(overrides)
    return TransformerConfig(**base)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_equals_torch_transformer(norm_first):
    config = _tiny_config(norm_first=norm_first)
    model = randomize_(Transformer(config)).eval()
    ref = nn.Transformer(D, H, 2, 3, F, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    for ours_l, ref_l in zip(model.encoder.layers, ref.encoder.layers):
        copy_encoder_layer(ours_l, ref_l)
    for ours_l, ref_l in zip(model.decoder.layers, ref.decoder.layers):
        copy_decoder_layer(ours_l, ref_l)
    ref.encoder.norm.load_state_dict(model.encoder.norm.state_dict())
    ref.decoder.norm.load_state_dict(model.decoder.norm.state_dict())

    src = torch.randint(1, 23, (B, S))
    src[0, -3:] = 0  # padding
    tgt = torch.randint(1, 29, (B, T))
    got = model(src, tgt)

    pe = sinusoidal_table(64, D)
    src_x = model.src_emb(src) * D**0.5 + pe[:S]
    tgt_x = model.tgt_emb(tgt) * D**0.5 + pe[:T]
    pad = src == 0
    hidden = ref(
        src_x,
        tgt_x,
        tgt_mask=~make_causal_mask(T),
        src_key_padding_mask=pad,
        memory_key_padding_mask=pad,
        tgt_is_causal=True,
    )
    exp = hidden @ model.tgt_emb.weight.T  # tied output projection
    torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)
