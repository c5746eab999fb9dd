"""BERT (Devlin et al., 2019): the Transformer's encoder, trained without labels by masking words.

Shapes: B batch, T tokens, D d_model, H heads, V vocabulary, N selected (masked) positions.

    ids -> token + position + segment embeddings -> LayerNorm -> dropout
        -> N post-norm encoder layers (GELU FFN, LayerNorm eps 1e-12)   = hidden states (B, T, D)
        -> pooler: tanh(Linear(hidden[:, 0]))                           = sentence vector (B, D)
        -> masked-LM head: Linear -> GELU -> LayerNorm -> Linear tied to the token embedding (+ bias)

The encoder layers are :class:`aiayn.layers.EncoderLayer` with ``norm_first=False`` (the paper's
post-norm), the same blocks the translation model uses. The only BERT-specific parts are the three
embeddings summed and normalised, the pooler and the masked-LM head.

Token ids are the model's own: a Hugging Face BERT vocabulary puts ``[PAD]=0 [UNK]=100 [CLS]=101
[SEP]=102 [MASK]=103``, and an aiayn-trained WordPiece vocabulary has its own order (see
:mod:`aiayn.data.wordpiece`). The model only needs ``pad_id`` (to derive a key mask when none is given);
everything else lives in the tokenizer.

Differences from Hugging Face's ``BertModel`` that never change outputs in eval mode: the FFN of
:class:`~aiayn.layers.FeedForward` applies dropout after the activation too (training only), and a batch
without padding skips the attention mask (so attention takes the unmasked fused kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import config as cfg
from ..attention import ATTENTION_KINDS
from ..dropout import Dropout
from ..init import INIT_SCHEMES, init_weights
from ..layers import Encoder, EncoderLayer, check_block_fields, get_activation, make_norm
from ..masks import make_padding_mask
from ..positional import attention_positions_for, make_positional
from .outputs import AttentionMaps

__all__ = [
    "PRESETS",
    "BertConfig",
    "BertForMaskedLM",
    "BertModel",
    "MaskedLMHead",
    "mean_pool",
]


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of BERT (defaults: BERT-base, uncased vocabulary).

    Attributes:
        vocab_size: V.
        d_model: D (``hidden_size``).
        num_heads: H.
        d_ff: FFN inner width (``intermediate_size``); None = the activation's rule
            (:func:`aiayn.layers.ffn_width`).
        num_layers: encoder layers.
        max_len: learned positions (``max_position_embeddings``).
        type_vocab_size: segments (2: sentence A and sentence B).
        dropout: on embeddings, sublayer outputs and inside the FFN (``hidden_dropout_prob``).
        attention_dropout: on attention weights (``attention_probs_dropout_prob``).
        activation: FFN and MLM-head activation; ``gelu`` is BERT's exact erf GELU. A gated one
            (``swiglu``, ``geglu``) gates the FFN; the MLM head then uses its gate's function.
        layer_norm_eps: LayerNorm (or RMSNorm) epsilon (1e-12 in BERT).
        pooler: include the ``[CLS]`` pooler (``tanh(W h_0 + b)``).
        init: weight initialisation (``bert``: N(0, 0.02)).
        pad_id: padding id (no gradient to its embedding; default key mask).
        positional: ``learned`` (BERT), ``sinusoidal``, or inside self-attention ``rotary`` or
            ``alibi`` (symmetric, as suits an encoder); the last two add no position embedding.
        num_kv_heads: key/value heads (grouped-query attention); None = num_heads.
        norm: ``layernorm`` (BERT) or ``rmsnorm``, for every normalisation in the model.
        rotary_layout: with ``positional="rotary"``: ``half`` or ``interleaved`` channel pairs.
        rotary_base: with ``positional="rotary"``: the frequency base.
    """

    vocab_size: int = 30522
    d_model: int = 768
    num_heads: int = 12
    d_ff: int | None = 3072
    num_layers: int = 12
    max_len: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    pooler: bool = True
    attention: str = "dot"
    attention_window: int | None = None
    init: str = "bert"
    pad_id: int = 0
    positional: str = "learned"
    num_kv_heads: int | None = None
    norm: str = "layernorm"
    rotary_layout: str = "half"
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        check = cfg.check
        check(self.vocab_size > 0, f"vocab_size must be > 0, got {self.vocab_size}")
        check(self.d_model > 0 and self.num_heads > 0, "d_model and num_heads must be > 0")
        check(self.d_model % self.num_heads == 0, "d_model must be divisible by num_heads")
        check_block_fields(self)
        check(self.num_layers > 0, "num_layers must be > 0")
        check(self.max_len > 0, "max_len must be > 0")
        check(self.type_vocab_size > 0, "type_vocab_size must be > 0")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.attention_dropout < 1.0, "attention_dropout must be in [0, 1)")
        check(self.layer_norm_eps > 0, "layer_norm_eps must be > 0")
        check(self.attention in ATTENTION_KINDS, f"attention must be one of {ATTENTION_KINDS}")
        check(
            self.attention_window is None or self.attention_window >= 0,
            "attention_window must be >= 0 or None",
        )
        check(self.init in INIT_SCHEMES, f"init must be one of {INIT_SCHEMES}")
        check(0 <= self.pad_id < self.vocab_size, "pad_id must be a valid token id")


