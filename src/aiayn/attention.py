"""Attention: the one kernel everything goes through, and multi-head attention built on it.

Shapes: B batch, H heads, T query length, S key length, D d_model, Dh head dim (D / H).

Masks follow :mod:`aiayn.masks`: boolean, True = may attend, broadcastable to ``(B, H, T, S)``. A query
with no key to attend to gets a zero output, never NaN.

The paper's scaled dot-product attention (section 3.2.1) is

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

computed by :func:`scaled_dot_product_attention`, which has two paths:

* fused: ``torch.nn.functional.scaled_dot_product_attention`` (flash/memory-efficient kernels), the
  default, which never materialises the weights;
* reference: the formula written out, which can return the ``(B, H, T, S)`` weights for inspection.

Tests keep the two equal, values and gradients. Additive (Bahdanau) scoring is the alternative the notes
mention next to the dot product; it always takes the reference path.

Beside the boolean mask, both paths take an additive float ``bias`` on the scores (ALiBi's); the fused
path hands SDPA one float mask holding both, which SDPA accepts.

Grouped-query attention (Ainslie et al., 2023): ``num_kv_heads`` < H key/value heads, each shared by
``H / num_kv_heads`` query heads (1 = multi-query, Shazeer 2019). The KV cache stores only those heads;
they are repeated to H heads just before the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kept_weights import kept
from .local_attention import local_attention
from .masks import combine_masks, key_mask_to_attn_mask, make_causal_mask, make_local_mask
from .positional import ALiBi, RotaryEmbedding

ATTENTION_KINDS = ("dot", "additive")

#: A projection as ``(function, a, b)``, computed ``function(x, a, b)``: ``F.linear`` with a float
#: weight and bias, or a quantised kernel with its packed weights (see :func:`linear_op`).
LinearOp = tuple[Callable[[Tensor, Any, Any], Tensor], Any, Any]


def linear_op(*layers: nn.Module) -> LinearOp:
    """The projection by ``layers``, their outputs concatenated on the last dimension, as a
    :data:`LinearOp`. Float ``nn.Linear`` layers give ``F.linear`` over their concatenated weights
    (one matrix multiply instead of several). A stand-in for ``nn.Linear`` holding packed weights
    (:class:`aiayn.quantize.Int8Linear`) gives its own kernel through its ``fused_op(layers)``.

    A triple rather than a closure: the lean decoding steps call ``function(x, a, b)`` directly, so
    the float path pays no wrapper call per token and the int8 path reaches its kernel the same way.
    """
    if all(isinstance(layer, nn.Linear) for layer in layers):
        if len(layers) > 1 and not torch.is_grad_enabled():  # no autograd: keep the concatenation
            return (F.linear, *kept("concatenated", layers, lambda: _concatenated(layers)))
        return (F.linear, *_concatenated(layers))
    return _fused_op(layers)


#: Weight matrices up to this many entries are multiplied from a transposed copy by
#: :func:`rows_linear_op`: there a one-token product is short enough that the layout and the
#: dispatch of ``F.linear`` (``linear`` -> ``t`` -> ``addmm``) are a large part of its time
#: (measured at one row, one thread: 128x128 8.9 -> 7.0 µs, 512x128 16.4 -> 10.3 µs, 850x128
#: 22.3 -> 16.2 µs). Larger ones (a 512-wide model's) keep ``F.linear``: not measured to gain, and a
#: copy would cost memory.
SMALL_MATRIX = 1 << 17


def rows_linear_op(*layers: nn.Module) -> LinearOp:
    """:func:`linear_op` for ``(B, D)`` rows, as the lean decoding steps call it (asked for once
    per decoding run). Small float matrices (:data:`SMALL_MATRIX`) are copied transposed and
    contiguous, ``(in, out)``, and multiplied by ``torch.addmm`` directly; larger ones go to
    ``F.linear``. Without autograd, kept between runs while the weights stand still
    (:mod:`aiayn.kept_weights`)."""
    if not all(isinstance(layer, nn.Linear) for layer in layers):
        return _fused_op(layers)
    if torch.is_grad_enabled():  # a copy with autograd history must not outlive its graph
        return _rows_op(layers)
    return kept("rows", layers, lambda: _rows_op(layers))


def _rows_op(layers: tuple[nn.Module, ...]) -> LinearOp:
    weight, bias = _concatenated(layers)
    if weight.numel() > SMALL_MATRIX:
        return F.linear, weight, bias
    return (_addmm if bias is not None else _mm), weight.t().contiguous(), bias


def _fused_op(layers: tuple[nn.Module, ...]) -> LinearOp:
    fused_op = getattr(layers[0], "fused_op", None)
    if fused_op is None:
        raise TypeError(f"no linear op for {type(layers[0]).__name__} (nn.Linear or a stand-in)")
    return fused_op(layers)


def _addmm(x: Tensor, transposed: Tensor, bias: Tensor) -> Tensor:
    return torch.addmm(bias, x, transposed)


def _mm(x: Tensor, transposed: Tensor, bias: None) -> Tensor:
    return torch.mm(x, transposed)


def _concatenated(layers: tuple[nn.Module, ...]) -> tuple[Tensor, Tensor | None]:
    if len(layers) == 1:
        return layers[0].weight, layers[0].bias
    weight = torch.cat([layer.weight for layer in layers])
    bias = None
    if layers[0].bias is not None:
        bias = torch.cat([layer.bias for layer in layers])
    return weight, bias


def _guard_empty_rows(mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """Let fully-masked rows attend everywhere (so no kernel sees -inf everywhere and makes NaN).

    Returns the patched mask and a ``(..., T, 1)`` boolean "row has a key" tensor to zero those rows'
    outputs afterwards, or ``(mask, None)`` when no row is empty.
    """
    if mask is None:
        return None, None
    row_ok = mask.any(dim=-1, keepdim=True)  # (..., T, 1)
    if bool(row_ok.all()):
        return mask, None
    return mask | ~row_ok, row_ok


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: float | None = None,
    bias: Tensor | None = None,
    rows_have_keys: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """softmax(Q K^T / sqrt(Dh) + bias) V with boolean masking.

    Args:
        q: ``(B, H, T, Dh)`` queries.
        k: ``(B, H, S, Dh)`` keys.
        v: ``(B, H, S, Dv)`` values.
        attn_mask: boolean, broadcastable to ``(B, H, T, S)``, True = may attend.
        is_causal: add a bottom-right aligned causal mask (see :func:`aiayn.masks.make_causal_mask`).
        dropout_p: dropout on the attention weights (pass 0.0 in eval mode).
        need_weights: also return the ``(B, H, T, S)`` weights; this takes the reference path.
        scale: score scale; default ``1 / sqrt(Dh)``.
        bias: float, broadcastable to ``(B, H, T, S)``, added to the scaled scores (ALiBi).
        rows_have_keys: the caller knows every query may attend to at least one key (a decoding
            step's new token sees itself), so the empty-row guard, a host sync, is skipped.

    Returns:
        ``(output (B, H, T, Dv), weights (B, H, T, S) or None)``.
    """
    T, S = q.shape[-2], k.shape[-2]
    if is_causal and T == 1:
        # One query, aligned bottom-right, sees every key (a cached decoding step): no mask needed.
        is_causal = False
    if is_causal and (attn_mask is not None or T != S or need_weights or bias is not None):
        # SDPA's own is_causal aligns top-left when T != S, and can't be combined with a float
        # mask; build the bottom-right mask explicitly.
        attn_mask = combine_masks(attn_mask, make_causal_mask(T, S, device=q.device))
        is_causal = False
    if need_weights:
        return _reference_attention(q, k, v, attn_mask, dropout_p, scale, bias)
    mask, row_ok = (attn_mask, None) if rows_have_keys else _guard_empty_rows(attn_mask)
    if bias is not None:
        mask = float_mask(bias, mask, q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    if row_ok is not None:
        out = out * row_ok
    return out, None


def float_mask(bias: Tensor, mask: Tensor | None, dtype: torch.dtype) -> Tensor:
    """One additive float mask for SDPA: ``bias`` where ``mask`` allows, ``finfo.min`` elsewhere.

    ``finfo.min`` rather than -inf: the caller has already given every row a key (see
    :func:`_guard_empty_rows`), and a finite value can't turn into NaN.
    """
    bias = bias.to(dtype)
    if mask is None:
        return bias
    return torch.where(mask, bias, torch.finfo(dtype).min)  # (B, H, T, S)


def _reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    dropout_p: float,
    scale: float | None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The formula written out; returns the weights (after masking, before dropout)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    return _softmax_and_mix(scores, v, attn_mask, dropout_p)


def _softmax_and_mix(
    scores: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float
) -> tuple[Tensor, Tensor]:
    """Masked softmax over keys, then the weighted sum of values. Empty rows give zeros."""
    mask, row_ok = _guard_empty_rows(attn_mask)
    if mask is not None:
        # finfo.min, not -1e9 or -inf: stays finite in every dtype, so empty rows can't become NaN.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S)
    if row_ok is not None:
        weights = weights * row_ok
    mixed = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return torch.matmul(mixed, v), weights  # (B, H, T, Dv)


class AdditiveScore(nn.Module):
    """Additive (Bahdanau) scoring per head: ``score(q, k) = w^T tanh(q + k)``.

    Bahdanau et al. (2015) score ``v^T tanh(W_q q + W_k k)``; here ``W_q`` and ``W_k`` are the multi-head
    module's own ``q_proj``/``k_proj``, so only the vector ``w`` (one per head) is new. It costs
    ``O(B·H·T·S·Dh)`` memory, which is why the dot product won.

    Args:
        num_heads: H.
        head_dim: Dh.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, head_dim))
        nn.init.normal_(self.weight, std=head_dim**-0.5)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """``(B, H, T, Dh)``, ``(B, H, S, Dh)`` -> scores ``(B, H, T, S)``."""
        hidden = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))  # (B, H, T, S, Dh)
        return torch.einsum("bhtsd,hd->bhts", hidden, self.weight)


