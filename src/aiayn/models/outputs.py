"""What every model returns beside its logits: one shape of attention maps for all four kinds.

A model fills the fields it has: the Transformer all three, GPT ``decoder_self``, BERT and ViT
``encoder``. ``aiayn attention``, ``aiayn serve`` and the experiments read them by name, so none of
them needs to know a model's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class AttentionMaps:
    """Every attention weight of one forward pass, per layer, each ``(B, H, query, key)``.

    Attributes:
        encoder: bidirectional self-attention (the Transformer's encoder, BERT, ViT).
        decoder_self: causal self-attention (the Transformer's decoder, GPT).
        cross: the decoder's attention to the encoder output (the Transformer only).
    """

    encoder: list[Tensor] = field(default_factory=list)
    decoder_self: list[Tensor] = field(default_factory=list)
    cross: list[Tensor] = field(default_factory=list)

    @property
    def self_attention(self) -> list[Tensor]:
        """The self-attention of a one-stack model (GPT: causal; BERT, ViT: bidirectional)."""
        return self.decoder_self or self.encoder
