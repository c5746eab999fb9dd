"""Truncated (local-window) attention: the blocked O(T·w) kernel equals masked full attention."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from aiayn.attention import MultiHeadAttention, scaled_dot_product_attention
from aiayn.local_attention import local_attention
from aiayn.masks import make_local_mask
from aiayn.models.seq2seq import PRESETS, Transformer

# Tiny tensors: a second thread only adds synchronisation (and stalls on a busy shared CPU).
pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(q, k, v, window, causal, key_mask=None):
    T = q.shape[-2]
    mask = make_local_mask(T, window=window, causal=causal)  # (T, T)
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]  # (B, 1, T, T)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("T", "window"), [(1, 0), (5, 0), (7, 2), (16, 16), (33, 4), (64, 16), (100, 40), (20, 200)]
)
def test_local_equals_masked_full_values_and_gradients(T, window, causal):
    g = torch.Generator().manual_seed(T * 1000 + window)
    q, k, v = (torch.randn(2, 3, T, 8, generator=g, dtype=torch.float64) for _ in range(3))
    key_mask = torch.rand(2, T, generator=g) > 0.25
    key_mask[0] = True
    for km in (None, key_mask):
        qs, ks, vs = (x.clone().requires_grad_() for x in (q, k, v))
        qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
        out = local_attention(qs, ks, vs, window, causal, km)
        ref = _reference(qr, kr, vr, window, causal, km)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        out.backward(grad)
        ref.backward(grad)
        for a, b in ((qs, qr), (ks, kr), (vs, vr)):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block_size", [1, 3, 8, 50])
def test_block_size_does_not_change_the_result(block_size):
    q, k, v = (torch.randn(1, 2, 23, 4) for _ in range(3))
    ref = _reference(q, k, v, 5, True)
    out = local_attention(q, k, v, 5, causal=True, block_size=block_size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_fully_padded_rows_give_zeros_not_nan():
    q, k, v = (torch.randn(1, 1, 10, 4) for _ in range(3))
    key_mask = torch.ones(1, 10, dtype=torch.bool)
    key_mask[0, 6:] = False  # queries 8 and 9 see only padding within window 1
    out = local_attention(q, k, v, 1, key_mask=key_mask)
    assert torch.isfinite(out).all()
    assert (out[0, 0, 8:] == 0).all()


def test_rejects_cross_attention_shapes():
    with pytest.raises(ValueError):
        local_attention(
            torch.randn(1, 1, 4, 2), torch.randn(1, 1, 5, 2), torch.randn(1, 1, 5, 2), 1
        )


def test_memory_grows_linearly_not_quadratically():
    """The kernel's largest intermediate holds T·(C + 2w) scores, never T²."""
    T, w = 4096, 16
    q, k, v = (torch.randn(1, 1, T, 8) for _ in range(3))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        local_attention(q, k, v, w)
    biggest = max(e.cpu_memory_usage for e in prof.key_averages())
    assert biggest < T * T * 4 / 20  # well under one full (T, T) float32 score matrix


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_window_routes_to_kernel_and_matches_mask(causal):
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(2, 19, 32)
    key_mask = torch.ones(2, 19, dtype=torch.bool)
    key_mask[1, -4:] = False
    out, _ = mha(x, key_mask=key_mask, is_causal=causal, window=3)
    mask = make_local_mask(19, window=3, causal=causal)
    ref, _ = mha(x, key_mask=key_mask, attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    _, weights = mha(x, key_mask=key_mask, is_causal=causal, window=3, need_weights=True)
    assert (weights[..., ~mask] == 0).all()  # the weights path applies the same window


def test_windowed_transformer_cached_decoding_matches_full_pass():
    """Decoding with a KV cache falls back to the mask path; both must agree."""
    config = replace(PRESETS["micro"], src_vocab_size=20, tgt_vocab_size=20, attention_window=2)
    model = Transformer(config).eval()
    src = torch.randint(4, 20, (2, 9))
    tgt = torch.randint(4, 20, (2, 7))
    full = model(src, tgt)  # (B, T, V) through the local kernel
    memory = model.encode(src)
    mask = src != 0
    cache = model.new_cache()
    steps = [model.decode(tgt[:, i : i + 1], memory, mask, cache) for i in range(tgt.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
