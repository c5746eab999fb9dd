"""Reading the files of a Hugging Face model folder (shared by the importers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import CheckpointError


def read_json(path: Path) -> dict[str, Any]:
    """A folder's JSON file (``config.json``, ``tokenizer_config.json``); CheckpointError when it
    is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_optional_json(path: Path) -> dict[str, Any]:
    """A JSON object file that a folder may lack (``tokenizer_config.json``): ``{}`` when absent."""
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def is_hf_folder(directory: Path) -> bool:
    """A Hugging Face model folder: its ``config.json`` names a ``model_type`` and is not aiayn's."""
    path = directory / "config.json"
    if not path.is_file():
        return False
    try:
        data = read_json(path)
    except CheckpointError:
        return False
    return isinstance(data, dict) and data.get("format") != "aiayn" and "model_type" in data


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a ``save_pretrained`` folder: one, or the shards of its index."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no weight_map")
        names = sorted(set(weight_map.values()))
        for name in names:
            # A plain file name inside the folder: "../x" or "/etc/passwd" would read anything.
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise CheckpointError(f"{index}: shard {name!r} is not a file name in the folder")
        return [directory / name for name in names]
    if any(directory.glob("pytorch_model*.bin")):
        raise CheckpointError(
            f"{directory}: only pytorch_model*.bin (a pickle, which can run code) is there; "
            "save it with safetensors first"
        )
    raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def load_safetensors(paths: list[Path]) -> dict[str, Tensor]:
    """Every tensor of the given safetensors files, in one dict."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for path in paths:
        try:
            state.update(load_file(str(path)))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return state
