"""`train mlm` and `train vit` under torchrun (two gloo processes): DDP, or FSDP2 with --fsdp, each
with --grad-checkpointing, train like one process with the same global batch (translate's and lm's
runs: tests/test_distributed.py, tests/test_lm_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dist_helpers import free_port, torchrun_env

COMMON = dict(max_steps=3, eval_every=3, log_every=1, progress=False, seed=5, preset="micro")


def _train(kind: str, data: dict[str, str], out: str, **extra) -> None:
    """A few steps of ``kind``; ``data``: the text and tokenizer files (mlm)."""
    if kind == "mlm":
        from aiayn.tasks.mlm import train_mlm

        train_mlm(data["text"], out, tokenizer=data["tokenizer"], seq_len=16, batch_size=8,
                  **COMMON, **extra)  # fmt: skip
    else:
        from aiayn.tasks.vision import train_vit

        train_vit("builtin:digits", out, overrides=["patch_size=4"], batch_size=32, **COMMON,
                  **extra)  # fmt: skip


def _worker(rank: int, world_size: int, port: int, kind: str, data: dict, out: str, extra) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    try:
        _train(kind, data, out, **extra)
    finally:
        torch.distributed.destroy_process_group()


def _data(kind: str, tmp_path: Path) -> dict[str, str]:
    if kind != "mlm":
        return {}
    from aiayn.data.wordpiece import WordPieceTokenizer

    lines = [f"line {i} of the cat and the dog" for i in range(200)]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines), encoding="utf-8")
    # One vocabulary file for both runs: a learned one can break ties differently run to run.
    tokenizer = WordPieceTokenizer.train(lines, 100).save(tmp_path)
    return {"text": str(text), "tokenizer": str(tokenizer)}


def _worst(a: Path, b: Path) -> float:
    """Largest parameter difference between two runs' last checkpoints, key-projection biases
    left out (their gradient is zero but for round-off, which Adam turns into lr-sized steps;
    see tests/test_distributed.py) and only checked to stay within the summed learning rates."""
    x = load_file(a / "last" / "model.safetensors")
    y = load_file(b / "last" / "model.safetensors")
    assert x.keys() == y.keys()
    diff = {k: float((x[k] - y[k]).abs().max()) for k in x}
    assert all(d < 1e-2 for k, d in diff.items() if k.endswith("k_proj.bias")), diff
    return max(d for k, d in diff.items() if not k.endswith("k_proj.bias"))


@pytest.mark.slow  # two processes import torch, for each case
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
@pytest.mark.parametrize("kind", ["mlm", "vit"])
def test_two_processes_train_like_one_with_the_same_global_batch(kind, fsdp, tmp_path):
    torch.set_num_threads(1)
    data = _data(kind, tmp_path)
    single = tmp_path / "single"
    _train(kind, data, str(single), accumulate=2)  # rank r takes batches r, r + 2, ...
    double = tmp_path / "double"
    extra = dict(fsdp=fsdp, grad_checkpointing=True)
    mp.spawn(_worker, args=(2, free_port(), kind, data, str(double), extra), nprocs=2, join=True)
    # Same per-example gradients summed in another order (all-reduce vs accumulation): ~1e-7,
    # within 1e-5 after three Adam steps.
    assert _worst(single, double) < 1e-5
    steps = [json.loads(x)["step"] for x in (double / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3], "rank 0 alone writes the metrics, once per step"
    state = torch.load(double / "last" / "trainer.pt", weights_only=True)
    assert state["world_size"] == 2
    assert state["train_config"]["fsdp"] is fsdp and state["train_config"]["grad_checkpointing"]
    assert (double / "model.safetensors").is_file(), "the best model, whole, by rank 0"
