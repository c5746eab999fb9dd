"""Learning-rate schedules as plain functions of the optimizer step (1-based), for ``LambdaLR``.

* :func:`noam` — the paper's schedule (section 5.3):
  ``lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``: linear warm-up, then inverse
  square-root decay.
* :func:`warmup_cosine` — linear warm-up to the peak, cosine decay to ``min_ratio`` of it (GPT training).
"""

from __future__ import annotations

import math


def noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The paper's learning rate at optimizer ``step`` (>= 1)."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def warmup_cosine(step: int, peak: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``peak * min_ratio`` at ``total``."""
    step = max(step, 1)
    if step <= warmup:
        return peak * step / max(warmup, 1)
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
