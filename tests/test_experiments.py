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
