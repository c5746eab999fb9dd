"""The command line of text classification: ``aiayn train classify`` and ``aiayn classify-text``.

(``aiayn classify`` is the ViT's image command, :mod:`aiayn.cli.vision`.) The task itself
(``train_classify``, ``TextClassifier``) is :mod:`aiayn.tasks.classify`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import AiaynError
from .commands import (
    add_device,
    add_quantize,
    inference_device,
    positive_float,
    positive_int,
    read_stdin_lines,
)
from .train_group import add_run_flags, run_kwargs, train_subparsers


def _cmd_train(args: argparse.Namespace) -> int:
    from ..tasks.classify import train_classify

    summary = train_classify(
        args.train,
        args.out,
        valid_path=args.valid,
        init=args.init,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        **run_kwargs(args),
    )
    print(json.dumps(summary))
    return 0


def _cmd_classify_text(args: argparse.Namespace) -> int:
    from ..tasks.classify import TextClassifier

    if args.test and args.text:
        raise AiaynError("classify-text: give TEXT arguments or --test FILE, not both")
    classifier = TextClassifier.load(args.model, inference_device(args), args.quantize)
    if args.test:
        result = classifier.evaluate(args.test)
        if args.quantize:  # the accuracy is the quantised model's: say so beside it
            result["quantize"] = args.quantize
        print(json.dumps(result))
        return 0
    out = sys.stdout
    for result in classifier.classify(args.text or read_stdin_lines()):
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn train classify`` and ``aiayn classify-text``."""
    from ..tasks.classify import DEFAULT_BATCH, DEFAULT_MAX_TOKENS

    train = train_subparsers(sub)
    p = train.add_parser(
        "classify",
        help="fine-tune a BERT (builtin:minilm by default) as a text classifier",
        description="Fine-tunes a BERT with a classification head on the mean of its last layer. "
        "Writes a model directory (best validation accuracy), metrics.jsonl with val_accuracy on "
        "eval steps, and resumable state.",
    )
    p.add_argument(
        "--train",
        metavar="FILE",
        required=True,
        help="UTF-8 TSV of text<TAB>label lines; its labels are the model's",
    )
    p.add_argument(
        "--valid",
        metavar="FILE",
        help="validation TSV, same labels (default: 10%% of --train held out)",
    )
    p.add_argument(
        "--init",
        metavar="SPEC",
        default="builtin:minilm",
        help="the pretrained encoder: builtin:minilm (default), a model directory written by "
        "`aiayn train mlm` (or the encoder of one by `aiayn train classify`), or a Hugging Face "
        "BERT folder; the classification head always starts new",
    )
    p.add_argument(
        "--max-tokens",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help=f"cut texts to this many tokens (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        help=f"texts per batch, on average (default {DEFAULT_BATCH})",
    )
    p.add_argument(
        "--lr", type=positive_float, help="peak learning rate (default 1e-4; 1e-3 when tiny)"
    )
    add_run_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "classify-text",
        help="label texts with a classifier from `aiayn train classify` (JSON lines)",
        description='Prints {"text", "label", "probability"} for each TEXT (or stdin line); with '
        '--test FILE, the accuracy on its text<TAB>label lines: {"accuracy", "n"}.',
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        required=True,
        help="model directory written by `aiayn train classify`",
    )
    p.add_argument(
        "--test",
        metavar="FILE",
        help="TSV of text<TAB>label lines: print the accuracy on them instead (not with TEXT)",
    )
    p.add_argument("text", nargs="*", help="texts (default: one per stdin line)")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_classify_text)