#: BERT-base/large (Devlin et al., Table 1 footnotes), MiniLM-L6-H384 (all-MiniLM-L6-v2's shape) and
#: CPU-sized presets. ``vocab_size`` is set from the tokenizer when training.
PRESETS: dict[str, BertConfig] = {
    "base": BertConfig(),
    "large": BertConfig(d_model=1024, num_heads=16, d_ff=4096, num_layers=24),
    "minilm": BertConfig(d_model=384, num_heads=12, d_ff=1536, num_layers=6),
    "small": BertConfig(d_model=256, num_heads=4, d_ff=1024, num_layers=4, max_len=256),
    # The CPU presets drop attention-weight dropout: it forces attention off the fused kernel.
    "tiny": BertConfig(
        d_model=128, num_heads=4, d_ff=512, num_layers=2, max_len=128, attention_dropout=0.0
    ),
    "micro": BertConfig(
        d_model=64,
        num_heads=2,
        d_ff=128,
        num_layers=2,
        max_len=64,
        dropout=0.0,
        attention_dropout=0.0,
    ),
}
cfg.register("bert", BertConfig, PRESETS)


def mean_pool(hidden: Tensor, key_mask: Tensor | None) -> Tensor:
    """Average of the real tokens' vectors (sentence-transformers' "mean pooling").

    Args:
        hidden: ``(B, T, D)`` hidden states.
        key_mask: ``(B, T)`` True at real tokens; None = every token is real.

    Returns:
        ``(B, D)``. A row without real tokens gives zeros.
    """
    if key_mask is None:
        return hidden.mean(dim=1)
    weights = key_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)  # (B, D)
    # clamp as sentence-transformers does: an all-padding row gives 0 / 1e-9 = 0, not NaN.
    return summed / weights.sum(dim=1).clamp(min=1e-9)


