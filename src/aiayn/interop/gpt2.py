"""GPT-2: Hugging Face ``GPT2LMHeadModel`` <-> :class:`aiayn.models.gpt.GPT`, exactly.

GPT-2's linear maps are ``Conv1D`` modules that compute ``x @ W + b`` with ``W`` stored as
``(in, out)``; ``nn.Linear`` stores ``(out, in)``, so every matrix is transposed on the way through.
The fused ``c_attn`` matrix holds Q, K and V side by side (in that order) and is split into aiayn's
``q_proj``/``k_proj``/``v_proj``.

    HF name                          aiayn name
    transformer.wte                  tok_emb (tied to lm_head)
    transformer.wpe                  pos_emb
    transformer.h.{i}.ln_1           decoder.layers.{i}.norm1
    transformer.h.{i}.attn.c_attn    decoder.layers.{i}.self_attn.{q,k,v}_proj   (transposed, split)
    transformer.h.{i}.attn.c_proj    decoder.layers.{i}.self_attn.out_proj       (transposed)
    transformer.h.{i}.ln_2           decoder.layers.{i}.norm3
    transformer.h.{i}.mlp.c_fc       decoder.layers.{i}.ffn.linear1              (transposed)
    transformer.h.{i}.mlp.c_proj     decoder.layers.{i}.ffn.linear2              (transposed)
    transformer.ln_f                 decoder.norm
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import AiaynError
from ..models.gpt import GPT, GPTConfig

#: Hugging Face ``activation_function`` -> aiayn activation.
_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf_config: Any) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face ``GPT2Config``.

    Raises:
        AiaynError: the config uses a GPT-2 variant aiayn doesn't compute (attention scores scaled by
            layer index, upcast/reordered attention, unscaled scores, an unknown activation).
    """
    c = hf_config
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise AiaynError("GPT-2 configs with scale_attn_by_inverse_layer_idx are not supported")
    if getattr(c, "reorder_and_upcast_attn", False):
        raise AiaynError("GPT-2 configs with reorder_and_upcast_attn are not supported")
    if not getattr(c, "scale_attn_weights", True):
        raise AiaynError("GPT-2 configs without scale_attn_weights are not supported")
    if c.activation_function not in _ACTIVATIONS:
        raise AiaynError(
            f"GPT-2 activation {c.activation_function!r} is not supported; "
            f"known: {', '.join(_ACTIVATIONS)}"
        )
    return GPTConfig(
        vocab_size=c.vocab_size,
        max_len=c.n_positions,
        d_model=c.n_embd,
        num_heads=c.n_head,
        d_ff=c.n_inner if c.n_inner is not None else 4 * c.n_embd,
        num_layers=c.n_layer,
        dropout=c.resid_pdrop,
        attention_dropout=c.attn_pdrop,
        activation=_ACTIVATIONS[c.activation_function],
        layer_norm_eps=c.layer_norm_epsilon,
        tie_output=bool(getattr(c, "tie_word_embeddings", True)),
    )


