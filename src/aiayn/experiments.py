"""The notes' design choices, measured: named comparisons on small built-in tasks.

Each experiment trains a few tiny encoder-decoders (d_model 64, 2+2 layers) for the same fixed
number of steps with the same seed and data order, changing one choice, then decodes the held-out
test set greedily and reports exact-match and per-token accuracy, the final training loss and the
training time. :func:`run_experiment` writes ``NAME.md`` (a table and a one-sentence conclusion
computed from the figures) and ``NAME.png`` (training curves and the main metric).

=====================  ======================================================================
``positions``          sinusoidal vs learned vs rotary vs ALiBi positions, 3 seeds each: reversal
                       trained on 3-8 tokens and tested on 12 and 16 (1.5× and 2×), and a
                       char-level GPT trained with a 64-character context and evaluated at 64, 96
                       and 128 (length extrapolation; see :func:`run_positions`)
``norm``               post-norm (the paper) vs pre-norm
``attention``          scaled dot-product vs additive scoring
``scheduled-sampling`` teacher forcing vs linear, exponential and inverse-sigmoid decay
``guided-attention``   without vs with the guided-attention loss on copying (monotonic)
``window``             full vs truncated self-attention (w = 1, 4)
``rnn``                LSTM encoder-decoder with attention vs Transformer: time per epoch and
                       accuracy as the distance between dependent tokens grows
=====================  ======================================================================

Tasks use a word-level vocabulary of the letters a-t, so nothing depends on a trained tokenizer.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .data.batching import collate_seq2seq
from .data.tokenizers import BOS_ID, EOS_ID
from .models.gpt import GPT, GPTConfig
from .models.rnn import RNNConfig, RNNSeq2Seq
from .models.seq2seq import Transformer, TransformerConfig
from .training.losses import guided_attention_loss
from .training.scheduled_sampling import ScheduledSampling, seq2seq_loss

log = logging.getLogger(__name__)

LETTERS = "abcdefghijklmnopqrst"
#: a -> 4, b -> 5, ...: ids 0-3 are <pad> <bos> <eos> <unk>.
VOCAB_SIZE = 4 + len(LETTERS)

#: The tiny Transformer every experiment starts from.
BASE_CONFIG = TransformerConfig(
    src_vocab_size=VOCAB_SIZE,
    tgt_vocab_size=VOCAB_SIZE,
    d_model=64,
    num_heads=4,
    d_ff=256,
    num_encoder_layers=2,
    num_decoder_layers=2,
    dropout=0.0,
    max_len=64,
)

Pair = tuple[list[int], list[int]]


def encode(text: str) -> list[int]:
    """``"a b c"`` -> ``[4, 5, 6]``."""
    return [4 + LETTERS.index(tok) for tok in text.split()]


def builtin_pairs(name: str, split: str) -> list[Pair]:
    """A split of ``builtin:copy`` or ``builtin:reverse`` as id pairs."""
    from .data.builtin import load_builtin_corpus

    return [(encode(s), encode(t)) for s, t in load_builtin_corpus(name, split)]


def copy_pairs(n: int, min_len: int, max_len: int, seed: int) -> list[Pair]:
    """``n`` random copy pairs with ``min_len..max_len`` tokens (the RNN comparison's longer task).

    In a copy of length L, output token t depends on input token t, L + 1 positions earlier in the
    concatenated stream (source, then target): the dependency distance grows with L.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [4 + rng.randrange(len(LETTERS)) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((seq, list(seq)))
    return pairs


@dataclass
class RunSpec:
    """One training run of an experiment.

    Attributes:
        name: the row's label.
        config: model config (a TransformerConfig, or an RNNConfig for the LSTM baseline).
        scheduled_sampling: teacher-forcing schedule, or None for plain teacher forcing.
        guided_attention: guided-attention loss weight.
    """

    name: str
    config: TransformerConfig | RNNConfig
    scheduled_sampling: ScheduledSampling | None = None
    guided_attention: float = 0.0


@dataclass
class RunResult:
    """What one run measured."""

    name: str
    curve: list[tuple[int, float]]  # (step, mean training loss per token)
    train_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    by_length: dict[int, float] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per seed
    series: dict[str, list[float]] = field(default_factory=dict)  # more curves, for plots


def build_model(config: TransformerConfig | RNNConfig) -> nn.Module:
    """The model a config describes."""
    return RNNSeq2Seq(config) if isinstance(config, RNNConfig) else Transformer(config)


def train_run(
    spec: RunSpec,
    train: Sequence[Pair],
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    warmup: int = 50,
    log_every: int = 10,
) -> tuple[nn.Module, RunResult]:
    """Train ``spec``'s model for ``steps`` Adam steps on random batches (same order for every spec).

    Returns:
        The trained model (eval mode) and its result (curve and training time filled in).
    """
    torch.manual_seed(seed)
    model = build_model(spec.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    rng = random.Random(seed)  # the data order: identical across specs
    curve: list[tuple[int, float]] = []
    total, tokens = 0.0, 0
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:  # linear warm-up, then inverse square root (Noam)
            group["lr"] = (
                lr * min(1.0, (step + 1) / warmup) * min(1.0, math.sqrt(warmup / (step + 1)))
            )
        b = collate_seq2seq([train[rng.randrange(len(train))] for _ in range(batch_size)])
        loss, n = seq2seq_loss(
            model,
            b.src,
            b.tgt_in,
            b.tgt_out,
            b.src_key_mask,
            b.tgt_key_mask,
            step,
            scheduled_sampling=spec.scheduled_sampling,
            guided_attention=spec.guided_attention,
        )
        optimizer.zero_grad(set_to_none=True)
        (loss / n).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total, tokens = total + float(loss.detach()), tokens + n
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append((step + 1, total / max(tokens, 1)))
            total, tokens = 0.0, 0
    seconds = time.perf_counter() - start
    return model.eval(), RunResult(spec.name, curve, seconds)


@torch.inference_mode()
def greedy_decode(model: nn.Module, sources: Sequence[list[int]], max_len: int) -> list[list[int]]:
    """Greedy outputs (without ``<eos>``) by full recomputation: one code path for both models."""
    b = collate_seq2seq([(s, []) for s in sources])
    out = torch.full((len(sources), 1), BOS_ID, dtype=torch.long)  # (B, 1)
    done = torch.zeros(len(sources), dtype=torch.bool)
    for _ in range(max_len):
        nxt = model(b.src, out, b.src_key_mask)[:, -1].argmax(-1)  # (B,)
        nxt = torch.where(done, torch.zeros_like(nxt), nxt)
        out = torch.cat([out, nxt[:, None]], dim=1)  # (B, t + 1)
        done |= nxt == EOS_ID
        if bool(done.all()):
            break
    results = []
    for row in out[:, 1:].tolist():
        results.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return results


def accuracy(
    model: nn.Module, pairs: Sequence[Pair], batch_size: int = 250
) -> tuple[float, float, dict[int, float]]:
    """Exact-match accuracy, per-token accuracy, and exact match per source length."""
    exact = correct = tokens = 0
    per_len: dict[int, list[int]] = {}
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        hyps = greedy_decode(model, [s for s, _ in chunk], max(len(t) for _, t in chunk) + 2)
        for (s, t), h in zip(chunk, hyps):
            ok = h == t
            exact += ok
            correct += sum(a == b for a, b in zip(h, t))
            tokens += len(t)
            per_len.setdefault(len(s), []).append(ok)
    by_len = {n: sum(v) / len(v) for n, v in sorted(per_len.items())}
    return exact / len(pairs), correct / max(tokens, 1), by_len


@torch.inference_mode()
def diagonality(model: Transformer, pairs: Sequence[Pair]) -> float:
    """Mean guided-attention penalty of the cross-attention on ``pairs`` (0 = perfectly diagonal)."""
    b = collate_seq2seq(list(pairs))
    maps = model.attention_maps(b.src, b.tgt_in, b.src_key_mask)
    tgt_len, src_len = b.tgt_key_mask.sum(1), b.src_key_mask.sum(1)
    return float(
        torch.stack([guided_attention_loss(w, tgt_len, src_len) for w in maps.cross]).mean()
    )


# ---- the experiments -------------------------------------------------------------------------


@dataclass
class Experiment:
    """A named comparison.

    Attributes:
        name: the CLI name.
        title: the page heading.
        runs: the variants.
        data: ``(train, {test set name: pairs})``.
        conclude: the one-sentence conclusion from the results.
        extra: more metrics per run, ``fn(model, result)`` filling ``result.metrics``.
        by_length: plot exact match against source length (else a bar chart).
        custom: ``fn(out_dir, steps, seed, seeds)`` running the whole experiment itself (several
            seeds, more than one task), instead of the one-seed loop of :func:`run_experiment`.
        default_steps: steps per run when none are given.
    """

    name: str
    title: str
    runs: Callable[[int], list[RunSpec]]
    data: Callable[[int], tuple[list[Pair], dict[str, list[Pair]]]]
    conclude: Callable[[list[RunResult]], str]
    extra: Callable[[nn.Module, RunResult, dict[str, list[Pair]]], None] | None = None
    by_length: bool = False
    custom: Callable[[Path, int, int, int], list[RunResult]] | None = None
    default_steps: int = 600


def _reverse_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    return builtin_pairs("reverse", "train"), {"test": builtin_pairs("reverse", "test")[:500]}


def _copy_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    return builtin_pairs("copy", "train"), {"test": builtin_pairs("copy", "test")[:500]}


def _rnn_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    # Fixed data seeds (not the run seed): every run of every seed sees the same task.
    return copy_pairs(4000, 2, 24, 1), {"test": copy_pairs(600, 2, 24, 2)}


def _get(results: list[RunResult], name: str) -> RunResult:
    return next(r for r in results if r.name == name)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _best(results: list[RunResult], metric: str, higher: bool = True) -> RunResult:
    return (max if higher else min)(results, key=lambda r: r.metrics[metric])


def _conclude_generic(label: str, timing: bool = False) -> Callable[[list[RunResult]], str]:
    """A conclusion naming the best and worst run; ``timing`` adds the training-time ratio (only
    where the cost differs by construction: on a shared CPU small differences are noise)."""

    def conclude(results: list[RunResult]) -> str:
        best = _best(results, "test exact")
        low = min(results, key=lambda r: r.metrics["test exact"])
        loss_best = min(results, key=lambda r: r.curve[-1][1])
        if best.metrics["test exact"] - low.metrics["test exact"] < 0.02:
            head = f"With the same budget, every {label} reaches about the same exact match "
            head += f"({_pct(low.metrics['test exact'])}-{_pct(best.metrics['test exact'])})"
        else:
            head = (
                f"With the same budget, {best.name} is the best {label} "
                f"({_pct(best.metrics['test exact'])} exact match against "
                f"{_pct(low.metrics['test exact'])} for {low.name})"
            )
        text = f"{head}; {loss_best.name} ends with the lowest training loss"
        if timing:
            fast = min(results, key=lambda r: r.train_seconds)
            slow = max(results, key=lambda r: r.train_seconds)
            ratio = slow.train_seconds / fast.train_seconds
            text += f", and {slow.name} trains {ratio:.1f}× slower than {fast.name}"
        return text + "."

    return conclude


def _conclude_guided(results: list[RunResult]) -> str:
    off, on = results[0], results[-1]
    return (
        f"On copying, the guided-attention loss pulls cross-attention onto the diagonal (penalty "
        f"{off.metrics['off-diagonal']:.3f} -> {on.metrics['off-diagonal']:.3f}) and changes exact "
        f"match from {_pct(off.metrics['test exact'])} to {_pct(on.metrics['test exact'])} in the "
        "same number of steps."
    )


def _conclude_rnn(results: list[RunResult]) -> str:
    tr, rnn = _get(results, "transformer"), _get(results, "lstm")
    longest = max(tr.by_length)
    return (
        f"With the same budget the Transformer copies {_pct(tr.metrics['test exact'])} of sequences "
        f"exactly against {_pct(rnn.metrics['test exact'])} for the LSTM "
        f"({_pct(tr.by_length[longest])} vs {_pct(rnn.by_length[longest])} at {longest} tokens, "
        f"the longest dependency), at {tr.metrics['s/epoch']:.2f} vs "
        f"{rnn.metrics['s/epoch']:.2f} s per epoch on this CPU."
    )


def _diagonality(model: nn.Module, result: RunResult, tests: dict[str, list[Pair]]) -> None:
    result.metrics["off-diagonal"] = diagonality(model, tests["test"][:200])


def _schedules(steps: int) -> list[RunSpec]:
    # Each schedule falls from 1 to about 0.5 by the last step, so they differ only in shape.
    k_exp = 0.5 ** (1 / steps)
    k_sig = 2.0
    while k_sig * math.log(k_sig) < steps:  # inverse sigmoid is 0.5 where exp(i / k) = k
        k_sig *= 1.05
    c = BASE_CONFIG
    return [
        RunSpec("teacher forcing", c),
        RunSpec("linear", c, ScheduledSampling("linear", 1.0, 0.5 / steps, 0.5)),
        RunSpec("exponential", c, ScheduledSampling("exponential", k_exp)),
        RunSpec("inverse-sigmoid", c, ScheduledSampling("inverse-sigmoid", k_sig)),
    ]


def _epoch_seconds(model: nn.Module, result: RunResult, tests: dict[str, list[Pair]]) -> None:
    steps = result.curve[-1][0]
    epochs = steps * 64 / 4000  # batch 64 of 4000 training pairs
    result.metrics["s/epoch"] = result.train_seconds / epochs


# ---- positions: four position schemes, two tasks, several seeds ------------------------------

#: The arms of ``positions``: the paper's two kinds and the two that act inside attention.
POSITION_KINDS = ("sinusoidal", "learned", "rotary", "alibi")
#: Reversal: trained on 3..REVERSE_TRAIN_MAX tokens, tested on every length up to twice that.
REVERSE_TRAIN_MIN, REVERSE_TRAIN_MAX = 3, 8
REVERSE_TEST_LENGTHS = tuple(range(REVERSE_TRAIN_MIN, 2 * REVERSE_TRAIN_MAX + 1))
REVERSE_PER_LENGTH = 100  # test sequences per length
REVERSE_TRAIN_SIZE = 20_000
#: The char-level LM: text, trained context C, evaluation lengths C, 1.5·C, 2·C.
LM_TEXT = "builtin:shakespeare"
LM_CONTEXT = 64
LM_EVAL_LENGTHS = (LM_CONTEXT, 3 * LM_CONTEXT // 2, 2 * LM_CONTEXT)
#: Validation characters scored at every length (divisible by every length, so the same text).
LM_EVAL_CHARS = 61_440
LM_BATCH = 32
#: Sized so that the whole experiment (4 arms x 3 seeds x 2 tasks) takes about 20 minutes on a
#: shared 2-core CPU with one torch thread (docs/experiments.md gives the measured time).
POSITIONS_DEFAULT_STEPS = 800
#: The tiny GPT (vocab_size is set from the text). max_len covers the longest evaluation, so
#: learned positions exist there, but training only ever fills the first LM_CONTEXT of them.
LM_CONFIG = GPTConfig(
    vocab_size=1,
    max_len=max(LM_EVAL_LENGTHS),
    d_model=64,
    num_heads=4,
    d_ff=256,
    num_layers=2,
    dropout=0.0,
    attention_dropout=0.0,
)
_LABEL = {"sinusoidal": "sinusoidal", "learned": "learned", "rotary": "rotary", "alibi": "ALiBi"}


def _extrapolation_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    """Reversal of 3-8 tokens to train; REVERSE_PER_LENGTH sequences of every length 3-16 to test.

    The data seed is fixed (not the run seed), so every seed of every arm sees the same task; no
    test sequence occurs in training.
    """
    rng = random.Random(19)
    seen: set[tuple[int, ...]] = set()
    test: list[Pair] = []
    for length in REVERSE_TEST_LENGTHS:
        count = 0
        while count < REVERSE_PER_LENGTH:
            seq = tuple(4 + rng.randrange(len(LETTERS)) for _ in range(length))
            if seq not in seen:
                seen.add(seq)
                test.append((list(seq), list(reversed(seq))))
                count += 1
    train: list[Pair] = []
    while len(train) < REVERSE_TRAIN_SIZE:
        length = rng.randint(REVERSE_TRAIN_MIN, REVERSE_TRAIN_MAX)
        seq = tuple(4 + rng.randrange(len(LETTERS)) for _ in range(length))
        if seq not in seen:
            train.append((list(seq), list(reversed(seq))))
    return train, {"test": test}


def _char_ids(text: str, chars: Sequence[str]) -> Tensor:
    """``text`` as ids into the sorted ``chars`` (``len(chars)`` for a character not in them)."""
    keys = np.array([ord(c) for c in chars], dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    idx = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
    return torch.from_numpy(np.where(keys[idx] == codes, idx, len(keys)))


def lm_data(text: str = LM_TEXT) -> tuple[Tensor, Tensor, int]:
    """Training ids, the first LM_EVAL_CHARS + 1 validation ids, and the vocabulary size."""
    from .data.lm_data import load_train_valid

    train_text, valid_text = load_train_valid(text)
    chars = sorted(set(train_text))
    valid = _char_ids(valid_text[: LM_EVAL_CHARS + 1], chars)
    return _char_ids(train_text, chars), valid, len(chars) + 1


def train_lm(
    config: GPTConfig,
    tokens: Tensor,
    context: int,
    steps: int,
    seed: int,
    batch_size: int = LM_BATCH,
    lr: float = 2e-3,
    warmup: int = 50,
    log_every: int = 10,
) -> tuple[GPT, RunResult]:
    """Train a GPT on ``steps`` batches of random ``context``-token windows of ``tokens``.

    The schedule is :func:`train_run`'s; the window order depends only on ``seed``.
    """
    torch.manual_seed(seed)
    model = GPT(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(context + 1)  # (C + 1,)
    curve: list[tuple[int, float]] = []
    total, count = 0.0, 0
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = (
                lr * min(1.0, (step + 1) / warmup) * min(1.0, math.sqrt(warmup / (step + 1)))
            )
        starts = torch.randint(0, len(tokens) - context, (batch_size,), generator=gen)
        window = tokens[starts[:, None] + offsets]  # (B, C + 1)
        logits = model(window[:, :-1])  # (B, C, V)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        total, count = total + float(loss.detach()), count + 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append((step + 1, total / count))
            total, count = 0.0, 0
    seconds = time.perf_counter() - start
    return model.eval(), RunResult(config.positional, curve, seconds)


@torch.inference_mode()
def lm_loss_by_position(model: GPT, tokens: Tensor, length: int, batch_size: int = 64) -> Tensor:
    """Mean next-token loss (nats) at each position ``0..length-1`` of the non-overlapping
    ``length``-token windows of ``tokens`` (each window starts with an empty context)."""
    n = (len(tokens) - 1) // length
    x = tokens[: n * length].view(n, length)  # (N, L)
    y = tokens[1 : n * length + 1].view(n, length)  # (N, L)
    total = torch.zeros(length, dtype=torch.float64)
    for i in range(0, n, batch_size):
        logits = model(x[i : i + batch_size])  # (b, L, V)
        loss = nn.functional.cross_entropy(
            logits.transpose(1, 2), y[i : i + batch_size], reduction="none"
        )  # (b, L)
        total += loss.sum(0).double()
    return total / n


def _rev_key(length: int) -> str:
    return f"reverse {length} exact"


def _lm_key(length: int) -> str:
    return f"lm {length} loss"


#: The table's reversal columns: (metric, header).
_REV_IN_RANGE = f"reverse {REVERSE_TRAIN_MIN}-{REVERSE_TRAIN_MAX} exact"


def _rev_columns() -> list[tuple[str, str]]:
    m = REVERSE_TRAIN_MAX
    return [
        (_REV_IN_RANGE, f"{REVERSE_TRAIN_MIN}-{m} tokens (trained)"),
        (_rev_key(m * 3 // 2), f"{m * 3 // 2} tokens (1.5×)"),
        (_rev_key(2 * m), f"{2 * m} tokens (2×)"),
    ]


def _lm_columns() -> list[tuple[str, str]]:
    c, mid, long = LM_EVAL_LENGTHS
    return [
        (_lm_key(c), f"{c} chars (trained)"),
        (_lm_key(mid), f"{mid} chars (1.5×)"),
        (_lm_key(long), f"{long} chars (2×)"),
    ]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _mean_curve(curves: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    return [(pts[0][0], _mean([p[1] for p in pts])) for pts in zip(*curves)]


def run_positions(out_dir: Path, steps: int, seed: int = 0, seeds: int = 3) -> list[RunResult]:
    """The ``positions`` experiment: every arm of :data:`POSITION_KINDS`, ``seeds`` seeds each.

    (a) Reversal with the tiny encoder-decoder, trained on 3-8 tokens for ``steps`` steps of 64
    pairs, exact match on 3-16 tokens. (b) A tiny char-level GPT on :data:`LM_TEXT`, trained for
    ``steps`` steps of LM_BATCH windows of LM_CONTEXT characters, validation loss per character at
    every length of :data:`LM_EVAL_LENGTHS`. Seed ``s`` sets the initialisation and the batch order,
    the same for every arm. Writes ``positions.md``, ``positions.png`` and ``positions.json`` (every
    seed's figures) in ``out_dir``.

    Returns:
        One result per arm: ``metrics`` the means over seeds, ``per_seed`` the values, ``by_length``
        the mean reversal exact match per length, ``curve`` the mean reversal training loss.
    """
    begin = time.perf_counter()
    exp = EXPERIMENTS["positions"]
    train, tests = exp.data(seed)
    lm_train, lm_valid, vocab = lm_data(LM_TEXT)
    lm_config = replace(LM_CONFIG, vocab_size=vocab)
    run_seeds = [seed + i for i in range(seeds)]
    results = []
    for spec in exp.runs(steps):
        kind = spec.config.positional
        per_seed: dict[str, list[float]] = {}
        rev_curves, lm_curves, profiles = [], [], []
        rev_seconds = lm_seconds = 0.0
        for s in run_seeds:
            log.info("positions: reversal, %s, seed %d, %d steps", kind, s, steps)
            model, rev = train_run(spec, train, steps, s)
            _, _, by_len = accuracy(model, tests["test"])
            in_range = [by_len[n] for n in by_len if n <= REVERSE_TRAIN_MAX]
            per_seed.setdefault(_REV_IN_RANGE, []).append(_mean(in_range))
            for n, acc in by_len.items():
                per_seed.setdefault(_rev_key(n), []).append(acc)
            per_seed.setdefault("reverse final loss", []).append(rev.curve[-1][1])
            rev_curves.append(rev.curve)
            rev_seconds += rev.train_seconds
            log.info("positions: char LM, %s, seed %d, %d steps", kind, s, steps)
            gpt, lm = train_lm(replace(lm_config, positional=kind), lm_train, LM_CONTEXT, steps, s)
            for length in LM_EVAL_LENGTHS:
                profile = lm_loss_by_position(gpt, lm_valid, length)
                per_seed.setdefault(_lm_key(length), []).append(float(profile.mean()))
            profiles.append(profile.tolist())  # the longest length's, per position
            per_seed.setdefault("lm final loss", []).append(lm.curve[-1][1])
            lm_curves.append(lm.curve)
            lm_seconds += lm.train_seconds
        result = RunResult(spec.name, _mean_curve(rev_curves), rev_seconds + lm_seconds)
        result.metrics = {k: _mean(v) for k, v in per_seed.items()}
        result.metrics["reverse train s"] = rev_seconds / seeds
        result.metrics["lm train s"] = lm_seconds / seeds
        result.per_seed = per_seed
        result.by_length = {n: result.metrics[_rev_key(n)] for n in REVERSE_TEST_LENGTHS}
        result.series = {
            "lm curve": [v for _, v in _mean_curve(lm_curves)],
            "lm steps": [float(n) for n, _ in lm_curves[0]],
            "lm position loss": [_mean(col) for col in zip(*profiles)],
        }
        results.append(result)
    wall = time.perf_counter() - begin
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "positions.md").write_text(positions_markdown(results, steps, run_seeds, wall))
    plot_positions(results, out_dir / "positions.png")
    raw = {
        r.name: {"metrics": r.metrics, "per_seed": r.per_seed, "series": r.series} for r in results
    }
    (out_dir / "positions.json").write_text(json.dumps({"steps": steps, "wall_s": wall, **raw}))
    return results


def _spread(values: Sequence[float], pct: bool) -> str:
    """``mean (min–max)``."""
    f = _pct if pct else (lambda v: f"{v:.3f}")
    return f"{f(_mean(values))} ({f(min(values))}–{f(max(values))})"


def _named(results: list[RunResult], key: str, pct: bool) -> str:
    f = _pct if pct else (lambda v: f"{v:.3f}")
    return ", ".join(f"{_LABEL.get(r.name, r.name)} {f(r.metrics[key])}" for r in results)


def _separation(results: list[RunResult], key: str, higher: bool) -> str:
    """Which arm is best on ``key`` (by mean), and whether its seeds clear every other arm's."""
    best = (max if higher else min)(results, key=lambda r: r.metrics[key])
    if sum(r.metrics[key] == best.metrics[key] for r in results) > 1:
        return "no single best arm: the best mean is shared"
    others = [v for r in results if r is not best for v in r.per_seed[key]]
    if higher:
        apart = min(best.per_seed[key]) > max(others)
    else:
        apart = max(best.per_seed[key]) < min(others)
    where = "outside" if apart else "overlapping"
    return f"{_LABEL.get(best.name, best.name)} is best, its seeds' range {where} every other arm's"


def _conclude_positions(results: list[RunResult]) -> str:
    (_, in_hdr), (mid_key, _), (long_key, _) = _rev_columns()
    c, mid, long = LM_EVAL_LENGTHS
    lm_rise = ", ".join(
        f"{_LABEL.get(r.name, r.name)} {r.metrics[_lm_key(long)] - r.metrics[_lm_key(c)]:+.3f}"
        for r in results
    )
    return (
        f"Reversal, trained on {REVERSE_TRAIN_MIN}-{REVERSE_TRAIN_MAX} tokens (exact match, mean "
        f"of {len(results[0].per_seed[mid_key])} seeds): in range "
        f"{_named(results, _REV_IN_RANGE, True)}; at {REVERSE_TRAIN_MAX * 3 // 2} tokens "
        f"{_named(results, mid_key, True)}; at {2 * REVERSE_TRAIN_MAX} tokens "
        f"{_named(results, long_key, True)} ({_separation(results, long_key, True)}). "
        f"Char LM trained on {c}-character windows: validation loss at {long} characters minus "
        f"loss at {c} (nats/char): {lm_rise}; at {long} characters "
        f"{_separation(results, _lm_key(long), False)}."
    )


def positions_markdown(
    results: list[RunResult], steps: int, seeds: Sequence[int], wall_seconds: float | None = None
) -> str:
    """The two tables (mean and min–max over seeds) and the computed conclusion."""
    n = len(seeds)
    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if n > 1 else f"seed {seeds[0]}"
    lines = [
        f"### {EXPERIMENTS['positions'].title}",
        "",
        f"`aiayn experiment positions --steps {steps} --seed {seeds[0]} --seeds {n}`: every cell "
        f"is the mean over {n} runs ({seed_text}) with the min–max range in brackets"
        + (
            f"; the whole run took {wall_seconds / 60:.1f} min."
            if wall_seconds is not None
            else "."
        ),
        "",
        f"(a) Reversal, tiny encoder-decoder (d_model 64, 2+2 layers), {steps} steps of 64 pairs of "
        f"{REVERSE_TRAIN_MIN}-{REVERSE_TRAIN_MAX} tokens; exact match, greedy decoding, "
        f"{REVERSE_PER_LENGTH} test sequences per length.",
        "",
    ]

    def table(columns: list[tuple[str, str]], pct: bool, loss_key: str, secs_key: str) -> None:
        head = ["positions", *(h for _, h in columns), "final train loss", "train s / run"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("| " + " | ".join("---" for _ in head) + " |")
        for r in results:
            cells = [_LABEL.get(r.name, r.name)]
            cells += [_spread(r.per_seed[k], pct) for k, _ in columns]
            cells += [f"{r.metrics[loss_key]:.3f}", f"{r.metrics[secs_key]:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    table(_rev_columns(), True, "reverse final loss", "reverse train s")
    c = LM_EVAL_LENGTHS[0]
    lines += [
        f"(b) Char-level GPT (d_model {LM_CONFIG.d_model}, {LM_CONFIG.num_layers} layers, "
        f"{LM_CONFIG.num_heads} heads, max_len {LM_CONFIG.max_len}) on `{LM_TEXT}`, {steps} steps "
        f"of {LM_BATCH} random {c}-character windows; validation loss in nats per character over "
        f"the same {LM_EVAL_CHARS:,} held-out characters cut into windows of each length (every "
        "position of a window counts; each window starts with an empty context).",
        "",
    ]
    table(_lm_columns(), False, "lm final loss", "lm train s")
    lines += [f"**Conclusion.** {_conclude_positions(results)}", ""]
    return "\n".join(lines)


def plot_positions(results: list[RunResult], path: Path) -> Path:
    """Reversal exact match by length and LM loss by position (top), training losses (bottom)."""
    from .viz import new_figure, save_figure

    fig = new_figure(11, 7.5)
    (rev_ax, pos_ax), (rev_loss_ax, lm_loss_ax) = fig.subplots(2, 2)
    for r in results:
        label = _LABEL.get(r.name, r.name)
        lengths = list(r.by_length)
        line = rev_ax.plot(lengths, [100 * r.by_length[n] for n in lengths], marker="o", ms=3)
        rev_ax.fill_between(
            lengths,
            [100 * min(r.per_seed[_rev_key(n)]) for n in lengths],
            [100 * max(r.per_seed[_rev_key(n)]) for n in lengths],
            color=line[0].get_color(),
            alpha=0.2,
        )
        line[0].set_label(label)
        profile = r.series["lm position loss"]
        pos_ax.plot(range(1, len(profile) + 1), profile, label=label)
        steps, losses = zip(*r.curve)
        rev_loss_ax.plot(steps, losses, label=label)
        lm_loss_ax.plot(r.series["lm steps"], r.series["lm curve"], label=label)
    rev_ax.axvline(REVERSE_TRAIN_MAX + 0.5, color="grey", ls="--", lw=1)
    rev_ax.set_xlabel("sequence length (trained: left of the dashed line)")
    rev_ax.set_ylabel("exact match (%), mean and min–max of seeds")
    rev_ax.set_title("(a) reversal", fontsize=10)
    pos_ax.axvline(LM_CONTEXT + 0.5, color="grey", ls="--", lw=1)
    pos_ax.set_xlabel(
        f"position in a {max(LM_EVAL_LENGTHS)}-character window (trained: ≤ {LM_CONTEXT})"
    )
    pos_ax.set_ylabel("validation loss (nats/char), mean of seeds")
    pos_ax.set_title("(b) char LM", fontsize=10)
    pos_ax.set_yscale("log")
    for ax, what in ((rev_loss_ax, "reversal"), (lm_loss_ax, "char LM")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{what} training loss (nats/token)")
    for ax in (rev_ax, pos_ax, rev_loss_ax, lm_loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(EXPERIMENTS["positions"].title)
    return save_figure(fig, path)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "positions",
            "Sinusoidal vs learned vs rotary vs ALiBi positions: length extrapolation",
            lambda steps: [
                RunSpec(kind, replace(BASE_CONFIG, positional=kind)) for kind in POSITION_KINDS
            ],
            _extrapolation_data,
            _conclude_positions,
            custom=lambda out, steps, seed, seeds: run_positions(out, steps, seed, seeds),
            default_steps=POSITIONS_DEFAULT_STEPS,
        ),
        Experiment(
            "norm",
            "Post-norm (the paper) vs pre-norm on reversal",
            lambda steps: [
                RunSpec("post-norm", BASE_CONFIG),
                RunSpec("pre-norm", replace(BASE_CONFIG, norm_first=True)),
            ],
            _reverse_data,
            _conclude_generic("normalisation placement"),
        ),
        Experiment(
            "attention",
            "Scaled dot-product vs additive attention on reversal",
            lambda steps: [
                RunSpec("dot", BASE_CONFIG),
                RunSpec("additive", replace(BASE_CONFIG, attention="additive")),
            ],
            _reverse_data,
            _conclude_generic("scoring function", timing=True),
        ),
        Experiment(
            "scheduled-sampling",
            "Scheduled sampling (Bengio et al. 2015) on reversal",
            _schedules,
            _reverse_data,
            _conclude_generic("schedule", timing=True),
        ),
        Experiment(
            "guided-attention",
            "Guided attention loss (Tachibana et al. 2017) on copying",
            lambda steps: [
                RunSpec("no guide", BASE_CONFIG),
                RunSpec("guide 1.0", BASE_CONFIG, guided_attention=1.0),
            ],
            _copy_data,
            _conclude_guided,
            extra=_diagonality,
        ),
        Experiment(
            "window",
            "Full vs truncated (local-window) self-attention on reversal",
            lambda steps: [
                RunSpec("full", BASE_CONFIG),
                RunSpec("window 4", replace(BASE_CONFIG, attention_window=4)),
                RunSpec("window 1", replace(BASE_CONFIG, attention_window=1)),
            ],
            _reverse_data,
            _conclude_generic("attention span"),
        ),
        Experiment(
            "rnn",
            "LSTM encoder-decoder with attention vs Transformer on copying 2-24 tokens",
            lambda steps: [
                RunSpec("transformer", BASE_CONFIG),
                RunSpec("lstm", RNNConfig(VOCAB_SIZE, VOCAB_SIZE, d_model=64, num_layers=2)),
            ],
            _rnn_data,
            _conclude_rnn,
            extra=_epoch_seconds,
            by_length=True,
        ),
    )
}


def run_experiment(
    name: str, out_dir: str | Path, steps: int | None = None, seed: int = 0, seeds: int = 3
) -> list[RunResult]:
    """Run experiment ``name``; write ``out_dir/NAME.md`` and ``out_dir/NAME.png``.

    Args:
        name: a key of :data:`EXPERIMENTS`.
        out_dir: where the table and the picture go.
        steps: optimizer steps per run (the fixed budget); None = the experiment's default (600;
            :data:`POSITIONS_DEFAULT_STEPS` for ``positions``).
        seed: seeds the models' initialisation and the batch order (the same for every run).
        seeds: for the multi-seed experiments (``positions``): seeds ``seed .. seed + seeds - 1``
            per arm; the others run one seed.

    Returns:
        One result per run (per arm, its metrics the means over seeds, for ``positions``).
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    steps = exp.default_steps if steps is None else steps
    if exp.custom is not None:
        return exp.custom(Path(out_dir), steps, seed, seeds)
    train, tests = exp.data(seed)
    results = []
    for spec in exp.runs(steps):
        log.info("%s: training %s for %d steps", name, spec.name, steps)
        model, result = train_run(spec, train, steps, seed)
        for test_name, pairs in tests.items():
            exact, tok, by_len = accuracy(model, pairs)
            result.metrics[f"{test_name} exact"] = exact
            result.metrics[f"{test_name} token"] = tok
            if test_name == "test":
                result.by_length = by_len
        if exp.extra is not None:
            exp.extra(model, result, tests)
        results.append(result)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown(exp, results, steps, seed))
    plot(exp, results, out_dir / f"{name}.png")
    return results


def markdown(exp: Experiment, results: list[RunResult], steps: int, seed: int) -> str:
    """The experiment's table and conclusion."""
    keys = list(results[0].metrics)
    head = ["run", *keys, "final loss", "train s"]
    lines = [
        f"### {exp.title}",
        "",
        f"`aiayn experiment {exp.name} --steps {steps} --seed {seed}`: {steps} steps of 64 pairs "
        "per run, d_model 64, 2+2 layers, greedy decoding of the test set.",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    for r in results:
        cells = [r.name]
        for k in keys:
            v = r.metrics[k]
            cells.append(_pct(v) if k.endswith(("exact", "token")) else f"{v:.3f}")
        cells += [f"{r.curve[-1][1]:.3f}", f"{r.train_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"**Conclusion.** {exp.conclude(results)}", ""]
    return "\n".join(lines)


def plot(exp: Experiment, results: list[RunResult], path: Path) -> Path:
    """Training loss per run (left) and the main metric (right)."""
    from .viz import new_figure, save_figure

    fig = new_figure(10, 3.8)
    loss_ax, metric_ax = fig.subplots(1, 2)
    for r in results:
        steps, losses = zip(*r.curve)
        loss_ax.plot(steps, losses, label=r.name)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss (nats/token)")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    if exp.by_length:
        for r in results:
            lengths, acc = zip(*r.by_length.items())
            metric_ax.plot(lengths, [100 * a for a in acc], marker="o", label=r.name)
        metric_ax.set_xlabel("sequence length (distance between dependent tokens)")
        metric_ax.set_ylabel("exact match (%)")
        metric_ax.legend()
    else:
        # One group of bars per test set (exact match), one bar per run.
        tests = [k for k in results[0].metrics if k.endswith(" exact")]
        width = 0.8 / len(results)
        for i, r in enumerate(results):
            xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(tests))]
            bars = metric_ax.bar(xs, [100 * r.metrics[t] for t in tests], width, label=r.name)
            metric_ax.bar_label(bars, fmt="%.1f", fontsize=7)
        metric_ax.set_xticks(range(len(tests)), [t.removesuffix(" exact") for t in tests])
        metric_ax.set_ylabel("exact match (%)")
        metric_ax.set_ylim(0, 110)
        metric_ax.legend(fontsize=7)
    metric_ax.grid(alpha=0.3)
    fig.suptitle(exp.title)
    return save_figure(fig, path)
