"""Attention kernel and MultiHeadAttention: parity with torch.nn, fused == reference, caching, masks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aiayn.attention import (
    KVCache,
    MultiHeadAttention,
    additive_attention,
    scaled_dot_product_attention,
)
from aiayn.masks import make_causal_mask, make_graph_mask, make_local_mask
from reference import copy_mha

B, T, S, D, H = 3, 7, 9, 32, 4


def _mask_kinds(t: int, s: int) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(1)
    key = torch.ones(B, s, dtype=torch.bool)
    key[0, -3:] = False
    key[2, -1:] = False
    empty_rows = torch.rand(B, 1, t, s, generator=g) > 0.5
    empty_rows[:, :, 0] = False  # a query with nothing to attend to
    edges = torch.randint(0, s, (6, 2), generator=g)
    return {
        "none": None,
        "padding": key[:, None, None, :],
        "causal": make_causal_mask(t, s),
        "local": make_local_mask(t, s, window=2),
        "local_causal": make_local_mask(t, s, window=2, causal=True),
        "graph": make_graph_mask(edges, s)[s - t :],  # the last t nodes query all s
        "padding_and_causal": key[:, None, None, :] & make_causal_mask(t, s),
        "random_with_empty_rows": empty_rows,
    }


def _qkv(t=T, s=S, requires_grad=False, dtype=torch.float32):
    q = torch.randn(B, H, t, D // H, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, H, s, D // H, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, H, s, D // H, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


@pytest.mark.parametrize("t,s", [(T, T), (T, S), (1, S)])
@pytest.mark.parametrize("kind", list(_mask_kinds(T, T)))
def test_fused_equals_reference_values_and_gradients(kind, t, s):
    mask = _mask_kinds(t, s)[kind]
    q, k, v = _qkv(t, s, requires_grad=True)
    fused, none = scaled_dot_product_attention(q, k, v, mask)
    assert none is None
    grads_fused = torch.autograd.grad(fused.pow(2).sum(), (q, k, v))
    ref, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    grads_ref = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_fused, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fused).all() and all(torch.isfinite(g).all() for g in grads_fused)
    # Rows sum to 1 where a query has something to attend to, 0 where it has nothing.
    row_ok = torch.ones_like(weights[..., 0], dtype=torch.bool)
    if mask is not None:
        row_ok = mask.expand_as(weights).any(-1)
    torch.testing.assert_close(weights.sum(-1), row_ok.float())


def test_formula_by_hand():
    q, k, v = _qkv(requires_grad=False)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
    out, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = _qkv(requires_grad=True)
    mask = torch.zeros(B, 1, T, S, dtype=torch.bool)
    mask[:, :, 1:, :2] = True
    for need_weights in (False, True):
        out, _ = scaled_dot_product_attention(q, k, v, mask, need_weights=need_weights)
        assert torch.isfinite(out).all()
        assert out[:, :, 0].abs().max() == 0
        (gq,) = torch.autograd.grad(out.sum(), (q,))
        assert torch.isfinite(gq).all()


def test_causal_flag_equals_explicit_bottom_right_mask():
    q, k, v = _qkv(3, 8)
    via_flag, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    explicit, _ = scaled_dot_product_attention(q, k, v, make_causal_mask(3, 8))
    torch.testing.assert_close(via_flag, explicit)


def _pair(dropout=0.0):
    ours = MultiHeadAttention(D, H, dropout=dropout)
    ref = nn.MultiheadAttention(D, H, dropout=dropout, batch_first=True)
    copy_mha(ours, ref)
    return ours.eval(), ref.eval()


@pytest.mark.parametrize("masking", ["none", "padding", "causal", "both"])
@pytest.mark.parametrize("cross", [False, True])
def test_mha_equals_torch_multihead_attention(masking, cross):
    ours, ref = _pair()
    x = torch.randn(B, T, D)
    mem = torch.randn(B, S, D) if cross else x
    s = mem.shape[1]
    key_mask = torch.ones(B, s, dtype=torch.bool)
    key_mask[0, -2:] = False
    use_pad = masking in ("padding", "both")
    use_causal = masking in ("causal", "both") and not cross
    kwargs = {}
    ref_kwargs = {}
    if use_pad:
        kwargs["key_mask"] = key_mask
        ref_kwargs["key_padding_mask"] = ~key_mask  # torch: True = blocked
    if use_causal:
        kwargs["is_causal"] = True
        ref_kwargs["attn_mask"] = ~make_causal_mask(T, T)
    got, w = ours(x, None if not cross else mem, **kwargs, need_weights=True)
    exp, w_ref = ref(x, mem, mem, **ref_kwargs, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-5)
    fused, none = ours(x, None if not cross else mem, **kwargs)
    assert none is None
    torch.testing.assert_close(fused, exp, atol=1e-5, rtol=1e-5)


def test_mha_gradients_equal_torch():
    ours, ref = _pair()
    x = torch.randn(B, T, D, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    ours(x, is_causal=True)[0].pow(2).sum().backward()
    ref(x_ref, x_ref, x_ref, attn_mask=~make_causal_mask(T, T), need_weights=False)[0].pow(
        2
    ).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    q_grad_ref = ref.in_proj_weight.grad[:D]
    torch.testing.assert_close(ours.q_proj.weight.grad, q_grad_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        ours.out_proj.weight.grad, ref.out_proj.weight.grad, atol=1e-5, rtol=1e-4
    )


def test_mha_rejects_bad_heads():
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError):
        MultiHeadAttention(8, 2, attention="cosine")


def test_kv_cache_incremental_equals_full_causal():
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(B, 11, D)
    full, _ = mha(x, is_causal=True)
    cache = KVCache()
    steps = [mha(x[:, :4], is_causal=True, cache=cache)[0]]  # a prompt, then one token at a time
    steps += [mha(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 11)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 11


def test_cross_attention_cache_computes_keys_once():
    mha = MultiHeadAttention(D, H).eval()
    mem = torch.randn(B, S, D)
    x = torch.randn(B, 1, D)
    cache = KVCache(static=True)
    first, _ = mha(x, mem, cache=cache)
    calls = []
    handle = mha.k_proj.register_forward_hook(lambda *a: calls.append(1))
    second, _ = mha(x, mem, cache=cache)
    handle.remove()
    torch.testing.assert_close(first, second)
    assert not calls, "cross-attention keys were projected again"
    assert cache.length == S


def test_kv_cache_reorder_follows_beams():
    cache = KVCache()
    k = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 3, 5)
    cache.append(k, k)
    cache.reorder(torch.tensor([2, 2, 0, 1]))
    keys, _ = cache.get()
    assert keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0, 1.0]


def test_additive_attention_formula_and_masks():
    mha = MultiHeadAttention(D, H, attention="additive").eval()
    q, k, v = _qkv()
    mask = make_causal_mask(T, S)
    out, w = additive_attention(q, k, v, mha.additive, mask)
    scores = torch.einsum(
        "bhtsd,hd->bhts", torch.tanh(q[..., :, None, :] + k[..., None, :, :]), mha.additive.weight
    )
    expected_w = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
    torch.testing.assert_close(w, expected_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, expected_w @ v, atol=1e-6, rtol=1e-5)
    y, weights = mha(torch.randn(B, T, D), is_causal=True, need_weights=True)
    assert y.shape == (B, T, D) and torch.isfinite(y).all()
    assert (weights.triu(1) == 0).all()


def test_lean_step_weights_follow_in_place_changes():
    """The concatenated/transposed weights a decoding step uses are kept between runs only while
    the weights stand still: an in-place change, a fused optimizer step (which moves no version
    counter), a replaced weight, and a write through ``.data`` followed by ``forget`` are all
    seen by the next run."""
    from aiayn.attention import linear_op, rows_linear_op
    from aiayn.kept_weights import forget

    torch.manual_seed(0)
    layers = (torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    x = torch.randn(3, 8)
    fused = torch.optim.AdamW(
        [p for layer in layers for p in layer.parameters()], lr=0.1, fused=True
    )

    def expected():
        return torch.cat([layer(x) for layer in layers], -1)

    def optimizer_step():
        with torch.enable_grad():
            sum(layer(x).square().sum() for layer in layers).backward()
        fused.step()
        fused.zero_grad()

    def add_one(weight):
        with torch.no_grad():
            weight.add_(1.0)

    changes = [
        lambda: add_one(layers[1].weight),  # moves the version counter
        optimizer_step,  # fused kernel: no version counter moves
        lambda: setattr(layers[0], "weight", torch.nn.Parameter(torch.randn(8, 8))),  # replaced
        lambda: (layers[1].bias.data.add_(1.0), forget(layers[1])),  # .data: told by forget()
    ]

    def check(make, inference):
        with torch.inference_mode(inference), torch.no_grad():
            f, a, b = make(*layers)
            torch.testing.assert_close(f(x, a, b), expected())

    for inference in (False, True):
        for make in (linear_op, rows_linear_op):
            for change in changes:
                check(make, inference)
                change()
                check(make, inference)
    # With gradients on, the graph reaches the layers' weights.
    f, a, b = rows_linear_op(*layers)
    f(x, a, b).sum().backward()
    assert layers[0].weight.grad is not None and layers[1].bias.grad is not None
