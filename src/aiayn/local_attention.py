"""Truncated (local-window) self-attention in O(T·w) time and memory.

Shapes: B batch, H heads, T sequence length, Dh head dim, w window, C block size, N = ceil(T / C)
blocks, K = keys per block (C + 2w bidirectional, C + w causal).

The notes' "truncated self-attention" lets position ``i`` see only keys ``j`` with ``|i - j| <= w``
(bidirectional) or ``i - w <= j <= i`` (causal); this is :func:`aiayn.masks.make_local_mask`.
Applying that mask to full attention still builds a T×T score matrix (and a T×T mask), so time and
memory grow as T². Here the queries are cut into blocks of C consecutive positions; a block's keys
all lie in one contiguous span of K = C + 2w (or C + w) positions, so each block attends only that
span. Scores cost ``T · K`` per head instead of ``T²``; with ``C = w`` that is ``3·T·w``, linear in
T for a fixed window. Inside each span a small (C, K) mask removes the keys beyond the window, so
the result equals masked full attention exactly, gradients included (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["local_attention", "default_block_size"]


def default_block_size(window: int, length: int) -> int:
    """Query block size C: the window itself (scores per query = 3w), at least 16, at most T.

    Blocks smaller than ~16 queries spend more time in per-block overhead than they save.
    """
    return max(1, min(length, max(window, 16)))


def _span_mask(block: int, window: int, causal: bool, device: torch.device) -> Tensor:
    """``(C, K)`` True where query ``c`` of a block may attend key ``k`` of the block's span.

    The span starts ``window`` positions before the block, so query ``c`` sits at span index
    ``c + window`` and the offset to key ``k`` is ``c + window - k``.
    """
    span = block + (window if causal else 2 * window)
    offset = (
        torch.arange(block, device=device)[:, None] + window - torch.arange(span, device=device)
    )
    if causal:
        return (offset >= 0) & (offset <= window)
    return offset.abs() <= window


def _spans(x: Tensor, before: int, after: int, block: int, span: int) -> Tensor:
    """``(..., T, E)`` -> ``(..., N, K, E)``: for each query block, the keys/values it can reach.

    Pads ``before`` positions in front and enough behind that the last block's span fits, then takes
    overlapping windows of ``span`` rows every ``block`` rows (a strided view; matmul copies it).
    """
    T = x.shape[-2]
    n_blocks = -(-T // block)
    pad_after = n_blocks * block - T + after
    x = F.pad(x, (0, 0, before, pad_after))  # (..., before + T + pad_after, E)
    return x.unfold(-2, span, block).transpose(-1, -2)  # (..., N, K, E)


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    causal: bool = False,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    block_size: int | None = None,
) -> Tensor:
    """Local-window self-attention, blocked so that nothing of size T×T is ever built.

    Equal to ``scaled_dot_product_attention(q, k, v, make_local_mask(T, window=window,
    causal=causal) & key_mask)``; rows with no key to attend (a padding query whose whole window is
    padding) give zeros, as in :mod:`aiayn.attention`.

    Args:
        q: ``(B, H, T, Dh)`` queries.
        k: ``(B, H, T, Dh)`` keys (self-attention: same length as the queries).
        v: ``(B, H, T, Dv)`` values.
        window: w >= 0; query ``i`` sees keys ``j`` with ``|i - j| <= w`` (causal: ``i - w <= j <= i``).
        causal: one-sided window.
        key_mask: ``(B, T)`` True where the key is a real token.
        dropout_p: dropout on the attention weights (pass 0.0 in eval mode).
        scale: score scale; default ``1 / sqrt(Dh)``.
        block_size: queries per block C (default :func:`default_block_size`).

    Returns:
        ``(B, H, T, Dv)``.
    """
    B, H, T, Dh = q.shape
    Dv = v.shape[-1]
    if k.shape[-2] != T or v.shape[-2] != T:
        raise ValueError(f"local_attention is self-attention: got T={T}, S={k.shape[-2]}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    window = min(window, max(T - 1, 0))  # a wider window sees no more keys, only more padding
    C = block_size or default_block_size(window, T)
    N = -(-T // C)
    after = 0 if causal else window
    K = C + window + after

    # Blocks go in front of heads, (B·N, H, ...), so one (C, K) mask per block broadcasts over
    # the heads and SDPA's fused kernel never materialises the (C, K) scores of any head.
    q_blocks = (
        F.pad(q, (0, 0, 0, N * C - T)).view(B, H, N, C, Dh).transpose(1, 2)
    )  # (B, N, H, C, Dh)
    k_spans = _spans(k, window, after, C, K).transpose(1, 2)  # (B, N, H, K, Dh)
    v_spans = _spans(v, window, after, C, K).transpose(1, 2)  # (B, N, H, K, Dv)

    # Which span slots hold a real key: inside [0, T) and, with a key mask, not padding.
    real = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
    real = _spans(real[:, :, None], window, after, C, K)[..., 0]  # (B, N, K); pads -> False
    mask = _span_mask(C, window, causal, q.device) & real[:, :, None, :]  # (B, N, C, K)
    row_ok = mask.any(-1, keepdim=True)  # (B, N, C, 1): rows with a key to attend
    mask = mask | ~row_ok  # empty rows attend everywhere (no NaN), zeroed below

    out = F.scaled_dot_product_attention(
        q_blocks.reshape(B * N, H, C, Dh),
        k_spans.reshape(B * N, H, K, Dh),
        v_spans.reshape(B * N, H, K, Dv),
        attn_mask=mask.view(B * N, 1, C, K),
        dropout_p=dropout_p,
        scale=scale,
    )  # (B·N, H, C, Dv)
    out = out.view(B, N, H, C, Dv) * row_ok[:, :, None]  # (B, N, H, C, Dv)
    return out.transpose(1, 2).reshape(B, H, N * C, Dv)[:, :, :T]  # (B, H, T, Dv)
