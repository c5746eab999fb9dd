"""CLI: ``aiayn train translate``, ``aiayn translate``, ``aiayn evaluate`` and ``aiayn demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AiaynError
from .commands import (
    _number,
    add_device,
    add_quantize,
    add_seed,
    beam_size,
    inference_device,
    non_negative_float,
    positive_float,
    positive_int,
    read_stdin_lines,
    resolve_device,
    sampling_temperature,
    top_p_mass,
)
from .train_group import add_model_flags, add_run_flags, run_kwargs, train_subparsers

if TYPE_CHECKING:  # the decoding modules load torch's models: imported when a command runs
    from ..decoding import Sampling, SearchOptions
    from ..logits import DecodingControls

log = logging.getLogger("aiayn")

#: Validation BLEU passes 99 by step ~250 with the demo preset (measured); a fixed step count keeps
#: the demo's result the same on every machine, and ``--minutes`` caps the time on slow ones.
DEMO_STEPS = 400

#: The notes' example sentences, translated by the demo.
NOTES_SENTENCES = ("我是一个学生", "我爱中国")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..tasks.translation import train_translation

    summary = train_translation(
        args.train,
        args.out,
        valid_spec=args.valid,
        preset=args.preset,
        batch_tokens=args.batch_tokens,
        swap=args.swap,
        scheduled_sampling=args.scheduled_sampling,
        guided_attention=args.guided_attention,
        vocab_size=args.vocab_size,
        joint_vocab=args.joint_vocab,
        init_from=args.init_from,
        **run_kwargs(args),
    )
    print(json.dumps(summary))
    return 0


def _read_inputs(texts: list[str]) -> list[str]:
    return texts or read_stdin_lines()


def _cmd_translate(args: argparse.Namespace) -> int:
    from ..tasks.translation import Translator

    first, *others = args.model
    translator = Translator.load(
        first, inference_device(args), ensemble=others, quantize=args.quantize
    )
    options = _search_options(args, translator)
    align_layer = args.align_layer
    if align_layer is None and args.align:
        align_layer = -1  # the last decoder layer
    results = translator.decode(
        _read_inputs(args.text),
        options,
        batch_size=args.batch_size,
        align_layer=align_layer,
        seed=args.seed,
        truncate=args.truncate,
        warn_unknown=True,
    )
    for result in results:
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=False)
            continue
        for line in _plain_lines(result, args.nbest):
            print(line, flush=False)
    sys.stdout.flush()
    return 0


def _search_options(args: argparse.Namespace, translator: Any) -> SearchOptions:
    """The search ``aiayn translate``'s flags ask for."""
    from ..decoding import SearchOptions

    return SearchOptions(
        beam=args.beam,
        alpha=args.length_penalty,
        nbest=args.nbest,
        max_len=args.max_len,
        sampling=_sampling(args),
        controls=decoding_controls(args, translator.tgt_tok),
        prefix=translator.encode_prefix(args.prefix) if args.prefix else (),
        scores=args.json,
    )


def _sampling(args: argparse.Namespace) -> Sampling | None:
    """``--sample``'s settings; the sampling flags without it are a usage error (they would be
    silently ignored by a beam search)."""
    from ..decoding import Sampling

    given = {f: getattr(args, f) for f in ("temperature", "top_k", "top_p")}
    if not args.sample:
        stray = [f"--{f.replace('_', '-')}" for f, v in given.items() if v is not None]
        if stray:
            raise AiaynError(f"{', '.join(stray)} only apply with --sample")
        return None
    defaults = Sampling()
    return Sampling(**{f: getattr(defaults, f) if v is None else v for f, v in given.items()})


def _plain_lines(result: Any, nbest: int) -> list[str]:
    """``nbest`` lines per input, best first (blank when fewer were found); with alignments, each
    line ends with a tab and Pharaoh ``source-target`` pairs, as fast_align and Moses write them."""
    lines = []
    for hyp in result.hypotheses[:nbest]:
        line = hyp.text
        if hyp.alignment is not None:
            line += "\t" + " ".join(f"{s}-{t}" for t, s in enumerate(hyp.alignment))
        lines.append(line)
    return lines + [""] * (nbest - len(lines))


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def add_decoding_controls(p: argparse.ArgumentParser) -> None:
    """The decoding controls of :mod:`aiayn.logits`, shared by ``translate`` and ``generate``."""
    p.add_argument(
        "--repetition-penalty",
        metavar="F",
        type=positive_float,
        default=1.0,
        help="CTRL penalty: divide a repeated token's positive logit by F, multiply a negative one "
        "(1.0 = off, default; 1.2 is common)",
    )
    p.add_argument(
        "--no-repeat-ngram",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="never produce the same N tokens twice (0 = off, default)",
    )
    p.add_argument(
        "--min-len",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="no end of output before N tokens (0 = off, default)",
    )
    p.add_argument(
        "--ban",
        metavar="TEXT",
        action="append",
        default=[],
        help="never write TEXT: its token sequence as the model's tokenizer writes it (repeatable)",
    )


