"""Pretrained weights for ``aiayn train ... --init-from SOURCE`` and ``aiayn import``.

SOURCE is an aiayn model folder or a Hugging Face one (``save_pretrained``'s ``config.json`` with a
``model_type``): GPT-2 or Llama for language models, Marian for translation, BERT for masked-LM, ViT
for image classification. :func:`load_initial` reads it into an :class:`Initial`: the aiayn config
and weights (converted by this package's converters) and the model's own tokenizer(s), so nothing is
learned before training but the weights themselves.

Tokenizers of Hugging Face folders:

* GPT-2 and Llama: ``tokenizer.json``, else GPT-2's ``vocab.json`` + ``merges.txt`` (a byte-level
  BPE); kept with their own ids (:class:`~aiayn.data.pretrained_tokenizer.PretrainedTokenizer`),
  the special roles read from ``config.json`` and ``tokenizer_config.json``.
* Marian: ``tokenizer.json``, else what ``MarianTokenizer.save_pretrained`` writes: SentencePiece's
  ``source.spm`` and ``target.spm`` with the ids of ``vocab.json``
  (:class:`~aiayn.data.pretrained_tokenizer.MarianSpmTokenizer`, on the ``sentencepiece``
  package): a source and a target tokenizer, one when the two models are the same file. The model's
  vocabulary rows are put in aiayn's special-id order (:func:`.marian.reindex_vocab`).
* BERT: ``tokenizer.json`` or ``vocab.txt`` (aiayn's WordPiece loader).
* ViT: no tokenizer; the class names come from ``id2label`` and the pixel normalisation from
  ``preprocessor_config.json``.

:func:`write_model_folder` writes an :class:`Initial` as an aiayn model folder, the same files that
``aiayn train`` writes, so every command that reads one (``translate``, ``generate``, ``embed``,
``classify``, ...) reads it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from torch import Tensor, nn

from ..data.pretrained_tokenizer import (
    ROLES,
    MarianSpmTokenizer,
    PretrainedTokenizer,
    marian_vocab,
    sentencepiece_module,
)
from ..data.tokenizers import SPECIAL_TOKENS, BPETokenizer, Tokenizer, load_tokenizer
from ..errors import AiaynError, CheckpointError
from ..modeldir import LoadedModel, load_model_dir, save_model_dir
from ..models import registry
from .hf_files import read_json, read_optional_json, weight_files

__all__ = [
    "FINE_TUNE_LR_SCALE",
    "HF_KINDS",
    "TRAIN_COMMANDS",
    "Initial",
    "hf_kind",
    "load_initial",
    "read_model_folder",
    "tokenizer_files",
    "write_model_folder",
]

log = logging.getLogger(__name__)

#: aiayn model kind -> the ``aiayn train`` sub-command that trains it.
TRAIN_COMMANDS = {"transformer": "translate", "gpt": "lm", "bert": "mlm", "vit": "vit"}
#: Fine-tuning's peak learning rate as a share of training from scratch's (each task's default by
#: width): the weights already fit, and a from-scratch rate would first undo much of what they know.
FINE_TUNE_LR_SCALE = 0.1
#: Hugging Face ``model_type`` -> aiayn model kind.
HF_KINDS = {"gpt2": "gpt", "llama": "gpt", "marian": "transformer", "bert": "bert", "vit": "vit"}
#: aiayn model kind -> the ``task`` an aiayn-trained folder of that kind records.
_TASKS = {"transformer": "translate", "gpt": "lm", "bert": "mlm", "vit": "classify"}
#: Tokenizer file names of a written folder (aiayn's own: those ``aiayn train`` writes).
_TEXT_FILE, _SOURCE_FILE, _TARGET_FILE = (
    "tokenizer.json",
    "source_tokenizer.json",
    "target_tokenizer.json",
)
#: Token names that play each special role in Hugging Face vocabularies, most common first.
_ROLE_NAMES = {
    "eos": ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>"),
    "bos": ("<s>", "<bos>", "<|begin_of_text|>"),
    "pad": ("<pad>", "[PAD]"),
    "unk": ("<unk>", "[UNK]"),
}


@dataclass
class Initial:
    """A pretrained model to start from, as aiayn config, weights and tokenizers.

    Attributes:
        kind: the aiayn model kind (``transformer``, ``gpt``, ``bert``, ``vit``).
        config: its model config.
        state_dict: its weights, under aiayn's names, on the CPU.
        tokenizers: tokenizer by role: ``text`` (``gpt``, ``bert``), ``source`` and ``target``
            (``transformer``: one object when shared); none for ``vit``.
        info: what else a model folder of this kind records (``vit``: ``labels`` and ``image``).
        source: the folder it was read from.
        untrained: name prefixes of the parameters the folder lacks (a Hugging Face
            ``BertModel``'s masked-LM head): they start from their initial values.
    """

    kind: str
    config: Any
    state_dict: dict[str, Tensor]
    tokenizers: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    source: Path = Path()
    untrained: tuple[str, ...] = ()

    @property
    def tokenizer(self) -> Any:
        """The ``text`` tokenizer (language and masked-LM models)."""
        return self.tokenizers["text"]

    def build(self) -> nn.Module:
        """A model of :attr:`config` holding these weights, in eval mode."""
        model = registry.build(self.kind, self.config)
        self.load_into(model)
        return model.eval()

    def load_into(
        self, model: nn.Module, optional: tuple[str, ...] = (), skip: tuple[str, ...] = ()
    ) -> list[str]:
        """Copy the weights into ``model`` (built from :attr:`config`, perhaps with overrides).

        Args:
            model: the model to fill.
            optional: more name prefixes the weights may lack (besides :attr:`untrained`);
                those parameters keep their initial values.
            skip: name prefixes not to copy (a classifier head for other classes).

        Returns:
            The names left at their initial values.

        Raises:
            CheckpointError: the weights don't fit the model (a ``--set`` that changed its shape).
        """
        state = {k: v for k, v in self.state_dict.items() if not (skip and k.startswith(skip))}
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        loose = self.untrained + optional + skip
        required = [k for k in missing if not (loose and k.startswith(loose))]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if required or unexpected or wrong:
            raise CheckpointError(
                f"--init-from {self.source}: the weights do not fit the model (missing "
                f"{required[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}); "
                "a --set that changes the model's shape cannot start from them"
            )
        model.load_state_dict(state, strict=False)
        return missing


def hf_kind(directory: Path, hf_config: dict[str, Any]) -> str:
    """The aiayn kind of a Hugging Face folder, from its ``config.json``'s ``model_type``.

    Raises:
        CheckpointError: a model type aiayn does not convert.
    """
    model_type = hf_config.get("model_type")
    if model_type not in HF_KINDS:
        raise CheckpointError(
            f"{directory}: a Hugging Face {model_type!r} model; aiayn converts "
            f"{', '.join(HF_KINDS)}"
        )
    return HF_KINDS[model_type]


def load_initial(
    kind: str | None, source: str | Path, out_dir: str | Path | None = None
) -> Initial:
    """Read the model to start training from.

    Args:
        kind: the aiayn kind the command trains (None: whatever the folder holds).
        source: an aiayn model folder or a Hugging Face one (see the module docstring).
        out_dir: the run's ``--out`` folder, which must be another one.

    Raises:
        CheckpointError: a missing or unreadable folder, a model of another kind, a missing
            tokenizer, or weights that do not fit their config.
    """
    directory = Path(source)
    if not directory.is_dir():
        raise CheckpointError(f"--init-from {source}: no such model folder")
    if out_dir is not None and directory.resolve() == Path(out_dir).resolve():
        raise CheckpointError(
            f"--init-from {source} is the --out folder; use --resume to continue a run there"
        )
    hf_config = read_json(directory / "config.json")
    if not isinstance(hf_config, dict) or hf_config.get("format") == "aiayn":
        return read_model_folder(directory, kind)
    found = hf_kind(directory, hf_config)
    if kind is not None and found != kind:
        raise CheckpointError(
            f"{directory}: a Hugging Face {hf_config['model_type']} model, which "
            f"`aiayn train {TRAIN_COMMANDS[kind]}` cannot train (it trains "
            f"{_hf_names(kind)}; this one is for `aiayn train {TRAIN_COMMANDS[found]}`)"
        )
    initial = _HF_LOADERS[hf_config["model_type"]](directory, hf_config)
    initial.source = directory
    return initial


def _hf_names(kind: str) -> str:
    return " or ".join(name for name, k in HF_KINDS.items() if k == kind)


# ---- aiayn folders ---------------------------------------------------------------------------------


def read_model_folder(directory: str | Path, kind: str | None = None) -> Initial:
    """An aiayn model folder as an :class:`Initial` (config, weights, tokenizers, extra info).

    Raises:
        CheckpointError: not a model folder, or one of another kind than ``kind``.
    """
    loaded = load_model_dir(directory, "cpu", expect=kind)
    tokenizers = _folder_tokenizers(loaded)
    state, untrained = loaded.model.state_dict(), ()
    if loaded.kind != loaded.info["kind"]:  # a classifier's encoder (load_model_dir's `expect`)
        state = {f"bert.{k}": v for k, v in state.items() if not k.startswith("pooler.")}
        untrained = ("mlm.",)
        info = {}
    else:
        info = {key: loaded.info[key] for key in ("labels", "image") if key in loaded.info}
    return Initial(loaded.kind, loaded.config, state, tokenizers, info, Path(directory), untrained)


def _folder_tokenizers(loaded: LoadedModel) -> dict[str, Any]:
    """The tokenizers listed in a folder's ``config.json``; one object for a file listed twice."""
    read: Any = load_tokenizer
    if registry.config_kind(loaded.kind) == "bert":  # a BERT's or a text classifier's WordPiece
        from ..data.wordpiece import WordPieceTokenizer

        read = WordPieceTokenizer.from_file
    by_path: dict[Path, Any] = {}
    out = {}
    for role in loaded.info.get("tokenizers", {}):
        path = loaded.tokenizer_path(role)
        if path not in by_path:
            by_path[path] = loaded.tokenizer(role, read)
        out[role] = by_path[path]
    return out


def tokenizer_files(tokenizers: dict[str, Any]) -> dict[str, str]:
    """The file name of each role's tokenizer in a written folder, as ``aiayn train`` names them:
    ``tokenizer.json`` for one text tokenizer or one shared by source and target."""
    if set(tokenizers) <= {"text"}:
        return {role: _TEXT_FILE for role in tokenizers}
    if tokenizers["source"] is tokenizers["target"]:
        return {"source": _TEXT_FILE, "target": _TEXT_FILE}
    return {"source": _SOURCE_FILE, "target": _TARGET_FILE}


def write_model_folder(initial: Initial, directory: Path) -> None:
    """Write ``initial`` as an aiayn model folder (config, weights, tokenizer files)."""
    model = initial.build()
    files = tokenizer_files(initial.tokenizers)
    extra = dict(initial.info)
    if initial.kind == "bert":  # what `aiayn train mlm` records beside the tokenizer
        tok = initial.tokenizer
        extra["special_ids"] = {
            "pad": tok.pad_id,
            "unk": tok.unk_id,
            "cls": tok.cls_id,
            "sep": tok.sep_id,
            "mask": tok.mask_id,
        }
    save_model_dir(
        directory,
        initial.kind,
        model,
        initial.config,
        task=_TASKS[initial.kind],
        tokenizers=files,
        imported_from=str(initial.source),
        **extra,
    )
    for role, name in files.items():
        initial.tokenizers[role].save(directory, name.removesuffix(".json"))


# ---- Hugging Face folders ---------------------------------------------------------------------------


def _transformers(what: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise AiaynError(f"reading a {what} folder needs the transformers package") from None
    return transformers


def _from_pretrained(model_class: Any, directory: Path) -> Any:
    """``model_class.from_pretrained`` on a local folder: safetensors only, never the network."""
    weight_files(directory)  # refuses a folder of pickles (which can run code) by name
    try:
        return model_class.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True
        ).eval()
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{directory}: cannot read the weights ({e})") from None


def _initial(kind: str, model: nn.Module, tokenizers: dict[str, Any], **info: Any) -> Initial:
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    return Initial(kind, model.config, state, tokenizers, info)


def _hf_tokenizer_file(directory: Path) -> HFTokenizer | None:
    """``tokenizer.json``, or None when the folder has none."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return HFTokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise CheckpointError(f"{path}: not a readable tokenizer ({e})") from None


def _byte_level_bpe(directory: Path, specials: list[str]) -> HFTokenizer | None:
    """GPT-2's ``vocab.json`` + ``merges.txt`` as a byte-level BPE; None when they are absent."""
    from tokenizers import decoders, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    try:
        hf = HFTokenizer(BPE.from_file(str(vocab), str(merges)))
    except Exception as e:
        raise CheckpointError(f"{vocab}, {merges}: not a readable BPE vocabulary ({e})") from None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    known = [s for s in specials if hf.token_to_id(s) is not None]
    hf.add_special_tokens(known)  # e.g. <|endoftext|>: one token, never split into bytes
    return hf


def _token_names(tok_config: dict[str, Any]) -> dict[str, str]:
    """``tokenizer_config.json``'s special-token names by role (plain or ``{"content": ...}``)."""
    names = {}
    for role in ROLES:
        value = tok_config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            names[role] = value
    return names


def _model_unk(hf: HFTokenizer) -> int | None:
    """The unknown-token id the tokenizer's model itself declares (BPE, WordPiece, Unigram)."""
    model = json.loads(hf.to_str()).get("model", {})
    if isinstance(model.get("unk_id"), int):
        return model["unk_id"]
    name = model.get("unk_token")
    return hf.token_to_id(name) if isinstance(name, str) else None


def _special_ids(
    directory: Path, hf_config: dict[str, Any], hf: HFTokenizer, vocab_size: int
) -> dict[str, int]:
    """The id of each special role: ``config.json``'s ``*_token_id``, else the token named in
    ``tokenizer_config.json``, else a conventional name; ``<bos>``, ``<pad>`` and ``<unk>`` fall
    back to the end token (GPT-2 has only ``<|endoftext|>``).

    Raises:
        CheckpointError: no end-of-text token can be found.
    """
    names = _token_names(read_optional_json(directory / "tokenizer_config.json"))
    ids: dict[str, int] = {}
    for role in ROLES:
        value = hf_config.get(f"{role}_token_id")
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size:
            ids[role] = value
            continue
        for name in (names.get(role), *_ROLE_NAMES[role]):
            if name is not None and hf.token_to_id(name) is not None:
                ids[role] = hf.token_to_id(name)
                break
    if "unk" not in ids and _model_unk(hf) is not None:
        ids["unk"] = _model_unk(hf)
    if "eos" not in ids:
        raise CheckpointError(
            f"{directory}: no end-of-text token (eos_token_id in config.json or eos_token in "
            "tokenizer_config.json)"
        )
    return {role: ids.get(role, ids["eos"]) for role in ROLES}


def _wrap(hf: HFTokenizer, special: dict[str, int], order: list[int] | None = None) -> Tokenizer:
    """aiayn's own BPE tokenizer when ``hf`` is one (an aiayn model exported before), else the
    pretrained tokenizer as it is."""
    own_layout = special == {role: i for i, role in enumerate(ROLES)} and all(
        hf.token_to_id(tok) == i for i, tok in enumerate(SPECIAL_TOKENS)
    )
    if order is None and own_layout and json.loads(hf.to_str())["model"]["type"] == "BPE":
        return BPETokenizer(hf)
    return PretrainedTokenizer(hf, special, order)


def _text_tokenizer(directory: Path, hf_config: dict[str, Any], vocab_size: int) -> Tokenizer:
    """A GPT-2 or Llama folder's tokenizer (see the module docstring).

    Raises:
        CheckpointError: no tokenizer files, or more tokens than the model has rows.
    """
    tok_config = read_optional_json(directory / "tokenizer_config.json")
    hf = _hf_tokenizer_file(directory) or _byte_level_bpe(
        directory, ["<|endoftext|>", *_token_names(tok_config).values()]
    )
    if hf is None:
        raise CheckpointError(
            f"{directory}: no tokenizer.json (or GPT-2's vocab.json + merges.txt); aiayn reuses "
            "the model's own tokenizer and cannot read a SentencePiece tokenizer.model"
        )
    _check_fits(directory, hf, vocab_size)
    return _wrap(hf, _special_ids(directory, hf_config, hf, vocab_size))


def _check_fits(directory: Path, hf: HFTokenizer, vocab_size: int) -> None:
    size = hf.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {size} tokens, but the model only {vocab_size} rows"
        )


