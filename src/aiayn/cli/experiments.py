"""CLI: ``aiayn experiment NAME --out DIR [--steps N] [--seed S] [--seeds K]``: the notes' variants,
measured (``--seeds``: seeds per arm of the multi-seed experiments, ``positions``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .commands import add_seed, positive_int


def _cmd_experiment(args: argparse.Namespace) -> int:
    from ..experiments import EXPERIMENTS, run_experiment

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    summary = {}
    for name in names:
        results = run_experiment(
            name, Path(args.out), steps=args.steps, seed=args.seed, seeds=args.seeds
        )
        print(f"wrote {Path(args.out) / name}.md and .png", file=sys.stderr)
        summary[name] = {
            r.name: {
                **r.metrics,
                "train_seconds": r.train_seconds,
                "final_loss": r.curve[-1][1],
                **({"per_seed": r.per_seed} if r.per_seed else {}),
            }
            for r in results
        }
    print(json.dumps(summary))
    return 0


#: The names of :data:`aiayn.experiments.EXPERIMENTS`, here so that building the parser does not
#: import the models (tested to stay in step).
EXPERIMENT_NAMES = (
    "positions",
    "norm",
    "attention",
    "scheduled-sampling",
    "guided-attention",
    "window",
    "rnn",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run a named comparison of the notes' design choices (table + plot)",
        description="Train tiny models that differ in one choice, with the same steps, seed and "
        "data, and write DIR/NAME.md (table and conclusion) and DIR/NAME.png.",
    )
    p.add_argument("name", choices=[*EXPERIMENT_NAMES, "all"], help="which comparison")
    p.add_argument("--out", default="runs/experiments", help="output directory")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="optimizer steps per run (default: 600; 800 for positions)",
    )
    add_seed(p)
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="positions: seeds per arm (SEED, SEED+1, ...); other experiments run one seed",
    )
    p.set_defaults(func=_cmd_experiment)
