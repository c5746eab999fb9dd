"""Language modelling as a library: ``LMTask``, its plan, ``train_lm``, ``LanguageModel``,
``evaluate_lm`` (the commands ``aiayn train lm`` and ``aiayn generate`` are :mod:`aiayn.cli.lm`).

Shapes: B batch, T context, V vocabulary.

Training is next-token prediction on fixed windows of a text (see :mod:`aiayn.data.lm_data`), with
AdamW (weight decay on matrices only), linear warm-up and cosine decay, gradient accumulation, and the
shared :class:`~aiayn.training.trainer.Trainer` (resume, ``metrics.jsonl``, atomic checkpoints). Every
evaluation logs the validation loss in nats per token and a sample of generated text.

With ``--max-minutes`` and no ``--max-steps``, a few timed steps before training measure this
machine's speed, and the schedule is laid out so that the cosine reaches its floor when the time is
up: in a fixed time budget the last, low-learning-rate steps are worth the most.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config as cfg
from ..data.lm_data import (
    TokenWindows,
    encode_text,
    eval_windows,
    load_text,
    load_train_valid,
    train_tokenizer,
)
from ..data.tokenizers import Tokenizer, load_tokenizer
from ..decoding import stream_generate, unknown_pieces
from ..errors import AiaynError
from ..logits import DecodingControls
from ..metrics import perplexity
from ..modeldir import LoadedModel, load_model_dir, write_model_info
from ..models.gpt import GPT, GPTConfig
from ..quantize import quantize_model
from ..training import distributed
from ..training.budget import Budget, endless_batches
from ..training.optim import adamw
from ..training.run import RunOptions
from ..training.schedules import warmup_cosine_schedule

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
#: Evaluations per run when ``eval_every`` is not given.
EVALS_PER_RUN = 10


# ---- loss and evaluation ---------------------------------------------------------------------------


def window_loss(model: nn.Module, windows: Tensor, skip: int = 0) -> tuple[Tensor, int]:
    """Summed next-token cross-entropy of ``(B, T + 1)`` windows, and the number of targets.

    Args:
        model: a GPT.
        windows: ``(B, T + 1)`` token ids; inputs are ``[:, :-1]``, targets ``[:, 1:]``.
        skip: leave the first ``skip`` targets of each window out (already scored elsewhere).
    """
    logits = model(windows[:, :-1])  # (B, T, V)
    logits, targets = logits[:, skip:], windows[:, 1 + skip :]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="sum"
    )
    return loss, targets.numel()


@torch.inference_mode()
def text_loss(
    model: nn.Module,
    tokens: Tensor,
    context: int,
    max_tokens: int | None = None,
    batch_size: int = 16,
) -> tuple[float, int]:
    """Summed loss (nats) and target count over ``tokens`` (every token once, or a subset).

    See :func:`aiayn.data.lm_data.eval_windows` for which windows are scored.
    """
    device = next(model.parameters()).device
    windows = eval_windows(tokens.numel(), context, max_tokens)
    total, count = 0.0, 0
    # Windows with the same skip batch together (all but possibly the last have skip 0).
    groups: dict[int, list[int]] = {}
    for start, skip in windows:
        groups.setdefault(skip, []).append(start)
    T = min(context, tokens.numel() - 1)
    offsets = torch.arange(T + 1)
    for skip, starts in groups.items():
        for i in range(0, len(starts), batch_size):
            index = torch.tensor(starts[i : i + batch_size])[:, None] + offsets  # (B, T + 1)
            loss, n = window_loss(model, tokens[index].to(device), skip)
            total, count = total + float(loss), count + n
    return total, count


# ---- optimizer -------------------------------------------------------------------------------------


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.99),
) -> torch.optim.AdamW:
    """GPT's AdamW (:func:`aiayn.training.optim.adamw`), beta2 0.99 by default (few tokens a step)."""
    return adamw(model, lr, weight_decay, betas)


# ---- the task --------------------------------------------------------------------------------------


