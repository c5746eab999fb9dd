"""The command line of per-sentence scoring: ``aiayn score``.

The task itself (teacher-forced log-probabilities, batched) is :mod:`aiayn.tasks.scoring`.
"""

from __future__ import annotations

import argparse
import json
import sys

from .commands import add_device, add_quantize, inference_device, positive_int


def _cmd_score(args: argparse.Namespace) -> int:
    from ..tasks.scoring import score_file

    results = score_file(
        args.model,
        args.test,
        swap=args.swap,
        batch_tokens=args.batch_tokens,
        device=inference_device(args),
        quantize=args.quantize,
    )
    out = sys.stdout
    for result in results:
        out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn score``."""
    from ..tasks.scoring import DEFAULT_BATCH_TOKENS

    p = sub.add_parser(
        "score",
        help="log-probability and perplexity of each reference under a translation model "
        "(JSON lines)",
        description="For each source<TAB>reference pair: the teacher-forced log-probability the "
        'model gives the reference (its tokens and <eos>), one JSON line per pair: {"line": n, '
        '"logprob": ..., "tokens": ..., "ppl": ...}; line is the line of the file (for '
        "builtin:NAME, the pair's number in its test split).",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        required=True,
        help="translation model directory (from `aiayn train translate` or `aiayn import`)",
    )
    p.add_argument(
        "--test",
        metavar="FILE",
        required=True,
        help="UTF-8 TSV of source<TAB>reference pairs, or builtin:NAME",
    )
    p.add_argument(
        "--swap", action="store_true", help="exchange the TSV columns (reference<TAB>source)"
    )
    p.add_argument(
        "--batch-tokens",
        metavar="N",
        type=positive_int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"padded tokens per batch (default {DEFAULT_BATCH_TOKENS})",
    )
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_score)
