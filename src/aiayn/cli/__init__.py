"""``aiayn <command>``: the command line (contract in CLI.md). Thin: parse, call library code, print.

Exit codes: 0 success; 2 bad input or usage (one clear message, no traceback); 1 internal error.
Machine-readable results go to stdout as JSON; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import AiaynError

log = logging.getLogger("aiayn")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line on stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_info(args: argparse.Namespace) -> int:
    """Print a model preset's configuration and parameter count as JSON."""
    import torch

    from .. import config as cfg
    from ..models import registry

    kind = args.kind
    registry.model_class(kind)  # registers the kind's presets
    config = cfg.apply_overrides(cfg.get_preset(kind, args.preset), args.set)
    with torch.device("meta"):  # count parameters without allocating them
        model = registry.build(kind, config)
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "kind": kind,
                "preset": args.preset,
                "parameters": params,
                "config": cfg.to_dict(config),
            },
            indent=2,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aiayn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="show a preset's configuration and parameter count")
    p.add_argument("--kind", default="transformer", help="model kind (transformer, gpt, bert, vit)")
    p.add_argument("--preset", default="base", help="preset name (e.g. base, big, small, tiny)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    p.set_defaults(func=_cmd_info)

    from . import commands  # each application adds its own sub-commands

    for register in commands.registrars():
        register(sub)
    return parser


def _out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's CPU allocator or CUDA's."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiayn`` script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except AiaynError as e:
        print(f"aiayn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aiayn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `aiayn translate ... | head`
        return 0
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        # Sizes the user chose (a model, a batch, an image size) that this machine cannot hold.
        print(
            "aiayn: error: out of memory: the model or batch is too large for this machine "
            "(use a smaller preset, batch or input)",
            file=sys.stderr,
        )
        return 2
    except OSError as e:  # a path of the user's that cannot be read or written: bad input
        where = f"{e.filename}: " if e.filename else ""
        print(f"aiayn: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``aiayn`` script and ``python -m aiayn``: :func:`main`, then a quick exit.

    Python's own teardown of a process that imported torch (freeing every module and tensor one by
    one) takes 1.5-2.5 s on this project's CPU: more than a short ``translate`` call itself, and
    counted against a ``--max-minutes`` budget by a user who times the command. So once the command
    is done, the exit handlers run (they flush and join what libraries started) and the streams are
    flushed, and the process ends without the teardown. The operating system frees the rest.
    """
    code = main()
    try:
        atexit._run_exitfuncs()  # CPython's own exit-time calls (tqdm, multiprocessing, torch)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader went away (`aiayn translate ... | head`): nothing to lose
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