def additive_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    score: AdditiveScore,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention with additive scores; same masking rules as :func:`scaled_dot_product_attention`."""
    if is_causal:
        attn_mask = combine_masks(attn_mask, make_causal_mask(q.shape[-2], k.shape[-2], q.device))
    scores = score(q, k)  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    return _softmax_and_mix(scores, v, attn_mask, dropout_p)


class KVCache:
    """Keys and values of one attention module during incremental decoding.

    Self-attention appends each step's keys/values into a preallocated buffer that grows by doubling, so a
    step costs a copy of the new token only. Cross-attention (``static=True``) stores the source's
    keys/values once and reuses them at every step. Keys are stored rotated (rotary positions) and
    with the module's KV heads only, ``(B, Hkv, S, Dh)``: grouped-query attention's memory saving.

    Args:
        static: True for cross-attention (computed once per source).
    """

    def __init__(self, static: bool = False) -> None:
        self.static = static
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self.length = 0

    @property
    def is_empty(self) -> bool:
        return self.length == 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``(B, Hkv, t, Dh)`` keys/values; return all keys/values so far, ``(B, Hkv, S, Dh)``."""
        t = k.shape[-2]
        needed = self.length + t
        if self._k is None or needed > self._k.shape[-2]:
            capacity = max(needed, 2 * (0 if self._k is None else self._k.shape[-2]), 16)
            self._k = self._grow(self._k, k, capacity)
            self._v = self._grow(self._v, v, capacity)
        self._k[..., self.length : needed, :] = k
        self._v[..., self.length : needed, :] = v
        self.length = needed
        return self._k[..., :needed, :], self._v[..., :needed, :]

    def _grow(self, old: Tensor | None, like: Tensor, capacity: int) -> Tensor:
        new = like.new_empty(*like.shape[:-2], capacity, like.shape[-1])
        if old is not None and self.length:
            new[..., : self.length, :] = old[..., : self.length, :]
        return new

    def set(self, k: Tensor, v: Tensor) -> None:
        """Store keys/values computed once (cross-attention)."""
        self._k, self._v, self.length = k, v, k.shape[-2]

    def get(self) -> tuple[Tensor, Tensor]:
        """All keys/values stored so far."""
        assert self._k is not None and self._v is not None, "empty cache"
        return self._k[..., : self.length, :], self._v[..., : self.length, :]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search: follow each surviving hypothesis's parent)."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


