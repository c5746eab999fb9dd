"""The ``aiayn train`` command, whose sub-commands (translate, lm, mlm, vit) come from several apps."""

from __future__ import annotations

import argparse
from typing import Any

_ATTR = "_aiayn_train_subparsers"


def train_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of ``aiayn train``, created on the first call and shared after."""
    existing = getattr(sub, _ATTR, None)
    if existing is None:
        parser = sub.add_parser("train", help="train a model (translate, lm, mlm, vit)")
        existing = parser.add_subparsers(dest="task", required=True, parser_class=type(parser))
        setattr(sub, _ATTR, existing)
    return existing


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags every ``aiayn train`` sub-command shares, defined once (CLI.md): the output folder,
    model overrides, the budget, resuming, the loop (micro-batches, clipping, evaluation and logging
    intervals, torch.compile, precision), the progress bar, seed, device and threads."""
    from ..training.run import DTYPE_CHOICES
    from .commands import (
        add_device,
        add_overwrite,
        add_seed,
        non_negative_float,
        positive_float,
        positive_int,
    )

    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model field")
    p.add_argument("--max-steps", type=positive_int, help="optimizer steps in total")
    p.add_argument("--max-minutes", type=positive_float, help="training time of this run")
    p.add_argument("--resume", action="store_true", help="continue from DIR's saved state")
    add_overwrite(p)
    p.add_argument("--accumulate", type=positive_int, help="micro-batches per optimizer step")
    p.add_argument(
        "--clip-norm", type=non_negative_float, help="gradient clipping (default 1.0; 0 = off)"
    )
    p.add_argument("--eval-every", type=positive_int, help="steps between validations/checkpoints")
    p.add_argument("--log-every", type=positive_int, help="steps between metrics.jsonl lines")
    p.add_argument("--compile", action="store_true", help="train through torch.compile")
    p.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="autocast precision of the forward pass (auto: bfloat16 on CUDA, else float32)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_seed(p)
    add_device(p)
    p.add_argument("--threads", type=positive_int, help="CPU threads torch may use")


def run_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The shared flags as the keyword arguments every ``train_*`` function takes."""
    from ..training.run import process_started
    from .commands import resolve_device

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kwargs = {
        "overrides": args.set,
        "max_steps": args.max_steps,
        "max_minutes": args.max_minutes,
        "resume": args.resume,
        "overwrite": args.overwrite,
        "accumulate": args.accumulate,
        "clip_norm": args.clip_norm,
        "eval_every": args.eval_every,
        "log_every": args.log_every,
        "compile": args.compile,
        "dtype": args.dtype,
        "progress": not args.no_progress,
        "seed": args.seed,
        "device": resolve_device(args.device),
        "started_at": process_started(),  # the budget includes this process's start-up
    }
    if hasattr(args, "grad_checkpointing"):  # defined by add_model_flags (not train classify's)
        kwargs.update(fsdp=args.fsdp, grad_checkpointing=args.grad_checkpointing)
    return kwargs


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the four ``aiayn train`` sub-commands that train one of aiayn's Transformers
    (translate, lm, mlm, vit), beside :func:`add_run_flags`: ``--init-from SOURCE`` and how the
    model is held in memory, ``--fsdp`` and ``--grad-checkpointing`` (:func:`run_kwargs` passes
    the last two on). Not in :func:`add_run_flags`, which ``train classify`` shares without them."""
    _add_init_from(p)
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun, shard the model over the processes (FSDP) instead of replicating it",
    )
    p.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each layer's forward in backward instead of keeping its activations: "
        "less memory (one layer's activations at a time) for one extra forward a step",
    )


def _add_init_from(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--init-from",
        metavar="SOURCE",
        help="fine-tune: start from the weights, config and tokenizer of an aiayn model folder or "
        "a Hugging Face one (GPT-2/Llama for lm, Marian for translate, BERT for mlm, ViT for vit); "
        "no vocabulary is learned and no model size chosen (--resume continues a run instead)",
    )
