"""The zh-en split rule: valid and test hold out whole combinations (see the package docstring)."""

from __future__ import annotations

import functools
import random
from collections import Counter

from .draws import _SEED, _shuffled
from .grammar import _Example, _generate_zh_en

SPLITS: tuple[str, ...] = ("train", "valid", "test")
_ZH_EN_SIZES = {"test": 1000, "valid": 500}
_MIN_TRAIN_USES = 5
_PINNED_TRAIN = ("我是一个学生", "我爱中国")


def _key_slots(key: tuple[str, ...]) -> tuple[str, ...]:
    return key[1:]


@functools.lru_cache(maxsize=1)
def _zh_en_splits() -> dict[str, tuple[_Example, ...]]:
    """Split the zh-en examples by held-out combination (see the module docstring)."""
    examples = _generate_zh_en()
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.key, []).append(i)
    uses = Counter(slot for key in groups for slot in _key_slots(key))
    pinned = {ex.key for ex in examples if ex.source in _PINNED_TRAIN}

    rng = random.Random(_SEED + 1)
    # groups keeps first-appearance order, so this list (and everything below) is deterministic.
    keys = _shuffled(list(groups), rng)
    assigned: dict[tuple[str, ...], str] = {}
    for split in ("test", "valid"):
        size = 0
        # Keys are drawn uniformly, so a family's expected share of a held-out split equals its
        # share of all sentences (drawing by sentence would over-pick families with large groups).
        for key in keys:
            if size >= _ZH_EN_SIZES[split]:
                break
            if key in assigned or key in pinned:
                continue
            slots = _key_slots(key)
            if any(uses[slot] <= _MIN_TRAIN_USES for slot in slots):
                continue
            assigned[key] = split
            size += len(groups[key])
            uses.subtract(slots)

    # Each split in its own fixed shuffled order, so no split is sorted by sentence family.
    order = _shuffled(range(len(examples)), rng)
    out: dict[str, list[_Example]] = {split: [] for split in SPLITS}
    for i in order:
        out[assigned.get(examples[i].key, "train")].append(examples[i])
    return {split: tuple(exs) for split, exs in out.items()}
