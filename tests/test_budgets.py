"""Every `aiayn train` command spends its whole time budget, and says so in metrics.jsonl."""

from __future__ import annotations

import json
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
                          progress=False)  # fmt: skip
    elif kind == "lm":
        text = tmp_path / "text.txt"
        text.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
        train_lm(str(text), out, preset="micro", max_minutes=MINUTES, progress=False,
                 sample_tokens=8)  # fmt: skip
    elif kind == "mlm":
        text = tmp_path / "text.txt"
        text.write_text("\n".join(f"line {i} of the cat and the dog" for i in range(300)))
        train_mlm(text, out, preset="micro", vocab_size=100, seq_len=16, max_minutes=MINUTES,
                  progress=False)  # fmt: skip
    else:
        train_vit("builtin:digits", out, preset="micro", overrides=["patch_size=4"],
                  max_minutes=MINUTES, progress=False)  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["translate", "lm", "mlm", "vit"])
def test_train_uses_at_least_95_percent_of_max_minutes(kind, tmp_path):
    records = _records(_train(kind, tmp_path))
    assert all("elapsed_s" in r for r in records), "every metrics row carries elapsed_s"
    trained = [r for r in records if r.get("loss") is not None]
    elapsed = trained[-1]["elapsed_s"]
    assert elapsed >= 0.95 * 60 * MINUTES, f"{kind} stopped after {elapsed} s of {60 * MINUTES}"
    assert elapsed <= 60 * MINUTES + 3  # one last step at most over, not minutes
    rates = [r["lr"] for r in trained]
    assert rates[-1] < 0.5 * max(rates), "the schedule decays over the time budget"
