"""Hugging Face ``ViTForImageClassification`` / ``ViTModel`` -> aiayn :class:`~aiayn.models.vit.ViT`.

Both weight layouts load: the Hub checkpoints' names (transformers 4) and the names of the modules in
transformers 5 (a leading ``vit.`` is optional)::

    transformers 4 (Hub files)                    transformers 5 modules          aiayn
    embeddings.cls_token                          (same)                          cls_token
    embeddings.position_embeddings                (same)                          pos_emb
    embeddings.patch_embeddings.projection        (same)                          patch_emb.proj
    encoder.layer.i.attention.attention.query     layers.i.attention.q_proj       encoder.layers.i.self_attn.q_proj
    encoder.layer.i.attention.attention.key       layers.i.attention.k_proj       ... .k_proj
    encoder.layer.i.attention.attention.value     layers.i.attention.v_proj       ... .v_proj
    encoder.layer.i.attention.output.dense        layers.i.attention.o_proj       ... .out_proj
    encoder.layer.i.layernorm_before              layers.i.layernorm_before       encoder.layers.i.norm1
    encoder.layer.i.layernorm_after               layers.i.layernorm_after        encoder.layers.i.norm2
    encoder.layer.i.intermediate.dense            layers.i.mlp.fc1                encoder.layers.i.ffn.linear1
    encoder.layer.i.output.dense                  layers.i.mlp.fc2                encoder.layers.i.ffn.linear2
    layernorm                                     (same)                          encoder.norm
    classifier                                    (same)                          head

A ``ViTModel`` has no classifier: the head is left at its initial values and reported. Its pooler (a
tanh layer the classifier never uses) is ignored. ``qkv_bias=False`` becomes zero, frozen biases.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..models.vit import ViT, ViTConfig

__all__ = ["config_from_hf", "convert_state_dict", "from_hf", "hf_config", "to_hf_vit"]

log = logging.getLogger(__name__)

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}

_LAYER = r"^(?:encoder\.layer|layers)\.(\d+)\."
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^embeddings\.cls_token$", "cls_token"),
        (r"^embeddings\.position_embeddings$", "pos_emb"),
        (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_emb.proj.\1"),
        (
            _LAYER + r"attention\.(?:attention\.query|q_proj)\.(weight|bias)$",
            r"encoder.layers.\1.self_attn.q_proj.\2",
        ),
        (
            _LAYER + r"attention\.(?:attention\.key|k_proj)\.(weight|bias)$",
            r"encoder.layers.\1.self_attn.k_proj.\2",
        ),
        (
            _LAYER + r"attention\.(?:attention\.value|v_proj)\.(weight|bias)$",
            r"encoder.layers.\1.self_attn.v_proj.\2",
        ),
        (
            _LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)$",
            r"encoder.layers.\1.self_attn.out_proj.\2",
        ),
        (_LAYER + r"layernorm_before\.(weight|bias)$", r"encoder.layers.\1.norm1.\2"),
        (_LAYER + r"layernorm_after\.(weight|bias)$", r"encoder.layers.\1.norm2.\2"),
        (
            _LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)$",
            r"encoder.layers.\1.ffn.linear1.\2",
        ),
        (
            _LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)$",
            r"encoder.layers.\1.ffn.linear2.\2",
        ),
        (r"^layernorm\.(weight|bias)$", r"encoder.norm.\1"),
        (r"^classifier\.(weight|bias)$", r"head.\1"),
    ]
]
_IGNORED = re.compile(r"^(pooler\..*|embeddings\.mask_token)$")


def _get(hf_config: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(key, default)
    return getattr(hf_config, key, default)


def config_from_hf(hf_config: Mapping[str, Any] | Any) -> ViTConfig:
    """A :class:`ViTConfig` from a Hugging Face ``ViTConfig`` (object or ``config.json`` dict).

    Raises:
        CheckpointError: non-square images or patches, or an unknown activation.
    """

    def side(value: Any, what: str) -> int:
        if isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise CheckpointError(f"non-square {what} {tuple(value)} is not supported")
            value = value[0]
        return int(value)

    act = _get(hf_config, "hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"ViT activation {act!r} is not supported ({sorted(_ACTIVATIONS)})")
    num_labels = _get(hf_config, "num_labels", None)
    if num_labels is None:
        num_labels = len(_get(hf_config, "id2label", None) or {}) or 2
    return ViTConfig(
        image_size=side(_get(hf_config, "image_size", 224), "image size"),
        patch_size=side(_get(hf_config, "patch_size", 16), "patch size"),
        in_channels=int(_get(hf_config, "num_channels", 3)),
        num_classes=int(num_labels),
        d_model=int(_get(hf_config, "hidden_size")),
        num_heads=int(_get(hf_config, "num_attention_heads")),
        d_ff=int(_get(hf_config, "intermediate_size")),
        num_layers=int(_get(hf_config, "num_hidden_layers")),
        dropout=float(_get(hf_config, "hidden_dropout_prob", 0.0)),
        attention_dropout=float(_get(hf_config, "attention_probs_dropout_prob", 0.0)),
        activation=_ACTIVATIONS[act],
        layer_norm_eps=float(_get(hf_config, "layer_norm_eps", 1e-12)),
        qkv_bias=bool(_get(hf_config, "qkv_bias", True)),
    )


#: :func:`_aiayn_name` of a key that belongs to no known part of a ViT.
_UNKNOWN = ""


def _aiayn_name(key: str) -> str | None:
    """aiayn's name of a Hugging Face ViT weight (with or without the ``vit.`` prefix); None for
    the ones aiayn does not keep (:data:`_IGNORED`), :data:`_UNKNOWN` for any other."""
    name = key.removeprefix("vit.")
    if _IGNORED.match(name):
        return None
    for pattern, repl in _RULES:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return _UNKNOWN


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Hugging Face ViT state dict to aiayn's names (see the module docstring).

    Raises:
        CheckpointError: a key that belongs to no known part of a ViT.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        name = _aiayn_name(key)
        if name == _UNKNOWN:
            unknown.append(key)
        elif name is not None:
            out[name] = tensor
    if unknown:
        raise CheckpointError(
            f"weights of a model that is not a plain ViT: unexpected {unknown[:5]}"
        )
    return out


def load_converted(model: ViT, state: Mapping[str, Tensor], source: str = "weights") -> list[str]:
    """Copy converted weights into ``model``; returns the names left at their initial values.

    Only the classifier (absent from a ``ViTModel``) and q/k/v biases (absent with
    ``qkv_bias=False``) may be missing; anything else missing or a shape mismatch is an error.

    Raises:
        CheckpointError: the weights don't fit the model.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    optional = [k for k in missing if k.startswith("head.") or re.search(r"[qkv]_proj\.bias$", k)]
    unexpected = [k for k in state if k not in own]
    if set(missing) - set(optional) or unexpected:
        raise CheckpointError(
            f"{source}: weights don't fit (missing {sorted(set(missing) - set(optional))[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, expected {tuple(own[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
        for name in optional:
            if name.endswith("_proj.bias"):
                own[name].zero_()
    return [k for k in optional if k.startswith("head.")]


def from_hf(hf_model: nn.Module) -> ViT:
    """An aiayn :class:`ViT` with the weights of a Hugging Face ViT model, in eval mode.

    A ``ViTModel`` (no classifier) gives a ViT whose head is untrained; a warning says so.
    """
    config = config_from_hf(hf_model.config)
    model = ViT(config)
    left = load_converted(model, convert_state_dict(hf_model.state_dict()), type(hf_model).__name__)
    if left:
        log.warning("%s has no classifier: the head is untrained", type(hf_model).__name__)
    return model.eval()


#: aiayn activation -> Hugging Face ``hidden_act``.
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


def hf_config(config: ViTConfig, labels: Sequence[str] = ()) -> Any:
    """The ``transformers.ViTConfig`` of an aiayn :class:`ViTConfig`, with class names ``labels``.

    Raises:
        CheckpointError: the model uses a block Hugging Face's ViT lacks (RMSNorm, a gated FFN,
            grouped-query or windowed attention).
    """
    from transformers import ViTConfig as HFViTConfig

    problems = []
    if config.norm != "layernorm" or config.activation not in _HF_ACTIVATIONS:
        problems.append("LayerNorm and a gelu/relu MLP")
    if config.d_ff is None or config.num_kv_heads not in (None, config.num_heads):
        problems.append("an explicit d_ff and full multi-head attention")
    if config.attention != "dot" or config.attention_window is not None:
        problems.append("full dot-product attention")
    if problems:
        raise CheckpointError("cannot export to Hugging Face ViT: needs " + ", ".join(problems))
    names = list(labels) or [f"LABEL_{i}" for i in range(config.num_classes)]
    if len(names) != config.num_classes:
        raise CheckpointError(f"{len(names)} labels for a model of {config.num_classes} classes")
    return HFViTConfig(
        hidden_size=config.d_model,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.d_ff,
        hidden_act=_HF_ACTIVATIONS[config.activation],
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        layer_norm_eps=config.layer_norm_eps,
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.in_channels,
        qkv_bias=config.qkv_bias,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )


@torch.no_grad()
def to_hf_vit(model: ViT, labels: Sequence[str] = ()) -> Any:
    """A Hugging Face ``ViTForImageClassification`` with the weights of an aiayn :class:`ViT`.

    Returns:
        The Hugging Face model, in eval mode, on the CPU, in float32.
    """
    from transformers import ViTForImageClassification

    hf = ViTForImageClassification(hf_config(model.config, labels)).eval()
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    for key, tensor in hf.state_dict().items():
        name = _aiayn_name(key)
        if name is None:
            continue
        if name not in ours:
            raise CheckpointError(f"ViT export: no aiayn weight for {key}")
        tensor.copy_(ours[name])
    return hf
