"""A model-agnostic training loop with exact resume, atomic checkpoints and clean interruption.

A :class:`Task` supplies what is specific to a model family (its batches, its loss, its evaluation, the
files of its model directory); :class:`Trainer` does the rest: gradient accumulation and clipping, the
learning-rate schedule, periodic validation, keeping the best checkpoint, a tqdm bar on stderr,
``metrics.jsonl``, ``--max-steps``/``--max-minutes``, and resume.

Output directory layout::

    DIR/config.json, DIR/model.safetensors, tokenizer files   the best model (a model directory)
    DIR/metrics.jsonl                                          one JSON object per log/eval step
    DIR/last/                                                  the last state: model + trainer.pt

Resume is exact: the optimizer, schedule, RNG states and the position in the epoch's (deterministic)
batch order are restored, so the next losses equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import random
import shutil
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import AiaynError
from . import distributed
from .checkpoint import (
    TRAINER_FILE,
    WEIGHTS_FILE,
    atomic_write_text,
    find_checkpoint,
    load_trainer_state,
    load_weights,
    save_trainer_state,
    save_weights,
    swap_in_directory,
    unique_state,
)
from .checkpointing import enable_checkpointing
from .distributed import DistContext
from .forward import TrainingForward
from .rundir import create_out_dir, mark, release_out_dir, remove_own_folder
from .schedules import BudgetSchedule

log = logging.getLogger(__name__)


class Task(Protocol):
    """What the trainer needs to know about one kind of model and data."""

    #: eval metric that picks the best checkpoint, and whether higher is better
    best_metric: str
    higher_is_better: bool

    def batches(self, epoch: int) -> Iterator[Any]:
        """The training batches of ``epoch``, in a deterministic order for a given seed and epoch."""

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, int]:
        """``(summed loss, number of tokens/examples it covers)`` for one batch."""

    def tokens(self, batch: Any) -> int:
        """How many tokens/examples ``loss`` will cover, known before the forward pass (optional:
        with it the gradient is the exact mean over every token of the global batch, however it is
        split into micro-batches and processes; without it, the mean of per-micro-batch means)."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics (must include ``best_metric``); the model is in eval mode."""

    def write_model_files(self, directory: Path) -> None:
        """Write everything but the weights (``config.json``, tokenizer files) into ``directory``."""


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings.

    Attributes:
        max_steps: stop after this many optimizer steps in total (counted across resumes; None =
            no step limit, the time budget decides).
        max_minutes: stop this invocation after this much time (a cap; see ``budget_seconds``).
        budget_seconds: the run's wall-clock budget: the schedule's horizon (a
            :class:`~aiayn.training.schedules.BudgetSchedule` decays to its floor when it is used
            up) and the end of training, counted across resumes (None = steps only).
        accumulate: micro-batches per optimizer step.
        clip_norm: gradient-norm clipping (0 = off).
        eval_every: optimizer steps between validations (and checkpoints); None = by time only.
        eval_every_seconds: seconds between validations (and checkpoints); None = by steps only.
        log_every: optimizer steps between metric lines.
        seed: seeds Python's and torch's generators.
        max_bad_steps: stop after this many consecutive non-finite losses (each such step is skipped).
        progress: show a tqdm bar on stderr.
        compile: train through ``torch.compile`` (opt-in: the first step pays the compilation, which
            is reported apart as ``compile_seconds`` in the first metrics record).
        fsdp: with several processes, shard parameters, gradients and optimizer state over them
            with FSDP2 instead of replicating them with DDP (no effect in a single process).
        grad_checkpointing: checkpoint every encoder and decoder layer's activations: a layer's
            forward runs again in backward instead of its activations being kept, so only one
            layer's are held at a time (memory), at one extra forward a step (see
            :mod:`aiayn.training.checkpointing`).
        average_last: finish as the paper does (section 6.1): take this many snapshots of the
            weights over the last :data:`AVERAGE_SPAN` of the budget, average them, and keep the
            average as the model when it validates better than the last weights (0 = off).
        started_at: ``time.monotonic()`` when the run began (planning included): ``elapsed_s`` in
            the metrics and the time budget count from there (default: when training starts).
        dtype: ``float32``, or ``bfloat16`` to run the task's loss and evaluation under autocast
            (the weights and the optimizer stay float32).
    """

    max_steps: int | None = 1000
    max_minutes: float | None = None
    budget_seconds: float | None = None
    accumulate: int = 1
    clip_norm: float = 1.0
    eval_every: int | None = 200
    eval_every_seconds: float | None = None
    log_every: int = 50
    seed: int = 0
    max_bad_steps: int = 5
    progress: bool = True
    compile: bool = False
    fsdp: bool = False
    grad_checkpointing: bool = False
    average_last: int = 0
    started_at: float | None = None
    dtype: str = "float32"


#: The last fraction of the budget over which :attr:`TrainConfig.average_last` snapshots are taken
#: (the paper averaged the last 5 checkpoints, 10 minutes apart, of a 12-hour run: the last 7%).
AVERAGE_SPAN = 0.1
#: The most of a time budget validations may take: when one validation was measured to cost more
#: than this share of the interval between two, the interval grows (a corpus of long sentences,
#: decoded greedily by a model that does not yet stop, made 5 validations cost 40% of the budget).
EVAL_SHARE = 0.05
#: The most of a time budget kept back for the end of the run (the final validation, the
#: average's validation and the last save, as measured during the run).
MAX_END_RESERVE = 0.25


DTYPES = ("float32", "bfloat16")


def autocast(model: nn.Module, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device for ``dtype="bfloat16"``; nothing for float32."""
    if dtype not in DTYPES:
        raise AiaynError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "float32":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16)


