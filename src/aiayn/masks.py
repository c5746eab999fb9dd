"""Attention masks, all in one convention: boolean, ``True`` = this query may attend this key.

Every mask here broadcasts to ``(B, H, T, S)`` (batch, heads, query length, key length). Masks are built
only here and in the collate step; modules combine them with :func:`combine_masks`. Other libraries'
conventions (``nn.MultiheadAttention``'s ``key_padding_mask``, where True means *blocked*) are converted at
the boundary, never inside aiayn.
"""

from __future__ import annotations

import torch
from torch import Tensor


def make_padding_mask(tokens: Tensor, pad_id: int = 0) -> Tensor:
    """Key mask from token ids: True where a token is real (not padding).

    Args:
        tokens: ``(B, S)`` token ids.
        pad_id: the padding id.

    Returns:
        ``(B, S)`` boolean key mask. Expand with :func:`key_mask_to_attn_mask` for attention.
    """
    return tokens != pad_id


def key_mask_to_attn_mask(key_mask: Tensor) -> Tensor:
    """``(B, S)`` key mask -> ``(B, 1, 1, S)``, broadcastable over heads and queries."""
    return key_mask[:, None, None, :]


def make_causal_mask(
    query_len: int, key_len: int | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Causal mask aligned bottom-right: query ``i`` sees keys up to ``i + (S - T)``.

    With ``T == S`` this is the usual lower triangle. With ``T < S`` (cached decoding: T new queries after
    S - T cached keys) the last query sees every key, which is what incremental decoding needs.
    ``torch``'s ``is_causal=True`` aligns top-left instead (pytorch#108108), so it is only safe when
    ``T == S``.

    Returns:
        ``(T, S)`` boolean mask.
    """
    key_len = query_len if key_len is None else key_len
    if key_len < query_len:
        raise ValueError(f"causal mask needs key_len >= query_len, got {key_len} < {query_len}")
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(key_len - query_len)


def make_local_mask(
    query_len: int,
    key_len: int | None = None,
    window: int = 1,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Local-window ("truncated") attention: each query sees only keys within ``window`` positions.

    Positions are aligned bottom-right like :func:`make_causal_mask`, so query ``i`` sits at key position
    ``i + (S - T)``. Bidirectional: ``|j - pos(i)| <= window``. Causal: ``pos(i) - window <= j <= pos(i)``.

    Returns:
        ``(T, S)`` boolean mask.
    """
    key_len = query_len if key_len is None else key_len
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if key_len < query_len:
        raise ValueError(f"local mask needs key_len >= query_len, got {key_len} < {query_len}")
    q_pos = torch.arange(query_len, device=device)[:, None] + (key_len - query_len)  # (T, 1)
    k_pos = torch.arange(key_len, device=device)[None, :]  # (1, S)
    offset = q_pos - k_pos  # (T, S): how far back the key is
    if causal:
        return (offset >= 0) & (offset <= window)
    return offset.abs() <= window


def make_graph_mask(
    edges: Tensor, num_nodes: int, self_loops: bool = True, directed: bool = False
) -> Tensor:
    """Self-attention over a graph: node ``i`` attends node ``j`` only along an edge.

    Args:
        edges: ``(E, 2)`` integer pairs ``(i, j)``: ``i`` may attend ``j``.
        num_nodes: number of nodes N.
        self_loops: let every node attend itself (the usual choice; it also avoids empty rows).
        directed: when False, each edge is used both ways.

    Returns:
        ``(N, N)`` boolean adjacency mask.
    """
    edges = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
    if edges.numel() and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"edge endpoints must lie in [0, {num_nodes}), got {edges.tolist()}")
    mask = torch.zeros(num_nodes, num_nodes, dtype=torch.bool, device=edges.device)
    mask[edges[:, 0], edges[:, 1]] = True
    if not directed:
        mask[edges[:, 1], edges[:, 0]] = True
    if self_loops:
        mask.fill_diagonal_(True)
    return mask


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of any number of broadcastable boolean masks; ``None`` entries are ignored.

    Returns ``None`` when every input is ``None`` (no masking at all), so callers can keep fast paths.
    """
    result: Tensor | None = None
    for mask in masks:
        if mask is None:
            continue
        if mask.dtype != torch.bool:
            raise TypeError(f"masks must be boolean (True = may attend), got {mask.dtype}")
        result = mask if result is None else result & mask
    return result