class BertModel(nn.Module):
    """The BERT encoder: embeddings, post-norm encoder stack, optional pooler.

    Args:
        config: the hyper-parameters.

    Shape:
        input_ids ``(B, T)``; key_mask ``(B, T)`` True at real tokens; segment_ids ``(B, T)`` in
        ``[0, type_vocab_size)``; output ``(B, T, D)``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        # None with rotary/ALiBi, whose positions live in self-attention (attn_pos) instead.
        self.pos_emb = make_positional(c.positional, c.d_model, c.max_len)
        self.attn_pos = attention_positions_for(c)
        self.seg_emb = nn.Embedding(c.type_vocab_size, c.d_model)
        self.emb_norm = make_norm(c.norm, c.d_model, c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)
        self.encoder = Encoder(
            (
                EncoderLayer(
                    d_model=c.d_model,
                    num_heads=c.num_heads,
                    d_ff=c.d_ff,
                    dropout=c.dropout,
                    activation=c.activation,
                    norm_first=False,
                    layer_norm_eps=c.layer_norm_eps,
                    attention_dropout=c.attention_dropout,
                    attention=c.attention,
                    num_kv_heads=c.num_kv_heads,
                    norm=c.norm,
                    position=self.attn_pos,
                )
                for _ in range(c.num_layers)
            ),
            attention_window=c.attention_window,
        )
        self.pooler = nn.Linear(c.d_model, c.d_model) if c.pooler else None
        init_weights(self, c.init, num_layers=c.num_layers)

    def embed(self, input_ids: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """``(B, T)`` ids -> ``(B, T, D)``: token + position + segment, LayerNorm, dropout."""
        x = self.tok_emb(input_ids)  # (B, T, D)
        if segment_ids is None:
            x = x + self.seg_emb.weight[0]  # every token in segment A
        else:
            x = x + self.seg_emb(segment_ids)
        if self.pos_emb is not None:
            x = self.pos_emb(x)
        return self.dropout(self.emb_norm(x))

    def key_mask(self, input_ids: Tensor, key_mask: Tensor | None) -> Tensor | None:
        """The key mask to attend with: given or derived from ``pad_id``; None when nothing is padding.

        Dropping an all-True mask lets attention take the unmasked fused kernel.
        """
        if key_mask is None:
            key_mask = make_padding_mask(input_ids, self.config.pad_id)
        return None if bool(key_mask.all()) else key_mask

    def forward(
        self,
        input_ids: Tensor,
        key_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> Tensor:
        """Hidden states of the last layer.

        Args:
            input_ids: ``(B, T)`` token ids.
            key_mask: ``(B, T)`` True at real tokens; default ``input_ids != pad_id``.
            segment_ids: ``(B, T)`` segment (token type) ids; default all 0.

        Returns:
            ``(B, T, D)``.
        """
        hidden, _ = self.encoder(
            self.embed(input_ids, segment_ids), self.key_mask(input_ids, key_mask)
        )
        return hidden

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT's pooler: ``tanh(W h_[CLS] + b)``, ``(B, T, D)`` -> ``(B, D)``.

        Raises:
            ValueError: the model was built with ``pooler=False``.
        """
        if self.pooler is None:
            raise ValueError("this BERT has no pooler (config.pooler is False)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def attention_maps(
        self,
        input_ids: Tensor,
        key_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> AttentionMaps:
        """Self-attention weights of every layer, each ``(B, H, T, T)``, in ``encoder`` (takes the
        reference path)."""
        _, weights = self.encoder(
            self.embed(input_ids, segment_ids),
            self.key_mask(input_ids, key_mask),
            need_weights=True,
        )
        return AttentionMaps(encoder=weights)


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head: ``LayerNorm(act(W h + b)) E^T + b_V``, E the token embedding.

    Args:
        config: the hyper-parameters.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        c = config
        self.dense = nn.Linear(c.d_model, c.d_model)
        self.activation = get_activation(c.activation)
        self.norm = make_norm(c.norm, c.d_model, c.layer_norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size)  # weight tied by the owner

    def forward(self, hidden: Tensor) -> Tensor:
        """``(..., D)`` -> ``(..., V)`` logits."""
        return self.lm_head(self.norm(self.activation(self.dense(hidden))))


class BertForMaskedLM(nn.Module):
    """BERT with the masked-LM head (model kind ``bert``); ``.bert`` is the plain encoder.

    The head's output matrix is the token embedding matrix (tied, as in BERT), with its own bias.

    Args:
        config: the hyper-parameters.

    Shape:
        input_ids ``(B, T)``; logits ``(B, T, V)``; :meth:`logits_at` ``(N, V)`` for ``N`` selected
        positions.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config)
        init_weights(self.mlm, config.init)
        self.mlm.lm_head.weight = self.bert.tok_emb.weight

    def forward(
        self,
        input_ids: Tensor,
        key_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> Tensor:
        """Masked-LM logits ``(B, T, V)``.

        Args:
            input_ids: ``(B, T)`` token ids (with ``[MASK]`` where words are hidden).
            key_mask: ``(B, T)`` True at real tokens; default ``input_ids != pad_id``.
            segment_ids: ``(B, T)`` segment ids; default all 0.
        """
        return self.mlm(self.bert(input_ids, key_mask, segment_ids))

    def logits_at(
        self,
        input_ids: Tensor,
        key_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        *,
        where: Tensor,
    ) -> Tensor:
        """:meth:`forward`'s logits at the positions ``where`` ``(B, T)`` is True only, ``(N, V)``
        in row-major order. Training scores the ~15% masked positions only, which saves most of
        the ``D x V`` matmul."""
        return self.mlm(self.bert(input_ids, key_mask, segment_ids)[where])

    def attention_maps(
        self,
        input_ids: Tensor,
        key_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
    ) -> AttentionMaps:
        """The encoder's attention weights (see :meth:`BertModel.attention_maps`)."""
        return self.bert.attention_maps(input_ids, key_mask, segment_ids)
