"""The ``aiayn train`` command, whose sub-commands (translate, lm, mlm, vit) come from several apps."""

from __future__ import annotations

import argparse

_ATTR = "_aiayn_train_subparsers"


def train_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-parsers of ``aiayn train``, created on the first call and shared after."""
    existing = getattr(sub, _ATTR, None)
    if existing is None:
        parser = sub.add_parser("train", help="train a model (translate, lm, mlm, vit)")
        existing = parser.add_subparsers(dest="task", required=True, parser_class=type(parser))
        setattr(sub, _ATTR, existing)
    return existing