def _gpt2(directory: Path, hf_config: dict[str, Any]) -> Initial:
    from .gpt2 import from_hf_gpt2

    hf = _from_pretrained(_transformers("GPT-2").GPT2LMHeadModel, directory)
    model = from_hf_gpt2(hf)
    tokenizer = _text_tokenizer(directory, hf_config, model.config.vocab_size)
    return _initial("gpt", model, {"text": tokenizer})


def _llama(directory: Path, hf_config: dict[str, Any]) -> Initial:
    from .llama import from_pretrained_dir

    model = from_pretrained_dir(directory)
    tokenizer = _text_tokenizer(directory, hf_config, model.config.vocab_size)
    return _initial("gpt", model, {"text": tokenizer})


def _marian_order(directory: Path, hf_config: Any, unk: int | None) -> tuple[dict, list | None]:
    """Marian's special ids and the row order that puts them at aiayn's ids (None: already
    there). Marian starts decoding from ``<pad>``: that row becomes both ``<pad>`` and ``<bos>``."""
    pad, eos = hf_config.pad_token_id, hf_config.eos_token_id
    start = hf_config.decoder_start_token_id
    start = pad if start is None else start
    if None in (pad, eos, unk):
        raise CheckpointError(f"{directory}: Marian model without pad, eos or <unk> token ids")
    head = [pad, start, eos, unk]
    special = dict(zip(ROLES, range(4)))
    if head == [0, 1, 2, 3]:
        return special, None
    rest = [i for i in range(hf_config.vocab_size) if i not in head]
    return special, head + rest


