"""Positional encodings: attention alone is blind to order, so position is given to it.

Added to each embedding (the 2017 kinds):

* :class:`SinusoidalPositionalEncoding` — the paper's fixed encoding (section 3.5):
  ``PE(pos, 2i) = sin(pos / 10000^(2i/D))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/D))``.
  For any offset k, ``PE(pos + k)`` is a fixed linear map (a rotation per frequency) of ``PE(pos)``, which
  is why the paper hoped it would let the model attend by relative position and extrapolate.
* :class:`LearnedPositionalEmbedding` — one trained vector per position (GPT, BERT, ViT).

Both take ``(B, T, D)`` embeddings and a start position (non-zero during cached decoding) and return the
sum; neither applies dropout (the model does, once, after the sum).

Inside self-attention (nothing is added to the embeddings):

* :class:`RotaryEmbedding` — RoPE (Su et al., 2021): queries and keys rotated by position, so scores
  depend on relative position only.
* :class:`ALiBi` — linear biases (Press et al., 2022): ``-slope_h · |i - j|`` added to the scores.

Shapes: B batch, H heads, T query length, S key length, D d_model, Dh head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: "sinusoidal_halves" is the same encoding with all sines first, then all cosines (Marian/XLM's
#: layout), so imported Marian models keep their positions.
#: Added to the embeddings.
ADDITIVE_KINDS = ("sinusoidal", "sinusoidal_halves", "learned")
#: Applied inside self-attention (see :func:`make_attention_positions`).
ATTENTION_POSITION_KINDS = ("rotary", "alibi")
POSITIONAL_KINDS = ADDITIVE_KINDS + ATTENTION_POSITION_KINDS
#: Which channels rotate together (see :func:`apply_rotary`).
ROTARY_LAYOUTS = ("half", "interleaved")


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

    def forward(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        """``x (B, T, D)`` -> ``x + PE[start : start + T]``, or ``x + PE[positions]`` when given
        (``(T,)`` or ``(B, T)`` ids: GPT's left-padded rows count from their first real token)."""
        end = start + x.shape[1] if positions is None else int(positions.max()) + 1
        if end > self.table.shape[0]:
            # Sinusoids are defined for every position: extend instead of failing on long inputs.
            length = max(end, 2 * self.table.shape[0])
            self.table = sinusoidal_table(length, self.d_model, halves=self.halves).to(
                self.table.device
            )
        table = self.table[start:end] if positions is None else self.table[positions]
        return x + table.to(x.dtype)


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


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module | None:
    """The module adding positions to the embeddings for ``positional=kind``; None for the kinds
    applied inside attention (``rotary``, ``alibi``)."""
    if kind in ATTENTION_POSITION_KINDS:
        return None
    if kind in ("sinusoidal", "sinusoidal_halves"):
        return SinusoidalPositionalEncoding(d_model, max_len, halves=kind == "sinusoidal_halves")
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, d_model)
    raise ValueError(f"positional must be one of {POSITIONAL_KINDS}, got {kind!r}")


def attention_positions_for(config) -> RotaryEmbedding | ALiBi | None:
    """:func:`make_attention_positions` from a model config's fields (``positional``,
    ``num_heads``, ``d_model``, ``rotary_layout``, ``rotary_base``, ``max_len``): one call for
    every model that has them."""
    return make_attention_positions(
        config.positional,
        config.num_heads,
        config.d_model // config.num_heads,
        config.rotary_layout,
        config.rotary_base,
        config.max_len,
    )


# ---- positions inside attention: rotary and ALiBi ---------------------------------------------------
# These add nothing to the embeddings. They act on each self-attention's scores, so what a query sees
# of a key depends on their distance only, which is why they can extrapolate past the trained length.
# A model builds one such module and hands it to every self-attention (cross-attention gets none:
# a source position and a target position have no meaningful distance).


