"""GPT: a decoder-only Transformer language model (Radford et al., 2018, 2019).

Shapes: B batch, T tokens (new tokens when decoding with a cache), S tokens so far (cached + new),
D d_model, V vocabulary.

    ids -> token embedding + learned position embedding -> dropout
        -> N pre-norm decoder blocks (causal self-attention, feed-forward; no cross-attention)
        -> final LayerNorm -> Linear tied to the token embedding -> logits

The block is :class:`aiayn.layers.DecoderLayer` with ``cross_attention=False, norm_first=True`` and the
tanh-approximated GELU, stacked in :class:`aiayn.layers.Decoder`: the same code as the encoder-decoder's
decoder, without the encoder. With GPT-2's hyper-parameters (the ``gpt2*`` presets) the model computes
exactly what Hugging Face's ``GPT2LMHeadModel`` does; :mod:`aiayn.interop.gpt2` converts the weights.

The 2017-to-today choices are fields: ``positional`` (``learned`` as GPT-2, ``sinusoidal``, or inside
attention ``rotary``/``alibi``, which add nothing to the embeddings), ``num_kv_heads`` (grouped-query
attention), ``norm="rmsnorm"``, ``activation="swiglu"``, ``bias=False``, ``tie_output=False``. Together they
make a Llama (:mod:`aiayn.interop.llama` converts the weights).

Left padding: a batch of prompts of different lengths is padded on the left, so every prompt's next
token is in the last column. ``key_mask`` marks the real tokens, and each row's positions count from its
own first real token (as Hugging Face derives ``position_ids`` from the attention mask), so a padded row
computes exactly what the unpadded prompt does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .. import config as cfg
from ..attention import ATTENTION_KINDS
from ..decoding_state import DecodingState
from ..dropout import Dropout
from ..errors import AiaynError
from ..init import INIT_SCHEMES, init_weights
from ..layers import Decoder, DecoderLayer, check_block_fields, make_norm
from ..positional import RotaryEmbedding, SinusoidalPositionalEncoding, attention_positions_for
from .outputs import AttentionMaps


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT (defaults: GPT-2 small, 124M parameters).

    Attributes:
        vocab_size: V (set from the tokenizer at training time; 50257 for GPT-2's BPE).
        max_len: the longest context (GPT-2's ``n_positions``): the number of learned positions, and
            where generation slides its window. Other positional kinds can run past it.
        d_model: D, the width of every layer (``n_embd``).
        num_heads: H attention heads (``n_head``).
        d_ff: inner width of the feed-forward sublayer (4·D in GPT-2); None = the activation's rule
            (:func:`aiayn.layers.ffn_width`: 4·D, or Llama's 2/3·4·D rounded up to 256 when gated).
        num_layers: N decoder blocks (``n_layer``).
        dropout: on embeddings, sublayer outputs and inside the FFN (``embd_pdrop``/``resid_pdrop``).
        attention_dropout: on the attention weights (``attn_pdrop``); anything above 0 takes
            attention off the fused kernel on CPUs, so the CPU presets leave it at 0.
        activation: FFN activation; ``gelu_tanh`` is GPT-2's ``gelu_new``; ``swiglu`` is Llama's gated
            FFN.
        bias: biases in the linear maps and LayerNorms (Llama has none).
        layer_norm_eps: LayerNorm (or RMSNorm) epsilon.
        tie_output: the output projection reuses the token-embedding matrix (GPT-2 does).
        init: weight-initialisation scheme (see :mod:`aiayn.init`); ``gpt2`` scales the residual
            projections by 1/sqrt(2·num_layers).
        attention: ``dot`` or ``additive`` scoring.
        attention_window: truncated self-attention window, or None for full attention.
        positional: ``learned`` (GPT-2), ``sinusoidal``, ``rotary`` (RoPE) or ``alibi``.
        num_kv_heads: key/value heads (grouped-query attention; 1 = multi-query); None = num_heads.
        norm: ``layernorm`` (GPT-2) or ``rmsnorm`` (Llama).
        rotary_layout: with ``positional="rotary"``: ``half`` (GPT-NeoX, Llama) or ``interleaved``
            (RoFormer, GPT-J) channel pairs.
        rotary_base: with ``positional="rotary"``: the frequency base (Llama's ``rope_theta``).
    """

    vocab_size: int = 50257
    max_len: int = 1024
    d_model: int = 768
    num_heads: int = 12
    d_ff: int | None = 3072
    num_layers: int = 12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu_tanh"
    bias: bool = True
    layer_norm_eps: float = 1e-5
    tie_output: bool = True
    init: str = "gpt2"
    attention: str = "dot"
    attention_window: int | None = None
    positional: str = "learned"
    num_kv_heads: int | None = None
    norm: str = "layernorm"
    rotary_layout: str = "half"
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        check = cfg.check
        check(self.vocab_size > 0, f"vocab_size must be > 0, got {self.vocab_size}")
        check(self.max_len > 0, f"max_len must be > 0, got {self.max_len}")
        check(self.d_model > 0 and self.num_heads > 0, "d_model and num_heads must be > 0")
        check(
            self.d_model % self.num_heads == 0,
            f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})",
        )
        check_block_fields(self)
        check(self.num_layers > 0, f"num_layers must be > 0, got {self.num_layers}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(
            0.0 <= self.attention_dropout < 1.0,
            f"attention_dropout must be in [0, 1), got {self.attention_dropout}",
        )
        check(self.layer_norm_eps > 0, "layer_norm_eps must be > 0")
        check(self.init in INIT_SCHEMES, f"init must be one of {INIT_SCHEMES}")
        check(self.attention in ATTENTION_KINDS, f"attention must be one of {ATTENTION_KINDS}")
        check(
            self.attention_window is None or self.attention_window >= 0,
            "attention_window must be >= 0 or None",
        )