@dataclass
class LayerCache:
    """The keys and values one decoder layer keeps: its self-attention's and (if any) its
    cross-attention's. Only tensors: the step functions that read them live in
    :class:`aiayn.decoding_state.DecodingState`."""

    self_attn: KVCache
    cross_attn: KVCache | None = None

    def reorder(self, index: Tensor, sentences: Tensor | None = None) -> None:
        """Keep rows ``index`` of the self-attention cache. The cross-attention cache holds one row
        per source sentence, shared by that sentence's beams (a beam reorder never changes it):
        keep its rows ``sentences`` when given (sentences that finished leave)."""
        self.self_attn.reorder(index)
        if self.cross_attn is not None and sentences is not None:
            self.cross_attn.reorder(sentences)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (paper section 3.2.2): project, split into heads, attend, concatenate, project.

    ``MultiHead(Q, K, V) = Concat(head_1..head_H) W^O``, ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

    Used as self-attention (``key`` omitted) or cross-attention (``key``/``value`` from the encoder).
    In self-attention the three input projections run as one matrix multiply over the concatenated
    weights (one pass over the input instead of three); the parameters stay separate for readability.

    Args:
        d_model: D, the model width.
        num_heads: H; must divide D.
        dropout: dropout on the attention weights.
        bias: whether the projections have biases.
        attention: ``"dot"`` (scaled dot-product, the paper) or ``"additive"`` (Bahdanau scoring).
        num_kv_heads: Hkv key/value heads, each shared by ``H / Hkv`` query heads (grouped-query
            attention; 1 = multi-query); must divide H. None = H, the paper's attention, with
            ``k_proj``/``v_proj`` of shape ``(D, D)``; otherwise ``(Hkv·Dh, D)``.
        position: a :class:`~aiayn.positional.RotaryEmbedding` (rotates queries and keys) or
            :class:`~aiayn.positional.ALiBi` (biases the scores), used in self-attention only. It has
            no parameters, so one module may serve every layer. None: no positions here.

    Shape:
        query ``(B, T, D)``; key/value ``(B, S, D)``; key_mask ``(B, S)``; attn_mask broadcastable to
        ``(B, H, T, S)``; positions ``(T,)`` or ``(B, T)``; output ``(B, T, D)``; weights
        ``(B, H, T, S)``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        attention: str = "dot",
        num_kv_heads: int | None = None,
        position: RotaryEmbedding | ALiBi | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if kv_heads <= 0 or num_heads % kv_heads:
            raise ValueError(f"num_kv_heads ({kv_heads}) must divide num_heads ({num_heads})")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = kv_heads
        self.head_dim = d_model // num_heads
        self.kv_dim = kv_heads * self.head_dim
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, self.kv_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.kv_dim, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.additive = AdditiveScore(num_heads, self.head_dim) if attention == "additive" else None
        if position is not None and not isinstance(position, (RotaryEmbedding, ALiBi)):
            raise ValueError(f"position must be a RotaryEmbedding or ALiBi, got {type(position)}")
        if isinstance(position, RotaryEmbedding) and position.head_dim != self.head_dim:
            raise ValueError(f"rotary head_dim {position.head_dim} != head_dim {self.head_dim}")
        if isinstance(position, ALiBi) and position.slopes.numel() != num_heads:
            raise ValueError(f"ALiBi has {position.slopes.numel()} slopes for {num_heads} heads")
        self.rotary = position if isinstance(position, RotaryEmbedding) else None
        self.alibi = position if isinstance(position, ALiBi) else None

    def _split(self, x: Tensor, heads: int) -> Tensor:
        B, L, _ = x.shape
        return x.view(B, L, heads, self.head_dim).transpose(1, 2)  # (B, heads, L, Dh)

    def _expand(self, x: Tensor) -> Tensor:
        """``(B, Hkv, S, Dh)`` -> ``(B, H, S, Dh)``: query head h reads KV head ``h // (H / Hkv)``
        (Hugging Face's ``repeat_kv``).

        Repeated here rather than through SDPA's ``enable_gqa``: that flag narrows the CUDA kernels
        (no memory-efficient one, so masked attention falls back to the math kernel), while one copy
        of the keys/values works with every kernel, the reference path and additive scoring alike.
        """
        groups = self.num_heads // self.num_kv_heads
        if groups == 1:
            return x
        B, Hkv, S, Dh = x.shape
        return x[:, :, None].expand(B, Hkv, groups, S, Dh).reshape(B, Hkv * groups, S, Dh)

    def _project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention: Q, K, V from one fused matmul over ``[W_q; W_k; W_v]``. (Without
        autograd the concatenation is kept while the weights stand still
        (:mod:`aiayn.kept_weights`); the one-token step's is too, see :meth:`self_step`: once
        per token would copy 3·D² values per layer per token.)"""
        sizes = [self.d_model, self.kv_dim, self.kv_dim]
        qkv, w, b = linear_op(self.q_proj, self.k_proj, self.v_proj)
        q, k, v = qkv(x, w, b).split(sizes, dim=-1)
        return q, k, v  # (B, T, D), 2 x (B, T, Hkv·Dh)

    def _project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kv, w, b = linear_op(self.k_proj, self.v_proj)  # W (2·Hkv·Dh, D)
        k, v = kv(x, w, b).chunk(2, dim=-1)  # 2 x (B, S, Hkv·Dh)
        return k, v

    # ---- one cached decoding step, lean --------------------------------------------------------
    # During greedy/beam search and generation a step runs once per token per layer. These build,
    # once per decoding run, a function doing the arithmetic of ``forward`` for that case (one new
    # query per row, eval mode, dot scoring, no weights returned) on ``(B, D)`` rows, with the
    # weights captured as plain tensors (or packed int8 ones, see :func:`linear_op`) and the
    # functional ops called directly: at batch 1, module dispatch, attribute look-ups, 3-D reshapes
    # and the general path's mask bookkeeping cost more time than the matrix-vector products. With
    # one query per row, ``(B, D)`` viewed as ``(B, H, 1, Dh)`` is exactly the split into heads (no
    # transpose needed), and back. The attention itself is :func:`scaled_dot_product_attention`,
    # the one kernel with the one set of masking rules. Weights must not change while the step is in
    # use (true of decoding); the caller (:class:`aiayn.decoding_state.DecodingState`) keeps the
    # functions, the caches keep only keys and values.

    def self_step(self, cache: KVCache) -> Callable[..., Tensor]:
        """``step(x (B, D), key_mask (B, S) | None, positions (B, 1) | None = None) -> (B, D)``:
        causal self-attention of one new token per row over the cache and itself. ``key_mask``
        marks real tokens among cached + new ones (left-padded GPT batches); the new token is always
        real, so no row is empty. ``positions``: the new token's position per row (rotary; default
        the cache's length)."""
        qkv, w_qkv, b_qkv = rows_linear_op(self.q_proj, self.k_proj, self.v_proj)
        out_proj, w_out, b_out = rows_linear_op(self.out_proj)
        H, Hkv, Dh, D = self.num_heads, self.num_kv_heads, self.head_dim, self.d_model
        sizes = [D, self.kv_dim, self.kv_dim]
        append, expand, rotary, alibi = cache.append, self._expand, self.rotary, self.alibi

        def step(x: Tensor, key_mask: Tensor | None, positions: Tensor | None = None) -> Tensor:
            B = x.shape[0]
            q, k, v = qkv(x, w_qkv, b_qkv).split(sizes, dim=-1)
            q, k, v = q.view(B, H, 1, Dh), k.view(B, Hkv, 1, Dh), v.view(B, Hkv, 1, Dh)
            if rotary is not None:
                q, k = rotary(q, k, positions, cache.length)
            k, v = append(k, v)  # (B, Hkv, S, Dh)
            mask = None if key_mask is None else key_mask[:, None, None, :]
            bias = None if alibi is None else alibi(1, k.shape[-2])  # (H, 1, S)
            out, _ = scaled_dot_product_attention(
                q, expand(k), expand(v), mask, bias=bias, rows_have_keys=True
            )
            return out_proj(out.reshape(B, D), w_out, b_out)

        return step

    def cross_step(
        self, cache: KVCache, memory: Tensor | None
    ) -> Callable[[Tensor, Tensor | None], Tensor]:
        """``step(x (B, D), key_mask (B, S) | None) -> (B, D)``: cross-attention of one query per
        row to the source, whose keys and values are computed from ``memory`` now (unless
        ``cache`` has them) and cached. ``key_mask`` is None when every source token is real.

        Several rows may share one source (beam search: K hypotheses per sentence, consecutive
        rows): the cache then holds one row per source, ``(B, Hkv, S, Dh)`` for ``B·K`` queries, and
        the K queries of a sentence attend as K query positions of one row, so the source's keys
        and values are neither copied K times nor reordered when the beams are."""
        Hkv = self.num_kv_heads
        if cache.is_empty:
            if memory is None:
                raise ValueError("cross-attention needs `memory` until its cache is filled")
            k, v = self._project_kv(memory)
            cache.set(self._split(k, Hkv), self._split(v, Hkv))
        q_proj, w_q, b_q = rows_linear_op(self.q_proj)
        out_proj, w_out, b_out = rows_linear_op(self.out_proj)
        H, Dh, D = self.num_heads, self.head_dim, self.d_model
        expand = self._expand

        def step(x: Tensor, key_mask: Tensor | None) -> Tensor:
            rows = x.shape[0]
            k, v = cache.get()
            B = k.shape[0]
            K = rows // B  # queries per source
            q = q_proj(x, w_q, b_q).view(B, K, H, Dh).transpose(1, 2)  # (B, H, K, Dh)
            mask = None if key_mask is None else key_mask[:, None, None, :]
            out, _ = scaled_dot_product_attention(q, expand(k), expand(v), mask)
            return out_proj(out.transpose(1, 2).reshape(rows, D), w_out, b_out)

        return step

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
        window: int | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value`` (to ``query`` itself when ``key`` is None).

        Args:
            query: ``(B, T, D)``.
            key: ``(B, S, D)``; None for self-attention.
            value: ``(B, S, D)``; defaults to ``key``.
            key_mask: ``(B, S)``, True where the key is a real token.
            attn_mask: broadcastable to ``(B, H, T, S)``, True = may attend.
            is_causal: queries see only keys at or before their own position (bottom-right aligned).
            need_weights: return the per-head weights ``(B, H, T, S)``.
            cache: for incremental decoding. Self-attention appends this step's keys/values; a static
                (cross-attention) cache computes them from ``key`` on first use and reuses them after.
            window: truncated self-attention: each query sees keys within this many positions
                (causal: only earlier ones). Runs the O(T·w) kernel of :mod:`aiayn.local_attention`
                when it can (dot scoring, no cache, no weights, no extra mask, no ALiBi); otherwise
                the same window as a mask (:func:`aiayn.masks.make_local_mask`).
            positions: ``(T,)`` or ``(B, T)`` positions of the query tokens, for rotary self-attention
                (left-padded rows count from their first real token). Default: following the cache.

        Returns:
            ``(output (B, T, D), weights (B, H, T, S) or None)``.
        """
        B, T, _ = query.shape
        H, Hkv = self.num_heads, self.num_kv_heads
        static = cache is not None and cache.static
        is_self = key is None and not static
        if is_self:
            q, k, v = self._project_qkv(query)
            # (B, H, T, Dh) queries, (B, Hkv, T, Dh) keys and values
            q, k, v = self._split(q, H), self._split(k, Hkv), self._split(v, Hkv)
            if self.rotary is not None:  # before caching: cached keys keep their own positions
                q, k = self.rotary(q, k, positions, 0 if cache is None else cache.length)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, Hkv, S, Dh), S = cached + T
        else:
            q = self._split(self.q_proj(query), H)  # (B, H, T, Dh)
            if static and not cache.is_empty:
                k, v = cache.get()
            elif key is None:
                raise ValueError("cross-attention needs `key` until its cache is filled")
            else:
                if value is None or value is key:
                    k, v = self._project_kv(key)
                else:
                    k, v = self.k_proj(key), self.v_proj(value)
                k, v = self._split(k, Hkv), self._split(v, Hkv)  # (B, Hkv, S, Dh)
                if cache is not None:
                    cache.set(k, v)
            if k.shape[0] != B:  # one source for several query rows (beams, see cross_step)
                copies = B // k.shape[0]
                k, v = k.repeat_interleave(copies, 0), v.repeat_interleave(copies, 0)
                if key_mask is not None:
                    key_mask = key_mask.repeat_interleave(copies, 0)
        bias = None
        if is_self and self.alibi is not None:
            bias = self.alibi(T, k.shape[-2])  # (H, T, S)
        k, v = self._expand(k), self._expand(v)  # (B, H, S, Dh)

        dropout_p = self.dropout if self.training else 0.0
        if window is not None:
            local = key is None and cache is None and attn_mask is None and bias is None
            if local and self.additive is None and not need_weights:
                out = local_attention(
                    q, k, v, window, is_causal, key_mask, dropout_p
                )  # (B, H, T, Dh)
                return self.out_proj(out.transpose(1, 2).reshape(B, T, self.d_model)), None
            local_mask = make_local_mask(T, k.shape[-2], window, is_causal, device=q.device)
            attn_mask = combine_masks(attn_mask, local_mask)
        mask = combine_masks(
            None if key_mask is None else key_mask_to_attn_mask(key_mask),
            attn_mask,
        )
        if self.additive is not None:
            out, weights = additive_attention(
                q, k, v, self.additive, mask, is_causal, dropout_p, bias=bias
            )
            weights = weights if need_weights else None
        else:
            out, weights = scaled_dot_product_attention(
                q,
                k,
                v,
                mask,
                is_causal=is_causal,
                dropout_p=dropout_p,
                need_weights=need_weights,
                bias=bias,
            )
        out = out.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, D): concatenate heads
        return self.out_proj(out), weights
