"""Config machinery shared by every model: frozen dataclasses, named presets, ``--set`` overrides.

Each model module defines its own frozen config dataclass (validated in ``__post_init__``) and registers
its presets here, so ``aiayn`` can list presets and rebuild any model from the ``config.json`` stored
in its directory. Derive variants with :func:`dataclasses.replace`, never by mutation.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C")

#: kind -> (config class, {preset name: config})
_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {}


def register(kind: str, config_cls: type, presets: dict[str, Any]) -> None:
    """Register a model kind's config class and named presets."""
    _REGISTRY[kind] = (config_cls, presets)


def config_class(kind: str) -> type:
    """The config dataclass of model ``kind``."""
    try:
        return _REGISTRY[kind][0]
    except KeyError:
        raise ConfigError(f"unknown model kind {kind!r}; known: {sorted(_REGISTRY)}") from None


def presets(kind: str) -> dict[str, Any]:
    """All named presets of model ``kind``."""
    config_class(kind)
    return dict(_REGISTRY[kind][1])


def get_preset(kind: str, name: str) -> Any:
    """The preset ``name`` of model ``kind``; a clear error listing the choices otherwise."""
    table = presets(kind)
    if name not in table:
        raise ConfigError(f"unknown {kind} preset {name!r}; choose from {', '.join(sorted(table))}")
    return table[name]


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(message)


def _field_types(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse ``text`` as the annotated field type (int, float, bool, str, optional of those)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        annotation = args[0]
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={text}: expected true or false")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected {annotation.__name__}") from None
    return text


def apply_overrides(config: C, overrides: list[str] | None) -> C:
    """Apply ``KEY=VALUE`` strings (the CLI's ``--set``) to a config, with type checking."""
    if not overrides:
        return config
    types_ = _field_types(type(config))
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in types_:
            raise ConfigError(
                f"--set {key}: unknown field; known fields: {', '.join(sorted(types_))}"
            )
        changes[key] = _parse_value(text.strip(), types_[key], key)
    return dataclasses.replace(config, **changes)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (stored in every model directory)."""
    return dataclasses.asdict(config)


def from_dict(kind: str, data: dict[str, Any]) -> Any:
    """Rebuild a config from :func:`to_dict` output; unknown keys are an error (a newer file?)."""
    cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {kind} config fields: {sorted(unknown)}")
    return cls(**data)


def dumps(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)
