"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Shapes: B batch, S source length, T target length, D d_model, V vocabulary.

    source ids -> embedding · sqrt(D) + positions -> N encoder layers -> memory
    target ids -> embedding · sqrt(D) + positions -> N decoder layers (masked self-attn, cross-attn to
                  memory, FFN) -> Linear -> logits over the target vocabulary (softmax in the loss)

With ``positional="rotary"`` or ``"alibi"`` nothing is added to the embeddings: the encoder's and the
decoder's self-attentions apply the positions (one shared, parameter-free module); cross-attention
has none.

Conventions: the source is ``tokens + <eos>``; the decoder input is ``<bos> + tokens`` and the target
``tokens + <eos>`` (teacher forcing). Padding is on the right, so the causal decoder never needs a target
padding mask: a real position can't see the later pads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from .. import config as cfg
from ..attention import ATTENTION_KINDS
from ..decoding_state import DecodingState
from ..dropout import Dropout
from ..init import INIT_SCHEMES, init_weights
from ..layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    check_block_fields,
    make_norm,
)
from ..masks import make_padding_mask
from ..positional import attention_positions_for, make_positional
from .outputs import AttentionMaps


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the encoder-decoder Transformer (names as in the paper's Table 3).

    Attributes:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        d_model: D, width of every layer.
        num_heads: H attention heads.
        d_ff: inner width of the feed-forward sublayer; None = the activation's rule
            (:func:`aiayn.layers.ffn_width`: 4·D, or Llama's 2/3·4·D rounded up to 256 when gated).
        num_encoder_layers: N on the encoder side.
        num_decoder_layers: N on the decoder side.
        dropout: P_drop, on embeddings+positions, sublayer outputs and inside the FFN.
        attention_dropout: dropout on attention weights (not in the paper; torch.nn uses P_drop).
        activation: FFN activation (``relu`` in the paper; ``swiglu``/``geglu`` make it gated).
        norm_first: pre-norm instead of the paper's post-norm.
        bias: biases in the linear maps and LayerNorms.
        layer_norm_eps: LayerNorm (or RMSNorm) epsilon.
        max_len: positions to prepare (learned positions cannot go beyond it).
        positional: ``sinusoidal`` (the paper), ``learned``, or, inside self-attention, ``rotary``
            (RoPE) or ``alibi``.
        attention: ``dot`` (scaled dot-product) or ``additive``.
        attention_window: truncated self-attention window, or None for full attention.
        share_embeddings: one embedding matrix for source and target (needs one shared vocabulary).
        tie_output: the output projection reuses the target embedding matrix (paper section 3.4).
        output_bias: a bias on the output projection (Marian's ``final_logits_bias``).
        scale_embeddings: multiply embeddings by sqrt(d_model) (paper section 3.4).
        final_norm: a LayerNorm after each stack (torch's nn.Transformer has it; pre-norm needs it).
        init: weight-initialisation scheme (see :mod:`aiayn.init`).
        pad_id: padding token id (its embedding gets no gradient).
        num_kv_heads: key/value heads (grouped-query attention; 1 = multi-query); None = num_heads.
        norm: ``layernorm`` (the paper) or ``rmsnorm``.
        rotary_layout: with ``positional="rotary"``: ``half`` (GPT-NeoX, Llama) or ``interleaved``
            (RoFormer, GPT-J) channel pairs.
        rotary_base: with ``positional="rotary"``: the frequency base (10000 in RoFormer).
    """

    src_vocab_size: int = 37000
    tgt_vocab_size: int = 37000
    d_model: int = 512
    num_heads: int = 8
    d_ff: int | None = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "relu"
    norm_first: bool = False
    bias: bool = True
    layer_norm_eps: float = 1e-5
    max_len: int = 1024
    positional: str = "sinusoidal"
    attention: str = "dot"
    attention_window: int | None = None
    share_embeddings: bool = False
    tie_output: bool = True
    output_bias: bool = False
    scale_embeddings: bool = True
    final_norm: bool = True
    init: str = "xavier"
    pad_id: int = 0
    num_kv_heads: int | None = None
    norm: str = "layernorm"
    rotary_layout: str = "half"
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        check = cfg.check
        check(self.src_vocab_size > 0 and self.tgt_vocab_size > 0, "vocabulary sizes must be > 0")
        check(self.d_model > 0 and self.num_heads > 0, "d_model and num_heads must be > 0")
        check(self.d_model % self.num_heads == 0, "d_model must be divisible by num_heads")
        check_block_fields(self)
        check(self.num_encoder_layers >= 0 and self.num_decoder_layers > 0, "bad layer counts")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.attention_dropout < 1.0, "attention_dropout must be in [0, 1)")
        check(self.attention in ATTENTION_KINDS, f"attention must be one of {ATTENTION_KINDS}")
        check(
            self.attention_window is None or self.attention_window >= 0,
            "attention_window must be >= 0 or None",
        )
        check(self.max_len > 0, "max_len must be > 0")
        check(self.init in INIT_SCHEMES, f"init must be one of {INIT_SCHEMES}")
        check(
            not self.share_embeddings or self.src_vocab_size == self.tgt_vocab_size,
            "share_embeddings needs src_vocab_size == tgt_vocab_size",
        )


#: The paper's Table 3 (base, big) and CPU-sized presets. Vocab sizes are set from the tokenizer at
#: training time; 37000 is the paper's shared English-German BPE vocabulary.
PRESETS: dict[str, TransformerConfig] = {
    "base": TransformerConfig(share_embeddings=True),
    "big": TransformerConfig(
        d_model=1024, num_heads=16, d_ff=4096, dropout=0.3, share_embeddings=True
    ),
    "small": TransformerConfig(
        d_model=256, num_heads=4, d_ff=1024, num_encoder_layers=3, num_decoder_layers=3
    ),
    "tiny": TransformerConfig(
        d_model=128, num_heads=4, d_ff=512, num_encoder_layers=2, num_decoder_layers=2
    ),
    # The built-in zh-en demo: the phrasebook's grammar is learned in a few hundred steps by a small
    # model without dropout (it never sees a sentence twice in that time, so it cannot overfit).
    "demo": TransformerConfig(
        d_model=128, num_heads=4, d_ff=512, num_encoder_layers=2, num_decoder_layers=2, dropout=0.0
    ),
    "micro": TransformerConfig(
        d_model=64, num_heads=2, d_ff=128, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0
    ),
}
cfg.register("transformer", TransformerConfig, PRESETS)


class Transformer(nn.Module):
    """Encoder-decoder Transformer.

    Args:
        config: the hyper-parameters.

    Shape:
        src ``(B, S)`` and tgt ``(B, T)`` token ids; ``src_key_mask (B, S)`` True for real tokens
        (derived from ``pad_id`` when omitted); logits ``(B, T, V)``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_emb = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_emb = (
            self.src_emb
            if c.share_embeddings
            else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        )
        # None with rotary/ALiBi, whose positions live in self-attention (attn_pos) instead.
        self.src_pos = make_positional(c.positional, c.d_model, c.max_len)
        self.tgt_pos = make_positional(c.positional, c.d_model, c.max_len)
        self.attn_pos = attention_positions_for(c)
        self.dropout = Dropout(c.dropout)
        layer_args = dict(
            d_model=c.d_model,
            num_heads=c.num_heads,
            d_ff=c.d_ff,
            dropout=c.dropout,
            activation=c.activation,
            norm_first=c.norm_first,
            bias=c.bias,
            layer_norm_eps=c.layer_norm_eps,
            attention=c.attention,
            attention_dropout=c.attention_dropout,
            num_kv_heads=c.num_kv_heads,
            norm=c.norm,
            position=self.attn_pos,
        )
        self.encoder = Encoder(
            (EncoderLayer(**layer_args) for _ in range(c.num_encoder_layers)),
            norm=self._final_norm(),
            attention_window=c.attention_window,
        )
        self.decoder = Decoder(
            (DecoderLayer(**layer_args) for _ in range(c.num_decoder_layers)),
            norm=self._final_norm(),
            attention_window=c.attention_window,
        )
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
        init_weights(self, c.init, num_layers=c.num_decoder_layers)
        if c.tie_output:
            self.lm_head.weight = self.tgt_emb.weight
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embeddings else 1.0

    def _final_norm(self) -> nn.Module | None:
        c = self.config
        if not c.final_norm:
            return None
        return make_norm(c.norm, c.d_model, c.layer_norm_eps, c.bias)

    def embed_source(self, src: Tensor) -> Tensor:
        """``(B, S)`` ids -> ``(B, S, D)``: embedding · sqrt(D) + position, then dropout (section 3.4)."""
        x = self.src_emb(src) * self.embed_scale  # (B, S, D)
        return self.dropout(x if self.src_pos is None else self.src_pos(x))

    def embed_target(self, tgt: Tensor, start: int = 0) -> Tensor:
        """``(B, T)`` ids at positions ``start..start+T-1`` -> ``(B, T, D)``."""
        x = self.tgt_emb(tgt) * self.embed_scale  # (B, T, D)
        return self.dropout(x if self.tgt_pos is None else self.tgt_pos(x, start))

    def source_mask(self, src: Tensor, src_key_mask: Tensor | None) -> Tensor:
        return make_padding_mask(src, self.config.pad_id) if src_key_mask is None else src_key_mask

    def encode(self, src: Tensor, src_key_mask: Tensor | None = None) -> Tensor:
        """Source ids ``(B, S)`` -> memory ``(B, S, D)``."""
        memory, _ = self.encoder(self.embed_source(src), self.source_mask(src, src_key_mask))
        return memory

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor | None,
        src_key_mask: Tensor | None,
        cache: DecodingState | None = None,
    ) -> Tensor:
        """Decoder pass to logits.

        Args:
            tgt: ``(B, T)`` decoder input ids (``<bos>`` + prefix); with a cache, only the new tokens.
            memory: ``(B, S, D)`` from :meth:`encode`; may be None once the cache holds the source.
            src_key_mask: ``(B, S)`` True for real source tokens; None when all are real.
            cache: from :meth:`new_cache`; updated in place. With a cache, ``memory`` and
                ``src_key_mask`` may hold one row per source for K consecutive rows of ``tgt``
                (beam search): the K rows then share the source's cross-attention keys/values.

        Returns:
            ``(B, T, V)`` logits.
        """
        start = 0 if cache is None else cache.length
        x, _, _ = self.decoder(
            self.embed_target(tgt, start), memory, memory_key_mask=src_key_mask, cache=cache
        )
        return self.lm_head(x)

    def forward(self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced pass: source ``(B, S)``, decoder input ``(B, T)`` -> logits ``(B, T, V)``."""
        src_key_mask = self.source_mask(src, src_key_mask)
        return self.decode(tgt, self.encode(src, src_key_mask), src_key_mask)

    def logits_at(
        self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None = None, *, where: Tensor
    ) -> Tensor:
        """:meth:`forward`'s logits at the positions ``where`` ``(B, T)`` is True only, ``(N, V)``
        in row-major order. Training asks for the real target tokens: the output layer, the largest
        matrix product at a realistic vocabulary, then skips the padding."""
        src_key_mask = self.source_mask(src, src_key_mask)
        memory = self.encode(src, src_key_mask)
        x, _, _ = self.decoder(self.embed_target(tgt), memory, memory_key_mask=src_key_mask)
        return self.lm_head(x[where])

    def new_cache(self) -> DecodingState:
        """Empty per-layer caches for incremental decoding."""
        return self.decoder.new_cache()

    def attention_maps(
        self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None = None
    ) -> AttentionMaps:
        """All attention weights (encoder self, decoder self, cross) for a teacher-forced pass."""
        src_key_mask = self.source_mask(src, src_key_mask)
        memory, enc_w = self.encoder(self.embed_source(src), src_key_mask, need_weights=True)
        _, dec_w, cross_w = self.decoder(
            self.embed_target(tgt), memory, memory_key_mask=src_key_mask, need_weights=True
        )
        return AttentionMaps(encoder=enc_w, decoder_self=dec_w, cross=cross_w)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())
