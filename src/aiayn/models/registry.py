"""Model kinds by name: build a model from its config (used by ``aiayn info`` and model loading)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError


def build(kind: str, config: Any) -> nn.Module:
    """Instantiate the model of ``kind`` from ``config``."""
    if kind == "transformer":
        from .seq2seq import Transformer

        return Transformer(config)
    raise ConfigError(f"unknown model kind {kind!r}")
