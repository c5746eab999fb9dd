"""CLI: ``aiayn attention`` (attention heatmaps) and ``aiayn plot positions|metrics``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.builtin import is_builtin
from ..errors import AiaynError
from .commands import add_device, positive_int, resolve_device

TRANSLATION_KINDS = ("cross", "encoder", "decoder")


def _cmd_attention(args: argparse.Namespace) -> int:
    from ..modeldir import load_model_dir

    if not args.text.strip():
        raise AiaynError("TEXT is empty: give the sentence (or image) whose attention to draw")
    device = resolve_device(args.device)
    if is_builtin(args.model) or _is_hf_folder(args.model):
        view, output = _bert_view(args, device)  # builtin:minilm or a Hugging Face BERT folder
    else:
        loaded = load_model_dir(args.model, device)
        if loaded.kind == "transformer":
            view, output = _translation_view(loaded, args)
        elif loaded.kind == "gpt":
            view, output = _lm_view(loaded, args)
        elif loaded.kind == "bert":
            view, output = _bert_view(args, device)
        elif loaded.kind == "bert-classifier":
            view, output = _classifier_view(loaded, args)
        elif loaded.kind == "vit":
            view, output = _vit_view(loaded, args)
        else:
            raise AiaynError(f"{args.model}: `aiayn attention` cannot draw a {loaded.kind} model")
    from ..viz import plot_attention_view

    plot_attention_view(view, args.out, args.head)
    H = view.weights.shape[0]
    result = {
        "out": str(args.out),
        **output,
        "kind": view.kind,
        "layer": view.layer,
        "heads": list(range(H)) if args.head is None else [args.head % H],
        "query_tokens": view.query_tokens,
        "key_tokens": view.key_tokens,
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _translation_view(loaded, args: argparse.Namespace):
    from ..tasks.translation import Translator
    from ..viz import translation_attention

    kind = args.kind or "cross"
    if kind not in TRANSLATION_KINDS:
        raise AiaynError(f"--kind {kind}: a translation model has {', '.join(TRANSLATION_KINDS)}")
    translator = Translator(loaded)
    # The maps come from a teacher-forced pass over (source, translation): the model's own output
    # unless the user gives the target side.
    target = args.target
    if target is None:
        target = translator.translate([args.text], beam=args.beam, max_len=args.max_len)[0]
    view = translation_attention(translator, args.text, target, kind, args.layer)
    return view, {"translation": target}


def _lm_view(loaded, args: argparse.Namespace):
    from ..data.tokenizers import load_tokenizer
    from ..viz import lm_attention

    if args.kind not in (None, "self"):
        raise AiaynError(f"--kind {args.kind}: a language model has only self-attention (self)")
    if args.target is not None:
        raise AiaynError("--target is for translation models")
    tokenizer = loaded.tokenizer("text", load_tokenizer)
    return lm_attention(loaded.model, tokenizer, args.text, args.layer), {}


def _is_hf_folder(spec: str) -> bool:
    """A Hugging Face model folder (its config.json names a ``model_type``), not an aiayn one."""
    config = Path(spec) / "config.json"
    try:
        return config.is_file() and "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _self_only(args: argparse.Namespace, what: str) -> None:
    if args.kind not in (None, "self", "encoder"):
        raise AiaynError(f"--kind {args.kind}: {what} has only self-attention (self)")
    if args.target is not None:
        raise AiaynError("--target is for translation models")


def _bert_view(args: argparse.Namespace, device):
    from ..tasks.mlm import SentenceEncoder
    from ..viz import bert_attention

    _self_only(args, "a BERT")
    encoder = SentenceEncoder.load(args.model, device)
    return bert_attention(encoder.model, encoder.tokenizer, args.text, args.layer), {}


def _classifier_view(loaded, args: argparse.Namespace):
    """A text classifier (``aiayn train classify``): its BERT's self-attention over TEXT, and the
    label it gives TEXT."""
    from ..tasks.classify import TextClassifier
    from ..viz import bert_attention

    _self_only(args, "a text classifier")
    classifier = TextClassifier.from_loaded(loaded)
    (top,) = classifier.classify([args.text])
    view = bert_attention(classifier.model.bert, classifier.tokenizer, args.text, args.layer)
    return view, {"label": top["label"], "probability": top["probability"]}


def _vit_view(loaded, args: argparse.Namespace):
    from ..data.images import load_image
    from ..tasks.vision import ImageClassifier
    from ..viz import vit_attention

    _self_only(args, "a ViT")
    classifier = ImageClassifier(loaded)
    image = load_image(args.text, classifier.size, classifier.channels)  # TEXT is the image file
    probabilities = classifier.predict(image.unsqueeze(0))[0]
    label = classifier.classes[int(probabilities.argmax())]
    view = vit_attention(loaded.model, classifier.normalize(image.unsqueeze(0))[0], args.layer)
    return view, {"image": args.text, "label": label}


def _cmd_plot_positions(args: argparse.Namespace) -> int:
    from ..viz import plot_positions

    plot_positions(args.out, max_len=args.max_len, d_model=args.d_model)
    print(json.dumps({"out": str(args.out), "max_len": args.max_len, "d_model": args.d_model}))
    return 0


def _cmd_plot_metrics(args: argparse.Namespace) -> int:
    from ..viz import plot_metrics

    source = Path(args.run)
    out = (
        Path(args.out)
        if args.out
        else (source if source.is_dir() else source.parent) / "metrics.png"
    )
    drawn = plot_metrics(source, out)
    summary = {key: {"points": len(points), "last": points[-1][1]} for key, points in drawn.items()}
    print(json.dumps({"out": str(out), "series": summary}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention",
        help="draw a model's attention as heatmaps (tokens on the axes)",
        description="Translation models: translate TEXT, then draw the attention of the "
        "teacher-forced pass TEXT -> translation. Language models (GPT): the causal self-attention "
        "over TEXT. BERT (an aiayn BERT, a text classifier from `aiayn train classify`, a Hugging "
        "Face BERT folder or builtin:minilm): the self-attention over TEXT's WordPiece tokens (a "
        "classifier also prints its label for TEXT). ViT: TEXT is an image file, drawn as the "
        "self-attention over [CLS] and its patches. All heads of a layer as a grid, or one head "
        "with its values.",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        required=True,
        help="model directory (translation, GPT, BERT, text classifier or ViT), a Hugging Face "
        "BERT folder, or builtin:minilm",
    )
    p.add_argument(
        "text", metavar="TEXT", help="the source sentence (a text for GPT/BERT, an image for a ViT)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="picture file (.png; .svg/.pdf work too)"
    )
    p.add_argument(
        "--kind",
        choices=(*TRANSLATION_KINDS, "self"),
        help="which attention: cross (default), encoder or decoder; self for GPT, BERT and ViT",
    )
    p.add_argument("--layer", type=int, default=-1, help="layer, 0-based; -1 = last (default)")
    p.add_argument("--head", type=int, help="one head, 0-based (default: all heads as a grid)")
    p.add_argument("--target", help="draw for this translation instead of the model's own")
    p.add_argument("--beam", type=positive_int, default=4, help="beam size for translating TEXT")
    p.add_argument("--max-len", type=positive_int, help="maximum output tokens of the translation")
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
