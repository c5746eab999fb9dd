"""Model directories: what ``aiayn train ...`` writes and every ``--model DIR`` reads.

``config.json`` holds ``{"format": "aiayn", "format_version", "kind", "config": {...model config...},
"task": ..., "tokenizers": {role: file name}, ...task-specific info}``; weights are in
``model.safetensors``; tokenizer files sit beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config as cfg
from .errors import CheckpointError, ConfigError
from .models import registry
from .training.checkpoint import WEIGHTS_FILE, load_weights, read_config, save_weights, write_config


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
        path = self.directory / files[role]
        if not path.is_file():
            raise CheckpointError(f"{path}: missing tokenizer file")
        return path


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
        expect: the model kind(s) the caller can use; another kind is a clear error.

    Raises:
        CheckpointError: missing/corrupt files, a kind the caller can't use, a config that doesn't parse.
    """
    directory = Path(directory)
    info = read_config(directory)
    kind = info["kind"]
    if expect is not None:
        kinds = (expect,) if isinstance(expect, str) else expect
        if kind not in kinds:
            raise CheckpointError(
                f"{directory}: holds a {kind} model, but this command needs {' or '.join(kinds)}"
            )
    try:
        model_cls = registry.model_class(kind)
        config = cfg.from_dict(kind, dict(info.get("config", {})))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{directory}/config.json: bad model config ({e})") from None
    model = model_cls(config)
    load_weights(model, directory / WEIGHTS_FILE)
    return LoadedModel(kind, model.to(device).eval(), config, info, directory)
