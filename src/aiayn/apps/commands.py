"""Where sub-commands come from, and the helpers every command shares.

Each application module in :data:`APP_MODULES` (translation, language modelling, ...) exposes
``register(subparsers)``, which adds its commands to the parser.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator

import torch

from ..errors import AiaynError

Registrar = Callable[[argparse._SubParsersAction], None]


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: CUDA if present)")


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AiaynError(f"--device {name}: expected auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AiaynError(f"--device {name}: CUDA is not available on this machine")
    return device


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


#: aiayn.apps.<name> modules that add sub-commands, in the order --help lists them.
APP_MODULES = (
    "translate",
    "lm",
    "mlm",
    "vision",
    "average",
    "viz",
    "serve",
    "experiments",
    "bench",
)


def registrars() -> Iterator[Registrar]:
    """Every application's ``register`` function."""
    for name in APP_MODULES:
        yield importlib.import_module(f"aiayn.apps.{name}").register