@dataclass
class _MarianSpm:
    """What ``MarianTokenizer.save_pretrained`` writes, read but not yet numbered for aiayn."""

    source: bytes
    target: bytes
    vocab: dict[str, int]
    unk: int | None


#: The files ``MarianTokenizer.save_pretrained`` writes (transformers' ``VOCAB_FILES_NAMES``).
_MARIAN_SPM_FILES = ("source.spm", "target.spm", "vocab.json")


def _marian_spm(directory: Path) -> _MarianSpm:
    """``source.spm``, ``target.spm`` and ``vocab.json``, checked before the weights are read.

    Raises:
        CheckpointError: one of them missing (or no tokenizer at all), a separate target
            vocabulary, or no ``sentencepiece`` package.
    """
    missing = [name for name in _MARIAN_SPM_FILES if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory}: no tokenizer.json, and no Marian SentencePiece tokenizer "
            f"(missing {', '.join(missing)}); aiayn reuses the model's own tokenizer"
        )
    if (directory / "target_vocab.json").is_file():
        raise CheckpointError(
            f"{directory}: a Marian tokenizer with a separate target_vocab.json; aiayn reads "
            "Marian models with one shared vocabulary"
        )
    sentencepiece_module()  # refused now, in one line, rather than after the weights are read
    listed = read_json(directory / "vocab.json")
    try:
        vocab = marian_vocab(listed)
    except CheckpointError as e:
        raise CheckpointError(f"{directory}/vocab.json: {e}") from None
    names = _token_names(read_optional_json(directory / "tokenizer_config.json"))
    unk = vocab.get(names.get("unk", "<unk>"))
    return _MarianSpm(
        (directory / "source.spm").read_bytes(),
        (directory / "target.spm").read_bytes(),
        vocab,
        unk if isinstance(unk, int) else None,
    )


