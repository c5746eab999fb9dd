"""The Transformer's building blocks, shared by every model (seq2seq, GPT, BERT, ViT).

Shapes: B batch, T target/query length, S source/key length, D d_model, F d_ff, H heads.

Each sublayer is wrapped in a residual connection and LayerNorm (paper section 3.1). Two placements:

* post-norm (``norm_first=False``, the paper): ``x = LayerNorm(x + Dropout(Sublayer(x)))``
* pre-norm (``norm_first=True``, GPT-2 and most modern models): ``x = x + Dropout(Sublayer(LayerNorm(x)))``

The choices that came after 2017 are explicit arguments: ``norm="rmsnorm"`` (Zhang & Sennrich, 2019:
rescale by the root mean square, no centring, no bias), gated FFNs (``activation="swiglu"|"geglu"``,
Shazeer 2020), grouped-query attention (``num_kv_heads``) and positions inside self-attention
(``position``: rotary or ALiBi, see :mod:`aiayn.positional`).

Stacks are built with a loop of fresh modules, never by deep-copying one layer, so layers start different.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from . import config as cfg
from .attention import KVCache, LayerCache, MultiHeadAttention, rows_linear_op
from .decoding_state import DecodingState, LayerStep
from .dropout import Dropout
from .positional import POSITIONAL_KINDS, ROTARY_LAYOUTS, ALiBi, RotaryEmbedding

log = logging.getLogger(__name__)

# functools.partial, not a lambda: modules holding the function must stay picklable and copyable.
ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "silu": F.silu,  # a.k.a. swish; Marian's default
    # Gated FFNs (Shazeer, 2020): the function applied to the gate. Outside an FFN (BERT's MLM
    # head) the name stands for that function alone.
    "swiglu": F.silu,  # Llama, PaLM
    "geglu": F.gelu,  # the exact (erf) GELU
}
#: Activations that make :class:`FeedForward` gated: ``W_2 (act(W_1 x) * W_3 x)``.
GATED_ACTIVATIONS = ("swiglu", "geglu")
NORM_KINDS = ("layernorm", "rmsnorm")


def get_activation(name: str):
    """The activation function named ``name`` (see ``ACTIVATIONS``; a gated name gives its gate's)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def ffn_width(d_model: int, d_ff: int | None, activation: str) -> int:
    """The FFN's inner width F: ``d_ff`` when given; otherwise the activation's rule.

    Plain FFNs: 4·D (the paper). Gated FFNs have three matrices instead of two, so Llama (Touvron et
    al., 2023) takes 2/3 of 4·D, keeping the parameter count, rounded up to a multiple of 256 for
    the matmul kernels: ``256 · ceil(int(8·D / 3) / 256)`` (D = 4096 -> 11008).
    """
    if d_ff is not None:
        return d_ff
    if activation in GATED_ACTIVATIONS:
        return 256 * -(-int(2 * 4 * d_model / 3) // 256)
    return 4 * d_model


def check_block_fields(config: Any) -> None:
    """Validate the block fields model configs share (``__post_init__``); a ConfigError each.

    Reads ``d_model``, ``num_heads``, ``d_ff``, ``activation``, ``norm``, ``num_kv_heads`` and, where
    the config has them, ``positional``, ``rotary_layout`` and ``rotary_base``.
    """
    c, check = config, cfg.check
    check(c.d_ff is None or c.d_ff > 0, f"d_ff must be > 0 or None, got {c.d_ff}")
    check(c.activation in ACTIVATIONS, f"activation must be one of {sorted(ACTIVATIONS)}")
    check(c.norm in NORM_KINDS, f"norm must be one of {NORM_KINDS}, got {c.norm!r}")
    check(
        c.num_kv_heads is None or (c.num_kv_heads > 0 and c.num_heads % c.num_kv_heads == 0),
        f"num_kv_heads ({c.num_kv_heads}) must divide num_heads ({c.num_heads}), or be None",
    )
    positional = getattr(c, "positional", "learned")
    check(positional in POSITIONAL_KINDS, f"positional must be one of {POSITIONAL_KINDS}")
    if not hasattr(c, "rotary_layout"):
        return
    check(c.rotary_layout in ROTARY_LAYOUTS, f"rotary_layout must be one of {ROTARY_LAYOUTS}")
    check(c.rotary_base > 1, f"rotary_base must be > 1, got {c.rotary_base}")
    check(
        positional != "rotary" or (c.d_model // c.num_heads) % 2 == 0,
        f"rotary positions need an even head dimension, got {c.d_model // c.num_heads}",
    )


def make_norm(kind: str, d_model: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """``nn.LayerNorm`` (``"layernorm"``) or ``nn.RMSNorm`` (``"rmsnorm"``; it has no bias)."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")


def _norm_function(layer: nn.Module):
    """``layer``'s arithmetic as a plain function of its captured weights (the lean decoding step)."""
    shape, weight, eps = layer.normalized_shape, layer.weight, layer.eps
    if isinstance(layer, nn.RMSNorm):
        return lambda h: F.rms_norm(h, shape, weight, eps)
    bias = layer.bias
    return lambda h: F.layer_norm(h, shape, weight, bias, eps)


def residual(
    x: Tensor,
    sublayer: Callable[[Tensor], Tensor],
    norm: Callable[[Tensor], Tensor],
    norm_first: bool,
) -> Tensor:
    """One sublayer with its residual connection and norm (paper section 3.1): pre-norm
    ``x + sublayer(norm(x))`` or post-norm ``norm(x + sublayer(x))``. The one place this wiring is
    written: the layers' ``forward`` and the one-token decoding step both use it."""
    return x + sublayer(norm(x)) if norm_first else norm(x + sublayer(x))


class FeedForward(nn.Module):
    """Position-wise feed-forward network (section 3.3): ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``.

    Applied to every position separately and identically. ReLU in the paper; GELU in BERT/GPT/ViT.
    Gated (``swiglu``, ``geglu``; Shazeer, 2020): ``W_2 (act(W_1 x) * W_3 x)``, with ``linear1`` the
    gate (Llama's ``w1``/``gate_proj``), ``linear3`` the linear branch (``w3``/``up_proj``) and
    ``linear2`` the output (``w2``/``down_proj``).

    Args:
        d_model: D.
        d_ff: F, the inner width; None = :func:`ffn_width`'s rule (4·D, or Llama's for gated ones).
        dropout: dropout after the activation (after the gating product when gated).
        activation: a name in ``ACTIVATIONS``.
        bias: biases on the linear maps.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        d_ff = ffn_width(d_model, d_ff, activation)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        gated = activation in GATED_ACTIVATIONS
        self.linear3 = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        h = self.activation(self.linear1(x))  # (B, T, F)
        if self.linear3 is not None:
            h = h * self.linear3(x)
        return self.linear2(self.dropout(h))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    Args:
        d_model: D.
        num_heads: H.
        d_ff: F.
        dropout: residual and FFN dropout.
        activation: FFN activation.
        norm_first: pre-norm when True, post-norm (the paper) when False.
        bias: biases in attention, FFN and LayerNorms.
        layer_norm_eps: LayerNorm (or RMSNorm) epsilon (1e-5 like torch; BERT uses 1e-12).
        attention: ``dot`` or ``additive`` scoring.
        attention_dropout: dropout on the attention weights; None = ``dropout`` (as torch.nn does).
            The paper drops only sublayer outputs and embeddings; on a CPU, weight dropout also
            forces attention off the fused kernel.
        num_kv_heads: key/value heads of the self-attention (grouped-query); None = ``num_heads``.
        norm: ``layernorm`` or ``rmsnorm``.
        position: rotary or ALiBi positions for the self-attention (see
            :class:`~aiayn.attention.MultiHeadAttention`); None when positions are in the embeddings.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
        attention: str = "dot",
        attention_dropout: float | None = None,
        num_kv_heads: int | None = None,
        norm: str = "layernorm",
        position: RotaryEmbedding | ALiBi | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_p = dropout if attention_dropout is None else attention_dropout
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, attn_p, bias, attention, num_kv_heads, position
        )
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm1 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.norm2 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
        window: int | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, S, D)``, ``key_mask (B, S)`` -> ``(B, S, D)`` and optional weights ``(B, H, S, S)``.

        ``window`` makes the self-attention local (see :class:`~aiayn.attention.MultiHeadAttention`);
        ``positions`` ``(S,)`` or ``(B, S)`` are for rotary self-attention (default ``0 .. S - 1``).
        """
        weights = None

        def attend(h: Tensor) -> Tensor:
            nonlocal weights
            out, weights = self.self_attn(
                h,
                key_mask=key_mask,
                attn_mask=attn_mask,
                need_weights=need_weights,
                window=window,
                positions=positions,
            )
            return self.dropout1(out)

        x = residual(x, attend, self.norm1, self.norm_first)
        x = residual(x, lambda h: self.dropout2(self.ffn(h)), self.norm2, self.norm_first)
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, feed-forward.

    With ``cross_attention=False`` this is GPT's block: the decoder without the encoder.

    Args: as :class:`EncoderLayer` (``num_kv_heads`` applies to both attentions, ``position`` to
    the self-attention only), plus
        cross_attention: include the encoder-decoder attention sublayer.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
        attention: str = "dot",
        cross_attention: bool = True,
        attention_dropout: float | None = None,
        num_kv_heads: int | None = None,
        norm: str = "layernorm",
        position: RotaryEmbedding | ALiBi | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_p = dropout if attention_dropout is None else attention_dropout
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, attn_p, bias, attention, num_kv_heads, position
        )
        self.norm1 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout1 = Dropout(dropout)
        self.cross_attn: MultiHeadAttention | None = None
        if cross_attention:
            # No positions in cross-attention: a source and a target position have no distance.
            self.cross_attn = MultiHeadAttention(
                d_model, num_heads, attn_p, bias, attention, num_kv_heads
            )
            self.norm2 = make_norm(norm, d_model, layer_norm_eps, bias)
            self.dropout2 = Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm3 = make_norm(norm, d_model, layer_norm_eps, bias)
        self.dropout3 = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = True,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        window: int | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One decoder layer.

        Args:
            x: ``(B, T, D)`` target-side states.
            memory: ``(B, S, D)`` encoder output (ignored without cross-attention; may be None when the
                cross-attention cache is already filled).
            key_mask: ``(B, T_total)`` True where a target token is real (left padding in GPT batches).
            memory_key_mask: ``(B, S)`` True where a source token is real.
            attn_mask: extra self-attention mask (e.g. a local window), broadcastable to (B, H, T, T).
            is_causal: causal self-attention (always, for a decoder; False only for experiments).
            cache: this layer's KV caches for incremental decoding.
            need_weights: return self- and cross-attention weights.
            window: local (truncated) self-attention window, or None for full attention.
            positions: ``(T,)`` or ``(B, T)`` positions of the new tokens for rotary self-attention
                (left-padded GPT rows count from their first real token); default: after the cache.

        Returns:
            ``(x (B, T, D), self weights (B, H, T, T_total) or None, cross weights (B, H, T, S) or None)``.
        """
        self_cache = None if cache is None else cache.self_attn
        cross_cache = None if cache is None else cache.cross_attn
        self_w = cross_w = None

        def self_block(h: Tensor) -> Tensor:
            nonlocal self_w
            out, self_w = self.self_attn(
                h,
                key_mask=key_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=need_weights,
                cache=self_cache,
                window=window,
                positions=positions,
            )
            return self.dropout1(out)

        def cross_block(h: Tensor) -> Tensor:
            nonlocal cross_w
            out, cross_w = self.cross_attn(
                h, memory, key_mask=memory_key_mask, need_weights=need_weights, cache=cross_cache
            )
            return self.dropout2(out)

        x = residual(x, self_block, self.norm1, self.norm_first)
        if self.cross_attn is not None:
            x = residual(x, cross_block, self.norm2, self.norm_first)
        x = residual(x, lambda h: self.dropout3(self.ffn(h)), self.norm3, self.norm_first)
        return x, self_w, cross_w

    def step_refusal(
        self,
        need_weights: bool = False,
        window: int | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = True,
    ) -> str | None:
        """Why a cached one-token call cannot take the lean step (None: it can). The general path
        then runs: the same arithmetic, slower."""
        if self.training:
            return "training mode (dropout)"
        if need_weights:
            return "attention weights asked for"
        if window is not None:
            return "local attention window"
        if attn_mask is not None:
            return "an extra attention mask"
        if not is_causal:
            return "non-causal self-attention"
        if self.self_attn.additive is not None:
            return "additive scoring"
        return None

    def make_step(self, cache: LayerCache, memory: Tensor | None) -> LayerStep:
        """The arithmetic of :meth:`forward` for one token per row in eval mode (dropout is the
        identity), on ``(B, D)`` rows, with the weights captured once (as tensors, or packed int8
        ones: :func:`~aiayn.attention.linear_op`): in a decoding loop at small batch sizes, module
        dispatch and attribute look-ups cost more than the matrix-vector products. Only where
        :meth:`step_refusal` says None; the caller (:class:`Decoder`) keeps the function in its
        :class:`~aiayn.decoding_state.DecodingState`."""
        f = self.ffn
        act = f.activation
        down, w2, b2 = rows_linear_op(f.linear2)
        norm1, norm3 = _norm_function(self.norm1), _norm_function(self.norm3)
        self_attn = self.self_attn.self_step(cache.self_attn)
        cross_attn = norm2 = None
        if self.cross_attn is not None:
            assert cache.cross_attn is not None
            cross_attn = self.cross_attn.cross_step(cache.cross_attn, memory)
            norm2 = _norm_function(self.norm2)

        if f.linear3 is None:
            up, w1, b1 = rows_linear_op(f.linear1)

            def ffn(h: Tensor) -> Tensor:
                return down(act(up(h, w1, b1)), w2, b2)

        else:
            # Gate and linear branch as one matmul over [W_1; W_3], concatenated once per cache.
            gate_up, w13, b13 = rows_linear_op(f.linear1, f.linear3)  # W (2F, D)

            def ffn(h: Tensor) -> Tensor:
                gate, branch = gate_up(h, w13, b13).chunk(2, dim=-1)  # 2 x (B, F)
                return down(act(gate) * branch, w2, b2)

        norm_first = self.norm_first

        def step(
            x: Tensor,
            key_mask: Tensor | None,
            memory_key_mask: Tensor | None,
            positions: Tensor | None = None,
        ) -> Tensor:
            x = residual(x, lambda h: self_attn(h, key_mask, positions), norm1, norm_first)
            if cross_attn is not None:
                x = residual(x, lambda h: cross_attn(h, memory_key_mask), norm2, norm_first)
            return residual(x, ffn, norm3, norm_first)

        return step


class Encoder(nn.Module):
    """A stack of encoder layers with an optional final LayerNorm.

    Args:
        layers: the layers, each built fresh.
        norm: final LayerNorm (needed with pre-norm layers; torch's nn.Transformer always has one).
        attention_window: when set, truncated self-attention: each position sees only keys within this
            many positions (the notes' "truncated self-attention").
    """

    def __init__(
        self,
        layers: Iterable[EncoderLayer],
        norm: nn.Module | None = None,
        attention_window: int | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.attention_window = attention_window

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """``x (B, S, D)``, ``key_mask (B, S)`` -> ``(B, S, D)`` and per-layer weights when asked.

        ``positions`` ``(S,)`` or ``(B, S)``: for rotary self-attention (default ``0 .. S - 1``).
        """
        if key_mask is not None and bool(key_mask.all()):
            # Nothing hidden (always so at batch 1): one check here, not an empty-row guard per
            # layer, and the kernels run unmasked.
            key_mask = None
        weights = []
        for layer in self.layers:
            # The window goes to the attention itself, which runs the O(T·w) local kernel.
            x, w = layer(
                x,
                key_mask=key_mask,
                need_weights=need_weights,
                window=self.attention_window,
                positions=positions,
            )
            if need_weights:
                weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        return x, weights


class Decoder(nn.Module):
    """A stack of decoder layers with an optional final LayerNorm.

    Args: as :class:`Encoder`; ``attention_window`` makes the causal self-attention local too.
    """

    def __init__(
        self,
        layers: Iterable[DecoderLayer],
        norm: nn.Module | None = None,
        attention_window: int | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.attention_window = attention_window

    def new_cache(self) -> DecodingState:
        """A fresh decoding state: empty caches for incremental decoding (one per layer)."""
        return DecodingState(
            [
                LayerCache(
                    KVCache(), KVCache(static=True) if layer.cross_attn is not None else None
                )
                for layer in self.layers
            ]
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        cache: DecodingState | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run the stack. One new token per row with a cache takes the layers' lean steps
        (:meth:`DecoderLayer.make_step`) where every layer allows it; the reason when not is
        logged at debug level.

        Args:
            x: ``(B, T, D)`` embedded target tokens (T new tokens when decoding with a cache).
            memory: ``(B, S, D)`` encoder output, or None for a decoder-only model.
            key_mask: ``(B, T_total)`` True for real target tokens, cached ones included. Right padding
                needs no mask (causality already hides later pads); left padding does.
            memory_key_mask: ``(B, S)`` True for real source tokens.
            cache: from :meth:`new_cache`, updated in place.
            need_weights: collect per-layer self- and cross-attention weights.
            positions: ``(T,)`` or ``(B, T)`` positions of the new tokens, for rotary
                self-attention; default: following the cache.

        Returns:
            ``(x (B, T, D), self weights per layer, cross weights per layer)``.
        """
        if cache is not None and x.shape[1] == 1:
            if cache.steps is not None and not need_weights and not self.training:  # built
                return self._step(x, memory, key_mask, memory_key_mask, cache, positions), [], []
            refusal = self.step_refusal(need_weights)
            if refusal is None:
                return self._step(x, memory, key_mask, memory_key_mask, cache, positions), [], []
            log.debug("one-token step not taken: %s", refusal)
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.layers):
            x, sw, cw = layer(
                x,
                memory,
                key_mask=key_mask,
                memory_key_mask=memory_key_mask,
                cache=None if cache is None else cache[i],
                need_weights=need_weights,
                window=self.attention_window,
                positions=positions,
            )
            if need_weights:
                self_weights.append(sw)
                if cw is not None:
                    cross_weights.append(cw)
        if self.norm is not None:
            x = self.norm(x)
        return x, self_weights, cross_weights

    def step_refusal(self, need_weights: bool = False) -> str | None:
        """Why a cached one-token call of the stack cannot take the layers' lean steps (None: it
        can)."""
        for layer in self.layers:
            refusal = layer.step_refusal(need_weights, self.attention_window)
            if refusal is not None:
                return refusal
        return None

    def _step(
        self,
        x: Tensor,
        memory: Tensor | None,
        key_mask: Tensor | None,
        memory_key_mask: Tensor | None,
        state: DecodingState,
        positions: Tensor | None,
    ) -> Tensor:
        """One token per row ``(B, 1, D)`` through every layer's lean step, built on the run's
        first step (when ``memory`` fills the cross-attention caches)."""
        if state.steps is None:
            state.steps = [layer.make_step(c, memory) for layer, c in zip(self.layers, state)]
        B, _, D = x.shape
        h = x.reshape(B, D)
        for step in state.steps:
            h = step(h, key_mask, memory_key_mask, positions)
        h = h.view(B, 1, D)
        return h if self.norm is None else self.norm(h)
