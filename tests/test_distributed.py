"""Distributed training: two gloo processes (DDP or FSDP) train like one process with the same
global batch, and FSDP's checkpoints are ordinary whole-model ones."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from aiayn.data.corpus import write_parallel_tsv
from aiayn.tasks.translation import train_translation
from dist_helpers import free_port, torchrun_env

PAIRS = [(f"{a} {b} {c}", f"{c} {b} {a}") for a in "abcd" for b in "efg" for c in "hij"]
COMMON = dict(
    preset="micro",
    batch_tokens=24,
    max_steps=3,
    progress=False,
    log_every=1,
    eval_every=3,
    seed=5,
    overrides=["dropout=0"],
    clip_norm=0.0,
)


def _worker(rank: int, world_size: int, port: int, tsv: str, out: str, extra=None) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    try:
        train_translation(tsv, out, valid_spec=tsv, **{**COMMON, **(extra or {})})
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path: Path):
    tsv = tmp_path / "data.tsv"
    write_parallel_tsv(tsv, PAIRS)
    single = tmp_path / "single"
    torch.set_num_threads(1)
    # One process, two micro-batches per step == two processes, one batch each (rank r takes
    # batches r, r + 2, ... of the same epoch order).
    train_translation(str(tsv), single, valid_spec=str(tsv), accumulate=2, **COMMON)
    double = tmp_path / "double"
    mp.spawn(_worker, args=(2, free_port(), str(tsv), str(double)), nprocs=2, join=True)

    a = load_file(single / "last" / "model.safetensors")
    b = load_file(double / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    # Tolerance: the two runs add the same per-token gradients in a different order (all-reduce vs
    # accumulation), ~1e-7 relative in float32; three Adam steps of lr <= 2e-3 keep the parameters
    # within 1e-5 unless a gradient flips sign, which these sums don't do.
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    steps = [json.loads(x)["step"] for x in (double / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3], "rank 0 alone writes the metrics, once per step"
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())


def _worst(a: Path, b: Path) -> float:
    """Largest parameter difference between two runs' last checkpoints.

    Key-projection biases are left out (and only checked to stay within the summed learning
    rates, 1e-3): a key bias adds the same amount to all of a query's scores, which softmax
    ignores, so their gradient is zero but for round-off, and Adam turns round-off into
    lr-sized steps of any sign. With clipping on, the norm (and so the round-off) is summed in
    another order under FSDP, while the other parameters agree as closely as without it.
    """
    x = load_file(a / "last" / "model.safetensors")
    y = load_file(b / "last" / "model.safetensors")
    assert x.keys() == y.keys()
    diff = {k: float((x[k] - y[k]).abs().max()) for k in x}
    assert all(d < 1e-3 for k, d in diff.items() if k.endswith("k_proj.bias")), diff
    return max(d for k, d in diff.items() if not k.endswith("k_proj.bias"))


def _spawn_fresh_run(tsv: str, out: Path, extra: dict) -> None:
    """Two processes train a fresh run into ``out``. Seen once in about 15 runs on the 2-core CPU
    (2026-12-02, a full `make test`): a gloo rank of the fresh FSDP run died with SIGABRT
    ("terminate called without an active exception", a native thread torn down) before the
    result could be checked. Not yet understood; the run is repeated once from scratch in a new
    folder, and the numbers are still checked on the repeat. Any other failure fails the test."""
    try:
        mp.spawn(_worker, args=(2, free_port(), tsv, str(out), extra), nprocs=2, join=True)
    except mp.ProcessExitedException as e:
        if e.signal_name != "SIGABRT":
            raise
        shutil.rmtree(out, ignore_errors=True)  # the test's own tmp folder
        mp.spawn(_worker, args=(2, free_port(), tsv, str(out), extra), nprocs=2, join=True)


def test_fsdp_trains_like_one_process_and_writes_whole_checkpoints(tmp_path: Path, caplog):
    tsv = tmp_path / "data.tsv"
    write_parallel_tsv(tsv, PAIRS)
    torch.set_num_threads(1)
    # Clipping on (0.1 is below these gradients' norm): under FSDP the norm is that of the whole,
    # sharded gradient.
    fsdp = dict(clip_norm=0.1, fsdp=True)
    single = tmp_path / "single"
    train_translation(str(tsv), single, valid_spec=str(tsv), accumulate=2, **{**COMMON, **fsdp})
    sharded = tmp_path / "sharded"
    _spawn_fresh_run(str(tsv), sharded, fsdp)
    # Same tolerance and reason as the DDP test: only the order of the gradient sums differs.
    assert _worst(single, sharded) < 1e-5
    a = torch.load(single / "last" / "trainer.pt", weights_only=True)["optimizer"]
    b = torch.load(sharded / "last" / "trainer.pt", weights_only=True)["optimizer"]
    assert a["param_groups"] == b["param_groups"], "the whole optimizer state, keyed as usual"
    assert a["state"].keys() == b["state"].keys()
    # Entries far below the largest are summation-order noise, which no elementwise rtol bounds
    # (seen: 7e-4 apart at 1e-16, and a whole bias whose true gradient is 0 at 1e-23): atol is
    # 1e-7 of the largest second moment of the model (a gradient ~3e-4 of the largest).
    scale = max(float(s["exp_avg_sq"].abs().max()) for s in b["state"].values())
    for i, sa in a["state"].items():
        assert sa.keys() == b["state"][i].keys()
        assert float(sa["step"]) == float(b["state"][i]["step"]) == 3
        x, y = sa["exp_avg_sq"], b["state"][i]["exp_avg_sq"]
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-7 * scale)
    assert (sharded / "model.safetensors").is_file(), "the best model, whole, by rank 0"

    # Resume both ways to step 5: the FSDP checkpoint in one process (where --fsdp does nothing
    # but warn), and the one-process checkpoint under FSDP; all agree with plain one-process runs.
    more = dict(accumulate=2, resume=True, **{**COMMON, **fsdp, "max_steps": 5})
    reference = tmp_path / "reference"
    shutil.copytree(single, reference)
    train_translation(str(tsv), reference, valid_spec=str(tsv), **{**more, "fsdp": False})
    with caplog.at_level(logging.WARNING):
        train_translation(str(tsv), sharded, valid_spec=str(tsv), **more)
    assert "--fsdp needs several processes" in caplog.text
    assert _worst(reference, sharded) < 1e-5
    extra = {**fsdp, "resume": True, "max_steps": 5}
    mp.spawn(_worker, args=(2, free_port(), str(tsv), str(single), extra), nprocs=2, join=True)
    assert _worst(reference, single) < 1e-5
    steps = [json.loads(x)["step"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