def _cpu(d_model: int, num_heads: int, num_layers: int, max_len: int) -> GPTConfig:
    """A CPU-sized preset: no dropout (small models trained briefly don't overfit), 4·D FFN."""
    return GPTConfig(
        vocab_size=256,
        max_len=max_len,
        d_model=d_model,
        num_heads=num_heads,
        d_ff=4 * d_model,
        num_layers=num_layers,
        dropout=0.0,
        attention_dropout=0.0,
    )


def _gpt2(d_model: int, num_heads: int, num_layers: int) -> GPTConfig:
    return GPTConfig(d_model=d_model, num_heads=num_heads, d_ff=4 * d_model, num_layers=num_layers)


#: CPU-sized presets (vocabulary set from the tokenizer at training time) and the four GPT-2 sizes.
#: ``char-cpu`` is what reached the lowest validation loss on Shakespeare in a fixed CPU-time budget
#: (benchmarks/bench_gpt.py): in ten minutes on two cores, a small model that takes many small
#: steps (4 layers of 128, 64-character windows, 768 characters per step) beats wider, deeper or
#: longer-context ones, which see fewer tokens and make fewer updates. ``nanogpt-cpu`` is the
#: configuration nanoGPT's CPU recipe trains, for comparison.
PRESETS: dict[str, GPTConfig] = {
    "micro": _cpu(d_model=64, num_heads=2, num_layers=2, max_len=128),
    "tiny": _cpu(d_model=128, num_heads=4, num_layers=4, max_len=256),
    # Rotary positions: 1.780 nats/char against learned positions' 1.823 after 3,000 steps on
    # Shakespeare, and on a text it was not chosen on (the English Bible, 2,000 steps, all 120k
    # held-out characters) 1.481 against 1.596, at the same step cost.
    "char-cpu": replace(
        _cpu(d_model=128, num_heads=4, num_layers=4, max_len=64), positional="rotary"
    ),
    "nanogpt-cpu": _cpu(d_model=192, num_heads=6, num_layers=6, max_len=256),
    "small": _cpu(d_model=384, num_heads=6, num_layers=6, max_len=256),
    "gpt2": _gpt2(d_model=768, num_heads=12, num_layers=12),
    "gpt2-medium": _gpt2(d_model=1024, num_heads=16, num_layers=24),
    "gpt2-large": _gpt2(d_model=1280, num_heads=20, num_layers=36),
    "gpt2-xl": _gpt2(d_model=1600, num_heads=25, num_layers=48),
}
cfg.register("gpt", GPTConfig, PRESETS)


def positions_from_mask(key_mask: Tensor) -> Tensor:
    """Per-row positions that count from each row's first real token (0 at padding).

    Args:
        key_mask: ``(B, S)`` True for real tokens (padding on the left).

    Returns:
        ``(B, S)`` long positions.
    """
    return (key_mask.long().cumsum(-1) - 1).clamp_(min=0)


