"""Translation end to end: learning, resume, errors, and the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.data.corpus import write_parallel_tsv
from aiayn.tasks.translation import Translator, load_pairs, train_translation

PHRASES = [
    ("我是学生", "I am a student"),
    ("我是老师", "I am a teacher"),
    ("你是学生", "You are a student"),
    ("你是老师", "You are a teacher"),
    ("他是学生", "He is a student"),
    ("他是老师", "He is a teacher"),
    ("我爱中国", "I love China"),
    ("你爱中国", "You love China"),
]


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.tsv"
    write_parallel_tsv(path, PHRASES * 4)
    return path


def _metrics(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, tsv):
    common = dict(
        valid_spec=str(tsv),
        preset="micro",
        set_dropout=None,
        progress=False,
        log_every=1,
        eval_every=5,
        seed=3,
    )
    common.pop("set_dropout")
    overrides = ["dropout=0.1"]  # dropout makes the RNG state part of what must be restored
    straight = tmp_path / "straight"
    train_translation(str(tsv), straight, max_steps=10, overrides=overrides, **common)
    split = tmp_path / "split"
    train_translation(str(tsv), split, max_steps=5, overrides=overrides, **common)
    train_translation(str(tsv), split, max_steps=10, overrides=overrides, resume=True, **common)
    a = [r["loss"] for r in _metrics(straight)]
    b = [r["loss"] for r in _metrics(split)]
    assert [r["step"] for r in _metrics(split)] == list(range(1, 11))
    assert b == a, "resumed losses must equal the uninterrupted run's, step for step"


# A d_model=64 model reaches validation BLEU 99.9 by step 480 on the copy task, but exact match on
# every test sentence takes longer: 97.5% at 640 steps, 100% at 1000 (measured). About a minute on
# a 2-core CPU.
COPY_STEPS = 1000


def test_copy_task_is_learned_exactly(tmp_path):
    out = tmp_path / "copy"
    train_translation(
        "builtin:copy",
        out,
        preset="micro",
        overrides=[
            "d_model=64",
            "num_heads=4",
            "d_ff=256",
            "num_encoder_layers=2",
            "num_decoder_layers=2",
        ],
        max_steps=COPY_STEPS,
        progress=False,
        eval_every=COPY_STEPS,
        batch_tokens=2048,
    )
    translator = Translator.load(out)
    test = load_pairs("builtin:copy", "test")[:200]
    outputs = translator.translate([s for s, _ in test], beam=1)
    exact = sum(o == t for o, (_, t) in zip(outputs, test)) / len(test)
    assert exact == 1.0, f"exact match {exact:.3f}"


def test_cli_train_translate_evaluate(tmp_path, tsv, monkeypatch, capsys):
    out = tmp_path / "model"
    code = main(
        [
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
            "--max-steps",
            "20",
            "--no-progress",
        ]
    )
    assert code == 0
    for name in (
        "config.json",
        "model.safetensors",
        "source_tokenizer.json",
        "target_tokenizer.json",
        "metrics.jsonl",
    ):
        assert (out / name).is_file(), name
    records = _metrics(out)
    assert records[-1]["step"] == 20 and {"loss", "lr", "tokens_per_s", "val_loss", "bleu"} <= set(
        records[-1]
    )
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("我是学生\n\n你爱中国\n"))
    assert main(["translate", "--model", str(out), "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == ""
    assert main(["evaluate", "--model", str(out), "--test", str(tsv)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"bleu", "chrf", "n"} and result["n"] == len(PHRASES) * 4


def test_translate_through_a_real_subprocess_reads_stdin(tmp_path, tsv):
    out = tmp_path / "model"
    train_translation(
        str(tsv), out, valid_spec=str(tsv), preset="micro", max_steps=5, progress=False
    )
    run = subprocess.run(
        [sys.executable, "-m", "aiayn", "translate", "--model", str(out), "--beam", "1"],
        input="我是老师\n他是学生\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle", "missing"])
def test_damaged_model_directory_gives_a_clear_error(tmp_path, tsv, capsys, damage):
    out = tmp_path / "model"
    train_translation(
        str(tsv), out, valid_spec=str(tsv), preset="micro", max_steps=2, progress=False
    )
    weights = out / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        data = bytearray(weights.read_bytes())
        data[-50:] = b"\x00" * 50  # corrupt tensor bytes: only the checksum can tell
        weights.write_bytes(bytes(data))
    elif damage == "pickle":
        import pickle

        weights.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    else:
        weights.unlink()
    capsys.readouterr()
    code = main(["translate", "--model", str(out), "hello"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.safetensors" in err and "Traceback" not in err


def test_bad_corpus_line_is_reported_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("我是学生\tI am a student\nno tab here\n", encoding="utf-8")
    code = main(
        [
            "train",
            "translate",
            "--train",
            str(bad),
            "--out",
            str(tmp_path / "m"),
            "--max-steps",
            "1",
            "--no-progress",
        ]
    )
    assert code == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    assert not (tmp_path / "m").exists(), "nothing is written for bad input"
