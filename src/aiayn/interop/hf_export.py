"""``aiayn export DIR --to hf``: an aiayn model folder as a Hugging Face one.

The folder ``save_pretrained`` writes (``config.json``, ``model.safetensors``), loadable by
``transformers.AutoModel*.from_pretrained``, plus the tokenizer as ``tokenizer.json`` (and a
``tokenizer_config.json`` naming its special tokens, so ``AutoTokenizer`` reads it too) or, for a
ViT, a ``preprocessor_config.json`` with its image size and normalisation:

* ``gpt`` -> ``GPT2LMHeadModel`` (learned positions, LayerNorm) or ``LlamaForCausalLM`` (rotary,
  RMSNorm, SwiGLU);
* ``transformer`` -> ``MarianMTModel`` (a Marian-shaped model: see :mod:`.marian`); a model
  imported from Marian gets its rows back in Marian's order, and one imported with Marian's
  SentencePiece tokenizer gets it back as ``MarianTokenizer`` writes it (``source.spm``,
  ``target.spm``, ``vocab.json``), since Hugging Face has no ``tokenizer.json`` form of it;
* ``bert`` -> ``BertForMaskedLM``; ``vit`` -> ``ViTForImageClassification``.

A character tokenizer has no Hugging Face counterpart of its own; it is written as a word-level
tokenizer whose words are single characters, which encodes and decodes the same text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel
from torch import nn

from ..data.pretrained_tokenizer import MarianSpmTokenizer, OwnIdsTokenizer
from ..data.tokenizers import SPECIAL_TOKENS, UNK_TOKEN, CharTokenizer
from ..errors import CheckpointError
from .pretrained import Initial, read_model_folder

__all__ = ["export_hf", "hf_tokenizer_of", "marian_rows"]


def export_hf(directory: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the aiayn model folder ``directory`` as a Hugging Face folder ``out``.

    Returns:
        ``{"kind", "model_type", "out"}``.

    Raises:
        CheckpointError: not an aiayn model folder, or a model Hugging Face has no class for.
    """
    initial = read_model_folder(directory)
    if initial.kind not in _EXPORTERS:  # a text classifier: mean pooling, which HF's BERTs lack
        raise CheckpointError(
            f"{directory}: a {initial.kind} model has no Hugging Face class aiayn writes "
            f"(it exports {', '.join(_EXPORTERS)} models)"
        )
    hf, files = _EXPORTERS[initial.kind](initial.build(), initial)
    out = Path(out)
    hf.save_pretrained(str(out))
    for name, content in files.items():
        if isinstance(content, bytes):  # a SentencePiece model
            (out / name).write_bytes(content)
        else:
            (out / name).write_text(content, encoding="utf-8")
    return {"kind": initial.kind, "model_type": hf.config.model_type, "out": str(out)}


def hf_tokenizer_of(tokenizer: Any) -> HFTokenizer:
    """The Hugging Face tokenizer of an aiayn tokenizer (a character one: see the module doc)."""
    if isinstance(tokenizer, CharTokenizer):
        return _char_tokenizer(tokenizer)
    hf = getattr(tokenizer, "hf_tokenizer", None)
    if hf is None:
        raise CheckpointError(f"a {type(tokenizer).__name__} cannot be written as tokenizer.json")
    return hf


def _char_tokenizer(tokenizer: CharTokenizer) -> HFTokenizer:
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *tokenizer.chars])}
    hf = HFTokenizer(WordLevel(vocab, unk_token=UNK_TOKEN))
    # One piece per character, whitespace and line breaks included; joined back without spaces.
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    return hf


def _tokenizer_files(
    tokenizer: Any, special: dict[str, int], max_length: int, name: str = "tokenizer.json"
) -> dict[str, str]:
    """``tokenizer.json`` and a ``tokenizer_config.json`` naming its special tokens by role."""
    hf = hf_tokenizer_of(tokenizer)
    names = {f"{role}_token": hf.id_to_token(i) for role, i in special.items()}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length}
    return {
        name: hf.to_str(pretty=True),
        "tokenizer_config.json": json.dumps({**config, **names}, indent=2, ensure_ascii=False),
    }


def _theirs(tokenizer: Any, aiayn_id: int) -> int:
    """The Hugging Face tokenizer's id of an aiayn id (they differ only after a reordering)."""
    order = getattr(tokenizer, "order", None)
    return aiayn_id if order is None else order[aiayn_id]


