"""Model directories and training state on disk: safetensors, checksums, atomic writes.

A model directory holds ``config.json`` (format version, model kind, model config, tokenizer files, task
info), ``model.safetensors`` (weights, with a SHA-256 of their bytes in the file's metadata) and the
tokenizer file(s). Training state lives in ``trainer.pt`` (optimizer, schedule, RNG, data position),
written with ``torch.save`` and read back with ``weights_only=True`` so no code in it is ever run.

Every file is written to a temporary name, flushed to disk and renamed into place; a whole checkpoint
directory is swapped in with two renames. A kill at any moment leaves either the old checkpoint or the
new one, never a mix or a half-written file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ..errors import CheckpointError
from .rundir import is_own_folder, remove_own_folder  # only folders aiayn wrote

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync the file, then rename it to ``path`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases: a tied matrix is stored once, under its first name."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().contiguous().cpu()
    return state


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s weights as safetensors with a checksum, atomically."""
    state = unique_state(model)
    metadata = {"format": "pt", "aiayn_sha256": _digest(state)}
    # Serialised in memory, written by Python: a full disk or a file-size limit is then an OSError
    # with its errno (safetensors' own writer reports it only as text).
    data = save(state, metadata=metadata)
    atomic_write(path, lambda p: p.write_bytes(data))


#: safetensors' dtype names.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def check_weights_header(model: nn.Module, path: str | Path) -> None:
    """Check the names, shapes and dtypes in a safetensors header against ``model``, reading no data.

    ``model`` may live on the meta device: a model directory from elsewhere is input, and a config
    that asks for a huge model over small weights must be refused before anything is allocated.

    Raises:
        CheckpointError: unreadable header, or a tensor missing, unexpected, or of another shape
            or dtype (named in the message).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    own = model.state_dict(keep_vars=True)  # the tensors themselves: a tie is one object
    expected, seen = {}, set()
    for name, tensor in own.items():
        if id(tensor) not in seen:  # a tied matrix is stored once, under its first name
            seen.add(id(tensor))
            expected[name] = tensor
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {}
            for name in f.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                header = f.get_slice(name)
                stored[name] = (tuple(header.get_shape()), header.get_dtype())
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated or of another kind"
        ) from None
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights don't fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, (shape, dtype) in stored.items():
        want = own[name]
        if shape != tuple(want.shape):
            raise CheckpointError(
                f"{path}: {name} has shape {shape}, but config.json makes it {tuple(want.shape)}"
            )
        if _SAFETENSORS_DTYPES.get(dtype) != want.dtype:
            raise CheckpointError(f"{path}: {name} is {dtype}, the model expects {want.dtype}")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load weights written by :func:`save_weights` (or any safetensors file with matching names).

    Raises:
        CheckpointError: missing, truncated or corrupt file, checksum mismatch, or names/shapes that
            don't fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({e}); it may be truncated or of another kind"
        ) from None
    expected = metadata.get("aiayn_sha256")
    if expected is not None and _digest(state) != expected:
        raise CheckpointError(f"{path}: checksum mismatch: the weights are corrupt")
    own = model.state_dict()
    aliases = set(own) - set(unique_state(model))
    missing = [k for k in own if k not in state and k not in aliases]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights don't fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(own[name].shape)}"
            )
    model.load_state_dict(state, strict=False)


def write_config(directory: str | Path, info: dict[str, Any]) -> None:
    """Write ``config.json`` (adds the format version)."""
    data = {"format": "aiayn", "format_version": FORMAT_VERSION, **info}
    atomic_write_text(Path(directory) / CONFIG_FILE, json.dumps(data, indent=2, ensure_ascii=False))


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check a model directory's ``config.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a model directory (no such directory)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {directory} is not an aiayn model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != "aiayn" or "kind" not in data:
        raise CheckpointError(f"{path}: not an aiayn model config")
    # The folder may come from anywhere: wrong JSON types are refused here, by name.
    version = data.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer aiayn (format {version})")
    for key, kind in (("kind", str), ("config", dict), ("tokenizers", dict)):
        if key in data and not isinstance(data[key], kind):
            raise CheckpointError(f"{path}: {key} must be a JSON {_JSON_NAMES[kind]}")
    return data


_JSON_NAMES = {str: "string", dict: "object"}


def save_trainer_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write resumable training state (tensors and plain Python values only)."""
    buffer = io.BytesIO()  # as above: torch.save's own writer hides the errno of a failed write
    torch.save(state, buffer)
    atomic_write(path, lambda p: p.write_bytes(buffer.getbuffer()))


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Read training state with ``weights_only=True``: a file that would run code is refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # torch raises several types for truncated or hostile files
        raise CheckpointError(
            f"{path}: unreadable training state ({type(e).__name__}); refusing to load it"
        ) from None


def swap_in_directory(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by ``staging`` with renames, so a crash leaves one complete copy.

    If a crash lands between the two renames, ``final`` is missing and ``final.old`` holds the previous
    checkpoint; :func:`find_checkpoint` looks there too.
    """
    old = final.with_name(final.name + ".old")
    if final.exists():
        if not is_own_folder(final):  # never move a user's folder aside, let alone delete it
            raise CheckpointError(f"{final}: exists but was not written by aiayn; move it away")
        remove_own_folder(old)
        os.replace(final, old)
    # else: a crash between the renames left ``final.old`` as the only complete copy; it stays
    # until ``staging`` is in place.
    os.replace(staging, final)
    _fsync_dir(final.parent)
    remove_own_folder(old)


def find_checkpoint(final: Path) -> Path | None:
    """The last complete checkpoint directory (``final``, or ``final.old`` after an interrupted swap)."""
    for candidate in (final, final.with_name(final.name + ".old")):
        if (candidate / TRAINER_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
            return candidate
    return None
