"""The command line of BERT's other uses: ``aiayn fill-mask`` and ``aiayn search``.

The tasks themselves are :mod:`aiayn.tasks.fill_mask` and :mod:`aiayn.tasks.search`; embeddings
alone are ``aiayn embed`` (:mod:`aiayn.cli.mlm`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .commands import add_device, add_quantize, inference_device, positive_int, read_stdin_lines


def _write_lines(rows: list[dict]) -> None:
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()


def _cmd_fill_mask(args: argparse.Namespace) -> int:
    from ..tasks.fill_mask import MaskFiller

    filler = MaskFiller.load(args.model, inference_device(args), args.quantize)
    _write_lines(filler.fill(args.text or read_stdin_lines(), top_k=args.top_k))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from ..tasks.mlm import SentenceEncoder
    from ..tasks.search import read_passages, search

    passages = read_passages(args.corpus)  # before loading the model: a bad file fails fast
    encoder = SentenceEncoder.load(args.model, inference_device(args), args.quantize)
    queries = args.query or read_stdin_lines()
    hits = search(encoder, queries, passages, top_k=args.top_k, batch_size=args.batch_size)
    _write_lines([{"query": q, "hits": [asdict(h) for h in row]} for q, row in zip(queries, hits)])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn fill-mask`` and ``aiayn search``."""
    p = sub.add_parser(
        "fill-mask",
        help="the likeliest tokens at each [MASK] (JSON lines)",
        description='Prints {"text", "masks": [[{"token", "id", "score"}, ...], ...]} for each '
        "TEXT (or stdin line): the top-k tokens at each [MASK], most probable first. Needs a "
        "BERT with its masked-LM head: a model directory from `aiayn train mlm` or a Hugging Face "
        "BertForMaskedLM folder; builtin:minilm (all-MiniLM-L6-v2) ships without the head and "
        "cannot fill masks.",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        required=True,
        help="BERT with a masked-LM head: `aiayn train mlm` directory or HF BertForMaskedLM folder",
    )
    p.add_argument(
        "--top-k", metavar="K", type=positive_int, default=5, help="tokens per [MASK] (default 5)"
    )
    p.add_argument("text", nargs="*", help="texts holding [MASK] (default: one per stdin line)")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_fill_mask)

    p = sub.add_parser(
        "search",
        help="the corpus lines nearest each query in meaning (JSON lines)",
        description='Prints {"query", "hits": [{"line", "text", "score"}, ...]} for each QUERY '
        "(or stdin line): the corpus lines of highest cosine similarity between sentence "
        "embeddings, best first (line: the line's number in FILE; blank lines are skipped).",
    )
    p.add_argument(
        "--model",
        metavar="SPEC",
        required=True,
        help="the sentence encoder: a model directory from `aiayn train mlm` or `aiayn train "
        "classify` (its encoder), a Hugging Face BERT folder, or builtin:minilm (all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--corpus", metavar="FILE", required=True, help="UTF-8 text file, one passage per line"
    )
    p.add_argument(
        "--top-k",
        metavar="K",
        type=positive_int,
        default=5,
        help="neighbours per query (default 5)",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        default=32,
        help="sentences per embedding batch (default 32)",
    )
    p.add_argument("query", nargs="*", help="queries (default: one per stdin line)")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_search)
