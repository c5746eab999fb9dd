"""BERT's own task: guess the words hidden behind ``[MASK]`` (``aiayn fill-mask``).

The masked-LM head (a BERT trained by ``aiayn train mlm``, or a Hugging Face ``BertForMaskedLM``
folder) scores every vocabulary entry at each ``[MASK]``; the answer is the ``k`` most probable
(softmax over the vocabulary), as Hugging Face's fill-mask pipeline gives them. Every ``[MASK]`` is
predicted in the same forward pass, each without knowing what the others become.

all-MiniLM-L6-v2 (``builtin:minilm``) ships without its masked-LM head (sentence-transformers keeps
the encoder only), so it cannot fill masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import AiaynError
from ..models.bert import BertForMaskedLM

if TYPE_CHECKING:
    from ..data.wordpiece import WordPieceTokenizer

__all__ = ["MaskFiller"]

#: Texts per forward pass.
BATCH = 32


class MaskFiller:
    """A BERT with its masked-LM head: texts with ``[MASK]`` in, the likeliest tokens out.

    Args:
        model: the ``BertForMaskedLM``.
        tokenizer: its WordPiece tokenizer.
    """

    def __init__(self, model: BertForMaskedLM, tokenizer: WordPieceTokenizer) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.mask_token = tokenizer.id_to_token(tokenizer.mask_id)

    @classmethod
    def load(
        cls, spec: str, device: torch.device | str = "cpu", quantize: str | None = None
    ) -> MaskFiller:
        """A model directory from ``aiayn train mlm`` or a Hugging Face ``BertForMaskedLM`` folder;
        ``quantize="int8"``: its Linear layers in int8 (:func:`aiayn.quantize.quantize_model`, CPU
        only).

        Raises:
            AiaynError: an unusable directory, or a model without the masked-LM head.
        """
        from .mlm import load_text_model

        model, tokenizer, _ = load_text_model(spec, device)
        if not isinstance(model, BertForMaskedLM):
            raise AiaynError(
                f"{spec}: this BERT has no masked-LM head (all-MiniLM-L6-v2 and other "
                "sentence-transformers models keep the encoder only), so it cannot fill masks; use "
                "a model from `aiayn train mlm` or a Hugging Face BertForMaskedLM folder"
            )
        from ..quantize import quantize_model

        return cls(quantize_model(model, quantize), tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer.encode_batch(list(texts))
        for number, (text, row) in enumerate(zip(texts, ids), start=1):
            if self.tokenizer.mask_id not in row:
                shown = text if len(text) <= 40 else text[:40] + "..."
                cut = self.tokenizer.max_length
                within = f" within the model's first {cut} tokens" if cut else ""
                raise AiaynError(
                    f"input {number} ({shown!r}): no {self.mask_token}{within}; write "
                    f"{self.mask_token} where a word should be guessed"
                )
        return ids

    @torch.inference_mode()
    def logits(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """The head's logits at each ``[MASK]`` of each text: one ``(M_i, V)`` tensor per text.

        Raises:
            AiaynError: a text without ``[MASK]``.
        """
        ids = self._encode(texts)
        out: list[torch.Tensor] = []
        for start in range(0, len(ids), BATCH):
            input_ids, key_mask = self.tokenizer.pad(ids[start : start + BATCH])
            input_ids, key_mask = input_ids.to(self.device), key_mask.to(self.device)
            at_mask = (input_ids == self.tokenizer.mask_id) & key_mask  # (B, T)
            rows = self.model.logits_at(input_ids, key_mask, where=at_mask).float().cpu()  # (N, V)
            out.extend(rows.split(at_mask.sum(dim=1).tolist()))
        return out

    def fill(self, texts: Sequence[str], top_k: int = 5) -> list[dict[str, Any]]:
        """``{"text", "masks": [[{"token", "id", "score"}, ...] for each [MASK]]}`` for each text,
        the ``top_k`` likeliest tokens first (``score``: softmax probability over the vocabulary).

        Raises:
            AiaynError: a text without ``[MASK]``.
        """
        results = []
        for text, logits in zip(texts, self.logits(texts)):
            probs, ids = torch.softmax(logits, dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
            masks = [
                [
                    {"token": self.tokenizer.id_to_token(i), "id": i, "score": round(p, 6)}
                    for p, i in zip(p_row, i_row)
                ]
                for p_row, i_row in zip(probs.tolist(), ids.tolist())
            ]
            results.append({"text": text, "masks": masks})
        return results
