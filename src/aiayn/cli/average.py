"""CLI: ``aiayn average DIR DIR... --out OUT``: checkpoint averaging (the paper, section 6.1)."""

from __future__ import annotations

import argparse
import json


def _cmd_average(args: argparse.Namespace) -> int:
    from ..training.average import average_model_dirs

    out = average_model_dirs(args.model, args.out)
    print(json.dumps({"out": str(out), "averaged": len(args.model)}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average the weights of model directories of one config (checkpoint averaging)",
    )
    p.add_argument("model", nargs="+", help="model directories (at least two)")
    p.add_argument("--out", required=True, help="new model directory for the average")
    p.set_defaults(func=_cmd_average)
