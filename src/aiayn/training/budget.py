"""The budget of a training run, and measuring what a step costs on the user's own batches.

Every ``aiayn train`` command plans the same way: the budget is optimizer steps (``--max-steps``) or
wall-clock minutes (``--max-minutes``; 10 when neither is given), and whatever depends on speed is
*measured*, never estimated from a formula: a few real optimizer steps (forward, backward, update) of
each candidate model on real batches of the user's data. A formula of width and depth cannot know a
corpus's source lengths, its vocabulary, this machine's cores or what else is running.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

#: The time budget when a command is given neither --max-steps nor --max-minutes.
DEFAULT_MINUTES = 10.0


@dataclass(frozen=True)
class Budget:
    """How long a run may train: optimizer steps, wall-clock seconds, or both (whichever ends first).

    Attributes:
        max_steps: optimizer steps (None: no step limit).
        seconds: wall-clock seconds, planning included (None: no time limit).
    """

    max_steps: int | None
    seconds: float | None

    @classmethod
    def from_args(cls, max_steps: int | None, max_minutes: float | None) -> Budget:
        if max_steps is None and max_minutes is None:
            max_minutes = DEFAULT_MINUTES
        return cls(max_steps, None if max_minutes is None else 60.0 * max_minutes)

    @property
    def by_time(self) -> bool:
        return self.seconds is not None

    def describe(self) -> str:
        parts = []
        if self.max_steps is not None:
            parts.append(f"{self.max_steps:,} steps")
        if self.seconds is not None:
            parts.append(f"{self.seconds / 60:g} minutes")
        return " or ".join(parts)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving torch's or Python's random generators (calibration must not
    change the run: the real model's initialisation depends on the seed alone)."""
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)


def seconds_per_step(
    step: Callable[[], object], steps: int = 3, device: torch.device | None = None
) -> float:
    """Median wall-clock seconds of ``step()`` over ``steps`` calls, after one untimed warm-up call
    (the first pays for allocations and caches). The median: one lucky or unlucky call must not
    decide a plan."""
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def linear_cost(points: dict[int, float]) -> tuple[float, float]:
    """``(fixed, per_unit)`` seconds of the line through measured ``{size: seconds}`` points (least
    squares; both kept >= 0), so a step's cost at any batch size is ``fixed + per_unit * size``."""
    xs, ys = list(points), list(points.values())
    if len(xs) == 1:
        return 0.0, ys[0] / max(xs[0], 1)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = max(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var, 1e-12)
    return max(my - slope * mx, 0.0), slope
