"""Llama: Hugging Face ``LlamaForCausalLM`` <-> :class:`aiayn.models.gpt.GPT`, exactly.

A Llama is aiayn's GPT with the post-2017 fields set: pre-norm RMSNorm blocks, rotary positions in
the half layout (Hugging Face's checkpoints are already permuted into it), grouped-query attention,
a SwiGLU FFN, no biases and an untied output layer (``tie_word_embeddings`` decides). Every matrix is
an ``nn.Linear`` on both sides, so weights are renamed, never transposed::

    HF name                                      aiayn name
    model.embed_tokens                           tok_emb
    model.layers.{i}.input_layernorm             decoder.layers.{i}.norm1
    model.layers.{i}.self_attn.{q,k,v}_proj      decoder.layers.{i}.self_attn.{q,k,v}_proj
    model.layers.{i}.self_attn.o_proj            decoder.layers.{i}.self_attn.out_proj
    model.layers.{i}.post_attention_layernorm    decoder.layers.{i}.norm3
    model.layers.{i}.mlp.gate_proj               decoder.layers.{i}.ffn.linear1   (the gate, w1)
    model.layers.{i}.mlp.up_proj                 decoder.layers.{i}.ffn.linear3   (w3)
    model.layers.{i}.mlp.down_proj               decoder.layers.{i}.ffn.linear2   (w2)
    model.norm                                   decoder.norm
    lm_head                                      lm_head

Importing needs no ``transformers``: :func:`from_pretrained_dir` reads ``config.json`` and the
safetensors weights (one file or shards) of a folder written by ``save_pretrained``. Pickled
``pytorch_model.bin`` files are refused: loading one runs code. Exporting builds a
``LlamaForCausalLM`` and so needs ``transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..layers import ffn_width
from ..models.gpt import GPT, GPTConfig
from .hf_files import load_safetensors as _load_safetensors
from .hf_files import read_json
from .hf_files import weight_files as _weight_files

__all__ = [
    "config_from_hf",
    "from_hf_llama",
    "from_pretrained_dir",
    "hf_config",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "to_hf_llama",
]


def _get(hf_config: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    """A field of a ``LlamaConfig`` or of its ``config.json`` dict."""
    if isinstance(hf_config, Mapping):
        return hf_config.get(key, default)
    return getattr(hf_config, key, default)


def _rope_theta(hf_config: Mapping[str, Any] | Any) -> float:
    """``rope_theta``, refusing RoPE scalings aiayn does not compute (linear, dynamic, llama3...).

    transformers >= 5 keeps it in ``rope_parameters``; older versions in ``rope_theta`` beside a
    ``rope_scaling`` dict.
    """
    params = _get(hf_config, "rope_parameters") or {}
    scaling = _get(hf_config, "rope_scaling") or {}
    for rope in (params, scaling):
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            raise CheckpointError(f"Llama RoPE scaling {kind!r} is not supported (only 'default')")
    theta = params.get("rope_theta", _get(hf_config, "rope_theta"))
    return 10000.0 if theta is None else float(theta)


def config_from_hf(hf_config: Mapping[str, Any] | Any) -> GPTConfig:
    """The :class:`GPTConfig` of a ``LlamaConfig`` (or of the dict in its ``config.json``).

    Raises:
        CheckpointError: not a Llama, or a variant aiayn does not compute (another activation, RoPE
            scaling, a head dimension other than hidden / heads, biases on only some maps).
    """
    c = hf_config
    model_type = _get(c, "model_type", "llama")
    if model_type != "llama":
        raise CheckpointError(f"a {model_type!r} model, not Llama")
    if _get(c, "hidden_act", "silu") != "silu":
        raise CheckpointError(f"Llama hidden_act {_get(c, 'hidden_act')!r} is not supported")
    if _get(c, "pretraining_tp", 1) != 1:
        raise CheckpointError("Llama configs with pretraining_tp != 1 are not supported")
    d_model, heads = int(_get(c, "hidden_size")), int(_get(c, "num_attention_heads"))
    head_dim = _get(c, "head_dim")
    if head_dim is not None and head_dim * heads != d_model:
        raise CheckpointError(f"head_dim {head_dim} x {heads} heads != hidden_size {d_model}")
    attention_bias, mlp_bias = (
        bool(_get(c, "attention_bias", False)),
        bool(_get(c, "mlp_bias", False)),
    )
    if attention_bias != mlp_bias:
        raise CheckpointError("Llama configs with attention_bias != mlp_bias are not supported")
    kv_heads = _get(c, "num_key_value_heads")
    return GPTConfig(
        vocab_size=int(_get(c, "vocab_size")),
        max_len=int(_get(c, "max_position_embeddings", 2048)),
        d_model=d_model,
        num_heads=heads,
        num_kv_heads=heads if kv_heads is None else int(kv_heads),
        d_ff=int(_get(c, "intermediate_size")),
        num_layers=int(_get(c, "num_hidden_layers")),
        dropout=0.0,
        attention_dropout=float(_get(c, "attention_dropout", 0.0)),
        activation="swiglu",
        bias=attention_bias,
        layer_norm_eps=float(_get(c, "rms_norm_eps", 1e-6)),
        tie_output=bool(_get(c, "tie_word_embeddings", False)),
        positional="rotary",
        rotary_layout="half",
        rotary_base=_rope_theta(c),
        norm="rmsnorm",
    )


def _mapping(config: GPTConfig) -> list[tuple[str, str]]:
    """``(aiayn name, HF name)`` for every parameter (the interleaved q/k permutation aside)."""
    rows = [
        ("tok_emb.weight", "model.embed_tokens.weight"),
        ("decoder.norm.weight", "model.norm.weight"),
    ]
    linears = [
        ("self_attn.q_proj", "self_attn.q_proj"),
        ("self_attn.k_proj", "self_attn.k_proj"),
        ("self_attn.v_proj", "self_attn.v_proj"),
        ("self_attn.out_proj", "self_attn.o_proj"),
        ("ffn.linear1", "mlp.gate_proj"),
        ("ffn.linear3", "mlp.up_proj"),
        ("ffn.linear2", "mlp.down_proj"),
    ]
    params = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"model.layers.{i}."
        rows += [
            (ours + "norm1.weight", theirs + "input_layernorm.weight"),
            (ours + "norm3.weight", theirs + "post_attention_layernorm.weight"),
        ]
        rows += [(f"{ours}{a}.{p}", f"{theirs}{h}.{p}") for a, h in linears for p in params]
    if not config.tie_output:
        rows.append(("lm_head.weight", "lm_head.weight"))
    return rows


def _check_llama_shaped(config: GPTConfig) -> None:
    problems = []
    if config.positional != "rotary":
        problems.append("positional must be 'rotary'")
    if config.norm != "rmsnorm":
        problems.append("norm must be 'rmsnorm'")
    if config.activation != "swiglu":
        problems.append("activation must be 'swiglu'")
    if config.attention != "dot" or config.attention_window is not None:
        problems.append("needs full dot-product attention")
    if problems:
        raise CheckpointError("not a Llama-shaped GPT: " + "; ".join(problems))


def _half_from_interleaved(t: Tensor, heads: int) -> Tensor:
    """Reorder a q/k projection's output rows (weight ``(H·Dh, D)`` or bias ``(H·Dh,)``) from
    the interleaved rotary layout to the half layout: per head, channels ``0, 2, 4, ..`` then
    ``1, 3, 5, ..``. Rotating pairs (2i, 2i+1) before equals rotating pairs (i, i + Dh/2) after."""
    rest = t.shape[1:]
    pairs = t.reshape(heads, -1, 2, *rest)  # (H, Dh/2, 2, ...)
    return pairs.transpose(1, 2).reshape(t.shape)


def state_dict_from_hf(hf_state: Mapping[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Convert a ``LlamaForCausalLM`` state dict into aiayn :class:`GPT` names.

    Raises:
        CheckpointError: a weight is missing.
    """
    try:
        out = {ours: hf_state[theirs] for ours, theirs in _mapping(config)}
    except KeyError as e:
        raise CheckpointError(f"not a Llama state dict: missing {e.args[0]}") from None
    if config.tie_output:
        out["lm_head.weight"] = out["tok_emb.weight"]  # the same matrix; listed for a strict load
    return out


