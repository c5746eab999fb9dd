"""The command line of image classification: ``aiayn train vit`` and ``aiayn classify``.

The task itself (``train_vit``, ``ImageClassifier``, ``evaluate_classifier``) is
:mod:`aiayn.tasks.vision`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..tasks.vision import AUGMENTATIONS, ImageClassifier, train_vit
from .commands import (
    add_device,
    add_quantize,
    inference_device,
    positive_float,
    positive_int,
)
from .train_group import add_model_flags, add_run_flags, run_kwargs, train_subparsers


# ---- command line -----------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    summary = train_vit(
        args.dataset,
        args.out,
        valid=args.valid,
        preset=args.preset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.augment,
        hflip=args.hflip,
        init_from=args.init_from,
        **run_kwargs(args),
    )
    print(json.dumps(summary))
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    classifier = ImageClassifier.load(args.model, inference_device(args), args.quantize)
    for result in classifier.classify_files(args.image):
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn train vit`` and ``aiayn classify``."""
    train = train_subparsers(sub)
    p = train.add_parser("vit", help="train a Vision Transformer image classifier")
    p.add_argument(
        "--dataset", required=True, help="builtin:digits, or a FOLDER with one sub-folder per class"
    )
    p.add_argument("--valid", help="validation FOLDER (default: 10%% of each class held out)")
    p.add_argument("--preset", help="ViT preset (default: digits, or mini for a folder)")
    p.add_argument("--image-size", type=positive_int, help="resize images to this side (pixels)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="images per batch (default 128, fewer when a time budget would leave too few steps)",
    )
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default by width)")
    p.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default="affine",
        help="training augmentation: random rotation/zoom/shift (default), shift only, or none",
    )
    p.add_argument("--hflip", action="store_true", help="random left-right flips (photos)")
    add_model_flags(p)
    add_run_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("classify", help="classify images with a trained ViT (JSON lines)")
    p.add_argument("--model", required=True, help="model directory written by `aiayn train vit`")
    p.add_argument("image", nargs="+", help="image files")
    add_quantize(p)
    add_device(p)
    p.set_defaults(func=_cmd_classify)
