"""Rotary positions and ALiBi: relative-position property, layouts, offsets, slopes, the attention bias."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.attention import MultiHeadAttention, scaled_dot_product_attention
from aiayn.masks import make_causal_mask
from aiayn.positional import (
    ALiBi,
    RotaryEmbedding,
    alibi_slopes,
    apply_rotary,
    make_attention_positions,
    rotary_inv_freq,
)

LAYOUTS = ["half", "interleaved"]


def _rotate_at(rotary: RotaryEmbedding, x: torch.Tensor, position: int) -> torch.Tensor:
    """``x (Dh,)`` rotated as a query at ``position`` (the tables grow to reach it)."""
    q = x.view(1, 1, 1, -1)
    out, _ = rotary(q, q, start=position)
    return out.view(-1)


# ---- rotary ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rotated_dot_product_depends_only_on_relative_position(layout):
    rotary = RotaryEmbedding(16, layout=layout, max_len=8)  # tables grow past 8 below
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    rotary = rotary.double()
    for m, n in [(3, 1), (10, 2), (40, 0)]:
        base = _rotate_at(rotary, q, m) @ _rotate_at(rotary, k, n)
        for shift in (1, 7, 100):
            shifted = _rotate_at(rotary, q, m + shift) @ _rotate_at(rotary, k, n + shift)
            torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    # position 0 is the identity, and a rotation keeps the norm
    torch.testing.assert_close(_rotate_at(rotary, q, 0), q.float().double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(_rotate_at(rotary, q, 33).norm(), q.norm(), atol=1e-5, rtol=1e-5)


def test_the_formula_of_each_layout():
    """Pair i rotates by angle pos·base^(-2i/Dh): channels (i, i + Dh/2) or (2i, 2i + 1)."""
    Dh, pos = 8, 5
    x = torch.randn(Dh, dtype=torch.float64)
    theta = pos * rotary_inv_freq(Dh)  # (Dh/2,)
    half = _rotate_at(RotaryEmbedding(Dh, layout="half").double(), x, pos)
    inter = _rotate_at(RotaryEmbedding(Dh, layout="interleaved").double(), x, pos)
    for i in range(Dh // 2):
        c, s = math.cos(theta[i]), math.sin(theta[i])
        a, b = x[i], x[i + Dh // 2]
        torch.testing.assert_close(
            half[[i, i + Dh // 2]], torch.stack([a * c - b * s, b * c + a * s])
        )
        a, b = x[2 * i], x[2 * i + 1]
        torch.testing.assert_close(
            inter[[2 * i, 2 * i + 1]], torch.stack([a * c - b * s, b * c + a * s])
        )


def test_layouts_are_the_same_rotation_up_to_a_channel_permutation():
    Dh = 12
    perm = torch.cat([torch.arange(0, Dh, 2), torch.arange(1, Dh, 2)])  # interleaved -> half order
    x = torch.randn(2, 3, 5, Dh)
    cos, sin = torch.randn(5, Dh // 2), torch.randn(5, Dh // 2)
    torch.testing.assert_close(
        apply_rotary(x, cos, sin, "interleaved")[..., perm], apply_rotary(x[..., perm], cos, sin)
    )


def test_offsets_and_per_row_positions_agree_with_explicit_positions():
    rotary = RotaryEmbedding(8, base=500.0, max_len=4)
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 1, 3, 8)  # 4 query heads, 1 KV head
    by_start = rotary(q, k, start=6)
    by_ids = rotary(q, k, positions=torch.arange(6, 9))
    torch.testing.assert_close(by_start, by_ids)
    per_row = torch.tensor([[6, 7, 8], [0, 1, 2]])  # row 1 counts from its own first token
    rq, rk = rotary(q, k, positions=per_row)
    torch.testing.assert_close(rq[0], by_ids[0][0])
    torch.testing.assert_close(rq[1], rotary(q, k)[0][1])
    torch.testing.assert_close(rk[1], rotary(q, k)[1][1])
    assert rotary.cos.shape[0] >= 9, "the table grew on demand"


def test_grown_table_equals_a_table_built_that_long():
    small, big = RotaryEmbedding(8, max_len=2), RotaryEmbedding(8, max_len=300)
    small.reserve(257)
    torch.testing.assert_close(small.cos[:300], big.cos[: small.cos.shape[0]][:300])
    torch.testing.assert_close(small.sin[:257], big.sin[:257])


def test_rotary_in_attention_cached_steps_equal_the_full_pass():
    rotary = RotaryEmbedding(8)
    mha = MultiHeadAttention(32, 4, num_kv_heads=2, position=rotary).eval()
    x = torch.randn(2, 7, 32)
    full, _ = mha(x, is_causal=True)
    from aiayn.attention import KVCache

    cache = KVCache()
    parts = [mha(x[:, :4], is_causal=True, cache=cache)[0]]
    parts += [mha(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 7)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    # the lean one-token step too
    cache = KVCache()
    mha(x[:, :4], is_causal=True, cache=cache)
    step = mha.self_step(cache)
    rows = [step(x[:, t], None) for t in range(4, 7)]
    torch.testing.assert_close(torch.stack(rows, 1), full[:, 4:], atol=1e-5, rtol=1e-5)


def test_bad_rotary_settings_are_refused():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="layout"):
        RotaryEmbedding(8, layout="spiral")
    with pytest.raises(ValueError, match="head_dim"):
        MultiHeadAttention(32, 4, position=RotaryEmbedding(16))
    assert make_attention_positions("learned", 4, 8, "half", 1e4, 16) is None


# ---- ALiBi -------------------------------------------------------------------------------------


def _paper_slopes(n: int) -> list[float]:
    """The ALiBi paper's reference rule, written out independently."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    p = 2 ** math.floor(math.log2(n))
    return power_of_2(p) + _paper_slopes(2 * p)[0::2][: n - p]


