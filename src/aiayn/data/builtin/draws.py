"""Deterministic randomness for the built-in corpora: only ``random.Random.random`` (whose sequence
Python guarantees across versions and platforms), never ``shuffle``/``randrange``."""

from __future__ import annotations

import random
from collections.abc import Sequence

#: Every built-in corpus is drawn from this seed: the day "Attention Is All You Need" appeared on arXiv.
_SEED = 20170612


def _randbelow(rng: random.Random, n: int) -> int:
    # Random.random() is the one method whose output Python promises never to change.
    return min(int(rng.random() * n), n - 1)


def _shuffled(items: Sequence, rng: random.Random) -> list:
    """Fisher-Yates on top of Random.random(), so the order is the same on every Python."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = _randbelow(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out
