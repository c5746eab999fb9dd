"""Learning-rate schedules.

* :func:`noam` — the paper's schedule (section 5.3):
  ``lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``: linear warm-up, then inverse
  square-root decay. A plain function of the optimizer step (1-based).
* :func:`warmup_cosine` — linear warm-up to the peak, cosine decay to ``min_ratio`` of it, over steps.
* :class:`NoamSchedule` — :func:`noam` with the peak rate given directly (a budget of steps alone).
* :class:`BudgetSchedule` — the schedule of every ``aiayn train`` command with a time budget: warm-up and decay are
  fractions of the run's budget, *steps or wall-clock time*, whichever is further used up. With a time
  budget the number of steps is unknown in advance (it is whatever this machine manages), so a schedule
  written in steps either stops half-way down its decay (the machine was slower than planned) or sits
  at its floor for the last minutes (faster). Driven by the used fraction, every run gets a whole
  warm-up → decay and the whole budget is used. The :class:`~aiayn.training.trainer.Trainer` computes
  the used fraction (``max(step / max_steps, seconds / budget_seconds)``) and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial


def noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The paper's learning rate at optimizer ``step`` (>= 1)."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def warmup_cosine(step: int, peak: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``peak * min_ratio`` at ``total``."""
    step = max(step, 1)
    if step <= warmup:
        return peak * step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class NoamSchedule:
    """:func:`noam` with its peak set directly: ``peak`` at step ``warmup``, then ``1/sqrt`` decay.

    It has no end point, so a run extended on resume (a larger ``--max-steps``) follows exactly the
    schedule it would have followed uninterrupted: the schedule for a budget of steps alone.
    """

    peak: float
    warmup: int

    def __call__(self, step: int) -> float:
        return (
            self.peak * math.sqrt(self.warmup) * min(max(step, 1) ** -0.5, step * self.warmup**-1.5)
        )


#: Decay shapes of :class:`BudgetSchedule`, as functions of progress in [0, 1] -> factor in [0, 1].
DECAYS = {
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "linear": lambda p: 1 - p,
}


@dataclass(frozen=True)
class BudgetSchedule:
    """Linear warm-up, then decay to ``peak * min_ratio`` when the budget is used up.

    Warm-up ends after ``warmup_steps`` steps or ``warmup_fraction`` of the budget, whichever comes
    first (a short time budget must not be all warm-up; a long one needs no more than the usual
    steps). The decay runs over the used fraction of the budget, so the rate is at its floor exactly
    when the budget runs out.

    Attributes:
        peak: the rate after warm-up.
        warmup_steps: the longest warm-up in optimizer steps (None: by fraction only).
        warmup_fraction: the longest warm-up as a fraction of the budget.
        min_ratio: the floor, as a fraction of ``peak``.
        decay: ``cosine`` or ``linear``.
    """

    peak: float
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    min_ratio: float = 0.1
    decay: str = "cosine"

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {sorted(DECAYS)}, got {self.decay!r}")

    def __call__(self, step: int, used: float) -> float:
        """The rate at optimizer ``step`` (1-based) when ``used`` of the budget is spent."""
        warmed = used / self.warmup_fraction if self.warmup_fraction > 0 else 1.0
        if self.warmup_steps:
            warmed = max(warmed, step / self.warmup_steps)
        if warmed < 1:
            return self.peak * warmed
        shape = DECAYS[self.decay](min(max(used, 0.0), 1.0))
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * shape)


def warmup_cosine_schedule(
    peak: float,
    warmup: int,
    max_steps: int | None,
    budget_seconds: float | None,
    min_ratio: float = 0.1,
) -> Callable:
    """GPT's, BERT's and ViT's schedule: :func:`warmup_cosine` over ``max_steps`` for a budget of
    steps alone, a :class:`BudgetSchedule` (warm-up ``warmup`` steps or 5% of the budget, cosine to
    ``min_ratio``) when there is a time budget."""
    if budget_seconds is None:
        if max_steps is None:
            raise ValueError("a schedule needs max_steps or budget_seconds")
        return partial(
            warmup_cosine, peak=peak, warmup=warmup, total=max_steps, min_ratio=min_ratio
        )
    return BudgetSchedule(peak, warmup_steps=warmup, warmup_fraction=0.05, min_ratio=min_ratio)
