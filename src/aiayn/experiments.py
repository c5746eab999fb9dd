"""The notes' design choices, measured: named comparisons on small built-in tasks.

Each experiment trains a few tiny encoder-decoders (d_model 64, 2+2 layers) for the same fixed
number of steps with the same seed and data order, changing one choice, then decodes the held-out
test set greedily and reports exact-match and per-token accuracy, the final training loss and the
training time. :func:`run_experiment` writes ``NAME.md`` (a table and a one-sentence conclusion
computed from the figures) and ``NAME.png`` (training curves and the main metric).

=====================  ======================================================================
``positions``          sinusoidal vs learned positions; train on reversal of 3-8 tokens, test
                       on 3-8 and on 9-12 tokens (length extrapolation)
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

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .data.batching import collate_seq2seq
from .data.tokenizers import BOS_ID, EOS_ID
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
    """

    name: str
    title: str
    runs: Callable[[int], list[RunSpec]]
    data: Callable[[int], tuple[list[Pair], dict[str, list[Pair]]]]
    conclude: Callable[[list[RunResult]], str]
    extra: Callable[[nn.Module, RunResult, dict[str, list[Pair]]], None] | None = None
    by_length: bool = False


def _reverse_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    return builtin_pairs("reverse", "train"), {"test": builtin_pairs("reverse", "test")[:500]}


def _copy_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    return builtin_pairs("copy", "train"), {"test": builtin_pairs("copy", "test")[:500]}


def _extrapolation_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    train = [p for p in builtin_pairs("reverse", "train") if len(p[0]) <= 8]
    test = builtin_pairs("reverse", "test")
    short = [p for p in test if len(p[0]) <= 8][:400]
    long = [p for p in test if len(p[0]) > 8][:400]
    return train, {"test": short, "longer": long}


def _rnn_data(seed: int) -> tuple[list[Pair], dict[str, list[Pair]]]:
    # Fixed data seeds (not the run seed): every run of every seed sees the same task.
    return copy_pairs(4000, 2, 24, 1), {"test": copy_pairs(600, 2, 24, 2)}


def _get(results: list[RunResult], name: str) -> RunResult:
    return next(r for r in results if r.name == name)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _best(results: list[RunResult], metric: str, higher: bool = True) -> RunResult:
    return (max if higher else min)(results, key=lambda r: r.metrics[metric])


def _conclude_positions(results: list[RunResult]) -> str:
    s, learned = _get(results, "sinusoidal"), _get(results, "learned")
    gap = s.metrics["longer exact"] - learned.metrics["longer exact"]
    verdict = (
        "neither extrapolates to lengths it never saw"
        if max(s.metrics["longer exact"], learned.metrics["longer exact"]) < 0.1
        else f"{'sinusoidal' if gap > 0 else 'learned'} positions extrapolate better"
    )
    return (
        f"Trained on 3-8 tokens, sinusoidal positions reverse {_pct(s.metrics['longer exact'])} of "
        f"9-12-token sequences exactly and learned positions {_pct(learned.metrics['longer exact'])} "
        f"(in range: {_pct(s.metrics['test exact'])} vs {_pct(learned.metrics['test exact'])}): "
        f"{verdict}."
    )


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


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "positions",
            "Sinusoidal vs learned positions: length extrapolation on reversal",
            lambda steps: [
                RunSpec("sinusoidal", BASE_CONFIG),
                RunSpec("learned", replace(BASE_CONFIG, positional="learned")),
            ],
            _extrapolation_data,
            _conclude_positions,
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
    name: str, out_dir: str | Path, steps: int = 600, seed: int = 0
) -> list[RunResult]:
    """Run experiment ``name``; write ``out_dir/NAME.md`` and ``out_dir/NAME.png``.

    Args:
        name: a key of :data:`EXPERIMENTS`.
        out_dir: where the table and the picture go.
        steps: optimizer steps per run (the fixed budget).
        seed: seeds the models' initialisation and the batch order (the same for every run).

    Returns:
        One result per run.
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
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
