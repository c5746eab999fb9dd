"""Semantic search: the corpus lines nearest in meaning to each query (``aiayn search``).

Queries and corpus lines are embedded with a sentence encoder (:class:`~aiayn.tasks.mlm.
SentenceEncoder`: mean pooling, L2-normalised), and each query's neighbours are the lines of highest
cosine similarity, best first: what ``sentence_transformers.util.semantic_search`` computes from the
same vectors. Queries are scored against the whole corpus a block at a time, so the score matrix
stays small however many queries there are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

if TYPE_CHECKING:
    from .mlm import SentenceEncoder

__all__ = ["Hit", "nearest", "read_passages", "search"]

#: Queries scored against the corpus at once.
QUERY_BLOCK = 256


@dataclass(frozen=True)
class Hit:
    """One neighbour: the corpus line (1-based number in the file), its text, the cosine similarity."""

    line: int
    text: str
    score: float


def read_passages(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file, stripped, with their 1-based line numbers.

    Raises:
        DataError: a folder, a missing or unreadable file, text that is not UTF-8, or no lines.
    """
    from ..data.corpus import read_text

    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file with one passage per line")
    lines = read_text(path).split("\n")  # checked line by line; numbers are the file's lines
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


@torch.inference_mode()
def nearest(queries: Tensor, corpus: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """Cosine similarities and indices ``(Q, k)`` of the ``k`` corpus vectors nearest each query,
    best first (``k = min(top_k, len(corpus))``)."""
    corpus = F.normalize(corpus.float(), dim=-1)
    k = min(top_k, len(corpus))
    scores, indices = [], []
    for start in range(0, len(queries), QUERY_BLOCK):
        block = F.normalize(queries[start : start + QUERY_BLOCK].float(), dim=-1)
        best = (block @ corpus.T).topk(k, dim=-1)  # sorted, largest first
        scores.append(best.values)
        indices.append(best.indices)
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def search(
    encoder: SentenceEncoder,
    queries: Sequence[str],
    passages: Sequence[tuple[int, str]],
    top_k: int = 5,
    batch_size: int = 32,
) -> list[list[Hit]]:
    """The ``top_k`` passages nearest each query, best first.

    Args:
        encoder: the sentence encoder.
        queries: the query texts.
        passages: ``(line number, text)`` of the corpus (see :func:`read_passages`).
        top_k: neighbours per query.
        batch_size: sentences per forward pass when embedding.
    """
    corpus = encoder.encode([text for _, text in passages], batch_size)
    scores, indices = nearest(encoder.encode(list(queries), batch_size), corpus, top_k)
    return [
        [Hit(*passages[i], s) for s, i in zip(s_row, i_row)]
        for s_row, i_row in zip(scores.tolist(), indices.tolist())
    ]
