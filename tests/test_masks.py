"""Mask builders: one convention (True = may attend), checked against their definitions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from aiayn.masks import (
    combine_masks,
    key_mask_to_attn_mask,
    make_causal_mask,
    make_graph_mask,
    make_local_mask,
    make_padding_mask,
)

lengths = st.integers(min_value=1, max_value=24)


@given(t=lengths, extra=st.integers(0, 10))
def test_causal_mask_is_bottom_right_aligned(t, extra):
    s = t + extra
    mask = make_causal_mask(t, s)
    assert mask.shape == (t, s) and mask.dtype == torch.bool
    for i in range(t):
        for j in range(s):
            assert bool(mask[i, j]) == (j <= i + extra)
    assert mask[-1].all(), "the newest query sees every key (cached decoding)"


def test_causal_mask_square_is_lower_triangle():
    assert torch.equal(make_causal_mask(5), torch.ones(5, 5, dtype=torch.bool).tril())
    with pytest.raises(ValueError):
        make_causal_mask(5, 3)


@given(t=lengths, extra=st.integers(0, 6), window=st.integers(0, 8), causal=st.booleans())
def test_local_mask_matches_definition(t, extra, window, causal):
    s = t + extra
    mask = make_local_mask(t, s, window=window, causal=causal)
    for i in range(t):
        pos = i + extra
        for j in range(s):
            expected = (0 <= pos - j <= window) if causal else abs(pos - j) <= window
            assert bool(mask[i, j]) == expected
    assert mask.any(-1).all(), "every query sees at least itself"
    if causal:
        assert not (mask & ~make_causal_mask(t, s)).any(), "causal local mask stays causal"


@given(
    data=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=9), min_size=1, max_size=5),
    pad=st.integers(0, 5),
)
def test_padding_mask_marks_real_tokens(data, pad):
    width = max(map(len, data))
    tokens = torch.tensor([row + [pad] * (width - len(row)) for row in data])
    mask = make_padding_mask(tokens, pad)
    assert torch.equal(mask, tokens != pad)
    assert key_mask_to_attn_mask(mask).shape == (len(data), 1, 1, width)


@given(
    n=st.integers(1, 10),
    edges=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=20),
    directed=st.booleans(),
)
def test_graph_mask_follows_edges(n, edges, directed):
    edges = [(i, j) for i, j in edges if i < n and j < n]
    mask = make_graph_mask(
        torch.tensor(edges, dtype=torch.long).reshape(-1, 2), n, directed=directed
    )
    expected = torch.eye(n, dtype=torch.bool)
    for i, j in edges:
        expected[i, j] = True
        if not directed:
            expected[j, i] = True
    assert torch.equal(mask, expected)


def test_graph_mask_rejects_bad_nodes():
    with pytest.raises(ValueError):
        make_graph_mask(torch.tensor([[0, 3]]), 3)


@given(st.lists(st.one_of(st.none(), st.integers(0, 2**16 - 1)), max_size=4))
def test_combine_masks_is_logical_and(seeds):
    masks = []
    for seed in seeds:
        if seed is None:
            masks.append(None)
        else:
            g = torch.Generator().manual_seed(seed)
            masks.append(torch.rand(2, 1, 3, 4, generator=g) > 0.5)
    combined = combine_masks(*masks)
    real = [m for m in masks if m is not None]
    if not real:
        assert combined is None
        return
    expected = real[0]
    for m in real[1:]:
        expected = expected & m
    assert torch.equal(combined, expected)


def test_combine_masks_broadcasts_and_rejects_float():
    key = torch.tensor([[True, True, False]])[:, None, None, :]  # (1, 1, 1, 3)
    causal = make_causal_mask(3)  # (3, 3)
    assert combine_masks(key, causal).shape == (1, 1, 3, 3)
    with pytest.raises(TypeError):
        combine_masks(torch.zeros(3, 3))
