"""How likely a translation model finds a given reference: ``aiayn score``.

For each ``(source, reference)`` pair the decoder is run teacher-forced (it reads ``<bos>`` + the
reference and predicts the reference + ``<eos>``), and the log-probabilities it gives the reference's
tokens are summed: ``logprob = Σ_t log p(y_t | y_<t, x)`` over the ``tokens`` predicted positions
(the reference's tokens and the ``<eos>``), and ``ppl = exp(-logprob / tokens)``. This is the quantity
the training loss averages (without label smoothing), per sentence: useful to rank candidate
translations, find pairs the model finds implausible (misaligned corpus lines) or compare models on
the same references.

Pairs are batched by length (so a batch carries little padding; padding never changes a score) and
the output layer runs only at the real target positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import TokenBatchSampler, collate_seq2seq
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from ..errors import DataError

__all__ = ["PairScore", "score_file", "score_ids"]

#: Padded tokens per batch (``pairs × longest side``).
DEFAULT_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class PairScore:
    """The score of one pair.

    Attributes:
        logprob: natural-log probability of the reference (+ ``<eos>``) given the source.
        tokens: predicted positions: the reference's tokens and the ``<eos>``.
    """

    logprob: float
    tokens: int

    @property
    def ppl(self) -> float:
        """Per-token perplexity, ``exp(-logprob / tokens)``."""
        return math.exp(-self.logprob / self.tokens)


@torch.inference_mode()
def score_ids(
    model: nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
) -> list[PairScore]:
    """Teacher-forced scores of tokenised ``(source, target)`` pairs (ids without BOS/EOS), in order.

    Args:
        model: an encoder-decoder :class:`~aiayn.models.seq2seq.Transformer` (put in eval mode by
            the caller, as loading does).
        pairs: the pairs; the framing (source + EOS, BOS + target -> target + EOS) is added here.
        batch_tokens: padded tokens per batch.
        bos_id: the decoder's start token (aiayn's ``<bos>``; a model imported from Marian starts
            from its ``<pad>``, its ``decoder_start_token_id``).
        eos_id: the end token.
        pad_id: the padding id.
    """
    device = next(model.parameters()).device
    scores: list[PairScore | None] = [None] * len(pairs)
    lengths = [max(len(s), len(t)) + 1 for s, t in pairs]
    for indices in TokenBatchSampler(lengths, batch_tokens, shuffle=False, seed=0):
        batch = collate_seq2seq([pairs[i] for i in indices], pad_id, bos_id, eos_id).to(device)
        mask = batch.tgt_key_mask  # (B, T)
        logits = model.logits_at(batch.src, batch.tgt_in, batch.src_key_mask, where=mask)  # (N, V)
        picked = F.log_softmax(logits.float(), dim=-1).gather(1, batch.tgt_out[mask][:, None])
        rows = mask.nonzero()[:, 0]  # the pair of each of the N positions (row-major order)
        # float64 sums: a long reference adds hundreds of terms, the total should not drift.
        totals = torch.zeros(len(indices), dtype=torch.float64, device=device)
        totals.index_add_(0, rows, picked.squeeze(1).double())
        counts = mask.sum(dim=1)
        for i, total, count in zip(indices, totals.tolist(), counts.tolist()):
            scores[i] = PairScore(total, int(count))
    return scores  # type: ignore[return-value]  (every index is in exactly one batch)


def score_file(
    model_dir: str | Path,
    test_spec: str,
    swap: bool = False,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> list[dict[str, float | int]]:
    """``{"line", "logprob", "tokens", "ppl"}`` for each pair of a TSV file (``line``: its line in
    the file) or of ``builtin:NAME``'s test split (``line``: the pair's 1-based number).
    ``quantize="int8"``: the model's Linear layers in int8 (CPU only).

    Raises:
        DataError: a malformed line, or a pair longer than the model's positions (named by line).
        CheckpointError: the directory does not hold a translation model.
    """
    from ..data.builtin import is_builtin
    from ..data.numbered_tsv import read_numbered_tsv
    from .translation import Translator, load_pairs

    translator = Translator.load(model_dir, device, quantize=quantize)
    if is_builtin(test_spec):
        pairs = load_pairs(test_spec, "test", swap)
        numbered = [(n, s, t) for n, (s, t) in enumerate(pairs, start=1)]
    else:
        numbered = [(p.line, p.source, p.target) for p in read_numbered_tsv(test_spec, swap)]
    src_ids = translator.src_tok.encode_batch([s for _, s, _ in numbered])
    tgt_ids = translator.tgt_tok.encode_batch([t for _, _, t in numbered])
    limit = translator.model.config.max_len - 1  # positions left for the added EOS / BOS
    for (line, _, _), src, tgt in zip(numbered, src_ids, tgt_ids):
        for side, ids in (("source", src), ("reference", tgt)):
            if len(ids) > limit:
                raise DataError(
                    test_spec,
                    f"{side} has {len(ids)} tokens; the model takes at most {limit}",
                    line=line,
                )
    scores = score_ids(translator.model, list(zip(src_ids, tgt_ids)), batch_tokens)
    return [
        {"line": line, "logprob": s.logprob, "tokens": s.tokens, "ppl": s.ppl}
        for (line, _, _), s in zip(numbered, scores)
    ]
