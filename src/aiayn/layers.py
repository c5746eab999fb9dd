"""The Transformer's building blocks, shared by every model (seq2seq, GPT, BERT, ViT).

Shapes: B batch, T target/query length, S source/key length, D d_model, F d_ff, H heads.

Each sublayer is wrapped in a residual connection and LayerNorm (paper section 3.1). Two placements:

* post-norm (``norm_first=False``, the paper): ``x = LayerNorm(x + Dropout(Sublayer(x)))``
* pre-norm (``norm_first=True``, GPT-2 and most modern models): ``x = x + Dropout(Sublayer(LayerNorm(x)))``

Stacks are built with a loop of fresh modules, never by deep-copying one layer, so layers start different.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, LayerCache, MultiHeadAttention
from .dropout import Dropout

# functools.partial, not a lambda: modules holding the function must stay picklable and copyable.
ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "silu": F.silu,  # a.k.a. swish; Marian's default
}


def get_activation(name: str):
    """The activation function named ``name`` (``relu``, ``gelu``, ``gelu_tanh``, ``silu``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


class FeedForward(nn.Module):
    """Position-wise feed-forward network (section 3.3): ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``.

    Applied to every position separately and identically. ReLU in the paper; GELU in BERT/GPT/ViT.

    Args:
        d_model: D.
        d_ff: F, the inner width (4·D in the paper).
        dropout: dropout after the activation.
        activation: ``relu``, ``gelu``, ``gelu_tanh`` or ``silu``.
        bias: biases on both linear maps.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    Args:
        d_model: D.
        num_heads: H.
        d_ff: F.
        dropout: residual and FFN dropout.
        activation: FFN activation.
        norm_first: pre-norm when True, post-norm (the paper) when False.
        bias: biases in attention and FFN.
        layer_norm_eps: LayerNorm epsilon (1e-5 like torch; BERT uses 1e-12).
        attention: ``dot`` or ``additive`` scoring.
        attention_dropout: dropout on the attention weights; None = ``dropout`` (as torch.nn does).
            The paper drops only sublayer outputs and embeddings; on a CPU, weight dropout also
            forces attention off the fused kernel.
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
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_p = dropout if attention_dropout is None else attention_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_p, bias, attention)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
        window: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, S, D)``, ``key_mask (B, S)`` -> ``(B, S, D)`` and optional weights ``(B, H, S, S)``.

        ``window`` makes the self-attention local (see :class:`~aiayn.attention.MultiHeadAttention`).
        """
        if self.norm_first:
            attn, weights = self.self_attn(
                self.norm1(x),
                key_mask=key_mask,
                attn_mask=attn_mask,
                need_weights=need_weights,
                window=window,
            )
            x = x + self.dropout1(attn)
            x = x + self.dropout2(self.ffn(self.norm2(x)))
        else:
            attn, weights = self.self_attn(
                x, key_mask=key_mask, attn_mask=attn_mask, need_weights=need_weights, window=window
            )
            x = self.norm1(x + self.dropout1(attn))
            x = self.norm2(x + self.dropout2(self.ffn(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder output, feed-forward.

    With ``cross_attention=False`` this is GPT's block: the decoder without the encoder.

    Args: as :class:`EncoderLayer`, plus
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
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_p = dropout if attention_dropout is None else attention_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_p, bias, attention)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.cross_attn: MultiHeadAttention | None = None
        if cross_attention:
            self.cross_attn = MultiHeadAttention(d_model, num_heads, attn_p, bias, attention)
            self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
            self.dropout2 = Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
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

        Returns:
            ``(x (B, T, D), self weights (B, H, T, T_total) or None, cross weights (B, H, T, S) or None)``.
        """
        if (
            cache is not None
            and x.shape[1] == 1
            and not self.training
            and not need_weights
            and window is None
            and attn_mask is None
            and is_causal
            and self.self_attn.additive is None
        ):
            return self._decode_step(x, memory, key_mask, memory_key_mask, cache), None, None
        self_cache = None if cache is None else cache.self_attn
        cross_cache = None if cache is None else cache.cross_attn

        def self_block(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out, w = self.self_attn(
                h,
                key_mask=key_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                need_weights=need_weights,
                cache=self_cache,
                window=window,
            )
            return self.dropout1(out), w

        def cross_block(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out, w = self.cross_attn(
                h, memory, key_mask=memory_key_mask, need_weights=need_weights, cache=cross_cache
            )
            return self.dropout2(out), w

        cross_w = None
        if self.norm_first:
            out, self_w = self_block(self.norm1(x))
            x = x + out
            if self.cross_attn is not None:
                out, cross_w = cross_block(self.norm2(x))
                x = x + out
            x = x + self.dropout3(self.ffn(self.norm3(x)))
        else:
            out, self_w = self_block(x)
            x = self.norm1(x + out)
            if self.cross_attn is not None:
                out, cross_w = cross_block(x)
                x = self.norm2(x + out)
            x = self.norm3(x + self.dropout3(self.ffn(x)))
        return x, self_w, cross_w

    def _decode_step(
        self,
        x: Tensor,
        memory: Tensor | None,
        key_mask: Tensor | None,
        memory_key_mask: Tensor | None,
        cache: LayerCache,
    ) -> Tensor:
        """One cached decoding step ``(B, 1, D)`` in eval mode through the cache's lean step
        function (built on first use by :meth:`_make_step`)."""
        if cache.step is None:
            cache.step = self._make_step(cache, memory)
        B, _, D = x.shape
        return cache.step(x.reshape(B, D), key_mask, memory_key_mask).view(B, 1, D)

    def _make_step(self, cache: LayerCache, memory: Tensor | None):
        """The arithmetic of :meth:`forward` for one token per row in eval mode (dropout is the
        identity), on ``(B, D)`` rows, with the weights captured once as tensors: in a decoding
        loop at small batch sizes, module dispatch and attribute look-ups cost more than the
        matrix-vector products."""

        def norm_fn(layer: nn.LayerNorm):
            shape, weight, bias, eps = layer.normalized_shape, layer.weight, layer.bias, layer.eps
            return lambda h: F.layer_norm(h, shape, weight, bias, eps)

        f = self.ffn
        act, w1, b1, w2, b2 = (
            f.activation,
            f.linear1.weight,
            f.linear1.bias,
            f.linear2.weight,
            f.linear2.bias,
        )
        norm1, norm3 = norm_fn(self.norm1), norm_fn(self.norm3)
        self_attn = self.self_attn.self_step(cache.self_attn)
        cross_attn = norm2 = None
        if self.cross_attn is not None:
            assert cache.cross_attn is not None
            cross_attn = self.cross_attn.cross_step(cache.cross_attn, memory)
            norm2 = norm_fn(self.norm2)

        def ffn(h: Tensor) -> Tensor:
            return F.linear(act(F.linear(h, w1, b1)), w2, b2)

        if self.norm_first:

            def step(x: Tensor, key_mask: Tensor | None, memory_key_mask: Tensor | None) -> Tensor:
                x = x + self_attn(norm1(x), key_mask)
                if cross_attn is not None:
                    x = x + cross_attn(norm2(x), memory_key_mask)
                return x + ffn(norm3(x))

        else:

            def step(x: Tensor, key_mask: Tensor | None, memory_key_mask: Tensor | None) -> Tensor:
                x = norm1(x + self_attn(x, key_mask))
                if cross_attn is not None:
                    x = norm2(x + cross_attn(x, memory_key_mask))
                return norm3(x + ffn(x))

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
        self, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """``x (B, S, D)``, ``key_mask (B, S)`` -> ``(B, S, D)`` and per-layer weights when asked."""
        weights = []
        for layer in self.layers:
            # The window goes to the attention itself, which runs the O(T·w) local kernel.
            x, w = layer(
                x, key_mask=key_mask, need_weights=need_weights, window=self.attention_window
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

    def new_cache(self) -> list[LayerCache]:
        """Fresh, empty caches for incremental decoding (one per layer)."""
        return [
            LayerCache(KVCache(), KVCache(static=True) if layer.cross_attn is not None else None)
            for layer in self.layers
        ]

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run the stack.

        Args:
            x: ``(B, T, D)`` embedded target tokens (T new tokens when decoding with a cache).
            memory: ``(B, S, D)`` encoder output, or None for a decoder-only model.
            key_mask: ``(B, T_total)`` True for real target tokens, cached ones included. Right padding
                needs no mask (causality already hides later pads); left padding does.
            memory_key_mask: ``(B, S)`` True for real source tokens.
            cache: from :meth:`new_cache`, updated in place.
            need_weights: collect per-layer self- and cross-attention weights.

        Returns:
            ``(x (B, T, D), self weights per layer, cross weights per layer)``.
        """
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
            )
            if need_weights:
                self_weights.append(sw)
                if cw is not None:
                    cross_weights.append(cw)
        if self.norm is not None:
            x = self.norm(x)
        return x, self_weights, cross_weights