def decoding_controls(args: argparse.Namespace, tokenizer: Any) -> DecodingControls:
    """The controls the flags of :func:`add_decoding_controls` ask for, with ``--ban`` texts turned
    into ``tokenizer``'s token ids."""
    from ..logits import make_controls

    return make_controls(
        tokenizer.encode,
        tokenizer.unk_id,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram=args.no_repeat_ngram,
        min_len=args.min_len,
        ban=args.ban,
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ..training.checkpoint import read_config

    device = inference_device(args)
    quantize = args.quantize
    kind = read_config(args.model)["kind"]
    if kind == "transformer":
        from ..tasks.translation import evaluate_translation

        result = evaluate_translation(
            args.model, args.test, beam=args.beam, swap=args.swap, device=device, quantize=quantize
        )
    elif kind == "gpt":
        from ..tasks.lm import evaluate_lm

        result = evaluate_lm(args.model, args.test, device, quantize)
    elif kind == "vit":
        from ..tasks.vision import evaluate_classifier

        result = evaluate_classifier(args.model, args.test, device, quantize)
    else:
        raise AiaynError(f"{args.model}: `aiayn evaluate` does not handle {kind} models")
    if quantize:  # the scores are the quantised model's: say so where they are kept
        result["quantize"] = quantize
    print(json.dumps(result))
    return 0


def run_demo(out: Path, device: str = "auto", minutes: float = 4.0, seed: int = 0) -> dict:
    """Train the built-in Chinese→English model, evaluate it, translate the notes' sentences."""
    from ..tasks.translation import Translator, evaluate_translation, train_translation

    out = Path(out)
    model_dir = out / "model"
    dev = resolve_device(device)
    log.info("training the built-in Chinese→English model (about %.0f minutes on a CPU)", minutes)
    start = time.monotonic()
    train_translation(
        "builtin:zh-en",
        model_dir,
        preset="demo",
        max_steps=DEMO_STEPS,
        max_minutes=minutes,
        batch_tokens=4096,
        seed=seed,
        device=dev,
    )
    train_seconds = time.monotonic() - start
    scores = evaluate_translation(model_dir, "builtin:zh-en", beam=4, device=dev)
    translator = Translator.load(model_dir, dev)
    outputs = translator.translate(list(NOTES_SENTENCES), beam=4)
    translations = dict(zip(NOTES_SENTENCES, outputs))
    report = {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "test_sentences": scores["n"],
        "train_seconds": round(train_seconds, 1),
        "translations": translations,
    }
    from ..viz import plot_metrics, plot_positions, plot_translation_attention

    plot_translation_attention(translator, NOTES_SENTENCES[0], outputs[0], out / "attention.png")
    plot_positions(out / "positions.png")
    plot_metrics(model_dir / "metrics.jsonl", out / "metrics.png")
    report["pictures"] = [str(out / n) for n in ("attention.png", "positions.png", "metrics.png")]
    from ..training.checkpoint import atomic_write_text

    atomic_write_text(out / "report.json", json.dumps(report, ensure_ascii=False, indent=2))
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    report = run_demo(Path(args.out), args.device, args.minutes, args.seed)
    for src, tgt in report["translations"].items():
        print(f"{src} → {tgt}", file=sys.stderr)
    print(
        f"held-out test BLEU {report['bleu']:.1f}, chrF {report['chrf']:.1f} "
        f"({report['test_sentences']} sentences); trained in {report['train_seconds']:.0f} s",
        file=sys.stderr,
    )
    print(json.dumps(report, ensure_ascii=False))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    train = train_subparsers(sub)
    p = train.add_parser(
        "translate", help="train an encoder-decoder Transformer on a parallel corpus"
    )
    p.add_argument("--train", required=True, help="TSV file or builtin:NAME (zh-en, copy, reverse)")
    p.add_argument("--valid", help="validation TSV (default: held out from --train)")
    p.add_argument(
        "--preset", help="model preset (default: chosen by measuring candidate models' speed)"
    )
    p.add_argument(
        "--batch-tokens", type=positive_int, help="tokens per batch (default: measured and planned)"
    )
    p.add_argument(
        "--vocab-size",
        type=positive_int,
        help="BPE vocabulary size (default: the largest whose pieces are all frequent in the corpus)",
    )
    p.add_argument(
        "--joint-vocab",
        action=argparse.BooleanOptionalAction,
        help="one vocabulary and embedding for both sides (default: when they share an alphabet)",
    )
    p.add_argument("--swap", action="store_true", help="exchange the TSV columns")
    p.add_argument(
        "--scheduled-sampling",
        metavar="KIND",
        choices=("linear", "exponential", "inverse-sigmoid"),
        help="decay the teacher-forcing probability (Bengio et al. 2015): linear, exponential, "
        "inverse-sigmoid",
    )
    p.add_argument(
        "--guided-attention",
        metavar="WEIGHT",
        type=non_negative_float,
        default=0.0,
        help="weight of the guided-attention loss for monotonic tasks (default 0 = off)",
    )
    add_model_flags(p)
    add_run_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("translate", help="translate TEXT arguments or stdin lines")
    p.add_argument(
        "--model",
        metavar="DIR",
        required=True,
        action="append",
        help="model directory; repeat it to decode with an ensemble (the mean of the models' "
        "log-probabilities; they must share their vocabularies)",
    )
    p.add_argument("--beam", type=beam_size, default=4, help="beam size (1 = greedy; at most 64)")
    p.add_argument(
        "--length-penalty",
        metavar="ALPHA",
        type=float,
        default=0.6,
        help="beam search's GNMT length penalty alpha (default 0.6; 0 = none)",
    )
    p.add_argument("--max-len", type=positive_int, help="maximum output tokens")
    p.add_argument(
        "--truncate", action="store_true", help="cut over-long inputs instead of failing"
    )
    p.add_argument(
        "--nbest",
        metavar="K",
        type=beam_size,
        default=1,
        help="K translations per input, best first (K lines, or all K in --json; at most --beam)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per input: hypotheses with tokens, log-probabilities and scores, "
        "the mean token log-probability, the characters read as <unk>",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="the source position each output token attends to most (cross-attention averaged "
        'over heads): Pharaoh pairs after a tab, or "alignment" in --json',
    )
    p.add_argument(
        "--align-layer",
        metavar="L",
        type=int,
        help="decoder layer of --align, 0-based; -1 = last (default); implies --align",
    )
    p.add_argument(
        "--prefix",
        metavar="TEXT",
        default="",
        help="force every translation to start with TEXT; decoding continues after it",
    )
    p.add_argument(
        "--sample", action="store_true", help="sample each token instead of searching (no beam)"
    )
    p.add_argument(
        "--temperature",
        type=sampling_temperature,
        help="with --sample: softmax temperature (0 = greedy; default 1.0)",
    )
    p.add_argument(
        "--top-k",
        metavar="K",
        type=non_negative_int,
        help="with --sample: draw only from the K most probable tokens (0 = off, the default)",
    )
    p.add_argument(
        "--top-p",
        metavar="P",
        type=top_p_mass,
        help="with --sample: draw only from the most probable tokens whose probabilities sum to "
        "P (nucleus sampling; 1.0 = off, the default)",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        default=64,
        help="sentences per decoding batch (default 64)",
    )
    add_decoding_controls(p)
    add_quantize(p)
    p.add_argument("text", nargs="*", help="sentences (default: one per stdin line)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="with --sample: the random seed; the same seed draws the same translations "
        "(default 0)",
    )
    add_device(p)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("evaluate", help="score a model on a test set (JSON on stdout)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--test", required=True, help="test data: FILE or builtin:NAME")
    p.add_argument(
        "--beam", type=beam_size, default=4, help="beam size for translation models (at most 64)"
    )
    p.add_argument("--swap", action="store_true", help="exchange the TSV columns")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="train and try the built-in Chinese→English model")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--minutes", type=positive_float, default=4.0, help="training time budget")
    add_seed(p)
    add_device(p)
    p.set_defaults(func=_cmd_demo)