class _Stop(Exception):
    """SIGTERM or Ctrl-C arrived: save and exit like Ctrl-C."""


class _StopRequests:
    """SIGTERM and SIGINT (Ctrl-C) during training only raise a flag.

    An exception raised from a signal handler lands wherever the interpreter happens to be: inside
    the optimizer's per-parameter loop (the saved state would mix two steps) or between the two
    renames of a save. So the handler only notes the signal; the loop stops at the next step
    boundary and saves once, and signals arriving meanwhile (``timeout`` sends TERM twice) are noted
    and otherwise ignored until the save is done.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._note)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum, frame) -> None:
        if self.signum is None:
            log.warning(
                "%s: stopping at the end of this step and saving",
                signal.Signals(signum).name,
            )
        self.signum = signum


class Trainer:
    """Runs a :class:`Task` to completion, resumably.

    Args:
        model: the model (already on its device).
        optimizer: its optimizer.
        lr_lambda: learning rate as a function of the 1-based optimizer step.
        task: the task.
        out_dir: where the model directory, metrics and state go.
        config: loop settings.
        dist: the process's place in a distributed job (default: a single process). With several
            processes the model is wrapped in DistributedDataParallel, or sharded in place with
            FSDP2 when ``config.fsdp`` (the optimizer is then pointed at the sharded parameters),
            and only rank 0 writes.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_lambda,
        task: Task,
        out_dir: str | Path,
        config: TrainConfig,
        dist: DistContext | None = None,
    ) -> None:
        self.model, self.optimizer, self.lr_lambda, self.task = model, optimizer, lr_lambda, task
        self.dist = dist or DistContext()
        if config.grad_checkpointing:  # before DDP/FSDP/compile wrap or copy the model
            _checkpoint_layers(model, self.dist.is_main)
        # Training calls both forward and logits_at through one forward (see training/forward.py).
        self.train_model: nn.Module = TrainingForward(model)
        self._fsdp = config.fsdp and self.dist.enabled
        if config.fsdp and not self.dist.enabled:
            log.warning("--fsdp needs several processes (torchrun): training unsharded in one")
        if self._fsdp:
            # Rank 0 evaluates and saves through a plain (unsharded) copy of the model, filled
            # from the gathered full state dict when needed (see _full_model); the sharded module
            # itself only runs the training forward/backward on every rank together.
            self._replica = distributed.plain_replica(model)
            self._param_names = distributed.fully_shard_model(model, optimizer)
            self._replica_step: int | None = None
        elif self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.train_model, device_ids=ids)
        if config.compile:
            # Only the training forward is compiled; saving and evaluation use the plain module.
            self.train_model = torch.compile(self.train_model)
        self._compile_seconds: float | None = None
        self.out_dir = Path(out_dir)
        self.config = config
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.best: float | None = None
        self.bad_steps = 0  # non-finite steps in a row
        self.skipped_steps = 0  # and in all
        self.history: list[dict[str, Any]] = []
        self.seconds_before = 0.0  # budget seconds spent by earlier invocations (resume)
        self._clock = time.monotonic()  # when this invocation's budget clock started
        self._averager: _Averager | None = None
        # Measured during the run, shared by all ranks: what one validation and one checkpoint
        # cost. Training stops early by what the end of the run will cost (see _horizon).
        self._eval_times = _RecentDurations()
        self._save_times = _RecentDurations()

    # ---- state -----------------------------------------------------------------------------------
    def _full_model(self) -> nn.Module:
        """The whole model as one plain module, for rank 0 to evaluate and save.

        Without FSDP that is the model itself. With FSDP it is a collective call (every rank must
        make it): the full state dict is gathered to rank 0's CPU and loaded into the plain
        replica on the training device, kept until the next training step (the evaluation and the
        checkpoint of one step share it). Other ranks get the replica without weights.
        """
        if not self._fsdp:
            return self.model
        if self._replica_step != self.step:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            full = get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            if self.dist.is_main:
                device = next(self.model.parameters()).device
                distributed.materialize(self._replica, device)
                self._replica.load_state_dict(full)
            self._replica_step = self.step
        return self._replica

    def _release_full_model(self) -> None:
        if self._fsdp and self._replica_step is not None:
            distributed.materialize(self._replica, "meta")
            self._replica_step = None

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state dict in the usual form (keyed by parameter index), whole.

        With FSDP a collective call: the full state is gathered to rank 0 (others get ``{}``) and
        re-keyed from parameter names to indices, so any run, sharded or not, can load it.
        """
        if not self._fsdp or not self.optimizer.state:
            return self.optimizer.state_dict()  # nothing sharded yet before the first step
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        full = get_optimizer_state_dict(
            self.model,
            self.optimizer,
            options=StateDictOptions(full_state_dict=True, cpu_offload=True),
        )
        if not self.dist.is_main:
            return {}
        index = {n: i for i, n in enumerate(n for g in self._param_names for n in g)}
        groups = [
            {**{k: v for k, v in saved.items() if k != "params"}, "params": [index[n] for n in g]}
            for saved, g in zip(full["param_groups"], self._param_names, strict=True)
        ]
        return {"state": {index[n]: s for n, s in full["state"].items()}, "param_groups": groups}

    def _load_optimizer_state(self, saved: dict[str, Any]) -> None:
        if not self._fsdp:
            self.optimizer.load_state_dict(saved)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        names = [n for g in self._param_names for n in g]
        sizes = [len(g["params"]) for g in saved["param_groups"]]
        if sizes != [len(g) for g in self._param_names]:
            raise ValueError(f"parameter groups of sizes {sizes} don't fit the model's")
        full = {
            "state": {names[int(i)]: s for i, s in saved["state"].items()},
            "param_groups": [
                {**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]
            ],
        }
        # Every rank read the same file: each keeps its own shard of the full state.
        set_optimizer_state_dict(
            self.model, self.optimizer, full, options=StateDictOptions(full_state_dict=True)
        )

    def _state(self, optimizer: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            # Batches of the epoch consumed by all ranks together: lets a resume use another
            # number of processes (each rank takes every world_size-th batch).
            "global_batch_in_epoch": self.batch_in_epoch * self.dist.world_size,
            "world_size": self.dist.world_size,
            "best": self.best,
            "seconds": self.seconds_used(),
            "optimizer": optimizer,
            "torch_rng": torch.get_rng_state(),
            "python_rng": list(_encode_py_state(random.getstate())),
            "train_config": asdict(self.config),
        }

    def save_last(self) -> None:
        """Write model + trainer state to ``DIR/last`` (staged, then swapped in); rank 0 writes.

        Every rank must call it: with FSDP, the full model and optimizer state are gathered.
        """
        model, optimizer = self._full_model(), self._optimizer_state()
        if not self.dist.is_main:
            return
        staging = self.out_dir / "last.tmp"
        remove_own_folder(staging)  # a save cut short by a kill; a user's folder is refused
        try:
            staging.mkdir(parents=True)
            mark(staging)  # first, so even a half-written staging folder is provably ours
            self.task.write_model_files(staging)
            save_weights(model, staging / WEIGHTS_FILE)
            save_trainer_state(staging / TRAINER_FILE, self._state(optimizer))
        except OSError as e:  # disk full, file-size limit: the previous checkpoint is untouched
            shutil.rmtree(staging, ignore_errors=True)  # ours: marked, or not even created
            raise AiaynError(_write_failure(self.out_dir, e)) from None
        swap_in_directory(staging, self.out_dir / "last")

    def try_resume(self) -> bool:
        """Restore the last complete state from ``DIR/last``; False when there is none."""
        found = find_checkpoint(self.out_dir / "last")
        if found is None:
            return False
        if self._fsdp:
            # Every rank reads the whole file into its plain replica (checked there as usual),
            # then keeps its own shard of it.
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            self._release_full_model()
            device = next(self.model.parameters()).device
            replica = distributed.materialize(self._replica, device)
            load_weights(replica, found / WEIGHTS_FILE)
            # One name per tied matrix (a shared vocabulary ties source, target and output
            # embeddings): FSDP holds the tie as one sharded parameter and would copy a full
            # tensor into it under the other names.
            unique = unique_state(replica)
            state = {k: v for k, v in replica.state_dict().items() if k in unique}
            set_model_state_dict(
                self.model, state, options=StateDictOptions(full_state_dict=True, strict=False)
            )
            distributed.materialize(self._replica, "meta")
        else:
            load_weights(self.model, found / WEIGHTS_FILE)
        state = load_trainer_state(found / TRAINER_FILE)
        try:
            self._load_optimizer_state(state["optimizer"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"])
            consumed = int(state.get("global_batch_in_epoch", state["batch_in_epoch"]))
            self.batch_in_epoch = -(-consumed // self.dist.world_size)  # ceil
            self.best = state["best"]
            self.seconds_before = float(state.get("seconds", 0.0))
            torch.set_rng_state(state["torch_rng"])
            random.setstate(_decode_py_state(state["python_rng"]))
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as e:
            raise AiaynError(f"{found / TRAINER_FILE}: incomplete training state ({e})") from None
        self._truncate_metrics()
        return True

    def _truncate_metrics(self) -> None:
        """Drop metric lines written after the state we resume from (they will be written again)."""
        path = self.out_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is gone too
        atomic_write_text(path, "".join(k + "\n" for k in kept))  # a kill now keeps all lines

    # ---- loop ------------------------------------------------------------------------------------
    def seconds_used(self) -> float:
        """Wall-clock seconds of the budget spent so far, earlier invocations included."""
        return self.seconds_before + time.monotonic() - self._clock

    def _horizon(self) -> float | None:
        """Seconds of the budget that training itself may use: the budget less what the end of the
        run costs (a last validation, the average's validation and a save, as measured so far), so
        the whole run, not only its training, ends within ``budget_seconds``."""
        budget = self.config.budget_seconds
        if budget is None:
            return None
        # The end: a last validation (and one of the average, when averaging) and a save.
        validations = 2 if self._averager is not None else 1
        reserve = validations * self._eval_times.typical() + self._save_times.typical()
        return budget - min(reserve, MAX_END_RESERVE * budget)

    def used(self, seconds: float | None = None) -> float:
        """The fraction of the budget spent: steps or seconds, whichever is further along.
        ``seconds``: the budget seconds spent (default: this process's clock)."""
        cfg, used = self.config, 0.0
        if cfg.max_steps:
            used = self.step / cfg.max_steps
        horizon = self._horizon()
        if horizon:
            seconds = self.seconds_used() if seconds is None else seconds
            used = max(used, seconds / horizon)
        return used

    def _set_lr(self, used: float) -> float:
        if isinstance(self.lr_lambda, BudgetSchedule):
            lr = self.lr_lambda(self.step + 1, used)
        else:
            lr = self.lr_lambda(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _evaluate_and_keep_best(self, record: dict[str, Any]) -> None:
        # Rank 0 evaluates the whole model and writes; the others go on to the next step. With FSDP
        # that is the gathered plain replica: evaluation (decoding, sampling) calls model methods
        # other than forward, which a sharded module can't run alone, and it gives the same
        # numbers as an unsharded run.
        model = self._full_model()
        if not self.dist.is_main:
            return
        model.eval()
        with autocast(model, self.config.dtype):
            metrics = self.task.evaluate(model)
        model.train()
        record.update(metrics)
        value = metrics[self.task.best_metric]
        better = self.best is None or (
            value > self.best if self.task.higher_is_better else value < self.best
        )
        if better and math.isfinite(value):
            self.best = value
            self.task.write_model_files(self.out_dir)
            save_weights(model, self.out_dir / WEIGHTS_FILE)

    def _micro_batches(self) -> Iterator[Any]:
        """Endless stream of training batches, starting where the saved position says.

        The live position is kept apart from ``self.epoch``/``self.batch_in_epoch``, which only move
        when an optimizer step completes; an interrupted step is then simply redone after a resume.
        """
        epoch, start = self.epoch, self.batch_in_epoch
        while True:
            produced = False
            for i, batch in enumerate(self.task.batches(epoch)):
                produced = True
                if i < start:
                    continue  # trained on before the resume
                yield epoch, i + 1, batch
            if not produced:
                raise AiaynError("the training data produced no batches")
            epoch, start = epoch + 1, 0

    def _train_step(self, micro: list[Any]) -> tuple[float, int]:
        """Forward/backward over the micro-batches; returns (summed loss, tokens) over all ranks."""
        self._release_full_model()
        self.optimizer.zero_grad(set_to_none=True)
        counts = [self.task.tokens(b) for b in micro] if hasattr(self.task, "tokens") else None
        scale = None
        if counts is not None:
            # DDP and FSDP average gradients over ranks, so scale by world_size / global tokens: the
            # result is the mean over every token of the global batch.
            scale = self.dist.world_size / max(self.dist.sum(sum(counts)), 1.0)
        step_loss, step_tokens = 0.0, 0
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext()
            if self._fsdp:  # reduce-scatter once, after the last micro-batch
                self.model.set_requires_gradient_sync(last)
            elif self.dist.enabled and not last:
                sync = self.train_model.no_sync()  # all-reduce once, after the last micro-batch
            with sync:
                with autocast(
                    self.model, self.config.dtype
                ):  # the forward pass; backward follows it
                    loss, tokens = self.task.loss(self.train_model, batch, self.step)
                factor = scale if scale is not None else 1.0 / max(tokens, 1) / len(micro)
                (loss * factor).backward()
            step_loss += float(loss.detach())
            step_tokens += tokens
        return self.dist.sum(step_loss), int(self.dist.sum(step_tokens))

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Continue from ``DIR/last`` when ``resume`` (and a state is there), then :meth:`train`.

        Returns:
            ``{"steps", "train_seconds", "best"}`` for the applications' summaries.
        """
        if resume and self.try_resume():
            log.info("resumed at step %d", self.step)
        start = time.monotonic()
        self.train()
        return {
            "steps": self.step,
            "train_seconds": round(time.monotonic() - start, 2),
            "best": self.best,
        }

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (ranks must take the same decisions)."""
        return self.dist.sum(flag) > 0 if self.dist.enabled else flag

    def _main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (every rank must call it)."""
        if not self.dist.enabled:
            return value
        return self.dist.sum(value if self.dist.is_main else 0.0)

    def _shared_seconds(self) -> float:
        """Rank 0's budget clock on every rank: the learning rate, the snapshots and the stop follow
        one clock, so DDP replicas stay identical."""
        return self._main_value(self.seconds_used())

    def _should_stop(self, deadline: float | None, seconds: float) -> str | None:
        cfg = self.config
        if cfg.max_steps is not None and self.step >= cfg.max_steps:
            return "step budget reached"
        out_of_time = deadline is not None and time.monotonic() >= deadline
        horizon = self._horizon()
        if horizon is not None:
            out_of_time = out_of_time or seconds >= horizon
        if self._any_rank(out_of_time):
            return "time budget reached"
        return None

    def _timed_on_main(self, work) -> float:
        """Run ``work()`` on every rank; rank 0's duration of it, shared by all ranks."""
        began = time.monotonic()
        work()
        return self._main_value(time.monotonic() - began)

    def train(self) -> list[dict[str, Any]]:
        """Train until the step or time budget is used up; save on the way out, even on
        Ctrl-C/SIGTERM (which stop the loop at a step boundary: see :class:`_StopRequests`).

        Returns:
            The metric records written during this invocation.
        """
        if self.dist.is_main:
            create_out_dir(self.out_dir)  # marked as aiayn's and locked against a second writer
        try:
            with _StopRequests() as stop:
                history = self._train(stop)
        finally:
            release_out_dir(self.out_dir)
        if stop.signum is not None:  # it came during the final evaluation: all is saved anyway
            log.info(
                "finished (and saved) before the %s could stop it", signal.Signals(stop.signum).name
            )
        return history

    def _train(self, stop: _StopRequests) -> list[dict[str, Any]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)  # other ranks: created by rank 0 above
        cfg = self.config
        self.train_model.train()
        run_start = cfg.started_at if cfg.started_at is not None else time.monotonic()
        self._clock = run_start
        progress = None
        if cfg.progress and self.dist.is_main:
            from tqdm import tqdm

            progress = tqdm(
                total=cfg.max_steps,
                initial=self.step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
            )
        deadline = None if cfg.max_minutes is None else run_start + 60 * cfg.max_minutes
        if cfg.average_last > 1 and not self._fsdp:
            self._averager = _Averager(self.model, cfg.average_last)
        window_loss, window_tokens, window_start = 0.0, 0, time.monotonic()
        last_eval_time = time.monotonic()
        batches = self._micro_batches()
        start_step, last_eval_step = self.step, None
        try:
            while True:
                if self._any_rank(stop.signum is not None):  # at a step boundary only
                    raise _Stop()
                seconds = self._shared_seconds()
                reason = self._should_stop(deadline, seconds)
                if reason is not None:
                    log.info("%s after %d steps", reason, self.step)
                    break
                lr = self._set_lr(self.used(seconds))
                micro, position = [], None
                for _ in range(cfg.accumulate):
                    epoch, index, batch = next(batches)
                    micro.append(batch)
                    position = (epoch, index)
                step_started = time.monotonic()
                step_loss, step_tokens = self._train_step(micro)
                if cfg.compile and self._compile_seconds is None:
                    self._compile_seconds = time.monotonic() - step_started
                    log.info("first (compiling) step took %.1f s", self._compile_seconds)
                    window_start = time.monotonic()  # keep compilation out of tokens/s
                self.epoch, self.batch_in_epoch = position
                # The gradient norm is checked too: a finite loss can still have inf/nan gradients
                # (an overflow in backward), and one such update ruins the weights. FSDP2's
                # gradients are DTensors: the norm is global. (No clipping: max_norm = inf.)
                max_norm = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
                if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                    what = "loss" if not math.isfinite(step_loss) else "gradients"
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    log.warning("step %d: non-finite %s; step skipped", self.step + 1, what)
                    if self.bad_steps >= cfg.max_bad_steps:
                        raise AiaynError(
                            f"training diverged: {self.bad_steps} non-finite steps ({what}) in a "
                            f"row at step {self.step + 1}; lower the learning rate or check the data"
                        )
                    continue
                self.bad_steps = 0
                self.optimizer.step()
                self.step += 1
                window_loss += step_loss
                window_tokens += step_tokens
                if self._averager is not None:
                    self._averager.maybe_take(self.used(seconds), self.step)
                if progress is not None:
                    progress.update(1)
                now = time.monotonic()
                eval_interval = None
                if cfg.eval_every_seconds is not None:
                    eval_interval = max(
                        cfg.eval_every_seconds, self._eval_times.typical() / EVAL_SHARE
                    )
                is_eval = (
                    (cfg.eval_every is not None and self.step % cfg.eval_every == 0)
                    or self.step == cfg.max_steps
                    or self._any_rank(
                        eval_interval is not None and now - last_eval_time >= eval_interval
                    )
                )
                if self.step % cfg.log_every == 0 or is_eval:
                    record = {
                        "step": self.step,
                        "loss": window_loss / max(window_tokens, 1),
                        "lr": lr,
                        "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                        "elapsed_s": round(now - run_start, 2),
                    }
                    if self.skipped_steps:
                        record["skipped_steps"] = self.skipped_steps
                    if self._compile_seconds is not None and len(self.history) == 0:
                        record["compile_seconds"] = self._compile_seconds
                    if is_eval:
                        self._eval_times.add(
                            self._timed_on_main(
                                lambda record=record: self._evaluate_and_keep_best(record)
                            )
                        )
                        last_eval_step, last_eval_time = self.step, time.monotonic()
                    self._log(record)
                    if is_eval:
                        self._save_times.add(self._timed_on_main(self.save_last))
                    if progress is not None:
                        progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                    window_loss, window_tokens, window_start = 0.0, 0, time.monotonic()
        except (KeyboardInterrupt, _Stop):
            log.info("interrupted at step %d: saving the last complete step", self.step)
            self.save_last()
            model = self._full_model()  # gathered by save_last already
            if self.dist.is_main and not (self.out_dir / WEIGHTS_FILE).exists():
                self.task.write_model_files(self.out_dir)
                save_weights(model, self.out_dir / WEIGHTS_FILE)
            raise KeyboardInterrupt from None
        finally:
            if progress is not None:
                progress.close()
        if self.step > start_step and last_eval_step != self.step:
            # Stopped by the clock between evaluations: evaluate what we have, then save.
            now = time.monotonic()
            record = {
                "step": self.step,
                "loss": window_loss / max(window_tokens, 1) if window_tokens else None,
                "lr": lr,
                "tokens_per_s": window_tokens / max(now - window_start, 1e-9),
                "elapsed_s": round(now - run_start, 2),
            }
            self._evaluate_and_keep_best(record)
            self._log(record)
            self.save_last()
        if self._averager is not None and self.step > start_step:
            self._finish_with_average(run_start)
        return self.history

    def _finish_with_average(self, run_start: float) -> None:
        """Evaluate the average of the snapshots; it becomes the model when it validates better.

        ``DIR/last`` keeps the last weights themselves, so a resume continues the real run.
        """
        averager = self._averager
        averager.take(self.step)  # the last weights are the last snapshot
        if averager.count < 2 or not self.dist.is_main:
            return
        last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        averager.load_into(self.model)
        record = {
            "step": self.step,
            "loss": None,  # no training in this record: it evaluates the average
            "lr": self.history[-1]["lr"] if self.history else None,
            "tokens_per_s": None,
            "elapsed_s": round(time.monotonic() - run_start, 2),
            "averaged": averager.count,
        }
        before = self.best
        self._evaluate_and_keep_best(record)
        record["kept_average"] = self.best != before
        self._log(record)
        log.info(
            "average of the last %d snapshots: %s %.4g (%s)",
            averager.count,
            self.task.best_metric,
            record[self.task.best_metric],
            "kept" if record["kept_average"] else "the last weights validate better",
        )
        self.model.load_state_dict(last)


class _RecentDurations:
    """The typical cost of something done now and then (a validation, a save): the median of the
    last few times it took. One slow time (another process took the CPU; the first validation
    imported sacrebleu) would otherwise end training seconds early (measured on CI: a 6-s run
    ended after 5.3 s)."""

    KEEP = 3

    def __init__(self) -> None:
        self._times: list[float] = []

    def add(self, seconds: float) -> None:
        self._times = [*self._times, seconds][-self.KEEP :]

    def typical(self) -> float:
        return statistics.median(self._times) if self._times else 0.0


class _Averager:
    """A running sum of weight snapshots taken over the last :data:`AVERAGE_SPAN` of the budget."""

    def __init__(self, model: nn.Module, count: int) -> None:
        self.model = model
        spacing = AVERAGE_SPAN / count
        # Snapshots at used = 1 - spacing·(count-1), ..., 1 - spacing; the last one is taken at the end.
        self.marks = [1 - spacing * i for i in range(count - 1, 0, -1)]
        self.sum: dict[str, Tensor] = {}
        self.count, self.last_step = 0, -1

    def maybe_take(self, used: float, step: int) -> None:
        if self.marks and used >= self.marks[0]:
            while self.marks and used >= self.marks[0]:
                self.marks.pop(0)
            self.take(step)

    def take(self, step: int) -> None:
        if step == self.last_step:
            return  # already taken at this step
        self.last_step = step
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in self.sum:
                    self.sum[name] += p.detach().double()
                else:
                    self.sum[name] = p.detach().double().clone()
        self.count += 1

    def load_into(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_((self.sum[name] / self.count).to(p.dtype))


def _checkpoint_layers(model: nn.Module, report: bool) -> None:
    """``--grad-checkpointing``: every encoder/decoder layer recomputes its forward in backward."""
    layers = enable_checkpointing(model)
    if not report:
        return
    if layers:
        log.info("gradient checkpointing: %d layers recompute their forward in backward", layers)
    else:
        log.warning("--grad-checkpointing: this model has no encoder/decoder layers to checkpoint")


def _write_failure(directory: Path, error: OSError) -> str:
    """One line for a checkpoint that could not be written."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {directory}: the checkpoint was not saved (the previous one is intact)"
    if error.errno == errno.EFBIG:
        return f"file size limit reached writing {directory}: the checkpoint was not saved (the previous one is intact)"
    return f"cannot write a checkpoint to {directory}: {error.strerror or error}"


def _encode_py_state(state: tuple) -> tuple:
    version, internal, gauss = state
    return (version, list(internal), gauss)


def _decode_py_state(state: list) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(x) for x in internal), gauss)


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (aiayn never draws from numpy's global generator)."""
    random.seed(seed)
    torch.manual_seed(seed)