def state_dict_to_hf(state: Mapping[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Convert an aiayn :class:`GPT` state dict into ``LlamaForCausalLM`` names.

    A model trained with ``rotary_layout="interleaved"`` has its q/k rows permuted into the half
    layout Hugging Face computes, which gives the same function.
    """
    _check_llama_shaped(config)
    out = {theirs: state[ours] for ours, theirs in _mapping(config)}
    if config.rotary_layout == "interleaved":
        kv_heads = config.num_kv_heads or config.num_heads
        for i in range(config.num_layers):
            for proj, heads in (("q_proj", config.num_heads), ("k_proj", kv_heads)):
                for p in ("weight", "bias") if config.bias else ("weight",):
                    name = f"model.layers.{i}.self_attn.{proj}.{p}"
                    out[name] = _half_from_interleaved(out[name], heads)
    out["lm_head.weight"] = state["tok_emb.weight" if config.tie_output else "lm_head.weight"]
    return out


def _build(config: GPTConfig, hf_state: Mapping[str, Tensor], dtype: torch.dtype) -> GPT:
    state = {k: v.to(dtype) for k, v in state_dict_from_hf(hf_state, config).items()}
    model = GPT(config).to(dtype)
    model.load_state_dict(state)
    return model.eval()


def from_hf_llama(hf_model: Any, dtype: torch.dtype = torch.float32) -> GPT:
    """An aiayn :class:`GPT` with the weights of a Hugging Face ``LlamaForCausalLM``.

    Args:
        hf_model: a ``transformers.LlamaForCausalLM`` (loaded, or built from a ``LlamaConfig``).
        dtype: the parameters' dtype.

    Returns:
        The model, in eval mode, on the CPU.
    """
    config = config_from_hf(hf_model.config)
    state = {k: v.detach().cpu() for k, v in hf_model.state_dict().items()}
    return _build(config, state, dtype)


def from_pretrained_dir(
    directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> GPT:
    """Load a Llama folder written by ``LlamaForCausalLM.save_pretrained`` as an aiayn :class:`GPT`.

    Reads ``config.json`` and ``model.safetensors`` (or the shards listed in
    ``model.safetensors.index.json``) with aiayn's own code; ``transformers`` is not needed.
    Tokenizer files are left to the caller.

    Args:
        directory: the folder.
        device: where to put the model.
        dtype: the parameters' dtype (float32 by default, whatever the checkpoint stores).

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: a missing or unreadable file, or a model that is not a plain Llama.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    try:
        config = config_from_hf(read_json(directory / "config.json"))
    except CheckpointError as e:
        raise CheckpointError(f"{directory}/config.json: {e}") from None
    except (TypeError, ValueError) as e:  # a field missing or of the wrong type
        raise CheckpointError(f"{directory}/config.json: bad Llama config ({e})") from None
    state = _load_safetensors(_weight_files(directory))
    try:
        model = _build(config, state, dtype)
    except RuntimeError as e:  # shapes that don't match the config
        raise CheckpointError(f"{directory}: weights do not match config.json ({e})") from None
    return model.to(device)


def hf_config(config: GPTConfig, **extra: Any) -> Any:
    """The ``transformers.LlamaConfig`` equivalent of a Llama-shaped :class:`GPTConfig`.

    Raises:
        CheckpointError: the model is not Llama-shaped (see the module docstring).
    """
    from transformers import LlamaConfig

    _check_llama_shaped(config)
    extra = {"bos_token_id": None, "eos_token_id": None, **extra}
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=ffn_width(config.d_model, config.d_ff, config.activation),
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads or config.num_heads,
        head_dim=config.d_model // config.num_heads,
        max_position_embeddings=config.max_len,
        rms_norm_eps=config.layer_norm_eps,
        rope_theta=config.rotary_base,
        tie_word_embeddings=config.tie_output,
        attention_bias=config.bias,
        mlp_bias=config.bias,
        attention_dropout=config.attention_dropout,
        hidden_act="silu",
        **extra,
    )


def to_hf_llama(model: GPT, **config_extra: Any) -> Any:
    """A Hugging Face ``LlamaForCausalLM`` with the weights of a Llama-shaped aiayn :class:`GPT`.

    Args:
        model: the aiayn model.
        config_extra: more ``LlamaConfig`` fields (e.g. ``bos_token_id``, ``eos_token_id``).

    Returns:
        The Hugging Face model, in eval mode, on the CPU, in float32.
    """
    from transformers import LlamaForCausalLM

    config = model.config
    hf = LlamaForCausalLM(hf_config(config, **config_extra))
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state_dict_to_hf(state, config), strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]  # RoPE tables are not weights
    if missing or unexpected:
        raise CheckpointError(f"Llama export mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_output:
        hf.tie_weights()
    return hf.eval()