def marian_rows(order: list[int]) -> list[int]:
    """Marian id -> aiayn row, for a vocabulary reordered on import (``order``: aiayn id ->
    Marian id). An id listed twice takes its last row: Marian's ``<pad>`` is aiayn's ``<bos>``, the
    row the decoder starts from (aiayn's ``<pad>`` row only pads)."""
    rows: dict[int, int] = {}
    for ours, theirs in enumerate(order):
        rows[theirs] = ours
    return [rows[i] for i in range(len(rows))]


def _lm_ids(tokenizer: Any) -> dict[str, int]:
    return {
        "bos": tokenizer.bos_id,
        "eos": tokenizer.eos_id,
        "pad": tokenizer.pad_id,
        "unk": tokenizer.unk_id,
    }


def _gpt(model: nn.Module, initial: Initial) -> tuple[Any, dict[str, str]]:
    from .gpt2 import to_hf_gpt2
    from .llama import to_hf_llama

    tokenizer, c = initial.tokenizer, model.config
    ids = _lm_ids(tokenizer)
    extra = {"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]}
    llama_like = c.positional == "rotary" or c.norm == "rmsnorm" or c.activation == "swiglu"
    hf = (to_hf_llama if llama_like else to_hf_gpt2)(model, **extra)
    return hf, _tokenizer_files(tokenizer, ids, c.max_len)


def _translation(model: nn.Module, initial: Initial) -> tuple[Any, dict[str, str | bytes]]:
    from .marian import reindex_vocab, to_hf_marian

    source, target = initial.tokenizers["source"], initial.tokenizers["target"]
    order = source.order if isinstance(source, OwnIdsTokenizer) else None
    if order is not None:  # imported from Marian: its rows back in Marian's order
        model = reindex_vocab(model, marian_rows(order), pad_id=order[0])
    ids = {r: _theirs(source, i) for r, i in _lm_ids(source).items()}
    hf = to_hf_marian(model, bos_id=ids["bos"], eos_id=ids["eos"])
    if isinstance(source, MarianSpmTokenizer):
        return hf, _marian_spm_files(source, target, ids, model.config.max_len)
    files = _tokenizer_files(source, ids, model.config.max_len)
    if target is not source:  # Hugging Face's Marian reads one tokenizer; the target's is beside it
        files["target_tokenizer.json"] = hf_tokenizer_of(target).to_str(pretty=True)
    return hf, files


def _marian_spm_files(
    source: MarianSpmTokenizer, target: Any, ids: dict[str, int], max_length: int
) -> dict[str, str | bytes]:
    """The files ``MarianTokenizer.save_pretrained`` writes, which ``MarianTokenizer`` (and
    ``AutoTokenizer``) read back: both SentencePiece models, the one ``vocab.json``, the config."""
    if not isinstance(target, MarianSpmTokenizer) or target.vocab != source.vocab:
        raise CheckpointError(
            "a Marian SentencePiece source tokenizer needs a target one with the same vocab.json"
        )
    vocab = source.vocab
    piece = {i: name for name, i in vocab.items()}
    config = {
        "tokenizer_class": "MarianTokenizer",
        "model_max_length": max_length,
        "separate_vocabs": False,
        **{f"{role}_token": piece[ids[role]] for role in ("eos", "unk", "pad")},
    }
    return {
        "source.spm": source.spm_model,
        "target.spm": target.spm_model,
        "vocab.json": json.dumps(vocab, indent=2, ensure_ascii=False),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
    }


def _bert(model: nn.Module, initial: Initial) -> tuple[Any, dict[str, str]]:
    from .bert import to_hf_bert

    tok = initial.tokenizer
    ids = {"pad": tok.pad_id, "unk": tok.unk_id, "cls": tok.cls_id, "sep": tok.sep_id}
    ids["mask"] = tok.mask_id
    return to_hf_bert(model), _tokenizer_files(tok, ids, model.config.max_len)


def _vit(model: nn.Module, initial: Initial) -> tuple[Any, dict[str, str]]:
    from .vit import to_hf_vit

    image = initial.info.get("image", {})
    size = model.config.image_size
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,  # aiayn's pixels are in [0, 1]
        "do_normalize": True,
        "image_mean": image.get("mean", [0.5] * model.config.in_channels),
        "image_std": image.get("std", [0.5] * model.config.in_channels),
    }
    hf = to_hf_vit(model, initial.info.get("labels", ()))
    return hf, {"preprocessor_config.json": json.dumps(processor, indent=2)}


_EXPORTERS = {"gpt": _gpt, "transformer": _translation, "bert": _bert, "vit": _vit}