def rotary_inv_freq(head_dim: int, base: float = 10000.0) -> Tensor:
    """RoPE's frequencies ``base^(-2i / Dh)`` for ``i < Dh/2`` (Su et al., 2021, eq. 15), float64."""
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, layout: str = "half") -> Tensor:
    """Rotate each pair of ``x``'s channels by its angle: ``(a, b) -> (a cos - b sin, b cos + a sin)``.

    Args:
        x: ``(..., T, Dh)`` queries or keys.
        cos, sin: ``(..., T, Dh/2)``, broadcastable against ``x`` without its last dimension.
        layout: which channels form pair ``i``: ``"half"`` pairs ``i`` with ``i + Dh/2`` (GPT-NeoX,
            Llama); ``"interleaved"`` pairs ``2i`` with ``2i + 1`` (the RoFormer paper, GPT-J).

    Returns:
        Rotated ``x``, same shape and dtype.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if layout == "half":
        a, b = x.chunk(2, dim=-1)  # 2 x (..., T, Dh/2)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]  # 2 x (..., T, Dh/2)
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings (RoPE; Su et al., 2021), applied to queries and keys.

    The query at position m and the key at position n are rotated by angles ``m·θ_i`` and ``n·θ_i``
    (``θ_i = base^(-2i/Dh)``), so their dot product depends on ``m - n`` only. Keys are rotated once,
    before they enter the KV cache, at their own position; so a cached decoding step rotates only its
    new query and key.

    The cos/sin tables are computed in float64, kept in float32 (not in any state dict), and grown
    by doubling when a position beyond them is asked for.

    Args:
        head_dim: Dh (even).
        base: the frequency base (10000 in the paper; Llama 3 uses 500000).
        layout: ``"half"`` or ``"interleaved"`` (see :func:`apply_rotary`). A checkpoint's q/k weights
            are trained for one layout; the two are equal up to a permutation of Dh's channels.
        max_len: initial table length.
    """

    def __init__(
        self, head_dim: int, base: float = 10000.0, layout: str = "half", max_len: int = 1024
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        if layout not in ROTARY_LAYOUTS:
            raise ValueError(f"rotary layout must be one of {ROTARY_LAYOUTS}, got {layout!r}")
        if base <= 1:
            raise ValueError(f"rotary base must be > 1, got {base}")
        self.head_dim, self.base, self.layout = head_dim, base, layout
        cos, sin = self._tables(max_len)
        self.register_buffer("cos", cos, persistent=False)  # (L, Dh/2)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, length: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        angles = torch.arange(length, dtype=torch.float64)[:, None] * rotary_inv_freq(
            self.head_dim, self.base
        )  # (L, Dh/2)
        return angles.cos().float().to(device), angles.sin().float().to(device)

    def reserve(self, length: int) -> None:
        """Make the tables cover positions ``0 .. length - 1``."""
        if length > self.cos.shape[0]:
            self.cos, self.sin = self._tables(max(length, 2 * self.cos.shape[0]), self.cos.device)

    def forward(
        self, q: Tensor, k: Tensor, positions: Tensor | None = None, start: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``q (B, H, T, Dh)`` and ``k (B, Hkv, T, Dh)`` (the same T new tokens).

        Args:
            q, k: queries and keys of the new tokens.
            positions: ``(T,)`` or ``(B, T)`` position ids (per row for left-padded batches). Default
                ``start .. start + T - 1``.
            start: tokens before these (the KV cache's length); also bounds mask-derived positions,
                which never exceed their column, so the table is grown to ``start + T`` here. Larger
                explicit positions need :meth:`reserve` first.
        """
        T = q.shape[-2]
        self.reserve(start + T)
        if positions is None:
            cos, sin = self.cos[start : start + T], self.sin[start : start + T]  # (T, Dh/2)
        else:
            cos, sin = self.cos[positions], self.sin[positions]  # (T, Dh/2) or (B, T, Dh/2)
            if positions.dim() == 2:
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, Dh/2): every head
        return apply_rotary(q, cos, sin, self.layout), apply_rotary(k, cos, sin, self.layout)


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's per-head slopes (Press et al., 2022, section 3), float32 ``(H,)``.

    For H a power of two: the geometric sequence starting at and multiplied by ``2^(-8/H)`` (8 heads:
    1/2, 1/4, ..., 1/256). Otherwise the paper's rule: the slopes of the closest smaller power of two
    ``P``, then every other slope of ``2P`` heads, as many as are missing.
    """
    if num_heads <= 0:
        raise ValueError(f"num_heads must be > 0, got {num_heads}")

    def geometric(n: int) -> list[float]:
        ratio = 2.0 ** (-8.0 / n)
        return [ratio ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(num_heads))
    slopes = geometric(p) + geometric(2 * p)[0::2][: num_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(nn.Module):
    """Attention with Linear Biases (Press et al., 2022): ``score(i, j) -= slope_h · |i - j|``.

    The bias goes into the one attention kernel as an additive float mask. It is symmetric, so it
    serves bidirectional encoders as well as causal decoders, where keys after the query are masked
    anyway (the paper's causal form ``-slope·(i - j)`` is the same on every visible key).

    Queries are the last T of the S key columns (bottom-right, as in cached decoding); distances are
    column distances, equal to position distances for contiguous positions, left-padded rows
    included (padding only shifts a row's columns, and its keys are masked).

    Args:
        num_heads: H (the query heads; grouped-query attention shares keys, not slopes).
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)  # (H,)

    def forward(self, T: int, S: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``(H, T, S)`` bias for T queries at columns ``S - T .. S - 1`` over S keys."""
        device = self.slopes.device
        query = torch.arange(S - T, S, device=device, dtype=torch.float32)  # (T,)
        key = torch.arange(S, device=device, dtype=torch.float32)  # (S,)
        distance = (query[:, None] - key[None, :]).abs()  # (T, S)
        return (-self.slopes.float()[:, None, None] * distance).to(dtype)  # (H, T, S)


def make_attention_positions(
    kind: str, num_heads: int, head_dim: int, rotary_layout: str, rotary_base: float, max_len: int
) -> RotaryEmbedding | ALiBi | None:
    """The module self-attention applies for ``positional=kind``; None for the additive kinds."""
    if kind == "rotary":
        # The tables grow on demand: a 128k-position model need not start with 128k rows.
        return RotaryEmbedding(head_dim, rotary_base, rotary_layout, min(max_len, 4096))
    if kind == "alibi":
        return ALiBi(num_heads)
    if kind in ADDITIVE_KINDS:
        return None
    raise ValueError(f"positional must be one of {POSITIONAL_KINDS}, got {kind!r}")
