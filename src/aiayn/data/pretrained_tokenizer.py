"""The tokenizer of a pretrained model from elsewhere (a Hugging Face folder), kept as it is.

A pretrained model's embedding rows are indexed by its own tokenizer's ids, and those are not aiayn's
``<pad>=0 <bos>=1 <eos>=2 <unk>=3``: GPT-2 has one special token, ``<|endoftext|>``, as its last id;
Llama has ``<unk>=0 <s>=1 </s>=2``; Marian ``</s>=0 <unk>=1`` and ``<pad>`` last. Renumbering the
vocabulary would change the model (new rows in the softmax), so :class:`PretrainedTokenizer` wraps
the Hugging Face tokenizer unchanged and says which of its ids play aiayn's four roles; code that asks
the tokenizer for ``pad_id``, ``eos_id``, ... (language modelling) then works as it does with aiayn's
own tokenizers.

Translation's batching and search use aiayn's fixed ids, so a translation model's vocabulary rows are
reordered on import instead (:func:`aiayn.interop.marian.reindex_vocab`). ``order`` records that:
aiayn id ``i`` is the Hugging Face tokenizer's id ``order[i]`` (an id may appear twice: Marian starts
its decoder with ``<pad>``, which becomes both aiayn's ``<pad>`` and its ``<bos>``).

Marian's own tokenizer is not a ``tokenizer.json`` but SentencePiece: ``source.spm`` (or
``target.spm``) cuts the text into pieces and ``vocab.json`` numbers them (a piece it lacks is
``<unk>``), as ``transformers.MarianTokenizer`` does. :class:`MarianSpmTokenizer` does the same with
the ``sentencepiece`` package (imported only when such a tokenizer is built).

Both are saved as one json file, which :func:`aiayn.data.tokenizers.load_tokenizer` recognises by its
kind::

    {"kind": "aiayn-pretrained", "version": 1, "special_ids": {"pad": .., "bos": .., "eos": ..,
     "unk": ..}, "order": [...] or null, "tokenizer": {... the Hugging Face tokenizer.json ...}}

with, for Marian's SentencePiece, ``"sentencepiece": {"model": base64 of the .spm file, "vocab":
{piece: id}}`` in place of ``"tokenizer"``. What is inside is untouched, so exporting the model
writes it back as it came.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from ..errors import CheckpointError
from .tokenizers import Tokenizer

__all__ = [
    "PRETRAINED_KIND",
    "ROLES",
    "MarianSpmTokenizer",
    "OwnIdsTokenizer",
    "PretrainedTokenizer",
    "marian_vocab",
    "sentencepiece_module",
]

PRETRAINED_KIND = "aiayn-pretrained"
_FORMAT_VERSION = 1
#: aiayn's special roles, each naming one id of the tokenizer.
ROLES = ("pad", "bos", "eos", "unk")


class OwnIdsTokenizer(Tokenizer):
    """What a pretrained model's tokenizer shares, whatever cuts its text: its own special ids and,
    after a reordering on import, the map between aiayn's ids and its own (see the module docstring).

    Args:
        size: how many ids the tokenizer itself has.
        special_ids: the aiayn id playing each of :data:`ROLES`.
        order: aiayn id -> the tokenizer's own id, when the model's rows were reordered on import;
            None when aiayn's ids are the tokenizer's.

    Raises:
        CheckpointError: a role missing or out of range, or an ``order`` that does not fit.
    """

    kind = PRETRAINED_KIND

    def __init__(
        self, size: int, special_ids: Mapping[str, int], order: Sequence[int] | None = None
    ) -> None:
        self._order = None if order is None else np.asarray(order, dtype=np.int64)
        if self._order is not None:
            if self._order.ndim != 1 or len(self._order) == 0:
                raise CheckpointError("tokenizer order must be a non-empty list of ids")
            if self._order.min() < 0 or self._order.max() >= size:
                raise CheckpointError(f"tokenizer order names ids outside 0 .. {size - 1}")
            # The reverse lookup; an id listed twice maps to its first aiayn id (<pad>, not <bos>).
            self._ours = np.full(size, -1, dtype=np.int64)
            listed, first = np.unique(self._order, return_index=True)
            self._ours[listed] = first
            if (self._ours < 0).any():
                raise CheckpointError("tokenizer order leaves some of the tokenizer's ids out")
        self._vocab_size = size if self._order is None else len(self._order)
        missing = [r for r in ROLES if not isinstance(special_ids.get(r), int)]
        if missing:
            raise CheckpointError(f"tokenizer special ids: no {', '.join(missing)}")
        self._special = {r: int(special_ids[r]) for r in ROLES}
        self._check_ids(list(self._special.values()))

    @property
    def pad_id(self) -> int:
        return self._special["pad"]

    @property
    def bos_id(self) -> int:
        return self._special["bos"]

    @property
    def eos_id(self) -> int:
        return self._special["eos"]

    @property
    def unk_id(self) -> int:
        return self._special["unk"]

    @property
    def special_ids(self) -> dict[str, int]:
        """The id of each role (:data:`ROLES`)."""
        return dict(self._special)

    @property
    def order(self) -> list[int] | None:
        """aiayn id -> the tokenizer's own id, or None when they are the same."""
        return None if self._order is None else self._order.tolist()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def _ours_of(self, ids: list[int]) -> list[int]:
        return ids if self._order is None else self._ours[ids].tolist()

    def _theirs_of(self, ids: list[int]) -> list[int]:
        return ids if self._order is None else self._order[ids].tolist()

    def _header(self) -> dict[str, Any]:
        """The saved file's fields every kind shares."""
        return {
            "kind": PRETRAINED_KIND,
            "version": _FORMAT_VERSION,
            "special_ids": self._special,
            "order": self.order,
        }


