"""Where sub-commands come from, and the helpers every command shares.

Each application module in :data:`APP_MODULES` (translation, language modelling, ...) exposes
``register(subparsers)``, which adds its commands to the parser.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import AiaynError

Registrar = Callable[[argparse._SubParsersAction], None]


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto | cpu | cuda[:N] | mps (auto: CUDA if present, then MPS, then CPU)",
    )


#: ``--quantize``'s values: :data:`aiayn.quantize.QUANTIZE_CHOICES`, repeated here so that building
#: the parser loads no model code (a test keeps the two equal).
QUANTIZE_CHOICES = ("int8",)


def add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="int8: the Linear layers in int8 (dynamic quantisation, CPU only; faster at base size "
        "and up with several inputs per batch, slower on tiny models; default: float32)",
    )


def inference_device(args: argparse.Namespace) -> torch.device:
    """``--device`` of a command that takes ``--quantize``: ``auto`` means the CPU under
    ``--quantize`` (its int8 kernels are CPU-only); an explicit GPU is refused by the quantiser."""
    if getattr(args, "quantize", None) and args.device == "auto":
        return torch.device("cpu")
    return resolve_device(args.device)


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into DIR even though it is not empty and not an aiayn run (aiayn deletes only "
        "folders it wrote)",
    )


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, then Apple's MPS, else CPU; anything else is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AiaynError(f"--device {name}: expected auto, cpu, cuda[:N] or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AiaynError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not _mps_available():
        raise AiaynError(f"--device {name}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise AiaynError(f"--device {name}: expected auto, cpu, cuda[:N] or mps")
    return device


def _number(text: str, kind: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Any:
    """Parse ``text`` with ``kind`` and check it with ``ok`` (NaN fails every comparison); else the
    usage error "expected WHAT"."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


#: The largest value a float flag takes: a year of minutes, far beyond any real budget or rate,
#: and small enough that seconds, steps and products of it stay finite integers.
MAX_FLOAT_FLAG = 525600.0


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (at most :data:`MAX_FLOAT_FLAG`)."""
    return _number(
        text,
        float,
        lambda v: 0 < v <= MAX_FLOAT_FLAG,
        f"a positive number up to {MAX_FLOAT_FLAG:g}",
    )


def read_stdin_lines() -> list[str]:
    """Standard input's lines, decoded as strict UTF-8 whatever the locale, a leading BOM dropped.

    Under ``LC_ALL=C`` Python reads stdin with ``surrogateescape``, so invalid bytes would reach the
    tokenizer as lone surrogates; reading bytes and decoding each line names the bad line instead.

    Raises:
        AiaynError: a line that is not UTF-8 (its number and byte offset named).
    """
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream put in its place (a notebook, a test): already decoded
        return [line.rstrip("\r\n").removeprefix("\ufeff") for line in sys.stdin]
    lines = []
    for number, raw in enumerate(binary, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            lines.append(raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as e:
            raise AiaynError(
                f"<stdin>, line {number}: not valid UTF-8 (byte 0x{raw[e.start]:02X} at byte "
                f"offset {e.start} of the line)"
            ) from None
    return lines


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def beam_size(text: str) -> int:
    """argparse type: a beam size, 1 .. :data:`aiayn.decoding.MAX_BEAM`."""
    from ..decoding import MAX_BEAM

    return _number(text, int, lambda v: 1 <= v <= MAX_BEAM, f"a beam size of 1 to {MAX_BEAM}")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) .. 65535."""
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number 0..65535")


def sampling_temperature(text: str) -> float:
    """argparse type: a sampling temperature, a finite number >= 0 (0 = greedy)."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def top_p_mass(text: str) -> float:
    """argparse type: a number in (0, 1] (top-p)."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


#: aiayn.cli.<name> modules that add sub-commands, in the order --help lists them.
APP_MODULES = (
    "translate",
    "lm",
    "mlm",
    "vision",
    "classify",
    "bert_tools",
    "score",
    "average",
    "viz",
    "serve",
    "experiments",
    "bench",
    "interop_cmds",
)


def registrars() -> Iterator[Registrar]:
    """Every application's ``register`` function."""
    for name in APP_MODULES:
        yield importlib.import_module(f"aiayn.cli.{name}").register
