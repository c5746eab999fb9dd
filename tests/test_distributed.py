"""Distributed data parallel: two gloo processes train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from aiayn.data.corpus import write_parallel_tsv
from aiayn.translation import train_translation

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, tsv: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        train_translation(tsv, out, valid_spec=tsv, **COMMON)
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
    mp.spawn(_worker, args=(2, _free_port(), str(tsv), str(double)), nprocs=2, join=True)

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
