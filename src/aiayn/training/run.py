"""How every ``train_*`` starts a run: one set-up instead of four copies.

The order matters and is the same for every task: the clock starts first (a time budget counts the
set-up too); the ``--out`` folder is checked and locked before anything is read or written, so a
foreign folder or a second writer is refused before minutes of tokenizing; the process group is joined
(under torchrun) before the lock, so only rank 0 holds it; the generators are seeded before any model
is built; and the saved state to resume from is found through the one finder that also accepts
``last.old`` (a kill between the two renames of a checkpoint swap).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import AiaynError
from . import distributed
from .allocator import keep_freed_memory
from .checkpoint import find_checkpoint
from .rundir import claim_out_dir
from .trainer import Task, TrainConfig, Trainer, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStart:
    """What a training command knows once its run is set up.

    Attributes:
        started: ``time.monotonic()`` when the command began (a time budget counts from here).
        out_dir: the run's folder (checked, and locked when it exists).
        device: where this process trains (under torchrun with CUDA: its own GPU).
        dist: this process's place in the job (a single-process context outside torchrun).
        found: the saved state to resume from (``DIR/last``, or ``DIR/last.old`` after a kill); None
            when starting fresh.
    """

    started: float
    out_dir: Path
    device: torch.device
    dist: distributed.DistContext
    found: Path | None

    @property
    def resuming(self) -> bool:
        return self.found is not None


def prepare_run(
    out_dir: str | Path,
    *,
    device: torch.device | str,
    seed: int,
    resume: bool,
    overwrite: bool,
    distributed_run: bool = True,
    started: float | None = None,
) -> RunStart:
    """Start a training run: clock, memory reuse, process group, ``--out`` claim, seeds, resume point.

    Args:
        out_dir: the ``--out`` folder.
        device: the requested device.
        seed: the run's seed.
        resume: look for saved state to continue from (``--resume``).
        overwrite: accept a non-empty folder that is not an aiayn run (``--overwrite``).
        distributed_run: join torchrun's process group when launched by it (tasks whose trainer
            does not shard their batches over ranks pass False and run as one process).
        started: ``time.monotonic()`` when the time budget began (default: now; the command line
            passes :func:`process_started`, so a budget includes starting Python and torch).
    """
    started = time.monotonic() if started is None else started
    keep_freed_memory()  # ~20% faster CPU steps; see aiayn.training.allocator
    out_dir, device = Path(out_dir), torch.device(device)
    dist = distributed.setup(device) if distributed_run else distributed.DistContext()
    # Before anything is written: refuse a foreign folder or a second writer.
    claim_out_dir(out_dir, overwrite, lock=dist.is_main)
    device = distributed.device_for(dist, device)
    seed_everything(seed)
    found = find_checkpoint(out_dir / "last") if resume else None
    if resume and found is None:
        log.info("no saved state in %s: starting fresh", out_dir)
    return RunStart(started, out_dir, device, dist, found)


def rank_batches(count: int, rank: int, world_size: int) -> range:
    """Which of an epoch's ``count`` batches (the same list on every rank) rank ``rank`` trains on:
    ``rank, rank + W, ...``. The last ``count % W`` are dropped, so every rank takes as many steps
    (DDP and FSDP would wait forever for a missing one), as :mod:`aiayn.data.batching` does."""
    return range(rank, count - count % world_size, world_size)


def process_started() -> float:
    """``time.monotonic()`` at the start of this process, on Linux from ``/proc/self/stat`` (its
    start time since boot); elsewhere ``now``. A user timing ``aiayn train --max-minutes M`` counts
    Python's and torch's start-up (~5 s here) as part of the M minutes, and so does the budget."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, min(age, 60.0))  # a clock oddity never eats the budget


#: ``--dtype`` choices; ``auto`` is bf16 autocast on CUDA and float32 elsewhere (on this project's
#: CPUs bf16 matmuls are several times slower than float32: NOTES-ENV).
DTYPE_CHOICES = ("auto", "float32", "bfloat16")


