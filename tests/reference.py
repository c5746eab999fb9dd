"""Copy aiayn weights into torch.nn reference modules, converting conventions at this one boundary."""

from __future__ import annotations

import torch
from torch import nn

from aiayn.attention import MultiHeadAttention
from aiayn.layers import DecoderLayer, EncoderLayer, FeedForward


@torch.no_grad()
def copy_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    ref.in_proj_weight.copy_(
        torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
    )
    ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    ref.out_proj.weight.copy_(ours.out_proj.weight)
    ref.out_proj.bias.copy_(ours.out_proj.bias)


@torch.no_grad()
def copy_ffn(ours: FeedForward, ref: nn.Module) -> None:
    ref.linear1.load_state_dict(ours.linear1.state_dict())
    ref.linear2.load_state_dict(ours.linear2.state_dict())


@torch.no_grad()
def copy_encoder_layer(ours: EncoderLayer, ref: nn.TransformerEncoderLayer) -> None:
    copy_mha(ours.self_attn, ref.self_attn)
    copy_ffn(ours.ffn, ref)
    ref.norm1.load_state_dict(ours.norm1.state_dict())
    ref.norm2.load_state_dict(ours.norm2.state_dict())


@torch.no_grad()
def copy_decoder_layer(ours: DecoderLayer, ref: nn.TransformerDecoderLayer) -> None:
    copy_mha(ours.self_attn, ref.self_attn)
    copy_mha(ours.cross_attn, ref.multihead_attn)
    copy_ffn(ours.ffn, ref)
    for name in ("norm1", "norm2", "norm3"):
        getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())


def randomize_(module: nn.Module, std: float = 0.2) -> nn.Module:
    """Random values in every parameter (LayerNorm gains near 1) so parity tests see no trivial zeros."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
        for m in module.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.add_(1.0)
    return module


def tiny_marian(vocab: int = 60, pad: int = 59, eos: int = 0, randomized: bool = True, **extra):
    """A small Hugging Face ``MarianMTModel`` (2+2 layers × 32) in eval mode. ``randomized``: weights
    drawn wider than Marian's init (the sinusoidal positions kept) and a non-zero output bias, so
    parity tests see no near-zero logits."""
    import transformers

    config = transformers.MarianConfig(
        vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=pad, eos_token_id=eos,
        decoder_start_token_id=pad, scale_embedding=True, **extra,
    )  # fmt: skip
    hf = transformers.MarianMTModel(config).eval()
    if randomized:
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "embed_positions" not in name:
                    p.normal_(0, 0.2)
            hf.final_logits_bias.normal_(0, 0.5)
    return hf
