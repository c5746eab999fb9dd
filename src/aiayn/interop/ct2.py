"""``aiayn export DIR --to ctranslate2``: a translation model or a GPT for CTranslate2, OpenNMT's C++
engine (its ``Translator`` and ``Generator``).

CTranslate2 (``pip install ctranslate2``, the ``aiayn[ctranslate2]`` extra) describes a model by a
*spec*, ``ctranslate2.specs.TransformerSpec``, which its own converters fill from other frameworks'
weights and then validate, optimise (``quantization="int8"`` and friends) and save. This module is
one more such converter: it fills the spec from an aiayn ``Transformer`` directly, so no other
framework sits in between, and the saved folder is what ``ctranslate2.Translator(folder)`` loads.

What maps, and how:

* post-norm layers without a LayerNorm after each stack (the paper's, Marian's), or pre-norm layers
  with one (``norm_first=true``): CTranslate2 has no final LayerNorm after post-norm layers, so a
  post-norm model with ``final_norm`` (aiayn's default, as in ``torch.nn.Transformer``) is refused;
* LayerNorm or RMSNorm, biases or none (a missing LayerNorm shift is written as zeros), ReLU, GELU,
  SiLU or a gated FFN (SwiGLU/GeGLU: ``linear1`` is the activated gate, ``linear3`` the plain branch);
* positions added to the embeddings (sinusoidal in either channel layout, or learned) as the table
  aiayn adds, row for row (sinusoids: at least :data:`SINUSOID_ROWS` positions); rotary/ALiBi and additive or windowed attention have no counterpart;
* ``<eos>`` appended to every source (``add_source_eos``), decoding started from ``<bos>``, so a
  source given as aiayn's pieces gives aiayn's target pieces;
* the vocabulary: aiayn's piece for every id (``Tokenizer.id_to_token``), so ids and pieces agree.

A GPT becomes CTranslate2's decoder-only model (GPT-2's pre-norm layout, added positions only; the
vocabulary's ``<bos>``/``<eos>``/``<unk>`` named in its config). The folder also gets
``aiayn_source_tokenizer.json`` / ``aiayn_target_tokenizer.json`` (Hugging Face
``tokenizers`` files, when the tokenizer has one), so a user can turn text into the pieces
CTranslate2 expects without aiayn: ``Tokenizer.from_file(...).encode(text).tokens`` (a GPT's:
``aiayn_tokenizer.json``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.tokenizers import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN
from ..errors import ConfigError
from ..models.gpt import GPT
from ..models.seq2seq import Transformer

__all__ = [
    "CT2_QUANTIZATIONS",
    "ctranslate2_problems",
    "save_ctranslate2",
    "save_ctranslate2_generator",
    "source_pieces",
]

#: Rows of a sinusoidal position table written for CTranslate2 (learned ones: the model's own).
SINUSOID_ROWS = 1024

#: ``--quantize`` values of the export and the CTranslate2 quantisation each one asks for.
CT2_QUANTIZATIONS = {None: None, "int8": "int8"}


def ctranslate2_problems(model: Transformer | GPT) -> list[str]:
    """Why ``model`` (a translation model or a GPT) has no CTranslate2 spec (empty: it has one)."""
    c = model.config
    problems = []
    if not isinstance(model, GPT) and c.final_norm != c.norm_first:
        problems.append(
            "CTranslate2 has a LayerNorm after each stack exactly when the layers are pre-norm "
            f"(this model: norm_first={c.norm_first}, final_norm={c.final_norm}; "
            "train with final_norm=false, or norm_first=true)"
        )
    if c.positional not in ("sinusoidal", "sinusoidal_halves", "learned"):
        problems.append(
            f"positional={c.positional}: only positions added to the embeddings are exported"
        )
    if c.attention != "dot" or c.attention_window is not None:
        problems.append("needs full dot-product attention (no additive scoring, no window)")
    if c.num_kv_heads not in (None, c.num_heads):
        problems.append("grouped-query attention (num_kv_heads) has no CTranslate2 counterpart")
    if c.activation not in _ACTIVATIONS:
        problems.append(f"activation={c.activation} has no CTranslate2 counterpart")
    return problems


def save_ctranslate2(
    model: Transformer,
    source_tokenizer: Any,
    target_tokenizer: Any,
    out: str | Path,
    quantize: str | None = None,
) -> Path:
    """Write ``model`` as a CTranslate2 model folder into ``out`` (created if missing; files of the
    same names replaced). Everything is written to a temporary folder beside ``out`` first and moved
    in once complete, so a failure leaves ``out`` as it was.

    Raises:
        ConfigError: the model has no CTranslate2 spec (see :func:`ctranslate2_problems`), or its
            vocabulary repeats a piece.
    """
    _refuse_problems(model)
    spec = _spec(model)
    for register, tokenizer, side in (
        (spec.register_source_vocabulary, source_tokenizer, "source"),
        (spec.register_target_vocabulary, target_tokenizer, "target"),
    ):
        register(_pieces(tokenizer, side))
    return _write(spec, {"source": source_tokenizer, "target": target_tokenizer}, out, quantize)


def save_ctranslate2_generator(
    model: GPT, tokenizer: Any, out: str | Path, quantize: str | None = None
) -> Path:
    """Write a GPT as a CTranslate2 model folder for ``ctranslate2.Generator`` (as
    :func:`save_ctranslate2`: staged, then moved in). The tokenizer file is
    ``aiayn_tokenizer.json``.

    Raises:
        ConfigError: the GPT has no CTranslate2 spec, or its vocabulary repeats a piece.
    """
    _refuse_problems(model)
    spec = _generator_spec(model, tokenizer)
    spec.register_vocabulary(_pieces(tokenizer, "model"))
    return _write(spec, {"": tokenizer}, out, quantize)


def _refuse_problems(model: Transformer | GPT) -> None:
    problems = ctranslate2_problems(model)
    if problems:
        raise ConfigError("cannot export to CTranslate2: " + "; ".join(problems))


def _write(spec: Any, tokenizers: dict[str, Any], out: str | Path, quantize: str | None) -> Path:
    """Convert ``spec`` into a staging folder beside ``out``, add the tokenizer files
    (``aiayn_{role}_tokenizer.json``), then move everything into ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        converted = staging / "model"
        _convert(spec, converted, CT2_QUANTIZATIONS[quantize])
        for role, tokenizer in tokenizers.items():
            hf = _hf_tokenizer(tokenizer)
            if hf is not None:
                name = f"aiayn_{role}_tokenizer.json" if role else "aiayn_tokenizer.json"
                hf.save(str(converted / name))
        out.mkdir(exist_ok=True)
        for path in converted.iterdir():
            path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def source_pieces(tokenizer: Any, texts: list[str]) -> list[list[str]]:
    """Each text as the pieces a CTranslate2 folder of this module expects (its ``<eos>`` is added
    by CTranslate2 itself)."""
    return [[tokenizer.id_to_token(i) for i in ids] for ids in tokenizer.encode_batch(texts)]


