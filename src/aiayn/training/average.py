"""Checkpoint averaging (the paper, section 6.1): the element-wise mean of several models' weights.

The paper's base models are the average of the last 5 checkpoints, written 10 minutes apart; the big
models of the last 20. Averaging weights along one training run lands nearer the centre of the region
the last steps wander about in, which usually validates a little better than any single checkpoint.
Training does this by itself at the end of a run (``Trainer``'s ``average_last``); this module averages
model directories on disk (``aiayn average DIR... --out OUT``): checkpoints of one run, or runs that
started from the same weights. Every directory must hold the same kind of model with the same config
and the same tokenizer files.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import AiaynError
from ..modeldir import LoadedModel, load_model_dir
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_weights


def _tokenizer_files(loaded: LoadedModel) -> dict[str, bytes]:
    names = sorted(set(loaded.info.get("tokenizers", {}).values()))
    return {name: (loaded.directory / name).read_bytes() for name in names}


def average_model_dirs(directories: Sequence[str | Path], out: str | Path) -> Path:
    """Write to ``out`` a model directory whose weights are the mean of ``directories``' weights.

    Raises:
        AiaynError: fewer than two directories, models that differ in kind, config or tokenizer,
            or an ``out`` that already holds files.
    """
    if len(directories) < 2:
        raise AiaynError("averaging needs at least two model directories")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AiaynError(f"{out}: already exists and is not an empty folder; choose a new --out")
    models = [load_model_dir(d) for d in directories]
    first = models[0]
    tokenizers = _tokenizer_files(first)
    for other in models[1:]:
        if other.kind != first.kind or other.config != first.config:
            raise AiaynError(
                f"{other.directory}: a different model ({other.kind}) or config than "
                f"{first.directory}; only models of one config can be averaged"
            )
        if _tokenizer_files(other) != tokenizers:
            raise AiaynError(f"{other.directory}: its tokenizer differs from {first.directory}'s")
    states = [m.model.state_dict() for m in models]
    averaged = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            total = sum(s[name].double() for s in states)
            averaged[name] = (total / len(states)).to(tensor.dtype)
        else:
            averaged[name] = tensor  # integer buffers (position ids) are the same in every model
    first.model.load_state_dict(averaged)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(first.directory / CONFIG_FILE, out / CONFIG_FILE)
    for name, content in tokenizers.items():
        (out / name).write_bytes(content)
    with torch.no_grad():
        save_weights(first.model, out / WEIGHTS_FILE)
    return out
