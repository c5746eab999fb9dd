"""Model kinds by name: build a model from its config (``aiayn info``, loading model directories).

Each kind maps to ``(module, model class)``; the module also registers the kind's config class and
presets with :mod:`aiayn.config` when imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..errors import ConfigError

KINDS: dict[str, tuple[str, str]] = {
    "transformer": ("aiayn.models.seq2seq", "Transformer"),
    "gpt": ("aiayn.models.gpt", "GPT"),
    "bert": ("aiayn.models.bert", "BertForMaskedLM"),
    "vit": ("aiayn.models.vit", "ViT"),
}


def model_class(kind: str) -> type[nn.Module]:
    """The model class of ``kind`` (importing its module registers its configs and presets)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind]
    return getattr(importlib.import_module(module_name), class_name)


def build(kind: str, config: Any) -> nn.Module:
    """Instantiate the model of ``kind`` from ``config``."""
    return model_class(kind)(config)
