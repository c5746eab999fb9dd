"""Label smoothing, schedules and guided attention against their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from aiayn.training.losses import (
    guided_attention_loss,
    label_smoothed_cross_entropy,
)
from aiayn.training.schedules import noam, warmup_cosine


def test_label_smoothing_matches_its_formula():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 11)
    target = torch.randint(1, 11, (2, 5))
    target[1, 3:] = 0  # padding
    eps = 0.1
    loss, n = label_smoothed_cross_entropy(logits, target, eps, ignore_index=0)
    logp = logits.log_softmax(-1)
    expected, count = 0.0, 0
    for b in range(2):
        for t in range(5):
            y = int(target[b, t])
            if y == 0:
                continue
            q = torch.full((11,), eps / 11)
            q[y] += 1 - eps  # (1 - eps) on the truth, eps spread uniformly over the vocabulary
            expected += float(-(q * logp[b, t]).sum())
            count += 1
    assert n == count == 8
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain, _ = label_smoothed_cross_entropy(logits, target, 0.0)
    nll = -logp.gather(-1, target[..., None])[..., 0][target != 0].sum()
    assert float(plain) == pytest.approx(float(nll), rel=1e-5)


def test_noam_schedule_matches_the_paper():
    d, warmup = 512, 4000
    for step in (1, 100, 3999, 4000, 4001, 20000):
        expected = d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert noam(step, d, warmup) == pytest.approx(expected)
    peak = max(noam(s, d, warmup) for s in range(1, 10000))
    assert peak == pytest.approx(noam(warmup, d, warmup))
    assert noam(16000, d, warmup) == pytest.approx(noam(4000, d, warmup) / 2)  # 1/sqrt decay


def test_warmup_cosine_shape():
    assert warmup_cosine(1, 1.0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(10, 1.0, 10, 100) == pytest.approx(1.0)
    mid = warmup_cosine(55, 1.0, 10, 100, min_ratio=0.0)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, 1.0, 10, 100, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 1.0, 10, 100, min_ratio=0.1) == pytest.approx(0.1)


def test_guided_attention_loss_zero_on_diagonal_and_grows_away():
    T = S = 6
    lengths = torch.tensor([T])
    diagonal = torch.eye(T)[None, None]  # (1, 1, T, S)
    assert float(guided_attention_loss(diagonal, lengths, lengths)) == pytest.approx(0.0, abs=1e-6)
    shifted = [torch.roll(torch.eye(T), k, dims=1)[None, None] for k in (1, 2, 3)]
    losses = [float(guided_attention_loss(a, lengths, lengths)) for a in shifted]
    assert 0 < losses[0] < losses[1] < losses[2]
    uniform = torch.full((1, 1, T, S), 1 / S)
    assert float(guided_attention_loss(uniform, lengths, lengths)) > losses[0]


def test_one_slow_validation_does_not_move_the_end_of_training():
    # The end-of-run reserve is the typical validation time: one slow one (another process had the
    # CPU) must not end a short run seconds early, as it did on CI (a 6-s run ended after 5.3 s).
    from aiayn.training.trainer import _RecentDurations

    times = _RecentDurations()
    assert times.typical() == 0.0
    for seconds in (0.1, 0.9, 0.1):
        times.add(seconds)
    assert times.typical() == pytest.approx(0.1)
    for seconds in (0.5, 0.5, 0.5):
        times.add(seconds)  # a real change (longer outputs) wins within a few validations
    assert times.typical() == pytest.approx(0.5)


def test_run_options_fill_the_shared_defaults_once_and_the_task_fields_win():
    """RunOptions is the one list of the shared train settings: defaults filled once, a task's own
    fields (its planned accumulation, budget) override them, an unknown option is refused."""
    from pathlib import Path

    import pytest
    import torch

    from aiayn.training.distributed import DistContext
    from aiayn.training.run import RunOptions, RunStart

    start = RunStart(12.5, Path("run"), torch.device("cpu"), DistContext(), None)
    opts = RunOptions.of({"max_minutes": 2.0, "seed": 3, "log_every": 7})
    config = opts.train_config(start, budget_seconds=100.0, accumulate=4)
    assert (config.accumulate, config.clip_norm, config.dtype) == (4, 1.0, "float32")
    assert (config.max_minutes, config.seed, config.log_every) == (2.0, 3, 7)
    assert (config.budget_seconds, config.started_at) == (100.0, 12.5)
    assert RunOptions().train_config(start).accumulate == 1
    with pytest.raises(TypeError):
        RunOptions.of({"max_minute": 2.0})
