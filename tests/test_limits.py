"""Limits and bad values: huge generation budgets, linear-time streaming, diverged models and
gradients, non-regular input files, bad bytes on stdin."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from aiayn.cli import main
from aiayn.decoding import sample_next, stream_generate
from aiayn.errors import AiaynError, ModelDivergedError
from aiayn.tasks.lm import LanguageModel
from aiayn.training.trainer import TrainConfig, Trainer
from tiny_translation import tiny_lm_model_dir, tiny_translation_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lm():
    return LanguageModel.load(tiny_lm_model_dir())


def test_a_huge_max_new_tokens_allocates_nothing_up_front(lm):
    start = time.monotonic()
    steps = stream_generate(lm.model, [[1, 2, 3]], max_new_tokens=10**12, temperature=0)
    for _ in range(200):  # past the first buffer (prompt + max(64, max_len) columns): it grows
        next(steps)
    steps.close()
    assert time.monotonic() - start < 30


def test_streamed_text_costs_linear_time_and_equals_the_full_decode(lm, monkeypatch):
    from aiayn.tasks.lm import _TextStream

    tokenizer = lm.tokenizer
    prompt = lm.encode_prompt("the ")
    ordinary = [i for i in range(tokenizer.vocab_size) if i > 3]  # no special tokens
    tokens = [ordinary[(7 * k) % len(ordinary)] for k in range(600)]
    full = tokenizer.decode(prompt + tokens)[len(tokenizer.decode(prompt)) :]

    decoded = []
    original = type(tokenizer).decode
    monkeypatch.setattr(
        type(tokenizer), "decode", lambda self, ids: decoded.append(len(ids)) or original(self, ids)
    )
    stream = _TextStream(tokenizer, prompt, stop=())
    streamed = "".join(stream.push(t) for t in tokens) + stream.flush()
    assert streamed == full
    # Each token decodes a bounded window (context + unsettled tokens), not the whole text so far.
    assert max(decoded) <= 4 + 16 and sum(decoded) < 30 * len(tokens)


def test_nan_logits_say_diverged_instead_of_crashing_in_multinomial():
    logits = torch.full((2, 5), float("nan"))
    for temperature in (0.0, 0.8):
        with pytest.raises(ModelDivergedError, match="diverged"):
            sample_next(logits, temperature=temperature)
    banned = torch.tensor([[0.0, float("-inf"), 1.0]])  # -inf is a banned token, not divergence
    assert sample_next(banned, temperature=0).item() == 2


class _Blowup(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


class _ToyTask:
    best_metric, higher_is_better = "loss", False

    def __init__(self, bad_steps: set[int]) -> None:
        self.bad_steps = bad_steps
        self.calls = 0

    def batches(self, epoch):
        for _ in range(4):
            yield torch.ones(3)

    def loss(self, model, batch, step):
        self.calls += 1
        out = model(batch)
        if self.calls in self.bad_steps:
            out = _Blowup.apply(out)
        return (out**2).sum(), 3

    def evaluate(self, model):
        return {"loss": 0.0}

    def write_model_files(self, directory: Path) -> None:
        (directory / "config.json").write_text("{}")


def test_finite_loss_with_non_finite_gradients_skips_the_step(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    task = _ToyTask(bad_steps={2})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = TrainConfig(max_steps=3, eval_every=None, log_every=1, progress=False, clip_norm=0)
    trainer = Trainer(model, optimizer, lambda step: 1.0, task, tmp_path / "run", config)
    trainer.train()
    assert trainer.step == 3 and trainer.skipped_steps == 1 and task.calls == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.history[-1]["skipped_steps"] == 1


def test_only_non_finite_steps_in_a_row_stop_training(tmp_path):
    model = nn.Linear(3, 1)
    task = _ToyTask(bad_steps=set(range(1, 100)))
    config = TrainConfig(max_steps=10, eval_every=None, progress=False, max_bad_steps=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = Trainer(model, optimizer, lambda step: 1.0, task, tmp_path / "run", config)
    with pytest.raises(AiaynError, match=r"diverged: 3 non-finite steps \(gradients\)"):
        trainer.train()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_devices_and_fifos_are_refused_not_read_forever(tmp_path, capsys):
    fifo = tmp_path / "pairs.tsv"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        code = main(["train", "translate", "--train", path, "--out", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert code == 2 and "not a regular file" in err and path in err


def test_a_huge_file_without_line_breaks_is_refused_after_one_line_not_read_whole(tmp_path):
    from aiayn.data.corpus import read_parallel_tsv
    from aiayn.errors import DataError

    path = tmp_path / "dump.tsv"
    path.write_bytes(b"ok\tfine\n" + b"a\tb" + b"x" * (30 * 2**20))  # 30 MB, one line
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"dump.tsv:2: line too long"):
            read_parallel_tsv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the corpus is read line by line, and a line is cut off at the limit


def test_a_corpus_is_read_line_by_line_with_the_same_pairs(tmp_path):
    from aiayn.data.corpus import read_parallel_tsv, read_text

    rows = [f"source {i}\ttarget {i}" for i in range(20_000)]
    path = tmp_path / "c.tsv"
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    assert read_parallel_tsv(path) == [(f"source {i}", f"target {i}") for i in range(20_000)]
    assert read_text(path) == "\n".join(rows) + "\n"


def test_invalid_utf8_on_stdin_names_the_line_under_a_c_locale(tmp_path):
    model = tiny_translation_model_dir()
    env = os.environ | {"LC_ALL": "C", "PYTHONUTF8": "0"}
    run = subprocess.run(
        [sys.executable, "-m", "aiayn", "translate", "--model", str(model)],
        input=b"\xef\xbb\xbfok line\nbad \xff byte\n",
        capture_output=True,
        env=env,
        timeout=120,
    )
    err = run.stderr.decode()
    assert run.returncode == 2, err
    assert "<stdin>, line 2: not valid UTF-8 (byte 0xFF" in err and "Traceback" not in err


def test_a_bom_on_stdin_is_stripped(monkeypatch):
    from aiayn.cli.commands import read_stdin_lines

    raw = io.BytesIO("\ufeff我爱你\r\n第二\n".encode())
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=raw))
    assert read_stdin_lines() == ["我爱你", "第二"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "mlm", "--text", "{text}", "--out", "{out}", "--seq-len", "2"], "--seq-len"),
        (["train", "lm", "--text", "{text}", "--out", "{file}", "--max-steps", "1"], "is a file"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    text = tmp_path / "t.txt"
    text.write_text("some text here\n" * 50)
    (tmp_path / "file").write_text("x")
    paths = {"text": text, "out": tmp_path / "m", "file": tmp_path / "file"}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("aiayn: error")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
