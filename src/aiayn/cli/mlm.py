"""The command line of masked language modelling and sentence embeddings: ``aiayn train mlm`` and
``aiayn embed``.

The task itself (masking, ``train_mlm``, ``SentenceEncoder``) is :mod:`aiayn.tasks.mlm`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..tasks.mlm import SentenceEncoder, train_mlm
from .commands import (
    add_device,
    add_quantize,
    inference_device,
    positive_float,
    positive_int,
    read_stdin_lines,
)
from .train_group import add_model_flags, add_run_flags, run_kwargs, train_subparsers


# ---- command line ------------------------------------------------------------------------------------
def _read_inputs(texts: list[str]) -> list[str]:
    return texts or read_stdin_lines()


def _cmd_train(args: argparse.Namespace) -> int:
    summary = train_mlm(
        args.text,
        args.out,
        valid_path=args.valid,
        preset=args.preset,
        vocab_size=args.vocab_size,
        tokenizer=args.tokenizer,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        init_from=args.init_from,
        **run_kwargs(args),
    )
    print(json.dumps(summary))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    encoder = SentenceEncoder.load(args.model, inference_device(args), args.quantize)
    texts = _read_inputs(args.text)
    vectors = encoder.encode(texts, batch_size=args.batch_size).cpu()
    out = sys.stdout
    for text, vector in zip(texts, vectors.tolist()):
        out.write(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False) + "\n")
    out.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn train mlm`` and ``aiayn embed``."""
    train = train_subparsers(sub)
    p = train.add_parser("mlm", help="train a BERT with the masked-LM objective")
    p.add_argument("--text", required=True, help="UTF-8 text file or folder of *.txt files")
    p.add_argument("--valid", help="validation text (default: the last 5%% of --text)")
    p.add_argument(
        "--preset", default="tiny", help="BERT preset (micro, tiny, small, minilm, base)"
    )
    p.add_argument("--vocab-size", type=positive_int, default=8000, help="WordPiece vocabulary")
    p.add_argument(
        "--tokenizer",
        help="use this tokenizer.json / vocab.txt, or builtin:minilm, instead of learning one",
    )
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per block")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="blocks per batch (default 32, fewer when a time budget would leave too few steps)",
    )
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default by width)")
    add_model_flags(p)
    add_run_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("embed", help="sentence embeddings (JSON lines on stdout)")
    p.add_argument(
        "--model",
        required=True,
        help="a BERT from train mlm or train classify, a Hugging Face BERT folder, or builtin:minilm "
        "(all-MiniLM-L6-v2)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="sentences per batch")
    p.add_argument("text", nargs="*", help="sentences (default: one per stdin line)")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_embed)
