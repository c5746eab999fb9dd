"""``copy`` and ``reverse``: distinct random sequences of letters, so their splits are disjoint."""

from __future__ import annotations

import functools
import random

from .draws import _SEED, _randbelow

_SEQ_SIZES = {"train": 20_000, "valid": 500, "test": 1000}


@functools.lru_cache(maxsize=2)
def _sequence_splits(reverse: bool) -> dict[str, tuple[tuple[str, str], ...]]:
    rng = random.Random(_SEED)
    alphabet = "abcdefghijklmnopqrst"
    total = sum(_SEQ_SIZES.values())
    seen: set[str] = set()
    sources: list[str] = []
    while len(sources) < total:
        length = 3 + _randbelow(rng, 10)  # 3..12 tokens
        seq = " ".join(alphabet[_randbelow(rng, len(alphabet))] for _ in range(length))
        if seq not in seen:  # distinct sequences make the three splits disjoint
            seen.add(seq)
            sources.append(seq)
    pairs = [(s, " ".join(reversed(s.split())) if reverse else s) for s in sources]
    test_end = _SEQ_SIZES["test"]
    valid_end = test_end + _SEQ_SIZES["valid"]
    return {
        "test": tuple(pairs[:test_end]),
        "valid": tuple(pairs[test_end:valid_end]),
        "train": tuple(pairs[valid_end:]),
    }
