"""Model kinds by name: build a model from its config (``aiayn info``, loading model directories).

Each kind maps to ``(module, model class)``; the module also registers the kind's config class and
presets with :mod:`aiayn.config` when imported. A model class may say more about its kind:

* ``config_kind``: the :mod:`aiayn.config` kind of its config, when another kind's (a classifier's
  config is its encoder's);
* ``folder_args(info)``: the constructor's arguments besides the config, read from its folder's
  ``config.json`` (a classifier's number of labels);
* ``encoder_kind`` and ``encoder_attribute``: it wraps a model of that kind's encoder with a task's
  head, so a command that needs only such an encoder (``aiayn embed``) can read its folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError

KINDS: dict[str, tuple[str, str]] = {
    "transformer": ("aiayn.models.seq2seq", "Transformer"),
    "gpt": ("aiayn.models.gpt", "GPT"),
    "bert": ("aiayn.models.bert", "BertForMaskedLM"),
    "vit": ("aiayn.models.vit", "ViT"),
    "bert-classifier": ("aiayn.models.bert_classifier", "BertClassifier"),
}


def model_class(kind: str) -> type[nn.Module]:
    """The model class of ``kind`` (importing its module registers its configs and presets)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    module_name, class_name = KINDS[kind]
    return getattr(importlib.import_module(module_name), class_name)


def config_kind(kind: str) -> str:
    """The :mod:`aiayn.config` kind of ``kind``'s config (its own name unless the class says)."""
    return getattr(model_class(kind), "config_kind", kind)


def encoder_of(kind: str) -> tuple[str, str] | None:
    """``(encoder kind, attribute)`` of a kind that wraps another's encoder; None for the others."""
    cls = model_class(kind)
    if not hasattr(cls, "encoder_kind"):
        return None
    return cls.encoder_kind, cls.encoder_attribute


def build(kind: str, config: Any, info: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate the model of ``kind`` from ``config``.

    ``info``: its folder's ``config.json``, for a kind whose model needs more than its config.

    Raises:
        ConfigError: ``info`` lacks what such a kind needs.
    """
    cls = model_class(kind)
    folder_args = getattr(cls, "folder_args", None)
    return cls(config) if folder_args is None else cls(config, **folder_args(info or {}))