# ---- the spec ---------------------------------------------------------------------------------------


def _activations() -> dict[str, tuple[Any, bool]]:
    """aiayn activation -> (CTranslate2 activation, gated FFN)."""
    from ctranslate2.specs import common_spec

    act = common_spec.Activation
    return {
        "relu": (act.RELU, False),
        "gelu": (act.GELU, False),
        "gelu_tanh": (act.GELUTanh, False),
        "silu": (act.SWISH, False),
        "swiglu": (act.SWISH, True),
        "geglu": (act.GELU, True),
    }


#: The activations :func:`_activations` maps (named here so the checks need no import).
_ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu")


def _spec(model: Transformer) -> Any:
    from ctranslate2.specs import transformer_spec

    c = model.config
    activation, gated = _activations()[c.activation]
    spec = transformer_spec.TransformerSpec.from_config(
        (c.num_encoder_layers, c.num_decoder_layers),
        c.num_heads,
        pre_norm=c.norm_first,
        activation=activation,
        ffn_glu=gated,
        rms_norm=c.norm == "rmsnorm",
    )
    config = spec.config
    config.bos_token, config.eos_token, config.unk_token = BOS_TOKEN, EOS_TOKEN, UNK_TOKEN
    config.decoder_start_token = BOS_TOKEN
    config.add_source_eos = True
    config.layer_norm_epsilon = c.layer_norm_eps

    state = {name: t.detach().float().cpu().numpy() for name, t in model.state_dict().items()}
    for side, stack in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        stack.scale_embeddings = bool(c.scale_embeddings)  # True: by sqrt(d_model), as aiayn
        embedding = "src_emb" if side == "encoder" else "tgt_emb"
        target = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
        target.weight = state[f"{embedding}.weight"]
        positions = model.src_pos if side == "encoder" else model.tgt_pos
        # CTranslate2 reads positions from this table only; aiayn's sinusoids go on for ever, so
        # they get at least SINUSOID_ROWS rows (its default longest output is 256 tokens).
        rows = c.max_len if c.positional == "learned" else max(c.max_len, SINUSOID_ROWS)
        stack.position_encodings.encodings = _position_table(positions, c.d_model, rows)
        if c.final_norm:
            _norm(stack.layer_norm, state, f"{side}.norm")
        for i, layer in enumerate(stack.layer):
            prefix = f"{side}.layers.{i}"
            _attention(layer.self_attention, state, f"{prefix}.self_attn", self_attention=True)
            _norm(layer.self_attention.layer_norm, state, f"{prefix}.norm1")
            ffn_norm = f"{prefix}.norm2"
            if side == "decoder":
                _attention(layer.attention, state, f"{prefix}.cross_attn", self_attention=False)
                _norm(layer.attention.layer_norm, state, f"{prefix}.norm2")
                ffn_norm = f"{prefix}.norm3"
            _linear(layer.ffn.linear_0, state, f"{prefix}.ffn.linear1")
            if gated:
                _linear(layer.ffn.linear_0_noact, state, f"{prefix}.ffn.linear3")
            _linear(layer.ffn.linear_1, state, f"{prefix}.ffn.linear2")
            _norm(layer.ffn.layer_norm, state, ffn_norm)
    head = "tgt_emb" if c.tie_output else "lm_head"
    spec.decoder.projection.weight = state[f"{head}.weight"]
    if "lm_head.bias" in state:
        spec.decoder.projection.bias = state["lm_head.bias"]
    return spec