class PretrainedTokenizer(OwnIdsTokenizer):
    """A Hugging Face tokenizer with its own special ids (see the module docstring).

    Args:
        hf_tokenizer: the tokenizer, as the pretrained model uses it.
        special_ids: the aiayn id playing each of :data:`ROLES`.
        order: aiayn id -> the Hugging Face tokenizer's id, when the model's rows were reordered on
            import; None when aiayn's ids are the tokenizer's.

    Raises:
        CheckpointError: a role missing or out of range, or an ``order`` that does not fit.
    """

    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        special_ids: Mapping[str, int],
        order: Sequence[int] | None = None,
    ) -> None:
        # Text is data, never control (as for aiayn's BPE): "</s>" typed in a corpus is spelled out.
        hf_tokenizer.encode_special_tokens = True
        self._hf = hf_tokenizer
        super().__init__(hf_tokenizer.get_vocab_size(with_added_tokens=True), special_ids, order)

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The Hugging Face tokenizer, as it came (its ids are ``order``'s values)."""
        return self._hf

    def encode(self, text: str) -> list[int]:
        return self._ours_of(self._hf.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        batch_encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        return [self._ours_of(e.ids) for e in batch_encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        self._check_ids(ids)
        return self._hf.decode(self._theirs_of(ids), skip_special_tokens=True)

    def id_to_token(self, i: int) -> str:
        self._check_ids([i])
        return self._hf.id_to_token(self._theirs_of([i])[0])

    def tokens(self, text: str) -> list[str]:
        return self._hf.encode(text, add_special_tokens=False).tokens

    def _to_json(self) -> str:
        content = {**self._header(), "tokenizer": json.loads(self._hf.to_str())}
        return json.dumps(content, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OwnIdsTokenizer:
        """The tokenizer of a saved file's content (see the module docstring): a
        :class:`PretrainedTokenizer`, or a :class:`MarianSpmTokenizer` for Marian's SentencePiece.

        Raises:
            CheckpointError: another format version, or missing or malformed parts.
        """
        if data.get("version") != _FORMAT_VERSION:
            raise CheckpointError(
                f"unsupported pretrained-tokenizer format version {data.get('version')!r}"
            )
        special, order, inner = data.get("special_ids"), data.get("order"), data.get("tokenizer")
        spm = data.get("sentencepiece")
        if isinstance(spm, dict) and inner is None:
            inner = spm
        if not isinstance(special, dict) or not isinstance(inner, dict):
            raise CheckpointError("pretrained tokenizer without special_ids or tokenizer")
        if order is not None and not (
            isinstance(order, list) and all(isinstance(i, int) for i in order)
        ):
            raise CheckpointError("pretrained tokenizer order must be a list of ids")
        if inner is spm:
            return MarianSpmTokenizer(
                _spm_bytes(spm.get("model")), spm.get("vocab"), special, order
            )
        return cls(HFTokenizer.from_str(json.dumps(inner)), special, order)


def sentencepiece_module() -> Any:
    """The ``sentencepiece`` package, which only Marian's SentencePiece tokenizers need.

    Raises:
        CheckpointError: it is not installed (a CheckpointError, so that reading a saved
            tokenizer names its file, not a corrupt one).
    """
    try:
        import sentencepiece
    except ImportError:
        raise CheckpointError(
            "Marian's SentencePiece tokenizer (source.spm, target.spm) needs the sentencepiece "
            "package: pip install sentencepiece"
        ) from None
    return sentencepiece


def _spm_bytes(model: Any) -> bytes:
    if not isinstance(model, str):
        raise CheckpointError("SentencePiece tokenizer without its model")
    try:
        return base64.b64decode(model, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("SentencePiece model is not valid base64") from None


class MarianSpmTokenizer(OwnIdsTokenizer):
    """Marian's SentencePiece tokenizer, as ``transformers.MarianTokenizer`` reads text.

    A leading language code (``>>fr<<``, multilingual models) is one token; SentencePiece cuts the
    rest into pieces, and ``vocab.json`` numbers each piece, ``<unk>`` for a piece it lacks (a Marian
    vocabulary is not SentencePiece's own numbering). One tokenizer is one side: the source side cuts
    with ``source.spm``, the target side with ``target.spm``; both number with one ``vocab.json``.

    Args:
        spm_model: the ``.spm`` file's bytes (a SentencePiece model).
        vocab: piece -> Marian id (``vocab.json``).
        special_ids: the aiayn id playing each of :data:`ROLES`.
        order: aiayn id -> Marian id (see the module docstring); None when they are the same.

    Raises:
        CheckpointError: ``sentencepiece`` is not installed; an unreadable model, a malformed
            vocabulary, bad special ids or order.
    """

    def __init__(
        self,
        spm_model: bytes,
        vocab: Mapping[str, int],
        special_ids: Mapping[str, int],
        order: Sequence[int] | None = None,
    ) -> None:
        self._spm_model = bytes(spm_model)
        self._spm = _load_spm(self._spm_model)
        self._vocab = marian_vocab(vocab)
        self._pieces = {i: piece for piece, i in self._vocab.items()}
        super().__init__(max(self._pieces) + 1, special_ids, order)
        # The ids decode drops: what transformers' skip_special_tokens drops (</s>, <unk>, <pad>).
        self._skip = set(self._theirs_of([self.pad_id, self.bos_id, self.eos_id, self.unk_id]))

    @property
    def spm_model(self) -> bytes:
        """The SentencePiece model, as the ``.spm`` file holds it."""
        return self._spm_model

    @property
    def vocab(self) -> dict[str, int]:
        """piece -> Marian id (``vocab.json``)."""
        return dict(self._vocab)

    def _marian_unk(self) -> int:
        return self._theirs_of([self.unk_id])[0]

    def tokens(self, text: str) -> list[str]:
        code, rest = _language_code(text)
        return code + self._spm.encode(rest, out_type=str)

    def unknown_spans(self, text: str) -> list[str]:
        """The parts of ``text`` read as ``<unk>`` (pieces ``vocab.json`` lacks), each once, in
        order of appearance. A piece is its text with "▁" for a space (SentencePiece spells a
        character its model lacks as itself), so the piece names the text."""
        spans = [
            p.replace("\u2581", " ").strip() for p in self.tokens(text) if p not in self._vocab
        ]
        return list(dict.fromkeys(span for span in spans if span))

    def encode(self, text: str) -> list[int]:
        unk = self._marian_unk()
        return self._ours_of([self._vocab.get(piece, unk) for piece in self.tokens(text)])

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        self._check_ids(ids)
        pieces = [self._pieces.get(i, "") for i in self._theirs_of(ids) if i not in self._skip]
        # MarianTokenizer.convert_tokens_to_string: SentencePiece joins, any "▁" left is a space.
        return self._spm.decode_pieces([p for p in pieces if p]).replace("\u2581", " ").strip()

    def id_to_token(self, i: int) -> str:
        self._check_ids([i])
        return self._pieces.get(self._theirs_of([i])[0], self._pieces[self._marian_unk()])

    def _to_json(self) -> str:
        model = base64.b64encode(self._spm_model).decode("ascii")
        content = {**self._header(), "sentencepiece": {"model": model, "vocab": self._vocab}}
        return json.dumps(content, ensure_ascii=False)


def _language_code(text: str) -> tuple[list[str], str]:
    """``MarianTokenizer.remove_language_code``: a ``>>xx<<`` at the very start is one token."""
    if text.startswith(">>") and (end := text.find("<<")) != -1:
        return [text[: end + 2]], text[end + 2 :]
    return [], text


def _load_spm(model: bytes) -> Any:
    processor = sentencepiece_module().SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(model)
    except (RuntimeError, OSError, TypeError) as e:
        raise CheckpointError(f"not a readable SentencePiece model ({e})") from None
    return processor


def marian_vocab(vocab: Any) -> dict[str, int]:
    """``vocab.json``'s piece -> id, each id once (two pieces on one row could not both decode).

    Raises:
        CheckpointError: not such a mapping.
    """
    if not isinstance(vocab, Mapping) or not vocab:
        raise CheckpointError("SentencePiece vocabulary must be a non-empty {piece: id} object")
    bad = [k for k, v in vocab.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise CheckpointError(f"SentencePiece vocabulary: {bad[0]!r} has no id >= 0")
    if len(set(vocab.values())) != len(vocab):
        raise CheckpointError("SentencePiece vocabulary: two pieces share one id")
    return {str(k): int(v) for k, v in vocab.items()}
