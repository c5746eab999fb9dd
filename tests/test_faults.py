"""A training run killed at any moment (SIGKILL) resumes from its last complete checkpoint and
continues its loss curve exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiayn.data.corpus import write_parallel_tsv
from aiayn.training.checkpoint import find_checkpoint, load_trainer_state
from test_translation import PHRASES

STEPS = 40
# One thread everywhere, MKL's included: float sums (and so the exact losses, ~1e-7 relative) depend
# on the thread count, and MKL otherwise picks its thread count by the machine's load (MKL_DYNAMIC).
ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}


def _train_cmd(tsv: Path, out: Path, resume: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "aiayn",
        "train",
        "translate",
        "--train",
        str(tsv),
        "--valid",
        str(tsv),
        "--out",
        str(out),
        "--preset",
        "micro",
        "--set",
        "dropout=0.1",
        "--max-steps",
        str(STEPS),
        "--eval-every",
        "4",
        "--log-every",
        "1",
        "--no-progress",
        "--seed",
        "7",
    ]
    return cmd + (["--resume"] if resume else [])


def _losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    # Rows without a loss evaluate something (the checkpoint average at the end), train nothing.
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["loss"] is not None}


@pytest.fixture(scope="module")
def tsv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.tsv"
    write_parallel_tsv(path, PHRASES * 6)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tsv, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_train_cmd(tsv, out), check=True, capture_output=True, timeout=300, env=ENV)
    return _losses(out)


@pytest.mark.parametrize("kill_after", [0.15, 0.5, 0.85])
def test_sigkill_at_any_moment_then_resume_continues_the_curve(
    tsv, tmp_path, uninterrupted, kill_after
):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(tsv, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    # Wait until training is under way (the first metrics line), then kill at a fraction of the
    # remaining time of a typical run.
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("training ended before it could be killed")
        time.sleep(0.05)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < kill_after * 3.0:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    found = find_checkpoint(out / "last")
    if found is not None:  # whatever was on disk is complete and loadable
        state = load_trainer_state(found / "trainer.pt")
        assert 0 < state["step"] <= STEPS
    run = subprocess.run(
        _train_cmd(tsv, out, resume=True), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    resumed = _losses(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    # The curve continues where it stopped. Exact, bit-for-bit equality of resumed losses is tested
    # in-process (tests/test_translation.py); across fresh processes the float32 sums can differ in
    # their last bit (seen: 1 ulp on a few steps, growing to ~1e-4 relative over 40 Adam steps), so
    # here the curves must agree to 1e-3 relative: far below the loss's own change from one step to
    # the next here (~5% per step), so a restart from scratch or a skipped or repeated step fails.
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-3), step