class GPT(nn.Module):
    """Decoder-only Transformer language model; returns logits (the loss lives in training code).

    Args:
        config: the hyper-parameters.

    Shape:
        ids ``(B, T)``; key_mask ``(B, S)`` (S = cached + T) True for real tokens; positions
        ``(B, T)`` or ``(T,)``; logits ``(B, T, V)`` (``(B, 1, V)`` with ``last_only``).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        # Position tables look up any (B, T) position ids, which left-padded batches need (each row
        # counts from its own first real token): an nn.Embedding rather than a start offset.
        self.pos_emb: nn.Module | None = None
        if c.positional == "learned":
            self.pos_emb = nn.Embedding(c.max_len, c.d_model)
        elif c.positional.startswith("sinusoidal"):
            halves = c.positional == "sinusoidal_halves"
            self.pos_emb = SinusoidalPositionalEncoding(c.d_model, c.max_len, halves=halves)
        # rotary/ALiBi: one parameter-free module shared by every layer's self-attention.
        self.attn_pos = attention_positions_for(c)
        self.dropout = Dropout(c.dropout)
        self.decoder = Decoder(
            (
                DecoderLayer(
                    c.d_model,
                    c.num_heads,
                    c.d_ff,
                    dropout=c.dropout,
                    activation=c.activation,
                    norm_first=True,
                    bias=c.bias,
                    layer_norm_eps=c.layer_norm_eps,
                    cross_attention=False,
                    attention_dropout=c.attention_dropout,
                    attention=c.attention,
                    num_kv_heads=c.num_kv_heads,
                    norm=c.norm,
                    position=self.attn_pos,
                )
                for _ in range(c.num_layers)
            ),
            norm=make_norm(c.norm, c.d_model, c.layer_norm_eps, c.bias),
            attention_window=c.attention_window,
        )
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_weights(self, c.init, num_layers=c.num_layers)
        if c.tie_output:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self) -> DecodingState:
        """Empty per-layer KV caches for incremental decoding."""
        return self.decoder.new_cache()

    def forward(
        self,
        ids: Tensor,
        key_mask: Tensor | None = None,
        positions: Tensor | None = None,
        cache: DecodingState | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """Next-token logits at every position (or only the last).

        Args:
            ids: ``(B, T)`` token ids; with a cache, only the tokens not yet fed.
            key_mask: ``(B, S)`` True for real tokens, cached ones included; None when there is no
                padding. Right padding needs no mask (causality hides later pads); left padding does.
            positions: ``(B, T)`` or ``(T,)`` position ids. Default: from ``key_mask`` when given
                (counting from each row's first real token), else ``cached .. cached + T - 1``.
            cache: from :meth:`new_cache`, updated in place.
            last_only: compute logits for the last position only (prompt processing in generation:
                the output projection is the largest matmul of a small model).

        Returns:
            ``(B, T, V)`` logits, or ``(B, 1, V)`` with ``last_only``.

        Raises:
            AiaynError: the sequence runs past ``max_len`` learned positions.
        """
        x = self._hidden(ids, key_mask, positions, cache)  # (B, T, D)
        if last_only:
            x = x[:, -1:]  # (B, 1, D)
        return self.lm_head(x)  # (B, T, V)

    def logits_at(self, ids: Tensor, key_mask: Tensor | None = None, *, where: Tensor) -> Tensor:
        """:meth:`forward`'s logits (no cache) at the positions ``where`` ``(B, T)`` is True only,
        ``(N, V)`` in row-major order: training on padded rows skips the output layer's pads."""
        return self.lm_head(self._hidden(ids, key_mask, None, None)[where])

    def _hidden(
        self,
        ids: Tensor,
        key_mask: Tensor | None,
        positions: Tensor | None,
        cache: DecodingState | None,
    ) -> Tensor:
        """The last layer's states ``(B, T, D)`` that the output layer reads (see :meth:`forward`)."""
        T = ids.shape[1]
        if positions is None:
            if key_mask is not None:
                positions = positions_from_mask(key_mask)[:, -T:]  # (B, T)
            else:
                start = 0 if cache is None else cache.length
                self._check_context(start + T)
                positions = torch.arange(start, start + T, device=ids.device)  # (T,)
        elif isinstance(self.attn_pos, RotaryEmbedding):
            # Positions from the caller may lie past the rotary tables (ours never pass their column).
            self.attn_pos.reserve(int(positions.max()) + 1)
        x = self._embed(ids, positions)  # (B, T, D)
        if self.training:
            x = self.dropout(x)
        x, _, _ = self.decoder(x, key_mask=key_mask, cache=cache, positions=positions)
        return x

    def _check_context(self, length: int) -> None:
        if length > self.config.max_len and self.config.positional == "learned":
            raise AiaynError(
                f"sequence of {length} tokens is longer than the model's context of "
                f"{self.config.max_len} positions"
            )

    def _embed(self, ids: Tensor, positions: Tensor) -> Tensor:
        """Token embeddings ``(B, T, D)``, plus the position table's rows when there is one."""
        x = self.tok_emb(ids)  # (B, T, D)
        if isinstance(self.pos_emb, nn.Embedding):
            return x + self.pos_emb(positions)
        if self.pos_emb is not None:
            return self.pos_emb(x, positions=positions)
        return x  # rotary/ALiBi: positions act inside attention

    @torch.inference_mode()
    def attention_maps(self, ids: Tensor) -> AttentionMaps:
        """Causal self-attention weights of every layer over ``ids (B, T)`` (no padding, no
        cache), each ``(B, H, T, T)``, in ``decoder_self`` (takes the reference path, which
        returns weights)."""
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        _, weights, _ = self.decoder(self._embed(ids, positions), need_weights=True)
        return AttentionMaps(decoder_self=weights)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Distinct parameters (a tied matrix counts once); ``non_embedding`` leaves out positions.

        The token embedding stays in with ``non_embedding`` because, tied, it is also the output
        projection, whose matmul costs compute (the convention of nanoGPT's MFU estimate).
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.pos_emb, nn.Embedding):
            return n - self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, context: int) -> float:
        """Training FLOPs per token: ``6·N + 12·layers·D·T`` (PaLM appendix B; nanoGPT's MFU)."""
        c = self.config
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.num_layers * c.d_model * context