def _generator_spec(model: GPT, tokenizer: Any) -> Any:
    """GPT-2's layout in CTranslate2: pre-norm blocks (``norm1`` before attention, ``norm3``
    before the FFN), a final LayerNorm, unscaled embeddings plus positions."""
    from ctranslate2.specs import transformer_spec

    c = model.config
    activation, gated = _activations()[c.activation]
    spec = transformer_spec.TransformerDecoderModelSpec.from_config(
        c.num_layers,
        c.num_heads,
        pre_norm=True,
        activation=activation,
        ffn_glu=gated,
        rms_norm=c.norm == "rmsnorm",
    )
    config = spec.config
    config.bos_token, config.eos_token, config.unk_token = (
        tokenizer.id_to_token(i) for i in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id)
    )
    config.layer_norm_epsilon = c.layer_norm_eps
    state = {name: t.detach().float().cpu().numpy() for name, t in model.state_dict().items()}
    decoder = spec.decoder
    decoder.scale_embeddings = False
    decoder.embeddings.weight = state["tok_emb.weight"]
    if isinstance(model.pos_emb, torch.nn.Embedding):
        decoder.position_encodings.encodings = state["pos_emb.weight"]
    else:
        rows = max(c.max_len, SINUSOID_ROWS)
        table = model.pos_emb(torch.zeros(1, rows, c.d_model), positions=torch.arange(rows))
        decoder.position_encodings.encodings = table[0].detach().float().numpy()
    _norm(decoder.layer_norm, state, "decoder.norm")
    for i, layer in enumerate(decoder.layer):
        prefix = f"decoder.layers.{i}"
        _norm(layer.self_attention.layer_norm, state, f"{prefix}.norm1")
        _attention(layer.self_attention, state, f"{prefix}.self_attn", self_attention=True)
        _norm(layer.ffn.layer_norm, state, f"{prefix}.norm3")
        _linear(layer.ffn.linear_0, state, f"{prefix}.ffn.linear1")
        if gated:
            _linear(layer.ffn.linear_0_noact, state, f"{prefix}.ffn.linear3")
        _linear(layer.ffn.linear_1, state, f"{prefix}.ffn.linear2")
    head = "tok_emb" if c.tie_output else "lm_head"
    decoder.projection.weight = state[f"{head}.weight"]
    if "lm_head.bias" in state:
        decoder.projection.bias = state["lm_head.bias"]
    return spec