def resolve_dtype(name: str, device: torch.device) -> str:
    """``--dtype`` as the trainer takes it: ``float32`` or ``bfloat16``."""
    if name not in DTYPE_CHOICES:
        raise AiaynError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    if name == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return name


@dataclass(frozen=True)
class RunOptions:
    """The settings every ``train_*`` shares, one per shared ``aiayn train`` flag (CLI.md), defined
    once: each ``train_*`` takes them as keyword arguments (``**run``) and reads them through
    :meth:`of`, so a flag added here reaches every task.

    Attributes:
        overrides: ``--set KEY=VALUE`` model fields.
        max_steps, max_minutes: the budget (optimizer steps, minutes of this run).
        resume, overwrite: continue from the folder's saved state; accept a non-aiayn folder.
        accumulate, clip_norm: micro-batches per step (None: the task's choice, else 1); gradient
            clipping (None: 1.0; 0 = off).
        eval_every, log_every: steps between validations and metrics lines (None: the task's).
        compile, dtype: torch.compile; autocast precision (``auto``: bf16 on CUDA, else float32).
        fsdp, grad_checkpointing: shard under torchrun; recompute layers in backward.
        progress, seed, device: the progress bar, the run's seed, where to train.
        started_at: ``time.monotonic()`` when the budget began (the command line passes
            :func:`process_started`).
    """

    overrides: list[str] | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    resume: bool = False
    overwrite: bool = False
    accumulate: int | None = None
    clip_norm: float | None = None
    eval_every: int | None = None
    log_every: int | None = None
    compile: bool = False
    dtype: str = "auto"
    fsdp: bool = False
    grad_checkpointing: bool = False
    progress: bool = True
    seed: int = 0
    device: torch.device | str = "cpu"
    started_at: float | None = None

    @classmethod
    def of(cls, run: dict[str, Any]) -> RunOptions:
        """The options from a ``train_*``'s ``**run`` keyword arguments (an unknown one is a
        TypeError, as for any function)."""
        return cls(**run)

    def prepare(self, out_dir: str | Path, distributed_run: bool = True) -> RunStart:
        """:func:`prepare_run` with these options."""
        return prepare_run(
            out_dir,
            device=self.device,
            seed=self.seed,
            resume=self.resume,
            overwrite=self.overwrite,
            distributed_run=distributed_run,
            started=self.started_at,
        )

    def train_config(self, start: RunStart, **task: Any) -> TrainConfig:
        """The Trainer's settings: these options with their defaults filled in once for every task
        (1 micro-batch, clipping at 1.0, float32 on the CPU), then the task's own fields (its
        budget in seconds, evaluation interval, a planned batch accumulation...), which win."""
        shared = {
            "max_steps": self.max_steps,
            "max_minutes": self.max_minutes,
            "accumulate": self.accumulate or 1,
            "clip_norm": 1.0 if self.clip_norm is None else self.clip_norm,
            "eval_every": self.eval_every,
            "log_every": self.log_every or 50,
            "compile": self.compile,
            "dtype": resolve_dtype(self.dtype, start.device),
            "fsdp": self.fsdp,
            "grad_checkpointing": self.grad_checkpointing,
            "progress": self.progress,
            "seed": self.seed,
            "started_at": start.started,
        }
        return TrainConfig(**{**shared, **task})

    def fit(
        self,
        start: RunStart,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[..., float],
        task: Task,
        **config: Any,
    ) -> dict[str, Any]:
        """Train ``task``'s ``model`` to the end of this run (resuming when ``start`` found saved
        state) and return :meth:`Trainer.fit`'s summary. ``config``: the task's own
        :class:`TrainConfig` fields (see :meth:`train_config`)."""
        trainer = Trainer(
            model,
            optimizer,
            schedule,
            task,
            start.out_dir,
            self.train_config(start, **config),
            dist=start.dist,
        )
        return trainer.fit(resume=start.resuming)
