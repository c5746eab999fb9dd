"""Positional encodings: attention alone is blind to order, so position is added to each embedding.

* :class:`SinusoidalPositionalEncoding` — the paper's fixed encoding (section 3.5):
  ``PE(pos, 2i) = sin(pos / 10000^(2i/D))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/D))``.
  For any offset k, ``PE(pos + k)`` is a fixed linear map (a rotation per frequency) of ``PE(pos)``, which
  is why the paper hoped it would let the model attend by relative position and extrapolate.
* :class:`LearnedPositionalEmbedding` — one trained vector per position (GPT, BERT, ViT).

Both take ``(B, T, D)`` embeddings and a start position (non-zero during cached decoding) and return the
sum; neither applies dropout (the model does, once, after the sum).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: "sinusoidal_halves" is the same encoding with all sines first, then all cosines (Marian/XLM's
#: layout), so imported Marian models keep their positions.
POSITIONAL_KINDS = ("sinusoidal", "sinusoidal_halves", "learned")


def sinusoidal_table(
    max_len: int, d_model: int, dtype: torch.dtype = torch.float32, halves: bool = False
) -> Tensor:
    """The ``(max_len, d_model)`` sinusoid table of the paper (even columns sin, odd columns cos).

    With ``halves=True`` the same values are laid out as ``[sin..., cos...]`` (Marian's layout).
    """
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    # 1 / 10000^(2i / D), computed in float64 so long tables stay exact to float32 precision.
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: d_model // 2])
    if halves:
        table = torch.cat([table[:, 0::2], table[:, 1::2]], dim=1)
    return table.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the paper's fixed sinusoidal encoding. No parameters; the table grows on demand.

    Args:
        d_model: D.
        max_len: initial table length (positions beyond it are computed when first needed).
    """

    def __init__(self, d_model: int, max_len: int = 1024, halves: bool = False) -> None:
        super().__init__()
        self.d_model = d_model
        self.halves = halves
        self.register_buffer(
            "table", sinusoidal_table(max_len, d_model, halves=halves), persistent=False
        )

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """``x (B, T, D)`` -> ``x + PE[start : start + T]``."""
        end = start + x.shape[1]
        if end > self.table.shape[0]:
            # Sinusoids are defined for every position: extend instead of failing on long inputs.
            length = max(end, 2 * self.table.shape[0])
            self.table = sinusoidal_table(length, self.d_model, halves=self.halves).to(
                self.table.device
            )
        return x + self.table[start:end].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained embedding per position. Positions beyond ``max_len`` are an error.

    Args:
        max_len: number of positions.
        d_model: D.
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """``x (B, T, D)`` -> ``x + P[start : start + T]``."""
        end = start + x.shape[1]
        if end > self.max_len:
            raise ValueError(
                f"sequence reaches position {end}, but learned positions stop at max_len={self.max_len}"
            )
        return x + self.weight[start:end]


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module:
    """Build the positional module named ``kind`` (``"sinusoidal"`` or ``"learned"``)."""
    if kind in ("sinusoidal", "sinusoidal_halves"):
        return SinusoidalPositionalEncoding(d_model, max_len, halves=kind == "sinusoidal_halves")
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, d_model)
    raise ValueError(f"positional must be one of {POSITIONAL_KINDS}, got {kind!r}")
