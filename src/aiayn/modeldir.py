"""Model directories: what ``aiayn train ...`` writes and every ``--model DIR`` reads.

``config.json`` holds ``{"format": "aiayn", "format_version", "kind", "config": {...model config...},
"task": ..., "tokenizers": {role: file name}, ...task-specific info}``; weights are in
``model.safetensors``; tokenizer files sit beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config as cfg
from .errors import CheckpointError, ConfigError
from .models import registry
from .training.checkpoint import (
    WEIGHTS_FILE,
    check_weights_header,
    load_weights,
    read_config,
    save_weights,
    write_config,
)


@dataclass
class LoadedModel:
    """A model read back from its directory, in eval mode."""

    kind: str
    model: nn.Module
    config: Any
    info: dict[str, Any]
    directory: Path

    def tokenizer_path(self, role: str) -> Path:
        """Path of the tokenizer file stored for ``role`` (e.g. ``source``, ``target``, ``text``)."""
        files = self.info.get("tokenizers", {})
        if role not in files:
            raise CheckpointError(f"{self.directory}/config.json: no {role!r} tokenizer listed")
        name = files[role]
        # A plain file name inside the folder: "../x.json" or "/etc/passwd" would read anything.
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(
                f"{self.directory}/config.json: tokenizer {role!r} must be a file name inside the "
                f"folder, got {name!r}"
            )
        path = self.directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing tokenizer file")
        return path

    def tokenizer(self, role: str, load: Callable[[Path], Any]) -> Any:
        """The tokenizer stored for ``role``, read with ``load``; refused when it has more tokens
        than the model has embedding rows (every such id would be an index error)."""
        path = self.tokenizer_path(role)
        tokenizer = load(path)
        rows = getattr(self.config, _VOCAB_FIELDS.get(role, ""), None)
        if isinstance(rows, int) and tokenizer.vocab_size > rows:
            raise CheckpointError(
                f"{path}: {tokenizer.vocab_size} tokens, but the model has only {rows} embedding rows"
            )
        return tokenizer


#: The model config field that counts the embedding rows a tokenizer of each role indexes.
_VOCAB_FIELDS = {"source": "src_vocab_size", "target": "tgt_vocab_size", "text": "vocab_size"}


def write_model_info(directory: str | Path, kind: str, config: Any, **info: Any) -> None:
    """Write ``config.json`` for a model of ``kind`` (weights are written separately)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_config(directory, {"kind": kind, "config": cfg.to_dict(config), **info})


def save_model_dir(
    directory: str | Path, kind: str, model: nn.Module, config: Any, **info: Any
) -> None:
    """Write a complete model directory (config + weights); tokenizer files are the caller's."""
    write_model_info(directory, kind, config, **info)
    save_weights(model, Path(directory) / WEIGHTS_FILE)


def load_model_dir(
    directory: str | Path,
    device: torch.device | str = "cpu",
    expect: str | tuple[str, ...] | None = None,
) -> LoadedModel:
    """Read a model directory back.

    Args:
        directory: the directory.
        device: where to put the model.
        expect: the model kind(s) the caller can use; another kind is a clear error, except a kind
            that wraps an expected kind's encoder (a ``bert-classifier`` for ``bert``): its folder
            is read whole and checked, and the encoder alone comes back, as that kind.

    Raises:
        CheckpointError: missing/corrupt files, a kind the caller can't use, a config that doesn't parse.
    """
    directory = Path(directory)
    info = read_config(directory)
    kind = info["kind"]
    inner = None if expect is None else _check_kind(directory, kind, expect)
    try:
        config = cfg.from_dict(registry.config_kind(kind), dict(info.get("config", {})))
        # A folder from elsewhere is input: its config is checked against the weights' header on
        # the meta device (no memory) before a model of that size is built.
        with torch.device("meta"):
            probe = registry.build(kind, config, info)
    except (ConfigError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{directory}/config.json: bad model config ({e})") from None
    check_weights_header(probe, directory / WEIGHTS_FILE)
    del probe
    model = registry.build(kind, config, info)
    load_weights(model, directory / WEIGHTS_FILE)
    if inner is not None:  # e.g. a classifier read by `aiayn embed`: its encoder alone
        kind, attribute = inner
        model = getattr(model, attribute)
    return LoadedModel(kind, model.to(device).eval(), config, info, directory)


def _check_kind(
    directory: Path, kind: str, expect: str | tuple[str, ...]
) -> tuple[str, str] | None:
    """None when ``kind`` is expected; ``(encoder kind, attribute)`` when it wraps an expected
    kind's encoder.

    Raises:
        CheckpointError: neither.
    """
    kinds = (expect,) if isinstance(expect, str) else expect
    if kind in kinds:
        return None
    try:
        inner = registry.encoder_of(kind)
    except ConfigError:  # an unknown kind: refused below as one the caller cannot use
        inner = None
    if inner is None or inner[0] not in kinds:
        raise CheckpointError(
            f"{directory}: holds a {kind} model, but this command needs {' or '.join(kinds)}"
        )
    return inner