def test_alibi_slopes_are_the_papers():
    assert alibi_slopes(8).tolist() == [1 / 2**i for i in range(1, 9)]
    assert alibi_slopes(6).tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    for n in (1, 2, 3, 5, 12, 16, 20, 24):
        torch.testing.assert_close(alibi_slopes(n), torch.tensor(_paper_slopes(n)))


def test_alibi_bias_is_minus_slope_times_distance_bottom_right():
    bias = ALiBi(2)(T=2, S=4)  # queries at columns 2 and 3
    slopes = alibi_slopes(2)
    expect = -slopes[:, None, None] * torch.tensor([[2.0, 1, 0, 1], [3, 2, 1, 0]])
    torch.testing.assert_close(bias, expect)


@pytest.mark.parametrize("causal", [False, True])
def test_alibi_attention_equals_the_written_out_scores(causal):
    H, D, T = 4, 32, 6
    mha = MultiHeadAttention(D, H, position=ALiBi(H)).eval()
    x = torch.randn(2, T, D)
    key_mask = torch.ones(2, T, dtype=torch.bool)
    key_mask[1, :2] = False
    out, weights = mha(x, key_mask=key_mask, is_causal=causal, need_weights=True)
    fused, _ = mha(x, key_mask=key_mask, is_causal=causal)
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-5)

    q = mha.q_proj(x).view(2, T, H, -1).transpose(1, 2)
    k = mha.k_proj(x).view(2, T, H, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // H)
    i = torch.arange(T)
    scores = scores - alibi_slopes(H)[:, None, None] * (i[:, None] - i[None, :]).abs()
    allowed = key_mask[:, None, None, :]
    if causal:
        allowed = allowed & make_causal_mask(T, T)
    # (causal: row 1's first two queries see only padding; the project gives them zeros)
    expect = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    torch.testing.assert_close(weights, expect, atol=1e-6, rtol=1e-5)


def test_float_bias_through_the_kernel_keeps_empty_rows_zero():
    q, k, v = torch.randn(3, 1, 2, 4, 8).unbind(0)  # (B, H, T, Dh) each
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 1, :] = False  # query 1 may attend nothing
    bias = torch.randn(2, 4, 4)
    fused, _ = scaled_dot_product_attention(q, k, v, mask, bias=bias)
    ref, _ = scaled_dot_product_attention(q, k, v, mask, bias=bias, need_weights=True)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fused).all() and fused[:, :, 1].abs().max() == 0
