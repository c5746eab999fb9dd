"""Masked-LM training: the 80/10/10 recipe, packing, the schedule, learning, the command line."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
import torch

from aiayn.cli import main
from aiayn.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from aiayn.tasks.mlm import mask_tokens, pack_blocks, train_mlm
from aiayn.training.schedules import warmup_cosine, warmup_cosine_schedule

# Tiny models gain nothing from a second thread, and on a busy machine they lose a lot.
pytestmark = pytest.mark.usefixtures("one_thread")


#: Four topics of eight words. A line draws all its words from one topic, so a hidden word is one of
#: 8 once the topic is read off the other words, but one of 32 from frequencies alone.
TOPICS = [
    "apple banana cherry grape lemon mango peach plum",
    "red green blue yellow black white pink gray",
    "cat dog horse mouse tiger zebra sheep goat",
    "hammer saw drill wrench chisel ladder shovel rake",
]


def _topic_vocab(path) -> str:
    """A fixed WordPiece vocabulary: every topic word whole, plus the letters to spell anything else.

    A learned vocabulary would do as well but can differ from run to run (``tokenizers`` breaks ties
    between equally frequent merges at random), and so would the training run.
    """
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = sorted({w for topic in TOPICS for w in topic.split()})
    tokens = [*SPECIAL_TOKENS, *letters, *("##" + c for c in letters), *words]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


def _topic_text(lines: int = 300, words: int = 14, seed: int = 0) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        topic = rng.choice(TOPICS).split()
        out.append(" ".join(rng.choice(topic) for _ in range(words)))
    return "\n".join(out) + "\n"


def test_masking_follows_the_80_10_10_recipe():
    gen = torch.Generator().manual_seed(0)
    vocab, special = 1000, torch.tensor([0, 1, 2, 3, 4])
    blocks = torch.randint(5, vocab, (400, 64), generator=gen)
    blocks[:, 0], blocks[:, -1] = 2, 3  # [CLS] ... [SEP]
    blocks[::7, 40:] = -1  # padding
    pool = torch.arange(5, vocab)
    batch = mask_tokens(blocks, 0, 4, special, pool, gen)
    ordinary = (blocks >= 5).sum()
    chosen = batch.selected.sum()
    assert abs(float(chosen / ordinary) - 0.15) < 0.01
    assert not batch.selected[blocks < 5].any()  # never [CLS], [SEP] or padding
    assert torch.equal(batch.targets, blocks[batch.selected])
    assert (batch.input_ids[blocks == -1] == 0).all() and torch.equal(batch.key_mask, blocks >= 0)
    now = batch.input_ids[batch.selected]
    masked = float((now == 4).float().mean())
    kept = float((now == batch.targets).float().mean())
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / len(pool)) < 0.015
    assert ((now != 4) & (now != batch.targets)).float().mean() > 0.08  # random replacements
    unchosen = ~batch.selected & (blocks >= 0)
    assert torch.equal(batch.input_ids[unchosen], blocks[unchosen])


def test_a_batch_always_has_something_to_predict():
    gen = torch.Generator().manual_seed(0)
    blocks = torch.tensor([[2, 9, 3]])
    for _ in range(20):
        batch = mask_tokens(blocks, 0, 4, torch.tensor([0, 1, 2, 3, 4]), torch.arange(5, 10), gen)
        assert batch.selected.tolist() == [[False, True, False]]


def test_pack_blocks_frames_every_block():
    blocks = pack_blocks([[10, 11, 12], [13], [14, 15, 16, 17]], seq_len=5, cls_id=2, sep_id=3)
    assert blocks.tolist() == [
        [2, 10, 11, 12, 3],
        [2, 13, 14, 15, 3],
        [2, 16, 17, 3, -1],
    ]


def test_schedule_follows_steps_or_the_clock():
    by_steps = warmup_cosine_schedule(1e-3, 10, 100, None)
    assert [by_steps(s) for s in (1, 10, 50, 100)] == [
        warmup_cosine(s, 1e-3, 10, 100) for s in (1, 10, 50, 100)
    ]
    # With a time budget the trainer passes the used fraction of it (seconds / budget).
    by_clock = warmup_cosine_schedule(1e-3, 10, None, 60.0, min_ratio=0.1)
    assert by_clock(1, 0.0 / 60) == pytest.approx(1e-4)  # warm-up: 10 steps or 5% of the time
    assert by_clock(2, 1.5 / 60) == pytest.approx(5e-4)  # the time is further along than the steps
    # half the time: half-way down
    assert by_clock(50, 30.0 / 60) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert by_clock(60, 90.0 / 60) == pytest.approx(1e-4)  # time is up: at the floor


def test_tiny_bert_masked_lm_loss_falls_below_what_frequencies_allow(tmp_path):
    text = tmp_path / "topics.txt"
    text.write_text(_topic_text(), encoding="utf-8")
    out = tmp_path / "bert"
    summary = train_mlm(
        text,
        out,
        preset="micro",
        tokenizer=_topic_vocab(tmp_path / "vocab.txt"),
        seq_len=16,  # 14 words + [CLS] + [SEP]: one line per block
        batch_size=32,
        lr=5e-3,
        max_steps=160,  # ends at 2.07-2.13 for seeds 0-4
        progress=False,
    )
    evals = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "val_loss" in r]
    # Bounds: from frequencies alone the best masked-LM loss is the entropy of the word frequencies,
    # about ln 32 = 3.47 nats; knowing a line's topic it is ln 8 = 2.08. Ending within 0.35 of ln 8
    # means the model reads the topic off the other words of the line (through attention).
    tok = WordPieceTokenizer.from_file(out / "tokenizer.json")
    ids = tok.encode_batch(text.read_text().splitlines(), add_special_tokens=False)
    counts = Counter(i for line in ids for i in line)
    total = sum(counts.values())
    unigram = -sum(c / total * math.log(c / total) for c in counts.values())
    assert unigram > 3.4
    assert evals[0]["val_loss"] > 0.9 * unigram  # starts where frequencies put it
    assert summary["best_val_loss"] < math.log(8) + 0.35, summary


def test_same_seed_same_run(tmp_path):
    text = tmp_path / "topics.txt"
    text.write_text(_topic_text(60), encoding="utf-8")
    vocab = _topic_vocab(tmp_path / "vocab.txt")
    runs = []
    for name in ("a", "b"):
        train_mlm(text, tmp_path / name, preset="micro", tokenizer=vocab, seq_len=16,
                  batch_size=8, max_steps=6, eval_every=3, progress=False)  # fmt: skip
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs.append(
            [
                {k: v for k, v in json.loads(x).items() if k not in ("tokens_per_s", "elapsed_s")}
                for x in lines
            ]
        )
    assert runs[0] == runs[1]


def test_train_mlm_and_embed_from_the_command_line(tmp_path, capsys):
    text = tmp_path / "topics.txt"
    text.write_text(_topic_text(120), encoding="utf-8")
    out = tmp_path / "bert"
    args = ["train", "mlm", "--text", str(text), "--out", str(out), "--preset", "micro"]
    args += ["--vocab-size", "200", "--seq-len", "32", "--max-steps", "12", "--no-progress"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 12
    info = json.loads((out / "config.json").read_text())
    assert info["kind"] == "bert" and info["tokenizers"] == {"text": "tokenizer.json"}
    assert info["special_ids"]["mask"] == 4
    assert main(args[:-3] + ["--max-steps", "16", "--resume", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["steps"] == 16
    assert main(["embed", "--model", str(out), "apple banana cherry", "hello"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["embedding"]) == 64
    assert abs(sum(x * x for x in rows[1]["embedding"]) - 1) < 1e-5


def test_too_little_text_is_a_clear_error(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("one line\n", encoding="utf-8")
    args = ["train", "mlm", "--text", str(text), "--out", str(tmp_path / "m"), "--preset", "micro"]
    assert main(args + ["--no-progress"]) == 2
    assert "too little text" in capsys.readouterr().err
    assert main(["train", "mlm", "--text", str(tmp_path / "none.txt"), "--out", "x"]) == 2
