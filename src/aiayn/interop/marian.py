"""Hugging Face MarianMT <-> aiayn Transformer, weight for weight.

Marian (the Opus-MT models) is the paper's encoder-decoder with a few choices of its own, each a field of
:class:`~aiayn.models.seq2seq.TransformerConfig`: sinusoids laid out as ``[sin..., cos...]``
(``positional="sinusoidal_halves"``), SiLU ("swish") in the FFN, no final LayerNorm after the stacks,
a bias on the output layer (``final_logits_bias``), and ``<pad>`` as the decoder's start token. With
those set, aiayn computes the same function; the tests check logits and generated tokens.

Names map one to one: ``self_attn``/``encoder_attn`` -> ``self_attn``/``cross_attn``,
``fc1``/``fc2`` -> ``ffn.linear1``/``ffn.linear2``, ``*_layer_norm`` -> ``norm1..3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from ..errors import ConfigError
from ..models.seq2seq import Transformer, TransformerConfig

_ACT_TO_HF = {"relu": "relu", "gelu": "gelu", "silu": "swish"}
_ACT_FROM_HF = {"relu": "relu", "gelu": "gelu", "swish": "silu", "silu": "silu"}


def config_from_marian(hf_config: Any) -> TransformerConfig:
    """The aiayn config that computes what a ``MarianConfig`` describes."""
    if hf_config.encoder_attention_heads != hf_config.decoder_attention_heads:
        raise ConfigError("aiayn uses one head count for encoder and decoder")
    if hf_config.encoder_ffn_dim != hf_config.decoder_ffn_dim:
        raise ConfigError("aiayn uses one d_ff for encoder and decoder")
    if hf_config.activation_function not in _ACT_FROM_HF:
        raise ConfigError(f"unsupported Marian activation {hf_config.activation_function!r}")
    shared = bool(getattr(hf_config, "share_encoder_decoder_embeddings", True))
    tgt_vocab = hf_config.vocab_size if shared else hf_config.decoder_vocab_size
    return TransformerConfig(
        src_vocab_size=hf_config.vocab_size,
        tgt_vocab_size=tgt_vocab,
        d_model=hf_config.d_model,
        num_heads=hf_config.encoder_attention_heads,
        d_ff=hf_config.encoder_ffn_dim,
        num_encoder_layers=hf_config.encoder_layers,
        num_decoder_layers=hf_config.decoder_layers,
        dropout=hf_config.dropout,
        attention_dropout=hf_config.attention_dropout,
        activation=_ACT_FROM_HF[hf_config.activation_function],
        max_len=hf_config.max_position_embeddings,
        positional="sinusoidal_halves",
        share_embeddings=shared,
        tie_output=True,
        output_bias=True,
        scale_embeddings=bool(hf_config.scale_embedding),
        final_norm=False,
        pad_id=hf_config.pad_token_id,
    )


def _layer_pairs(n_enc: int, n_dec: int) -> list[tuple[str, str]]:
    """(aiayn name, Marian name) for every weight of the layers."""
    pairs = []
    for i in range(n_enc):
        a, h = f"encoder.layers.{i}", f"model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            pairs.append((f"{a}.self_attn.{proj}", f"{h}.self_attn.{proj}"))
        pairs += [
            (f"{a}.norm1", f"{h}.self_attn_layer_norm"),
            (f"{a}.ffn.linear1", f"{h}.fc1"),
            (f"{a}.ffn.linear2", f"{h}.fc2"),
            (f"{a}.norm2", f"{h}.final_layer_norm"),
        ]
    for i in range(n_dec):
        a, h = f"decoder.layers.{i}", f"model.decoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            pairs.append((f"{a}.self_attn.{proj}", f"{h}.self_attn.{proj}"))
            pairs.append((f"{a}.cross_attn.{proj}", f"{h}.encoder_attn.{proj}"))
        pairs += [
            (f"{a}.norm1", f"{h}.self_attn_layer_norm"),
            (f"{a}.norm2", f"{h}.encoder_attn_layer_norm"),
            (f"{a}.ffn.linear1", f"{h}.fc1"),
            (f"{a}.ffn.linear2", f"{h}.fc2"),
            (f"{a}.norm3", f"{h}.final_layer_norm"),
        ]
    return [(f"{a}.{p}", f"{h}.{p}") for a, h in pairs for p in ("weight", "bias")]


@torch.no_grad()
def from_hf_marian(hf_model: Any) -> Transformer:
    """Build an aiayn Transformer holding a ``MarianMTModel``'s weights."""
    config = config_from_marian(hf_model.config)
    model = Transformer(config)
    theirs = hf_model.state_dict()
    ours = model.state_dict()
    for a, h in _layer_pairs(config.num_encoder_layers, config.num_decoder_layers):
        ours[a].copy_(theirs[h])
    ours["src_emb.weight"].copy_(theirs["model.encoder.embed_tokens.weight"])
    if not config.share_embeddings:
        ours["tgt_emb.weight"].copy_(theirs["model.decoder.embed_tokens.weight"])
    ours["lm_head.bias"].copy_(theirs["final_logits_bias"][0])
    return model.eval()


