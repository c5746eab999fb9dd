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
    step: Callable[[], object], steps: int = 3, device: torch.device | None = None, warmup: int = 2
) -> float:
    """Median wall-clock seconds of ``step()`` over ``steps`` calls, after ``warmup`` untimed calls
    (the first ones pay for allocations, heap growth and caches). The median: one lucky or unlucky
    call must not decide a plan."""
    times = []
    for i in range(steps + warmup):
        start = time.perf_counter()
        step()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
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


#: A run should make at least this many optimizer steps: a budget spent on a few huge batches
#: learns little (on a 20k-pair corpus, 183 steps of big batches left the loss at 4.3), and up to
#: a little beyond it more, smaller steps beat fewer, larger ones. Measured on this project's
#: 2-core CPU, same model and vocabulary: grapheme -> phoneme, 5 minutes, 49.9% exact with
#: 1,024-token batches (2,587 steps) against 38.8% with 2,048-token ones (1,156 steps); Bible
#: verses fr-en, 8 minutes, BLEU 14.9 at 1,024 tokens (2,782 steps) against 10.0 at 2,048 (1,642)
#: and 10.2 at 512 (4,867: too noisy). At 1,000 the rule sat between the 2,048 and 1,024 choices
#: and a few percent of timing noise decided.
TARGET_STEPS = 2000


@dataclass(frozen=True)
class BatchChoice:
    """A batch size chosen for a budget, with the measurements behind it."""

    size: int
    steps: int  # optimizer steps the budget gives at this size
    seconds_per_step: dict[int, float]  # measured

    def to_json(self) -> dict:
        return {
            "seconds_per_step": {str(k): round(v, 4) for k, v in self.seconds_per_step.items()},
            "batch": self.size,
            "steps": self.steps,
        }


def choose_batch(
    measure: Callable[[int], float],
    sizes: list[int],
    seconds: float,
    target_steps: int = TARGET_STEPS,
    probes: tuple[int, ...] | None = None,
) -> BatchChoice:
    """The largest of ``sizes`` whose measured step cost still leaves ``target_steps`` steps in
    ``seconds`` (the smallest when none does).

    ``measure(size)`` times real optimizer steps at one batch size; it is called at ``probes`` (by
    default the smallest and largest size, or the one size) and a step's cost at other sizes is read
    off the line through them (:func:`linear_cost`).
    """
    sizes = sorted(sizes)
    if probes is None:
        probes = (sizes[0],) if len(sizes) == 1 else (sizes[0], sizes[-1])
    costs = {p: measure(p) for p in probes}
    fixed, per_unit = linear_cost(costs)
    steps = {b: int(seconds / max(fixed + per_unit * b, 1e-9)) for b in sizes}
    enough = [b for b in sizes if steps[b] >= target_steps]
    size = max(enough) if enough else sizes[0]
    return BatchChoice(size, steps[size], costs)


def measure_task_step(
    model: torch.nn.Module,
    make_task: Callable[[int], object],
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
    size: int,
    device: torch.device,
    steps: int = 3,
) -> float:
    """Seconds of one real optimizer step of a copy of ``model`` on the batches of
    ``make_task(size)`` (a :class:`~aiayn.training.trainer.Task` with batches of ``size``): forward,
    loss, backward, update. The model itself and the random generators are left untouched."""
    import copy

    with preserved_rng():
        trial = copy.deepcopy(model).train()
        optimizer = make_optimizer(trial)
        task = make_task(size)
        stream = endless_batches(task)

        def step() -> None:
            batch = next(stream)
            optimizer.zero_grad(set_to_none=True)
            loss, n = task.loss(trial, batch, 0)
            (loss / max(n, 1)).backward()
            optimizer.step()

        return seconds_per_step(step, steps, device)


def endless_batches(source, first_epoch: int = 0) -> Iterator:
    """``source.batches(epoch)`` epoch after epoch, from ``first_epoch`` on: calibration may need more
    batches than a tiny corpus has in one epoch."""
    epoch = first_epoch
    while True:
        produced = False
        for batch in source.batches(epoch):
            produced = True
            yield batch
        if not produced:
            raise ValueError("the task produced no batches")
        epoch += 1


def describe_choice(choice: BatchChoice, unit: str) -> str:
    """One log line: what was measured and what the chosen batch gives."""
    costs = ", ".join(f"{v * 1e3:.0f} ms at {k}" for k, v in choice.seconds_per_step.items())
    return f"{costs} {unit} a step; {choice.size} {unit} give about {choice.steps:,} steps"
