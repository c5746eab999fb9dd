"""The baseline the paper replaced: an LSTM encoder-decoder with attention (Luong et al., 2015).

Shapes: B batch, S source length, T target length, D hidden size, V vocabulary.

    source ids -> embedding -> bidirectional LSTM (D/2 per direction) -> memory (B, S, D)
    target ids -> embedding -> LSTM, started from the encoder's final state, one position after
                  another -> at each position: dot-product attention over memory (a "general"
                  score through ``attn_proj``) -> tanh(W [h; context]) -> logits

The encoder-decoder interface is the :class:`~aiayn.models.seq2seq.Transformer`'s (``model(src,
tgt_in, src_key_mask) -> logits``), so the same loss, greedy decoder and experiments run both. The
point of the comparison (the notes' central argument): the LSTM must walk its sequence one step at
a time (no parallelism across positions in training) and carries information between distant
tokens through a chain of S state updates, where self-attention connects any two positions in one
step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attention import scaled_dot_product_attention
from ..dropout import Dropout
from ..masks import make_padding_mask


@dataclass(frozen=True)
class RNNConfig:
    """Hyper-parameters of the LSTM encoder-decoder.

    Attributes:
        src_vocab_size: source vocabulary size.
        tgt_vocab_size: target vocabulary size.
        d_model: D, embedding and hidden size (each encoder direction has D/2).
        num_layers: LSTM layers on each side.
        dropout: between LSTM layers and on the attentional output.
        pad_id: padding token id.
    """

    src_vocab_size: int = 1000
    tgt_vocab_size: int = 1000
    d_model: int = 64
    num_layers: int = 2
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % 2:
            raise ValueError(f"d_model must be even (two encoder directions), got {self.d_model}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")


class RNNSeq2Seq(nn.Module):
    """LSTM encoder-decoder with attention.

    Args:
        config: the hyper-parameters.

    Shape:
        src ``(B, S)``, tgt ``(B, T)`` ids; ``src_key_mask (B, S)``; logits ``(B, T, V)``.
    """

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = c = config
        D, L = c.d_model, c.num_layers
        drop = c.dropout if L > 1 else 0.0
        self.src_emb = nn.Embedding(c.src_vocab_size, D, padding_idx=c.pad_id)
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, D, padding_idx=c.pad_id)
        self.encoder = nn.LSTM(D, D // 2, L, batch_first=True, bidirectional=True, dropout=drop)
        self.decoder = nn.LSTM(D, D, L, batch_first=True, dropout=drop)
        self.attn_proj = nn.Linear(D, D, bias=False)  # Luong's "general" score h^T W m
        self.combine = nn.Linear(2 * D, D)
        self.dropout = Dropout(c.dropout)
        self.lm_head = nn.Linear(D, c.tgt_vocab_size)

    def encode(self, src: Tensor, src_key_mask: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(B, S)`` -> memory ``(B, S, D)`` and the decoder's initial ``(h, c)``, each ``(L, B, D)``."""
        lengths = src_key_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.src_emb(src), lengths, batch_first=True, enforce_sorted=False
        )
        out, (h, c) = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=src.shape[1]
        )  # (B, S, D)
        L, B = self.config.num_layers, src.shape[0]
        # (2L, B, D/2) -> (L, B, D): join each layer's forward and backward final states.
        h = h.view(L, 2, B, -1).transpose(1, 2).reshape(L, B, -1)
        c = c.view(L, 2, B, -1).transpose(1, 2).reshape(L, B, -1)
        return memory, (h.contiguous(), c.contiguous())

    def forward(self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced pass: ``(B, S)``, ``(B, T)`` -> logits ``(B, T, V)``."""
        return self.lm_head(self.dropout(self._states(src, tgt, src_key_mask)))

    def logits_at(
        self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None = None, *, where: Tensor
    ) -> Tensor:
        """The logits at the positions ``where`` ``(B, T)`` is True only, ``(N, V)`` (as the
        Transformer's ``logits_at``)."""
        return self.lm_head(self.dropout(self._states(src, tgt, src_key_mask)[where]))

    def _states(self, src: Tensor, tgt: Tensor, src_key_mask: Tensor | None) -> Tensor:
        """The attentional states ``(B, T, D)`` the output layer reads."""
        if src_key_mask is None:
            src_key_mask = make_padding_mask(src, self.config.pad_id)
        memory, state = self.encode(src, src_key_mask)
        # The decoder LSTM runs over the whole target in one cuDNN/oneDNN call, but inside it the
        # positions are still sequential: step t needs step t-1's state.
        h, _ = self.decoder(self.tgt_emb(tgt), state)  # (B, T, D)
        keys = self.attn_proj(memory)  # (B, S, D)
        context, _ = scaled_dot_product_attention(
            h[:, None],
            keys[:, None],
            memory[:, None],
            attn_mask=src_key_mask[:, None, None, :],
            scale=1.0,
        )  # (B, 1, T, D)
        return torch.tanh(self.combine(torch.cat([h, context[:, 0]], dim=-1)))  # (B, T, D)