@torch.no_grad()
def to_hf_marian(model: Transformer, bos_id: int = 1, eos_id: int = 2) -> Any:
    """A ``MarianMTModel`` holding an aiayn Transformer's weights (the model must be Marian-shaped).

    Args:
        model: the aiayn model.
        bos_id: the decoder's start token (aiayn's ``<bos>``; Marian itself starts with ``<pad>``).
        eos_id: the end token.
    """
    from transformers import MarianConfig, MarianMTModel

    c = model.config
    problems = []
    if c.positional != "sinusoidal_halves":
        problems.append("positional must be 'sinusoidal_halves'")
    if c.final_norm or c.norm_first:
        problems.append("Marian is post-norm without final LayerNorms")
    if not (c.tie_output and c.bias) or c.activation not in _ACT_TO_HF:
        problems.append("needs tie_output, biases and a relu/gelu/silu FFN")
    if c.attention != "dot" or c.attention_window is not None:
        problems.append("needs full dot-product attention")
    if c.norm != "layernorm" or c.num_kv_heads not in (None, c.num_heads) or c.d_ff is None:
        problems.append("needs LayerNorm, full multi-head attention and an explicit d_ff")
    if problems:
        raise ConfigError("cannot export to Marian: " + "; ".join(problems))
    hf_config = MarianConfig(
        vocab_size=c.src_vocab_size,
        decoder_vocab_size=c.tgt_vocab_size,
        share_encoder_decoder_embeddings=c.share_embeddings,
        d_model=c.d_model,
        encoder_layers=c.num_encoder_layers,
        decoder_layers=c.num_decoder_layers,
        encoder_attention_heads=c.num_heads,
        decoder_attention_heads=c.num_heads,
        encoder_ffn_dim=c.d_ff,
        decoder_ffn_dim=c.d_ff,
        activation_function=_ACT_TO_HF[c.activation],
        max_position_embeddings=c.max_len,
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=0.0,
        scale_embedding=c.scale_embeddings,
        pad_token_id=c.pad_id,
        eos_token_id=eos_id,
        forced_eos_token_id=None,
        decoder_start_token_id=bos_id,
        tie_word_embeddings=True,
    )
    hf = MarianMTModel(hf_config).eval()
    theirs = hf.state_dict()
    ours = model.state_dict()
    for a, h in _layer_pairs(c.num_encoder_layers, c.num_decoder_layers):
        theirs[h].copy_(ours[a])
    theirs["model.encoder.embed_tokens.weight"].copy_(ours["src_emb.weight"])
    theirs["model.decoder.embed_tokens.weight"].copy_(ours["tgt_emb.weight"])
    if "model.shared.weight" in theirs:
        theirs["model.shared.weight"].copy_(ours["src_emb.weight"])
    if "lm_head.weight" in theirs:
        theirs["lm_head.weight"].copy_(ours["tgt_emb.weight"])
    bias = ours["lm_head.bias"] if c.output_bias else torch.zeros(c.tgt_vocab_size)
    theirs["final_logits_bias"].copy_(bias[None])
    return hf


#: The weights of a Transformer indexed by vocabulary row (shared embeddings: one matrix, listed
#: under each name that uses it).
_VOCAB_WEIGHTS = ("src_emb.weight", "tgt_emb.weight", "lm_head.weight", "lm_head.bias")


@torch.no_grad()
def reindex_vocab(model: Transformer, order: Sequence[int], pad_id: int) -> Transformer:
    """A copy of a shared-vocabulary ``model`` whose row ``i`` is the model's row ``order[i]``.

    Translation's batching and search use aiayn's fixed ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``; a
    Marian model has ``</s>=0 <unk>=1``, ``<pad>`` last, and starts decoding from ``<pad>``. So its
    rows are put in aiayn's order on import, ``<pad>`` listed twice (as ``<pad>`` and as ``<bos>``,
    which then train apart: ``<pad>``'s row gets no gradient), and back in Marian's order on export
    (``<bos>``'s row becoming Marian's ``<pad>``, the decoder's start). Until they train apart the
    two rows give the same logit, so the softmax counts ``<pad>`` twice; it is never a target.

    Args:
        model: a Transformer with one vocabulary for both sides.
        order: new row -> old row (old rows not listed are dropped).
        pad_id: the copy's padding id.

    Returns:
        The copy, in eval mode.

    Raises:
        ConfigError: the model has two vocabularies, or ``order`` names rows it does not have.
    """
    c = model.config
    if not c.share_embeddings:
        raise ConfigError("reordering the vocabulary needs one vocabulary for both sides")
    index = torch.as_tensor(list(order), dtype=torch.long)
    if len(index) == 0 or int(index.min()) < 0 or int(index.max()) >= c.src_vocab_size:
        raise ConfigError(f"the new order must list rows of 0 .. {c.src_vocab_size - 1}")
    config = replace(c, src_vocab_size=len(index), tgt_vocab_size=len(index), pad_id=pad_id)
    state = model.state_dict()
    for name in _VOCAB_WEIGHTS:
        if name in state:
            state[name] = state[name][index]
    copy = Transformer(config)
    copy.load_state_dict(state)
    return copy.eval()
