"""Every `aiayn train` command spends its whole time budget, and says so in metrics.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aiayn.data.corpus import write_parallel_tsv
from aiayn.tasks.lm import train_lm
from aiayn.tasks.mlm import train_mlm
from aiayn.tasks.translation import train_translation
from aiayn.tasks.vision import train_vit

pytestmark = pytest.mark.usefixtures("one_thread")

MINUTES = 0.1  # 6 seconds: planning, training and the last evaluation included


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _train(kind: str, tmp_path: Path) -> Path:
    out = tmp_path / kind
    if kind == "translate":
        tsv = tmp_path / "pairs.tsv"
        write_parallel_tsv(tsv, [("le chat", "the cat"), ("le chien", "the dog")] * 10)
        train_translation(str(tsv), out, valid_spec=str(tsv), preset="micro", max_minutes=MINUTES,
                          progress=False, log_every=5)  # fmt: skip
    elif kind == "lm":
        text = tmp_path / "text.txt"
        text.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
        train_lm(str(text), out, preset="micro", max_minutes=MINUTES, progress=False,
                 sample_tokens=8, log_every=5)  # fmt: skip
    elif kind == "mlm":
        text = tmp_path / "text.txt"
        text.write_text("\n".join(f"line {i} of the cat and the dog" for i in range(300)))
        train_mlm(text, out, preset="micro", vocab_size=100, seq_len=16, max_minutes=MINUTES,
                  progress=False, log_every=5)  # fmt: skip
    else:
        train_vit("builtin:digits", out, preset="micro", overrides=["patch_size=4"],
                  max_minutes=MINUTES, progress=False, log_every=5)  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["translate", "lm", "mlm", "vit"])
def test_train_uses_at_least_95_percent_of_max_minutes(kind, tmp_path):
    began = time.monotonic()
    records = _records(_train(kind, tmp_path))
    wall = time.monotonic() - began  # the whole call: planning, training, the last evaluations
    assert all("elapsed_s" in r for r in records), "every metrics row carries elapsed_s"
    budget = 60 * MINUTES
    assert wall >= 0.95 * budget, f"{kind} ended after {wall:.2f} s of {budget}"
    assert wall <= budget + 2, f"{kind} ended after {wall:.2f} s of {budget}"  # not minutes over
    trained = [r for r in records if r.get("loss") is not None]
    assert trained[-1]["elapsed_s"] >= 0.7 * budget, "most of the budget is training"
    rates = [r["lr"] for r in trained]
    assert rates[-1] < 0.5 * max(rates), "the schedule decays over the time budget"


def test_the_command_line_budget_includes_starting_python(tmp_path):
    # A user times the whole command: `time aiayn train ... --max-minutes M` should read ~M minutes,
    # the ~5 s of importing torch included.
    import subprocess
    import sys

    tsv = tmp_path / "pairs.tsv"
    write_parallel_tsv(tsv, [("le chat", "the cat"), ("le chien", "the dog")] * 10)
    minutes = 0.15
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "aiayn", "train", "translate", "--train", str(tsv), "--valid",
         str(tsv), "--preset", "micro", "--out", str(tmp_path / "m"), "--max-minutes",
         str(minutes), "--no-progress", "--threads", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    wall = time.monotonic() - began
    assert 0.95 * 60 * minutes <= wall <= 60 * minutes + 2, wall