def _spm_tokenizers(
    directory: Path, spm: _MarianSpm, hf_config: Any
) -> dict[str, MarianSpmTokenizer]:
    """The source and target tokenizers (one object when both sides cut with the same model)."""
    size = max(spm.vocab.values()) + 1
    if size > hf_config.vocab_size:
        raise CheckpointError(
            f"{directory}/vocab.json: ids up to {size - 1}, but the model only has "
            f"{hf_config.vocab_size} rows"
        )
    special, order = _marian_order(directory, hf_config, spm.unk)

    def side(name: str, model: bytes) -> MarianSpmTokenizer:
        try:
            return MarianSpmTokenizer(model, spm.vocab, special, order)
        except CheckpointError as e:
            raise CheckpointError(f"{directory / name}: {e}") from None

    source = side("source.spm", spm.source)
    if spm.target == spm.source:
        return {"source": source, "target": source}
    return {"source": source, "target": side("target.spm", spm.target)}


def _marian(directory: Path, hf_config: dict[str, Any]) -> Initial:
    from .marian import from_hf_marian, reindex_vocab

    if not hf_config.get("share_encoder_decoder_embeddings", True):
        raise CheckpointError(
            f"{directory}: a Marian model with separate source and target vocabularies; aiayn "
            "reads Marian models with one shared vocabulary"
        )
    tokenizer = _hf_tokenizer_file(directory)
    spm = _marian_spm(directory) if tokenizer is None else None
    hf = _from_pretrained(_transformers("Marian").MarianMTModel, directory)
    if tokenizer is not None:
        _check_fits(directory, tokenizer, hf.config.vocab_size)
        unk = _model_unk(tokenizer)
        unk = tokenizer.token_to_id("<unk>") if unk is None else unk
        special, order = _marian_order(directory, hf.config, unk)
        shared = _wrap(tokenizer, special, order)
        tokenizers = {"source": shared, "target": shared}
    else:
        tokenizers = _spm_tokenizers(directory, spm, hf.config)
        order = tokenizers["source"].order
    model = from_hf_marian(hf)
    if order is not None:
        model = reindex_vocab(model, order, pad_id=0)
    return _initial("transformer", model, tokenizers)