class LMTask:
    """The :class:`~aiayn.training.trainer.Task` of language modelling.

    Args:
        model: the GPT being trained.
        tokenizer: its tokenizer (saved with every checkpoint).
        train_tokens: ``(N,)`` training token ids.
        valid_tokens: ``(M,)`` validation token ids.
        context: T, tokens per training window.
        batch_size: B, windows per micro-batch.
        seed: fixes the windows of every epoch.
        device: where batches go.
        eval_tokens: validation tokens scored at each evaluation (None: all of them).
        sample_tokens: length of the sample logged at each evaluation (0: none).
        info: extra ``config.json`` entries (the training plan).
        rank: this process's rank (distributed training).
        world_size: number of processes.
    """

    best_metric = "val_loss"
    higher_is_better = False

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        train_tokens: Tensor,
        valid_tokens: Tensor,
        context: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        eval_tokens: int | None = 65536,
        sample_tokens: int = 200,
        info: dict[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.windows = TokenWindows(train_tokens, context, batch_size, seed, rank, world_size)
        self.valid_tokens, self.context = valid_tokens, context
        self.eval_tokens, self.sample_tokens = eval_tokens, sample_tokens
        self.info = info or {}
        self.last_sample = ""
        self.started = time.monotonic()
        self.evaluations = 0
        if valid_tokens.numel() < 2:
            raise AiaynError("the validation text is shorter than two tokens")

    def batches(self, epoch: int) -> Iterator[Tensor]:
        for batch in self.windows.batches(epoch):
            yield batch.to(self.device, non_blocking=True)

    def tokens(self, batch: Tensor) -> int:
        return batch.shape[0] * (batch.shape[1] - 1)

    def loss(self, model: nn.Module, batch: Tensor, step: int) -> tuple[Tensor, int]:
        return window_loss(model, batch)  # under the trainer's autocast (--dtype)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        total, count = text_loss(model, self.valid_tokens, self.context, self.eval_tokens)
        self.evaluations += 1
        if self.sample_tokens > 0:
            self.last_sample = sample_text(model, self.tokenizer, "\n", self.sample_tokens)
            log.info("sample after evaluation %d:\n%s\n", self.evaluations, self.last_sample)
        # Wall time since this run started, evaluations included: the x-axis of a fixed-time budget.
        return {"val_loss": total / max(count, 1), "elapsed_s": time.monotonic() - self.started}

    def write_model_files(self, directory: Path) -> None:
        write_model_info(
            directory,
            "gpt",
            self.model.config,
            task="lm",
            tokenizers={"text": TOKENIZER_FILE},
            **self.info,
        )
        self.tokenizer.save(directory, TOKENIZER_FILE.removesuffix(".json"))


# ---- planning --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LMPlan:
    """Everything chosen before training starts (stored in ``config.json`` for resume).

    The defaults are what trained ``char-cpu`` best on Shakespeare in a fixed CPU-time budget:
    small batches (8 windows of 64 characters) and many steps beat bigger batches, whose extra
    tokens per step a small model under-uses early in training.

    Attributes:
        batch_size: windows per micro-batch.
        context: tokens per window.
        lr: peak learning rate.
        min_lr_ratio: the cosine's floor, as a fraction of ``lr``.
        warmup: linear warm-up steps.
        max_steps: optimizer steps (the cosine ends here; None with a time budget).
        weight_decay: AdamW decay on matrices.
        beta1, beta2: AdamW betas (beta2 = 0.99 rather than 0.95: few tokens per step).
        accumulate: micro-batches per optimizer step.
        eval_every: steps between evaluations.
        eval_tokens: validation tokens per evaluation (0 = all).
        clip_norm: gradient clipping.
        budget_seconds: the time budget (None: steps only); the schedule follows its used fraction.
        eval_every_seconds: seconds between evaluations (with a time budget).
        measured_step_seconds: what one optimizer step measured on this machine when planning.
    """

    batch_size: int = 8
    context: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    max_steps: int | None = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    accumulate: int = 1
    eval_every: int | None = 200
    eval_tokens: int = 65536
    clip_norm: float = 1.0
    budget_seconds: float | None = None
    eval_every_seconds: float | None = None
    measured_step_seconds: float | None = None

    def schedule(self) -> Callable:
        """Warm-up and cosine decay over the steps, or over the time budget's used fraction."""
        return warmup_cosine_schedule(
            self.lr, self.warmup, self.max_steps, self.budget_seconds, self.min_lr_ratio
        )

    @classmethod
    def for_model(cls, config: GPTConfig) -> LMPlan:
        """Defaults for a model: its full context, and a peak learning rate that falls with width
        (2e-3 for the CPU sizes, 6e-4 at GPT-2 small's 768, as GPT-2/3 used)."""
        d = config.d_model
        lr = 2e-3 if d <= 256 else 1e-3 if d <= 512 else 6e-4
        return cls(context=config.max_len, lr=lr)


def _timed_steps(
    model: GPT, windows: TokenWindows, plan: LMPlan, device: torch.device, steps: int = 3
) -> float:
    """Seconds per optimizer step, measured on a copy of the model (the real one is untouched)."""
    rng = torch.get_rng_state()
    trial = copy.deepcopy(model).train()
    optimizer = make_optimizer(trial, plan.lr, plan.weight_decay, (plan.beta1, plan.beta2))
    batches = endless_batches(windows, first_epoch=10**6)  # epochs training never reaches
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        for _ in range(plan.accumulate):
            loss, n = window_loss(trial, next(batches).to(device))
            (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step warms caches
            times.append(time.perf_counter() - start)
    torch.set_rng_state(rng)
    return sorted(times)[len(times) // 2]  # the median: one lucky step would over-plan


def describe_lm_plan(plan: LMPlan, config: GPTConfig, parameters: int, tokens: Tensor) -> str:
    """The plan as one readable block for the log."""
    per_step = plan.batch_size * plan.context * plan.accumulate
    budget = Budget(plan.max_steps, plan.budget_seconds)
    lines = [
        "plan:",
        f"  text        {tokens.numel():,} training tokens",
        f"  model       {config.num_layers} layers × d_model {config.d_model}, context "
        f"{plan.context}, {parameters:,} parameters",
        f"  batch       {plan.batch_size} windows × {plan.context} tokens"
        + (f" × {plan.accumulate} micro-batches" if plan.accumulate > 1 else "")
        + f" = {per_step:,} tokens a step",
        f"  budget      {budget.describe()}; AdamW peak lr {plan.lr:g}, warm-up {plan.warmup} steps, "
        f"cosine decay to {plan.min_lr_ratio:g}× at the end",
    ]
    if plan.measured_step_seconds:
        step_s = plan.measured_step_seconds
        lines.append(
            f"  measured    {step_s * 1e3:.0f} ms a step ({per_step / step_s:,.0f} tokens/s)"
            + (
                f": about {int(plan.budget_seconds / step_s):,} steps in the budget"
                if plan.budget_seconds
                else ""
            )
        )
    return "\n".join(lines)


# ---- training --------------------------------------------------------------------------------------


def train_lm(
    text_spec: str,
    out_dir: str | Path,
    valid_spec: str | None = None,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    preset: str | None = None,
    batch_size: int | None = None,
    context: int | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    weight_decay: float | None = None,
    eval_tokens: int | None = None,
    sample_tokens: int = 200,
    init_from: str | Path | None = None,
    **run: Any,
) -> dict[str, Any]:
    """Train a GPT on a text into ``out_dir``; returns a summary.

    Args mirror ``aiayn train lm`` (see CLI.md). The budget is ``max_steps`` and/or ``max_minutes``
    (10 minutes when neither is given); with a time budget the schedule follows the time used, so
    the run warms up, decays and ends with the budget whatever this machine's speed.
    ``init_from``: fine-tune the GPT of an aiayn or Hugging Face (GPT-2, Llama) folder, with its
    tokenizer (``tokenizer``, ``vocab_size`` and ``preset`` are then unused) and a tenth of the
    default peak learning rate (:mod:`aiayn.interop.pretrained`). ``run``: the shared run settings
    (:class:`~aiayn.training.run.RunOptions`).

    Returns:
        ``{"steps", "train_seconds", "best_val_loss", "parameters", "tokens_per_step"}``.
    """
    opts = RunOptions.of(run)
    start = opts.prepare(out_dir)
    out_dir, device, dist = start.out_dir, start.device, start.dist
    overrides, seed, max_steps, eval_every = (
        opts.overrides,
        opts.seed,
        opts.max_steps,
        opts.eval_every,
    )
    train_text, valid_text = load_train_valid(text_spec, valid_spec)

    saved_plan: dict[str, Any] | None = None
    saved_training: dict[str, Any] = {}
    found, resuming = start.found, start.resuming
    initial = None
    if resuming:
        loaded = load_model_dir(found, device, expect="gpt")
        tok = loaded.tokenizer("text", load_tokenizer)
        model_config = loaded.config
        saved_training = dict(loaded.info.get("training", {}))
        saved_plan = saved_training.get("plan")
    elif init_from is not None:
        from ..interop.pretrained import load_initial

        initial = load_initial("gpt", init_from, out_dir)
        tok, model_config = initial.tokenizer, cfg.apply_overrides(initial.config, overrides)
    else:
        tok = _shared_tokenizer(dist, tokenizer, train_text, vocab_size)
        base = cfg.get_preset("gpt", preset or "char-cpu")
        base = replace(base, vocab_size=tok.vocab_size)
        model_config = cfg.apply_overrides(base, overrides)

    plan = LMPlan(**saved_plan) if saved_plan else LMPlan.for_model(model_config)
    if initial is not None:
        from ..interop.pretrained import FINE_TUNE_LR_SCALE

        plan = replace(plan, lr=plan.lr * FINE_TUNE_LR_SCALE)
    changes = {
        k: v
        for k, v in dict(
            batch_size=batch_size,
            context=context,
            lr=lr,
            warmup=warmup,
            weight_decay=weight_decay,
            accumulate=opts.accumulate,
            clip_norm=opts.clip_norm,
            eval_tokens=eval_tokens,
        ).items()
        if v is not None
    }
    plan = replace(plan, **changes)
    if plan.context > model_config.max_len:
        raise AiaynError(
            f"--context {plan.context} is longer than the model's {model_config.max_len} positions"
        )

    train_tokens = encode_text(tok, train_text)
    valid_tokens = encode_text(tok, valid_text)
    model = GPT(model_config).to(device)
    if resuming:
        model.load_state_dict(loaded.model.state_dict())
    elif initial is not None:
        initial.load_into(model)

    budget = Budget.from_args(max_steps, opts.max_minutes)
    if not (resuming and saved_plan):
        windows = TokenWindows(train_tokens, plan.context, plan.batch_size, seed + 1)
        # Every rank must plan the same schedule: rank 0's measurement decides.
        step_s = float(dist.broadcast_object(_timed_steps(model, windows, plan, device)))
        plan = replace(
            plan,
            max_steps=budget.max_steps,
            budget_seconds=budget.seconds,
            measured_step_seconds=round(step_s, 5),
        )
        if budget.by_time:
            plan = replace(
                plan,
                eval_every=eval_every,
                eval_every_seconds=None if eval_every else budget.seconds / EVALS_PER_RUN,
            )
        if warmup is None:
            expected = budget.max_steps or int(budget.seconds / step_s)
            plan = replace(plan, warmup=max(1, min(plan.warmup, expected // 10)))
        if not budget.by_time:
            plan = replace(plan, eval_every=eval_every or max(1, plan.max_steps // EVALS_PER_RUN))
    elif max_steps is not None:
        plan = replace(plan, max_steps=max_steps)
    if dist.is_main:
        log.info("%s", describe_lm_plan(plan, model_config, model.num_parameters(), train_tokens))

    training = {"text": text_spec, "valid": valid_spec, "tokenizer": tokenizer, "seed": seed}
    if initial is not None:
        training.update(tokenizer="pretrained", init_from=str(init_from))
    info = {"training": {**training, **saved_training, "plan": asdict(plan)}}
    task = LMTask(
        model,
        tok,
        train_tokens,
        valid_tokens,
        plan.context,
        plan.batch_size,
        seed,
        device,
        eval_tokens=plan.eval_tokens or None,
        sample_tokens=sample_tokens,
        info=info,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    optimizer = make_optimizer(model, plan.lr, plan.weight_decay, (plan.beta1, plan.beta2))
    run = opts.fit(
        start,
        model,
        optimizer,
        plan.schedule(),
        task,
        max_steps=plan.max_steps,
        budget_seconds=plan.budget_seconds,
        accumulate=plan.accumulate,
        clip_norm=plan.clip_norm,
        eval_every=plan.eval_every,
        eval_every_seconds=plan.eval_every_seconds,
        log_every=opts.log_every
        or (50 if plan.eval_every is None else max(1, min(50, plan.eval_every // 4))),
    )
    return {
        "steps": run["steps"],
        "train_seconds": run["train_seconds"],
        "best_val_loss": run["best"],
        "parameters": model.num_parameters(),
        "tokens_per_step": plan.batch_size * plan.context * plan.accumulate * dist.world_size,
        "sample": task.last_sample,
    }


def _shared_tokenizer(
    dist: distributed.DistContext, kind: str, text: str, vocab_size: int | None
) -> Tokenizer:
    """Train the tokenizer on rank 0 and hand the very same one to every rank."""
    if not dist.enabled:
        return train_tokenizer(kind, text, vocab_size)
    content = None
    if dist.is_main:
        with tempfile.TemporaryDirectory() as tmp:
            path = train_tokenizer(kind, text, vocab_size).save(tmp)
            content = path.read_text(encoding="utf-8")
    content = dist.broadcast_object(content)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TOKENIZER_FILE
        path.write_text(content, encoding="utf-8")
        return load_tokenizer(path)


# ---- using a trained model -------------------------------------------------------------------------


class LanguageModel:
    """A trained GPT with its tokenizer: text in, text out.

    Args:
        loaded: a model directory read by :func:`aiayn.modeldir.load_model_dir`.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        if loaded.kind != "gpt":
            raise AiaynError(f"{loaded.directory}: not a language model ({loaded.kind})")
        self.model: GPT = loaded.model
        self.tokenizer = loaded.tokenizer("text", load_tokenizer)
        self.directory = loaded.directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: torch.device | str = "cpu",
        quantize: str | None = None,
    ) -> LanguageModel:
        """Read ``directory``; ``quantize="int8"``: the Linear layers in int8
        (:func:`aiayn.quantize.quantize_model`, CPU only)."""
        loaded = load_model_dir(directory, device, expect="gpt")
        loaded.model = quantize_model(loaded.model, quantize)
        return cls(loaded)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` (an empty prompt starts from a line break)."""
        ids = self.tokenizer.encode(prompt or "\n")
        if not ids:
            raise AiaynError("the prompt has no tokens; give a --prompt with some text")
        unknown = unknown_pieces(self.tokenizer, prompt or "\n", ids)
        if unknown:
            log.warning(
                "prompt: %s not in the model's vocabulary (read as <unk>)",
                ", ".join(map(repr, unknown)),
            )
        return ids

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        controls: DecodingControls | None = None,
    ) -> Iterator[str]:
        """Yield the continuation of ``prompt`` piece by piece, as the tokens are produced.

        Stops at ``<eos>``, at ``max_new_tokens``, or just before the first stop string (which is not
        printed; text that could be the start of a stop string is held back until it is clear).
        ``controls``: repetition penalty, n-gram and length limits, bans (:mod:`aiayn.logits`).
        """
        streamer = _TextStream(self.tokenizer, self.encode_prompt(prompt), stop)
        device = next(self.model.parameters()).device
        generator = torch.Generator(device).manual_seed(seed)
        for step in stream_generate(
            self.model,
            [streamer.prompt_ids],
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            eos_id=self.tokenizer.eos_id,
            stop=streamer.check if stop else None,
            pad_id=self.tokenizer.pad_id,
            suppress=_never_generated(self.tokenizer),
            controls=controls,
        ):
            if step[0] is not None:
                piece = streamer.push(step[0])
                if piece:
                    yield piece
        rest = streamer.flush()
        if rest:
            yield rest

    def generate(self, prompt: str, **kwargs: Any) -> str:
        """The whole continuation of ``prompt`` (arguments as :meth:`stream`)."""
        return "".join(self.stream(prompt, **kwargs))


def _never_generated(tokenizer: Tokenizer) -> list[int]:
    """``<pad>``, ``<bos>`` and ``<unk>``: never a training target, so never a sensible output.
    Except where one of them is also ``<eos>`` (GPT-2's one ``<|endoftext|>`` is all four): that id
    must stay possible, or generation never stops by itself."""
    return [
        i
        for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id)
        if i is not None and i >= 0 and i != tokenizer.eos_id
    ]


class _TextStream:
    """Turns a growing list of token ids into text pieces, cut at the first stop string.

    New tokens are decoded together with a few tokens before them (decoding a continuation alone
    can lose the space that joins it to what came before) and only the new characters are kept, so
    each token costs the same however long the text already is. A trailing U+FFFD means a
    multi-byte character is still incomplete (byte-level BPE), so it waits for the next token.
    """

    #: Tokens of left context decoded with the unsettled ones.
    CONTEXT = 4
    #: Unsettled tokens after which their text is settled (no longer re-decoded).
    SETTLE = 16

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], stop: Sequence[str]) -> None:
        self.tokenizer, self.prompt_ids = tokenizer, prompt_ids
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # continuation so far (cut at a stop string once one appears)
        self.settled_text = ""  # the text of ids[: self.settled]
        self.settled = 0
        self.emitted = 0
        self.stopped = False

    def _decode_continuation(self) -> str | None:
        """The continuation's text, or None while its last character is incomplete."""
        new = self.ids[self.settled :]
        context = self.ids[max(0, self.settled - self.CONTEXT) : self.settled]
        if len(context) < self.CONTEXT:  # the context reaches back into the prompt
            context = (
                self.prompt_ids[len(self.prompt_ids) - (self.CONTEXT - len(context)) :] + context
            )
        head = self.tokenizer.decode(context)
        tail = self.tokenizer.decode(context + new)[len(head) :]
        if tail.endswith("\ufffd"):
            return None
        if len(new) >= self.SETTLE:
            self.settled_text += tail
            self.settled = len(self.ids)
            return self.settled_text
        return self.settled_text + tail

    def _update(self) -> None:
        if self.stopped:
            return
        text = self._decode_continuation()
        if text is None:
            return
        for s in self.stop:
            # Search only where a new match can start, so earlier text is never re-cut.
            at = text.find(s, max(0, len(self.text) - len(s) + 1))
            if at != -1:
                text, self.stopped = text[:at], True
        self.text = text

    def check(self, row: int, new_tokens: list[int]) -> bool:
        """The :data:`~aiayn.decoding.StopFn`: True once a stop string has appeared."""
        self.ids = new_tokens  # the generator's own list, one token longer each call: read only
        self._update()
        return self.stopped

    def push(self, token: int) -> str:
        if not self.stop:
            self.ids.append(token)
            self._update()
        end = len(self.text) if self.stopped else len(self.text) - self.hold
        piece = self.text[self.emitted : max(end, self.emitted)]
        self.emitted += len(piece)
        return piece

    def flush(self) -> str:
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece


def sample_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """A fixed-seed sample (the one logged at every evaluation)."""
    ids = tokenizer.encode(prompt) or [tokenizer.unk_id]
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    out = []
    for step in stream_generate(
        model,
        [ids],
        max_new_tokens,
        temperature=temperature,
        generator=generator,
        eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id,
        suppress=_never_generated(tokenizer),
    ):
        if step[0] is not None:
            out.append(step[0])
    return tokenizer.decode(ids + out)[len(tokenizer.decode(ids)) :]


def evaluate_lm(
    model_dir: str | Path,
    text_spec: str,
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> dict[str, float]:
    """Loss (nats per token), perplexity and token count of a language model on a text.

    Every token of the text is scored once, with up to the model's full context before it. For
    ``builtin:shakespeare`` the text is the held-out plays.

    Returns:
        ``{"loss": ..., "perplexity": ..., "tokens": ...}``.
    """
    lm = LanguageModel.load(model_dir, device, quantize)
    tokens = encode_text(lm.tokenizer, load_text(text_spec, "valid"))
    if tokens.numel() < 2:
        raise AiaynError(f"{text_spec}: needs at least two tokens to score")
    total, count = text_loss(lm.model, tokens, lm.model.config.max_len)
    loss = total / count
    return {"loss": loss, "perplexity": perplexity(loss), "tokens": count}


__all__ = [
    "LMPlan",
    "LMTask",
    "LanguageModel",
    "evaluate_lm",
    "make_optimizer",
    "sample_text",
    "text_loss",
    "train_lm",
    "window_loss",
]
