"""Grouped-query attention, RMSNorm and gated FFNs: exact formulas, the KV cache, the lean decoding
step, and configs/checkpoints from before these fields existed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aiayn import config as cfg
from aiayn.attention import KVCache, MultiHeadAttention
from aiayn.errors import AiaynError, ConfigError
from aiayn.layers import Decoder, DecoderLayer, FeedForward, ffn_width, make_norm
from aiayn.models.gpt import GPT, GPTConfig
from aiayn.models.vit import ViTConfig
from aiayn.positional import ALiBi, RotaryEmbedding

pytestmark = pytest.mark.usefixtures("one_thread")

D, H = 32, 4


@torch.no_grad()
def _full_twin(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """A plain multi-head attention computing what ``gqa`` does: its K/V heads repeated."""
    full = MultiHeadAttention(gqa.d_model, gqa.num_heads, position=gqa.rotary or gqa.alibi).eval()
    groups = gqa.num_heads // gqa.num_kv_heads
    for name in ("q_proj", "out_proj"):
        getattr(full, name).load_state_dict(getattr(gqa, name).state_dict())
    for name in ("k_proj", "v_proj"):
        src, dst = getattr(gqa, name), getattr(full, name)
        w = src.weight.view(gqa.num_kv_heads, gqa.head_dim, -1)  # (Hkv, Dh, D)
        dst.weight.copy_(w.repeat_interleave(groups, 0).reshape(-1, gqa.d_model))
        dst.bias.copy_(src.bias.view(gqa.num_kv_heads, -1).repeat_interleave(groups, 0).flatten())
    return full


def test_default_keeps_the_papers_parameter_shapes():
    plain, gqa = MultiHeadAttention(D, H), MultiHeadAttention(D, H, num_kv_heads=2)
    assert plain.k_proj.weight.shape == plain.v_proj.weight.shape == (D, D)
    assert gqa.k_proj.weight.shape == gqa.v_proj.weight.shape == (D // 2, D)
    assert plain.num_kv_heads == H
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(D, H, num_kv_heads=3)


@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("position", [None, "rotary", "alibi"])
def test_grouped_query_attention_is_full_attention_with_shared_kv_heads(kv_heads, position):
    pos = {"rotary": RotaryEmbedding(D // H), "alibi": ALiBi(H), None: None}[position]
    gqa = MultiHeadAttention(D, H, num_kv_heads=kv_heads, position=pos).eval()
    with torch.no_grad():
        for p in gqa.parameters():
            p.normal_(0, 0.3)
    full = _full_twin(gqa)
    x, mem = torch.randn(2, 6, D), torch.randn(2, 5, D)
    key_mask = torch.tensor([[True] * 6, [False] * 2 + [True] * 4])
    for kwargs in (dict(is_causal=True), dict(key_mask=key_mask)):
        torch.testing.assert_close(gqa(x, **kwargs)[0], full(x, **kwargs)[0], atol=1e-5, rtol=1e-5)
    if position is None:  # cross-attention (positions are self-attention only)
        torch.testing.assert_close(gqa(x, mem)[0], full(x, mem)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, None])
def test_gqa_fused_equals_reference_values_and_gradients(kv_heads):
    mha = MultiHeadAttention(D, H, num_kv_heads=kv_heads, position=RotaryEmbedding(D // H))
    x = torch.randn(2, 7, D, requires_grad=True)
    fused, _ = mha(x, is_causal=True)
    ref, weights = mha(x, is_causal=True, need_weights=True)
    assert weights.shape == (2, H, 7, 7)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    g_fused = torch.autograd.grad(fused.square().sum(), [x, *mha.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *mha.parameters()])
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_kv_cache_stores_only_the_kv_heads():
    mha = MultiHeadAttention(D, H, num_kv_heads=1).eval()
    self_cache, cross_cache = KVCache(), KVCache(static=True)
    mha(torch.randn(3, 5, D), is_causal=True, cache=self_cache)
    mha(torch.randn(3, 1, D), torch.randn(3, 9, D), cache=cross_cache)
    k, v = self_cache.get()
    assert k.shape == v.shape == (3, 1, 5, D // H)  # (B, Hkv, S, Dh): a quarter of full MHA
    assert cross_cache.get()[0].shape == (3, 1, 9, D // H)


# ---- norms and FFNs ----------------------------------------------------------------------------


def test_rmsnorm_is_torchs_and_has_no_bias():
    norm = make_norm("rmsnorm", D, eps=1e-6, bias=True)
    assert isinstance(norm, nn.RMSNorm) and [n for n, _ in norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, D)
    expect = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expect)
    assert isinstance(make_norm("layernorm", D), nn.LayerNorm)
    with pytest.raises(ValueError, match="norm"):
        make_norm("batchnorm", D)


@pytest.mark.parametrize(("activation", "gate"), [("swiglu", F.silu), ("geglu", F.gelu)])
def test_gated_ffn_formula(activation, gate):
    ffn = FeedForward(D, 48, activation=activation, bias=False)
    assert [n for n, _ in ffn.named_parameters()] == [
        "linear1.weight",
        "linear2.weight",
        "linear3.weight",
    ]
    x = torch.randn(2, 3, D)
    w1, w2, w3 = ffn.linear1.weight, ffn.linear2.weight, ffn.linear3.weight
    torch.testing.assert_close(ffn(x), (gate(x @ w1.T) * (x @ w3.T)) @ w2.T)


def test_ffn_width_rule():
    assert ffn_width(4096, None, "swiglu") == 11008  # Llama-7B's intermediate size
    assert ffn_width(64, None, "swiglu") == 256  # int(170.7) rounded up to 256
    assert ffn_width(512, None, "geglu") == 1536
    assert ffn_width(64, None, "relu") == 256  # 4·D
    assert ffn_width(64, 100, "swiglu") == 100  # given: used as is
    assert FeedForward(64, None, activation="swiglu").linear3.out_features == 256


# ---- the lean one-token decoding step ----------------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("position", ["rotary", "alibi"])
def test_lean_decoding_step_equals_the_full_pass(norm_first, position):
    """DecoderLayer's fast path (``_make_step``) with every new field: RMSNorm, SwiGLU, GQA,
    rotary/ALiBi, with and without cross-attention."""
    pos = RotaryEmbedding(D // H) if position == "rotary" else ALiBi(H)
    for cross in (True, False):
        decoder = Decoder(
            [
                DecoderLayer(
                    D,
                    H,
                    None,
                    dropout=0.0,
                    activation="swiglu",
                    norm_first=norm_first,
                    num_kv_heads=2,
                    norm="rmsnorm",
                    position=pos,
                    cross_attention=cross,
                )  # fmt: skip
                for _ in range(2)
            ]
        ).eval()
        with torch.no_grad():
            for p in decoder.parameters():
                p.normal_(0, 0.3)
        x, mem = torch.randn(2, 6, D), torch.randn(2, 4, D)
        mem_mask = torch.tensor([[True] * 4, [True, True, False, False]])
        memory = mem if cross else None
        full, _, _ = decoder(x, memory, memory_key_mask=mem_mask)
        cache = decoder.new_cache()
        parts = [decoder(x[:, :3], memory, memory_key_mask=mem_mask, cache=cache)[0]]
        for t in range(3, 6):
            parts.append(decoder(x[:, t : t + 1], None, memory_key_mask=mem_mask, cache=cache)[0])
        assert cache.steps is not None, "took the fast path"
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


# ---- configs and checkpoints from before --------------------------------------------------------


def test_old_configs_load_with_todays_behaviour():
    new_fields = {"positional", "num_kv_heads", "norm", "rotary_layout", "rotary_base"}
    old = {k: v for k, v in cfg.to_dict(GPTConfig()).items() if k not in new_fields}
    assert cfg.from_dict("gpt", old) == GPTConfig()
    model = GPT(GPTConfig(vocab_size=50, d_model=32, num_heads=4, d_ff=64, num_layers=1))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["pos_emb.weight"] == (1024, 32)
    assert shapes["decoder.layers.0.self_attn.k_proj.weight"] == (32, 32)
    assert not any("linear3" in k for k in shapes)


def test_new_fields_are_validated_and_parsed_from_set():
    base = GPTConfig(d_model=32, num_heads=4, d_ff=64)
    parsed = cfg.apply_overrides(
        base, ["num_kv_heads=2", "d_ff=none", "norm=rmsnorm", "rotary_base=5e5"]
    )
    assert (parsed.num_kv_heads, parsed.d_ff, parsed.norm, parsed.rotary_base) == (
        2, None, "rmsnorm", 500000.0,
    )  # fmt: skip
    bad = [
        dict(num_kv_heads=3),
        dict(norm="batchnorm"),
        dict(positional="relative"),
        dict(rotary_layout="spiral"),
        dict(activation="swish"),
        dict(d_ff=0),
        dict(positional="rotary", d_model=36, num_heads=4),  # head dim 9 is odd
    ]
    for changes in bad:
        with pytest.raises(ConfigError):
            dataclasses.replace(base, **changes)
    with pytest.raises(ConfigError, match="2-D"):
        ViTConfig(positional="rotary")


def test_gpt2_export_refuses_blocks_gpt2_lacks():
    pytest.importorskip("transformers")
    from aiayn.interop.gpt2 import hf_config

    for changes in (dict(norm="rmsnorm"), dict(num_kv_heads=2), dict(positional="rotary")):
        with pytest.raises(AiaynError, match="llama"):
            hf_config(dataclasses.replace(GPTConfig(d_model=32, num_heads=4), **changes))