def _bert(directory: Path, hf_config: dict[str, Any]) -> Initial:
    from ..models.bert import BertModel
    from .bert import load_hf_dir

    pre = load_hf_dir(directory)
    initial = _initial("bert", pre.model, {"text": pre.tokenizer.with_max_length(None)})
    if isinstance(pre.model, BertModel):  # the encoder alone: aiayn's names in a masked-LM model
        initial.state_dict = {f"bert.{k}": v for k, v in initial.state_dict.items()}
        initial.untrained = ("mlm.",)
        log.warning("%s has no masked-LM head: it starts untrained", directory)
    return initial


def _vit(directory: Path, hf_config: dict[str, Any]) -> Initial:
    from ..models.vit import ViT
    from .hf_files import load_safetensors
    from .vit import config_from_hf, convert_state_dict, load_converted

    config = config_from_hf(hf_config)
    model = ViT(config)
    state = convert_state_dict(load_safetensors(weight_files(directory)))
    if load_converted(model, state, str(directory)):
        log.warning("%s has no classifier: its head starts untrained", directory)
    labels = _vit_labels(hf_config, config.num_classes)
    return _initial("vit", model, {}, labels=labels, image=_vit_image(directory, config))


def _vit_labels(hf_config: dict[str, Any], num_classes: int) -> list[str]:
    """Class names in id order (``id2label``), or ``LABEL_i`` when it does not list them all."""
    id2label = hf_config.get("id2label") or {}
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, ValueError):
        names = {}
    if sorted(names) != list(range(num_classes)):
        return [f"LABEL_{i}" for i in range(num_classes)]
    return [names[i] for i in range(num_classes)]


def _vit_image(directory: Path, config: Any) -> dict[str, Any]:
    """The image settings of aiayn's classifier from ``preprocessor_config.json``: pixels in
    [0, 1] (Hugging Face's rescaling by 1/255), then its mean and standard deviation."""
    processor = read_optional_json(directory / "preprocessor_config.json")
    channels = config.in_channels
    mean, std = [0.0] * channels, [1.0] * channels
    if processor.get("do_normalize", True):
        mean = processor.get("image_mean", [0.5] * channels)
        std = processor.get("image_std", [0.5] * channels)
    if len(mean) != channels or len(std) != channels:
        raise CheckpointError(
            f"{directory}/preprocessor_config.json: image_mean/image_std for {len(mean)} "
            f"channels, but the model has {channels}"
        )
    return {
        "size": config.image_size,
        "channels": channels,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


_HF_LOADERS = {"gpt2": _gpt2, "llama": _llama, "marian": _marian, "bert": _bert, "vit": _vit}