def _mapping(config: GPTConfig) -> list[tuple[str, str, bool]]:
    """``(aiayn name, HF name, transpose)`` for every parameter except the split ``c_attn``."""
    rows = [
        ("tok_emb.weight", "transformer.wte.weight", False),
        ("pos_emb.weight", "transformer.wpe.weight", False),
        ("decoder.norm.weight", "transformer.ln_f.weight", False),
        ("decoder.norm.bias", "transformer.ln_f.bias", False),
    ]
    for i in range(config.num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"transformer.h.{i}."
        rows += [
            (ours + "norm1.weight", theirs + "ln_1.weight", False),
            (ours + "norm1.bias", theirs + "ln_1.bias", False),
            (ours + "self_attn.out_proj.weight", theirs + "attn.c_proj.weight", True),
            (ours + "self_attn.out_proj.bias", theirs + "attn.c_proj.bias", False),
            (ours + "norm3.weight", theirs + "ln_2.weight", False),
            (ours + "norm3.bias", theirs + "ln_2.bias", False),
            (ours + "ffn.linear1.weight", theirs + "mlp.c_fc.weight", True),
            (ours + "ffn.linear1.bias", theirs + "mlp.c_fc.bias", False),
            (ours + "ffn.linear2.weight", theirs + "mlp.c_proj.weight", True),
            (ours + "ffn.linear2.bias", theirs + "mlp.c_proj.bias", False),
        ]
    if not config.tie_output:
        rows.append(("lm_head.weight", "lm_head.weight", False))
    return rows


def _qkv_names(i: int) -> tuple[list[str], str, str]:
    ours = [f"decoder.layers.{i}.self_attn.{p}_proj" for p in "qkv"]
    return ours, f"transformer.h.{i}.attn.c_attn.weight", f"transformer.h.{i}.attn.c_attn.bias"


def state_dict_from_hf(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Convert a ``GPT2LMHeadModel`` state dict into aiayn :class:`GPT` names and layouts."""
    out: dict[str, Tensor] = {}
    try:
        for ours, theirs, transpose in _mapping(config):
            t = hf_state[theirs]
            out[ours] = t.t().contiguous() if transpose else t
        for i in range(config.num_layers):
            names, weight, bias = _qkv_names(i)
            # c_attn: (D, 3D) as (in, out) -> three (D, D) nn.Linear weights (out, in).
            for name, w, b in zip(
                names, hf_state[weight].t().chunk(3, dim=0), hf_state[bias].chunk(3)
            ):
                out[name + ".weight"] = w.contiguous()
                out[name + ".bias"] = b
    except KeyError as e:
        raise AiaynError(f"not a GPT-2 state dict: missing {e.args[0]}") from None
    if config.tie_output:
        out["lm_head.weight"] = out["tok_emb.weight"]  # the same matrix; listed for a strict load
    return out


def state_dict_to_hf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Convert an aiayn :class:`GPT` state dict into ``GPT2LMHeadModel`` names and layouts."""
    out: dict[str, Tensor] = {}
    for ours, theirs, transpose in _mapping(config):
        t = state[ours]
        out[theirs] = t.t().contiguous() if transpose else t
    for i in range(config.num_layers):
        names, weight, bias = _qkv_names(i)
        out[weight] = torch.cat([state[n + ".weight"] for n in names]).t().contiguous()  # (D, 3D)
        out[bias] = torch.cat([state[n + ".bias"] for n in names])
    out["lm_head.weight"] = state["tok_emb.weight" if config.tie_output else "lm_head.weight"]
    return out


def from_hf_gpt2(hf_model: Any) -> GPT:
    """An aiayn :class:`GPT` with the weights of a Hugging Face ``GPT2LMHeadModel``.

    Args:
        hf_model: a ``transformers.GPT2LMHeadModel`` (e.g. ``from_pretrained("gpt2")``, or built from
            a ``GPT2Config``).

    Returns:
        The model, in eval mode, on the CPU, in float32.
    """
    config = config_from_hf(hf_model.config)
    state = {k: v.detach().float().cpu() for k, v in hf_model.state_dict().items()}
    model = GPT(config)
    model.load_state_dict(state_dict_from_hf(state, config))
    return model.eval()


def hf_config(config: GPTConfig, **extra: Any) -> Any:
    """The ``transformers.GPT2Config`` equivalent of an aiayn :class:`GPTConfig`.

    Raises:
        AiaynError: the model has no biases (GPT-2 always has them), or uses a block GPT-2 lacks.
    """
    from transformers import GPT2Config

    if not config.bias:
        raise AiaynError("GPT-2 has biases everywhere; a bias=False model cannot be exported")
    if (
        config.positional != "learned"
        or config.norm != "layernorm"
        or config.num_kv_heads not in (None, config.num_heads)
        or config.activation not in _HF_ACTIVATION
        or config.d_ff is None
    ):
        raise AiaynError(
            "GPT-2 needs learned positions, LayerNorm, full multi-head attention, a relu/gelu FFN "
            "and an explicit d_ff; for rotary/RMSNorm/GQA/SwiGLU models see aiayn.interop.llama"
        )
    if config.vocab_size <= 50256:  # GPT-2's <|endoftext|> (50256) is not in this vocabulary
        extra = {"bos_token_id": None, "eos_token_id": None, **extra}
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_len,
        n_embd=config.d_model,
        n_layer=config.num_layers,
        n_head=config.num_heads,
        n_inner=config.d_ff,
        activation_function=_HF_ACTIVATION[config.activation],
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.attention_dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        tie_word_embeddings=config.tie_output,
        **extra,
    )


def to_hf_gpt2(model: GPT, **config_extra: Any) -> Any:
    """A Hugging Face ``GPT2LMHeadModel`` with the weights of an aiayn :class:`GPT`.

    Args:
        model: the aiayn model.
        config_extra: more ``GPT2Config`` fields (e.g. ``bos_token_id``, ``eos_token_id``).

    Returns:
        The Hugging Face model, in eval mode, on the CPU.
    """
    from transformers import GPT2LMHeadModel

    config = model.config
    hf = GPT2LMHeadModel(hf_config(config, **config_extra))
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state_dict_to_hf(state, config), strict=False)
    # Older transformers keep a causal-mask buffer per layer; it is not a weight.
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise AiaynError(f"GPT-2 export mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_output:
        hf.tie_weights()
    return hf.eval()
