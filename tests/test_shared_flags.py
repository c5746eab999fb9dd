"""Every `aiayn train` sub-command takes the shared flags (defined once, `add_run_flags`) and honours
them: the loop settings reach the trainer, the intervals shape metrics.jsonl, threads and precision
apply. (Resuming after a kill from `last.old`, for all four tasks: tests/test_resume_tasks.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.corpus import write_parallel_tsv
from aiayn.training.checkpoint import TRAINER_FILE, load_trainer_state

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["translate", "lm", "mlm", "vit"]


def _task_args(kind: str, tmp_path: Path) -> list[str]:
    """Each task's own arguments, on a corpus small enough for a few steps."""
    if kind == "translate":
        tsv = tmp_path / "pairs.tsv"
        write_parallel_tsv(tsv, [("le chat", "the cat"), ("le chien", "the dog")] * 10)
        return ["translate", "--train", str(tsv), "--valid", str(tsv), "--preset", "micro"]
    text = tmp_path / "text.txt"
    if kind == "lm":
        text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
        return ["lm", "--text", str(text), "--preset", "micro"]
    if kind == "mlm":
        text.write_text("\n".join(f"line {i} of the cat and the dog" for i in range(200)))
        return ["mlm", "--text", str(text), "--preset", "micro", "--vocab-size", "100",
                "--seq-len", "16"]  # fmt: skip
    return ["vit", "--dataset", "builtin:digits", "--preset", "micro", "--set", "patch_size=4",
            "--batch-size", "32"]  # fmt: skip


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", KINDS)
def test_every_train_command_honours_the_shared_loop_flags(kind, tmp_path, capsys):
    out = tmp_path / "run"
    shared = ["--out", str(out), "--max-steps", "4", "--accumulate", "2", "--clip-norm", "0.5",
              "--eval-every", "2", "--log-every", "1", "--dtype", "bfloat16", "--threads", "1",
              "--seed", "3", "--device", "cpu", "--no-progress"]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["train", *_task_args(kind, tmp_path), *shared]) == 0, capsys.readouterr().err
        assert torch.get_num_threads() == 1  # --threads
    finally:
        torch.set_num_threads(threads)
    config = load_trainer_state(out / "last" / TRAINER_FILE)["train_config"]
    assert config["accumulate"] == 2 and config["clip_norm"] == 0.5
    assert config["dtype"] == "bfloat16" and config["seed"] == 3
    records = _records(out)
    trained = [r["step"] for r in records if r.get("loss") is not None]
    assert trained == [1, 2, 3, 4]  # --log-every 1, --max-steps 4
    evaluated = [r["step"] for r in records if any(k.startswith("val_") for k in r)]
    assert {2, 4} <= set(evaluated)  # --eval-every 2


def test_bfloat16_runs_the_loss_under_autocast(tmp_path):
    """--dtype bfloat16 really changes the arithmetic (the losses differ from float32's), and
    float32 is the default on the CPU."""
    from aiayn.tasks.lm import train_lm

    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    losses = {}
    for dtype in ("auto", "bfloat16"):
        out = tmp_path / dtype
        train_lm(str(text), out, preset="micro", max_steps=3, log_every=1, progress=False,
                 sample_tokens=0, dtype=dtype)  # fmt: skip
        losses[dtype] = [r["loss"] for r in _records(out) if r.get("loss") is not None]
        config = load_trainer_state(out / "last" / TRAINER_FILE)["train_config"]
        assert config["dtype"] == ("float32" if dtype == "auto" else "bfloat16")
    assert losses["auto"][0] != losses["bfloat16"][0]
    assert all(abs(a - b) < 0.05 for a, b in zip(losses["auto"], losses["bfloat16"]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_train_command_trains_through_torch_compile(kind, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *_task_args(kind, tmp_path), "--out", str(out), "--max-steps", "2",
            "--compile", "--no-progress", "--log-every", "1"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    config = load_trainer_state(out / "last" / TRAINER_FILE)["train_config"]
    assert config["compile"] is True
    assert "compile_seconds" in _records(out)[0]
