"""Every `aiayn train` sub-command takes the shared flags (defined once, `add_run_flags`) and honours
them: the loop settings reach the trainer, the intervals shape metrics.jsonl, threads and precision
apply; and the two of `add_model_flags` that every model-training one takes too, `--grad-checkpointing`
and `--fsdp`. (Resuming after a kill from `last.old`, for all four tasks: tests/test_resume_tasks.py;
--fsdp and DDP under two processes: tests/test_distributed.py.)"""

from __future__ import annotations

import argparse
import json
import logging
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


def _short_run(kind: str, tmp_path: Path, name: str, *flags: str) -> Path:
    out = tmp_path / name
    argv = ["train", *_task_args(kind, tmp_path), "--out", str(out), "--max-steps", "3",
            "--log-every", "1", "--eval-every", "3", "--no-progress", *flags]  # fmt: skip
    assert main(argv) == 0
    return out


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in _records(out) if r.get("loss") is not None]


def _train_config(out: Path) -> dict:
    return load_trainer_state(out / "last" / TRAINER_FILE)["train_config"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_train_command_honours_grad_checkpointing(kind, tmp_path, caplog):
    """Recorded, and the same run: the layers' recompute replays dropout's random state, so the
    losses equal a plain run's step for step (the equal gradients and the second forward of each
    layer: tests/test_grad_checkpointing.py)."""
    plain = _short_run(kind, tmp_path, "plain")
    with caplog.at_level(logging.INFO, logger="aiayn.training.trainer"):
        checkpointed = _short_run(kind, tmp_path, "checkpointed", "--grad-checkpointing")
    assert "layers recompute their forward in backward" in caplog.text
    assert _train_config(checkpointed)["grad_checkpointing"] is True
    assert _train_config(plain)["grad_checkpointing"] is False
    assert len(_losses(checkpointed)) == 3
    assert _losses(checkpointed) == pytest.approx(_losses(plain), rel=1e-5)
    assert (checkpointed / "model.safetensors").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_every_train_command_takes_fsdp_and_trains_unsharded_in_one_process(kind, tmp_path, caplog):
    """Sharding needs several processes (torchrun; tests/test_distributed.py); in one, --fsdp
    warns and trains as usual."""
    with caplog.at_level(logging.WARNING):
        out = _short_run(kind, tmp_path, "run", "--fsdp")
    assert "--fsdp needs several processes" in caplog.text
    assert _train_config(out)["fsdp"] is True
    assert len(_losses(out)) == 3


def test_translate_refuses_fsdp_with_a_joint_vocabulary(tmp_path, capsys):
    argv = ["train", *_task_args("translate", tmp_path), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--no-progress", "--fsdp", "--joint-vocab"]  # fmt: skip
    assert main(argv) == 2
    assert "--fsdp with --joint-vocab is not supported" in capsys.readouterr().err


def _train_options(kind: str) -> set[str]:
    from aiayn.cli import build_parser

    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    task = next(a for a in train._actions if a.dest == "task").choices[kind]
    return {option for action in task._actions for option in action.option_strings}


def _flags_of(add) -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    return {option for action in parser._actions for option in action.option_strings}


def test_train_classify_takes_the_run_flags_but_not_the_model_flags():
    """``train classify`` (a BERT fine-tune with its own loop settings) shares add_run_flags, not
    add_model_flags: it neither shards nor checkpoints yet, so it does not offer those flags."""
    from aiayn.cli.train_group import add_model_flags, add_run_flags

    run_flags, model_flags = _flags_of(add_run_flags), _flags_of(add_model_flags)
    assert {"--fsdp", "--grad-checkpointing", "--init-from"} == model_flags
    assert run_flags <= _train_options("classify")
    assert not model_flags & _train_options("classify")
    for kind in KINDS:
        assert model_flags | run_flags <= _train_options(kind), kind


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
