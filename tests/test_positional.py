"""Positional encodings: the paper's formula, and the relative-position property it was chosen for."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)


def test_sinusoidal_values_match_the_paper_formula():
    d = 16
    table = sinusoidal_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("k", [1, 5, 17])
def test_shift_by_k_is_a_fixed_linear_map(k):
    d = 24
    table = sinusoidal_table(100, d, dtype=torch.float64)
    # The map is a rotation of each (sin, cos) pair by k·w_i, independent of pos.
    freqs = 1 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.zeros(d, d, dtype=torch.float64)
    for i, w in enumerate(freqs):
        c, s = math.cos(k * w), math.sin(k * w)
        rot[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor(
            [[c, -s], [s, c]], dtype=torch.float64
        )
    torch.testing.assert_close(table[: 100 - k] @ rot, table[k:], atol=1e-9, rtol=0)


def test_sinusoidal_module_adds_offset_positions_and_grows():
    pe = SinusoidalPositionalEncoding(8, max_len=4)
    x = torch.zeros(2, 3, 8)
    torch.testing.assert_close(pe(x, start=5), sinusoidal_table(8, 8)[5:8].expand(2, 3, 8))
    assert list(pe.parameters()) == []


def test_learned_positions_have_a_limit():
    pe = LearnedPositionalEmbedding(6, 4)
    x = torch.zeros(1, 4, 4)
    torch.testing.assert_close(pe(x, start=2), pe.weight[2:6][None])
    with pytest.raises(ValueError, match="max_len"):
        pe(x, start=3)
