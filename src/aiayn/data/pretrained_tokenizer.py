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

Saved as one json file, which :func:`aiayn.data.tokenizers.load_tokenizer` recognises by its kind::

    {"kind": "aiayn-pretrained", "version": 1, "special_ids": {"pad": .., "bos": .., "eos": ..,
     "unk": ..}, "order": [...] or null, "tokenizer": {... the Hugging Face tokenizer.json ...}}

The Hugging Face tokenizer inside is untouched, so exporting the model writes it back as it came.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from ..errors import CheckpointError
from .tokenizers import Tokenizer

__all__ = ["PRETRAINED_KIND", "ROLES", "PretrainedTokenizer"]

PRETRAINED_KIND = "aiayn-pretrained"
_FORMAT_VERSION = 1
#: aiayn's special roles, each naming one id of the tokenizer.
ROLES = ("pad", "bos", "eos", "unk")


class PretrainedTokenizer(Tokenizer):
    """A Hugging Face tokenizer with its own special ids (see the module docstring).

    Args:
        hf_tokenizer: the tokenizer, as the pretrained model uses it.
        special_ids: the aiayn id playing each of :data:`ROLES`.
        order: aiayn id -> the Hugging Face tokenizer's id, when the model's rows were reordered on
            import; None when aiayn's ids are the tokenizer's.

    Raises:
        CheckpointError: a role missing or out of range, or an ``order`` that does not fit.
    """

    kind = PRETRAINED_KIND

    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        special_ids: Mapping[str, int],
        order: Sequence[int] | None = None,
    ) -> None:
        # Text is data, never control (as for aiayn's BPE): "</s>" typed in a corpus is spelled out.
        hf_tokenizer.encode_special_tokens = True
        self._hf = hf_tokenizer
        hf_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        self._order = None if order is None else np.asarray(order, dtype=np.int64)
        if self._order is not None:
            if self._order.ndim != 1 or len(self._order) == 0:
                raise CheckpointError("tokenizer order must be a non-empty list of ids")
            if self._order.min() < 0 or self._order.max() >= hf_size:
                raise CheckpointError(f"tokenizer order names ids outside 0 .. {hf_size - 1}")
            # The reverse lookup; an id listed twice maps to its first aiayn id (<pad>, not <bos>).
            self._ours = np.full(hf_size, -1, dtype=np.int64)
            listed, first = np.unique(self._order, return_index=True)
            self._ours[listed] = first
            if (self._ours < 0).any():
                raise CheckpointError("tokenizer order leaves some of the tokenizer's ids out")
        self._vocab_size = hf_size if self._order is None else len(self._order)
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
        """aiayn id -> the Hugging Face tokenizer's id, or None when they are the same."""
        return None if self._order is None else self._order.tolist()

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The Hugging Face tokenizer, as it came (its ids are ``order``'s values)."""
        return self._hf

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def _ours_of(self, ids: list[int]) -> list[int]:
        return ids if self._order is None else self._ours[ids].tolist()

    def _theirs_of(self, ids: list[int]) -> list[int]:
        return ids if self._order is None else self._order[ids].tolist()

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
        return json.dumps(
            {
                "kind": PRETRAINED_KIND,
                "version": _FORMAT_VERSION,
                "special_ids": self._special,
                "order": self.order,
                "tokenizer": json.loads(self._hf.to_str()),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedTokenizer:
        """The tokenizer of a saved file's content (see the module docstring).

        Raises:
            CheckpointError: another format version, or missing or malformed parts.
        """
        if data.get("version") != _FORMAT_VERSION:
            raise CheckpointError(
                f"unsupported pretrained-tokenizer format version {data.get('version')!r}"
            )
        special, order, inner = data.get("special_ids"), data.get("order"), data.get("tokenizer")
        if not isinstance(special, dict) or not isinstance(inner, dict):
            raise CheckpointError("pretrained tokenizer without special_ids or tokenizer")
        if order is not None and not (
            isinstance(order, list) and all(isinstance(i, int) for i in order)
        ):
            raise CheckpointError("pretrained tokenizer order must be a list of ids")
        return cls(HFTokenizer.from_str(json.dumps(inner)), special, order)
