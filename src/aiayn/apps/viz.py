"""CLI: ``aiayn attention`` (attention heatmaps) and ``aiayn plot positions|metrics``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import AiaynError
from .commands import add_device, positive_int, resolve_device

KINDS = ("cross", "encoder", "decoder")


def _cmd_attention(args: argparse.Namespace) -> int:
    from ..modeldir import load_model_dir
    from ..viz import plot_translation_attention

    if not args.text.strip():
        raise AiaynError("TEXT is empty: give the sentence whose attention to draw")
    loaded = load_model_dir(args.model, resolve_device(args.device))
    if loaded.kind != "transformer":
        raise AiaynError(
            f"{args.model}: `aiayn attention` draws translation (transformer) models; "
            f"this is a {loaded.kind} model"
        )
    from ..translation import Translator

    translator = Translator(loaded)
    # The maps come from a teacher-forced pass over (source, translation): the model's own output
    # unless the user gives the target side.
    target = args.target
    if target is None:
        target = translator.translate([args.text], beam=args.beam)[0]
    view = plot_translation_attention(
        translator, args.text, target, args.out, kind=args.kind, layer=args.layer, head=args.head
    )
    result = {
        "out": str(args.out),
        "translation": target,
        "kind": view.kind,
        "layer": view.layer,
        "heads": list(range(view.weights.shape[0])) if args.head is None else [args.head],
        "query_tokens": view.query_tokens,
        "key_tokens": view.key_tokens,
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _cmd_plot_positions(args: argparse.Namespace) -> int:
    from ..viz import plot_positions

    plot_positions(args.out, max_len=args.max_len, d_model=args.d_model)
    print(json.dumps({"out": str(args.out), "max_len": args.max_len, "d_model": args.d_model}))
    return 0


def _cmd_plot_metrics(args: argparse.Namespace) -> int:
    from ..viz import plot_metrics

    source = Path(args.run)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent) / "metrics.png"
    drawn = plot_metrics(source, out)
    summary = {key: {"points": len(points), "last": points[-1][1]} for key, points in drawn.items()}
    print(json.dumps({"out": str(out), "series": summary}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="draw a translation model's attention as heatmaps (tokens on the axes)",
        description="Translate TEXT, then draw the attention of the teacher-forced pass "
        "TEXT -> translation: all heads of a layer as a grid, or one head with its values.",
    )
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("text", metavar="TEXT", help="the source sentence")
    p.add_argument("--out", required=True, type=Path, help="picture file (.png; .svg/.pdf work too)")
    p.add_argument("--kind", choices=KINDS, default="cross", help="which attention (default cross)")
    p.add_argument("--layer", type=int, default=-1, help="layer, 0-based; -1 = last (default)")
    p.add_argument("--head", type=int, help="one head, 0-based (default: all heads as a grid)")
    p.add_argument("--target", help="draw for this translation instead of the model's own")
    p.add_argument("--beam", type=positive_int, default=4, help="beam size for translating TEXT")
    add_device(p)
    p.set_defaults(func=_cmd_attention)

    plot = sub.add_parser("plot", help="pictures: positional encodings, training curves")
    what = plot.add_subparsers(dest="what", required=True, parser_class=type(plot))
    p = what.add_parser("positions", help="the sinusoidal positional encoding and its similarities")
    p.add_argument("--out", type=Path, default=Path("positions.png"), help="picture file")
    p.add_argument("--max-len", type=positive_int, default=100, help="positions (default 100)")
    p.add_argument("--d-model", type=positive_int, default=128, help="dimensions (default 128)")
    p.set_defaults(func=_cmd_plot_positions)

    p = what.add_parser("metrics", help="loss, validation loss, BLEU and learning rate of a run")
    p.add_argument("run", metavar="DIR", help="training output directory (or its metrics.jsonl)")
    p.add_argument("--out", type=Path, help="picture file (default DIR/metrics.png)")
    p.set_defaults(func=_cmd_plot_metrics)
