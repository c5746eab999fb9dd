"""Parallel TSV pairs with the file line each came from, for commands that report per line.

:func:`aiayn.data.corpus.read_parallel_tsv` checks every line and returns the pairs alone (blank lines
skipped). Scoring prints one result per pair and a classifier names the line of an unknown label, so
both need each pair's line number: read the pairs with the strict reader, then number them by one
more pass over the (by then known to be clean) file, counting the lines the reader keeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .corpus import read_parallel_tsv

__all__ = ["NumberedPair", "read_numbered_tsv"]


@dataclass(frozen=True)
class NumberedPair:
    """One pair of a TSV file: the 1-based line it is on, its first and second column."""

    line: int
    source: str
    target: str


def _kept_lines(path: Path) -> list[int]:
    """Numbers of the lines the strict reader turns into pairs (it skips lines that are blank and
    hold no tab); the file was already read by it, so it is UTF-8 with ``\\n`` line breaks."""
    text = path.read_bytes().decode("utf-8-sig")
    return [n for n, line in enumerate(text.split("\n"), start=1) if "\t" in line or line.strip()]


def read_numbered_tsv(path: str | os.PathLike[str], swap: bool = False) -> list[NumberedPair]:
    """The pairs of a TSV file (as :func:`~aiayn.data.corpus.read_parallel_tsv` reads them) with
    their line numbers.

    Raises:
        DataError: the file is missing, unreadable, or has a malformed line (named with its number).
    """
    path = Path(path)
    pairs = read_parallel_tsv(path, swap=swap)
    lines = _kept_lines(path)
    return [NumberedPair(n, s, t) for n, (s, t) in zip(lines, pairs, strict=True)]
