"""The command line of language modelling: ``aiayn train lm`` and ``aiayn generate``.

The task itself (training, the plan, ``LanguageModel``) is :mod:`aiayn.tasks.lm`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..data.lm_data import TOKENIZER_KINDS
from ..tasks.lm import LanguageModel, train_lm
from .commands import (
    add_device,
    add_quantize,
    add_seed,
    inference_device,
    non_negative_float,
    positive_float,
    positive_int,
    sampling_temperature,
    top_p_mass,
)
from .train_group import add_model_flags, add_run_flags, run_kwargs, train_subparsers
from .translate import add_decoding_controls, decoding_controls, non_negative_int

# ---- command line ----------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    summary = train_lm(
        args.text,
        args.out,
        valid_spec=args.valid,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        preset=args.preset,
        batch_size=args.batch_size,
        context=args.context,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        eval_tokens=args.eval_tokens,
        init_from=args.init_from,
        **run_kwargs(args),
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    lm = LanguageModel.load(args.model, inference_device(args), args.quantize)
    pieces = lm.stream(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=args.stop or (),
        controls=decoding_controls(args, lm.tokenizer),
    )
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn train lm`` and ``aiayn generate``."""
    train = train_subparsers(sub)
    p = train.add_parser("lm", help="train a GPT language model on a text")
    p.add_argument("--text", required=True, help="UTF-8 file or folder, or builtin:shakespeare")
    p.add_argument("--valid", help="validation text (default: held out from --text)")
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char", help="default: char")
    p.add_argument("--vocab-size", type=positive_int, help="BPE vocabulary size (default 2048)")
    p.add_argument("--preset", help="model preset (default char-cpu; see `aiayn info --kind gpt`)")
    p.add_argument("--batch-size", type=positive_int, help="windows per micro-batch")
    p.add_argument("--context", type=positive_int, help="tokens per window (<= the model's)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate")
    p.add_argument("--warmup", type=non_negative_int, help="warm-up steps")
    p.add_argument("--weight-decay", type=non_negative_float, help="AdamW weight decay on matrices")
    p.add_argument(
        "--eval-tokens", type=non_negative_int, help="validation tokens per evaluation (0 = all)"
    )
    add_model_flags(p)
    add_run_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("generate", help="continue a prompt with a language model (streams)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--prompt", default="", help="text to continue (default: a line break)")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=200, help="default 200")
    p.add_argument(
        "--temperature", type=sampling_temperature, default=0.8, help="0 = greedy (default 0.8)"
    )
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off (default)")
    p.add_argument("--top-p", type=top_p_mass, default=1.0, help="nucleus mass (1.0 = off)")
    p.add_argument("--stop", action="append", help="stop before this string (repeatable)")
    add_decoding_controls(p)
    add_quantize(p)
    add_seed(p)
    add_device(p)
    p.set_defaults(func=_cmd_generate)
