"""ViT on ``builtin:digits`` (3 minutes of CPU training) vs scikit-learn's SVC, same fixed split.

Both learn from the train split (1259 images) and are scored on the test split (359 images), which
neither sees during training; the ViT also uses the valid split (179 images) to keep its best
checkpoint. The ViT is what ``aiayn train vit --dataset builtin:digits --max-minutes 3`` trains (the
``digits`` preset, AdamW, warm-up + cosine decay over the time budget, random affine augmentation).
The SVC is scikit-learn's default (RBF kernel, ``gamma="scale"``, C=1) on the same [0, 1] pixels.

Run: ``python -m aiayn.bench.bench_vit [--minutes M] [--no-write]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .harness import machine_line, write_section


def run_vit(minutes: float, out: Path, seed: int = 0) -> dict:
    from aiayn.tasks.vision import evaluate_classifier, train_vit

    start = time.monotonic()
    summary = train_vit("builtin:digits", out, max_minutes=minutes, seed=seed, progress=False)
    seconds = time.monotonic() - start  # data loading and final evaluation included
    result = evaluate_classifier(out, "builtin:digits")
    return {
        **summary,
        "wall_seconds": seconds,
        "test_accuracy": result["accuracy"],
        "n": result["n"],
    }


def run_svc() -> dict:
    from sklearn.svm import SVC

    from aiayn.data.images import load_digits

    train, test = load_digits("train"), load_digits("test")
    start = time.monotonic()
    clf = SVC().fit(train.images.flatten(1).numpy(), train.labels.numpy())
    fit_seconds = time.monotonic() - start
    predicted = clf.predict(test.images.flatten(1).numpy())
    accuracy = float((predicted == test.labels.numpy()).mean())
    return {
        "fit_seconds": fit_seconds,
        "test_accuracy": accuracy,
        "n": len(test),
        "support_vectors": int(clf.n_support_.sum()),
    }


def report(vit: dict, svc: dict, minutes: float) -> str:
    gap = 100 * (vit["test_accuracy"] - svc["test_accuracy"])
    errors_vit = round((1 - vit["test_accuracy"]) * vit["n"])
    errors_svc = round((1 - svc["test_accuracy"]) * svc["n"])
    verdict = (
        f"The ViT is {gap:+.1f} points against the SVC ({errors_vit} vs {errors_svc} of "
        f"{vit['n']} test images wrong), at about {vit['train_seconds'] / svc['fit_seconds']:,.0f} "
        "times the training cost: on 64-pixel images a kernel machine is the cheap, strong "
        "baseline. The ViT's point is that the encoder layers that translate sentences also read "
        "an image cut into patches (here 2×2 patches of 4×4 pixels, plus the class token)."
    )
    return "\n".join(
        [
            f"Machine: {machine_line()}.",
            "",
            "scikit-learn's 8×8 digits, aiayn's fixed split (train 1259 / valid 179 / test 359, "
            "by a hash of the image index). Test accuracy on the 359 held-out images; the ViT "
            "keeps its best checkpoint by validation accuracy.",
            "",
            "| model | test accuracy | training time | parameters |",
            "|---|---:|---:|---:|",
            f"| aiayn ViT (`digits` preset, {minutes:g}-minute budget, {vit['steps']} steps) | "
            f"{100 * vit['test_accuracy']:.1f}% | {vit['train_seconds']:.0f} s "
            f"({vit['wall_seconds']:.0f} s with loading and evaluation) | {vit['parameters']:,} |",
            f"| scikit-learn SVC (RBF, defaults) | {100 * svc['test_accuracy']:.1f}% | "
            f"{svc['fit_seconds']:.2f} s | {svc['support_vectors']} support vectors |",
            "",
            verdict,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="ViT training budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the trained model here")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="a 20-second training budget")
    args = parser.parse_args(argv)
    minutes = 1 / 3 if args.quick else args.minutes
    with tempfile.TemporaryDirectory() as tmp:
        vit = run_vit(minutes, args.out or Path(tmp) / "vit", args.seed)
    svc = run_svc()
    print(json.dumps({"vit": vit, "svc": svc}))
    body = report(vit, svc, minutes)
    print(body)
    if not args.no_write:
        write_section("ViT on builtin:digits vs scikit-learn SVC", body)


if __name__ == "__main__":
    main()
