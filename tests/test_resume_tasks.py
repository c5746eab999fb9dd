"""Every `train` command resumes from whatever the checkpoint finder returns: `last/`, or `last.old/`
when a kill landed between the two renames that swap a new checkpoint in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aiayn.data.corpus import write_parallel_tsv
from aiayn.tasks.lm import train_lm
from aiayn.tasks.mlm import train_mlm
from aiayn.tasks.translation import train_translation
from aiayn.tasks.vision import train_vit

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(kind: str, tmp_path: Path, out: Path, steps: int, resume: bool) -> None:
    common = dict(max_steps=steps, resume=resume, progress=False, eval_every=2)
    if kind == "translate":
        tsv = tmp_path / "pairs.tsv"
        write_parallel_tsv(tsv, [("le chat", "the cat"), ("le chien", "the dog")] * 10)
        train_translation(str(tsv), out, valid_spec=str(tsv), preset="micro", log_every=1, **common)
    elif kind == "lm":
        text = tmp_path / "text.txt"
        text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
        train_lm(str(text), out, preset="micro", sample_tokens=4, **common)
    elif kind == "mlm":
        text = tmp_path / "text.txt"
        text.write_text("\n".join(f"line {i} of the cat and the dog" for i in range(200)))
        train_mlm(text, out, preset="micro", vocab_size=100, seq_len=16, **common)
    else:
        train_vit("builtin:digits", out, preset="micro", overrides=["patch_size=4"],
                  batch_size=32, **common)  # fmt: skip


@pytest.mark.parametrize("kind", ["translate", "lm", "mlm", "vit"])
def test_resume_from_last_old_after_a_kill_between_the_renames(kind, tmp_path):
    out = tmp_path / "run"
    _train(kind, tmp_path, out, steps=2, resume=False)
    os.replace(out / "last", out / "last.old")  # the kill: `last` moved away, the new one not in
    _train(kind, tmp_path, out, steps=4, resume=True)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == 4 and 3 in steps  # continued, not started afresh
    assert sorted(set(steps)) == list(range(1, 5))
    assert (out / "last").is_dir() and not (out / "last.old").exists()