def _position_table(positions: torch.nn.Module, d_model: int, max_len: int) -> np.ndarray:
    """What ``positions`` adds at positions ``0 .. max_len-1``: aiayn's own table, whichever kind."""
    with torch.no_grad():
        return positions(torch.zeros(1, max_len, d_model))[0].float().numpy()


def _linear(spec: Any, state: dict[str, np.ndarray], name: str) -> None:
    spec.weight = state[f"{name}.weight"]
    if f"{name}.bias" in state:
        spec.bias = state[f"{name}.bias"]


def _norm(spec: Any, state: dict[str, np.ndarray], name: str) -> None:
    spec.gamma = state[f"{name}.weight"]
    if hasattr(spec, "beta"):  # LayerNorm (RMSNorm has no shift): zeros where aiayn has no bias
        spec.beta = state.get(f"{name}.bias", np.zeros_like(spec.gamma))


def _attention(spec: Any, state: dict[str, np.ndarray], name: str, self_attention: bool) -> None:
    """CTranslate2 keeps Q, K, V fused in ``linear[0]`` (self-attention) or Q in ``linear[0]`` and
    K, V fused in ``linear[1]`` (cross-attention); the output projection is the last."""

    def fused(parts: list[str]) -> dict[str, np.ndarray]:
        weight = np.concatenate([state[f"{name}.{p}.weight"] for p in parts])
        if f"{name}.{parts[0]}.bias" not in state:
            return {"weight": weight}
        return {
            "weight": weight,
            "bias": np.concatenate([state[f"{name}.{p}.bias"] for p in parts]),
        }

    groups = (
        [["q_proj", "k_proj", "v_proj"]] if self_attention else [["q_proj"], ["k_proj", "v_proj"]]
    )
    for target, parts in zip(spec.linear, groups):
        for field, value in fused(parts).items():
            setattr(target, field, value)
    _linear(spec.linear[-1], state, f"{name}.out_proj")


# ---- vocabulary and tokenizers ----------------------------------------------------------------------


def _pieces(tokenizer: Any, side: str) -> list[str]:
    pieces = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    if len(set(pieces)) != len(pieces):
        seen: set[str] = set()
        repeated = next(p for p in pieces if p in seen or seen.add(p))
        raise ConfigError(
            f"cannot export to CTranslate2: the {side} vocabulary lists the piece {repeated!r} "
            "twice (CTranslate2 looks pieces up by name)"
        )
    return pieces


def _hf_tokenizer(tokenizer: Any) -> Any:
    """The tokenizer as a Hugging Face ``tokenizers`` object whose ids are aiayn's, or None."""
    from .hf_export import hf_tokenizer_of

    if getattr(tokenizer, "order", None) is not None:  # reordered on import: its ids are not ours
        return None
    try:
        return hf_tokenizer_of(tokenizer)
    except Exception:  # no tokenizer.json form (e.g. SentencePiece): the pieces are still listed
        return None


def _convert(spec: Any, output_dir: Path, quantization: str | None) -> None:
    """CTranslate2's own conversion steps for a spec built here (validate, optimise or quantise,
    save): a ``ctranslate2.converters.Converter`` whose ``_load`` returns the spec."""
    from ctranslate2.converters.converter import Converter

    class SpecConverter(Converter):
        def _load(self) -> Any:
            return spec

    SpecConverter().convert(str(output_dir), quantization=quantization)
