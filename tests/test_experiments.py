"""`aiayn experiment`: a named comparison writes its table (with a conclusion) and its plot."""

from __future__ import annotations

import json

import pytest

from aiayn.cli import main
from aiayn.cli.experiments import EXPERIMENT_NAMES
from aiayn.experiments import EXPERIMENTS, _schedules, copy_pairs
from aiayn.training.scheduled_sampling import ScheduledSampling

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_issue_experiment_is_registered():
    expected = {
        "positions",
        "norm",
        "attention",
        "scheduled-sampling",
        "guided-attention",
        "window",
    }
    assert expected | {"rnn"} <= set(EXPERIMENTS)
    assert set(EXPERIMENT_NAMES) == set(EXPERIMENTS)  # the CLI's list stays in step


def test_schedules_of_the_experiment_fall_to_about_a_half():
    for spec in _schedules(400)[1:]:
        assert isinstance(spec.scheduled_sampling, ScheduledSampling)
        assert spec.scheduled_sampling.probability(0) > 0.95
        assert abs(spec.scheduled_sampling.probability(400) - 0.5) < 0.05


def test_copy_pairs_are_deterministic_and_in_range():
    pairs = copy_pairs(50, 2, 6, seed=3)
    assert pairs == copy_pairs(50, 2, 6, seed=3)
    assert all(2 <= len(s) <= 6 and s == t for s, t in pairs)


def test_experiment_command_writes_table_and_plot(tmp_path, capsys):
    code = main(["experiment", "guided-attention", "--out", str(tmp_path), "--steps", "3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    runs = summary["guided-attention"]
    assert set(runs) == {"no guide", "guide 1.0"}
    assert {"test exact", "test token", "off-diagonal", "train_seconds"} <= set(runs["no guide"])
    text = (tmp_path / "guided-attention.md").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| run"))
    assert "test exact" in header and "final loss" in header
    assert sum(line.startswith("| guide") or line.startswith("| no guide") for line in lines) == 2
    assert "**Conclusion.**" in text
    png = (tmp_path / "guided-attention.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_extrapolation_data_trains_short_and_tests_every_length_unseen():
    from aiayn.experiments import (
        REVERSE_PER_LENGTH,
        REVERSE_TEST_LENGTHS,
        REVERSE_TRAIN_MAX,
        _extrapolation_data,
    )

    train, tests = _extrapolation_data(0)
    assert all(len(s) <= REVERSE_TRAIN_MAX and t == s[::-1] for s, t in train)
    test = tests["test"]
    assert max(REVERSE_TEST_LENGTHS) == 2 * REVERSE_TRAIN_MAX
    for n in REVERSE_TEST_LENGTHS:
        assert sum(len(s) == n for s, _ in test) == REVERSE_PER_LENGTH
    assert not {tuple(s) for s, _ in train} & {tuple(s) for s, _ in test}


def test_positions_experiment_tables_every_arm_and_length(tmp_path, capsys, monkeypatch):
    import aiayn.experiments as exps

    # Tiny data (a small text instead of builtin:shakespeare, few test sequences) keep it fast.
    text = tmp_path / "text.txt"
    text.write_text(
        "".join(f"line {i}: to be or not to be, that is the question\n" for i in range(300))
    )
    monkeypatch.setattr(exps, "LM_TEXT", str(text))
    monkeypatch.setattr(exps, "LM_EVAL_CHARS", 2 * 384)
    monkeypatch.setattr(exps, "REVERSE_PER_LENGTH", 3)
    monkeypatch.setattr(exps, "REVERSE_TRAIN_SIZE", 200)
    out = tmp_path / "out"
    args = ["experiment", "positions", "--out", str(out), "--steps", "2", "--seed", "5"]
    assert main([*args, "--seeds", "2"]) == 0
    runs = json.loads(capsys.readouterr().out)["positions"]
    assert set(runs) == set(exps.POSITION_KINDS) == {"sinusoidal", "learned", "rotary", "alibi"}
    for metrics in runs.values():
        for key in ("reverse 3-8 exact", "reverse 12 exact", "reverse 16 exact"):
            assert 0.0 <= metrics[key] <= 1.0 and len(metrics["per_seed"][key]) == 2
        for key in ("lm 64 loss", "lm 96 loss", "lm 128 loss"):
            assert metrics[key] > 0 and len(metrics["per_seed"][key]) == 2
    text = (out / "positions.md").read_text()
    lines = text.splitlines()
    headers = [line for line in lines if line.startswith("| positions")]
    assert len(headers) == 2
    for column in ("3-8 tokens", "12 tokens (1.5×)", "16 tokens (2×)"):
        assert column in headers[0]
    for column in ("64 chars", "96 chars (1.5×)", "128 chars (2×)"):
        assert column in headers[1]
    for label in ("sinusoidal", "learned", "rotary", "ALiBi"):
        rows = [line for line in lines if line.startswith(f"| {label} |")]
        assert len(rows) == 2  # one per task
        assert all(line.count("–") >= 3 for line in rows)  # mean (min–max) in every length column
    assert "--seed 5 --seeds 2" in text and "seeds 5-6" in text
    assert "**Conclusion.**" in text
    png = (out / "positions.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
