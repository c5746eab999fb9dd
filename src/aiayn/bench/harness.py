"""Side-by-side timing: same process, same shapes, warm-up, interleaved repetitions, median/min/max.

Interleaving (A, B, A, B, ...) rather than timing all of A then all of B keeps slow drifts of the machine
(thermal, another process) from favouring one side.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


def _project_root() -> Path:
    """The source checkout this package runs from (where BENCHMARKS.md lives), else the current
    folder: an installed aiayn writes its tables and runs where it is started."""
    checkout = Path(__file__).resolve().parents[3]  # src/aiayn/bench/harness.py
    if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "aiayn").is_dir():
        return checkout
    return Path.cwd()


ROOT = _project_root()
#: Where :func:`write_section` writes (``aiayn bench --out`` points it elsewhere).
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


@dataclass
class Timing:
    """Seconds per call over the repetitions."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def fmt(self, scale: float = 1e3, unit: str = "ms") -> str:
        return f"{self.median * scale:.2f} {unit} ({self.min * scale:.2f}–{self.max * scale:.2f})"


def compare(
    fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> dict[str, Timing]:
    """Time each zero-argument callable ``repeats`` times, interleaved, after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(t) for name, t in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """One line naming the machine and software the figures come from."""
    device = "CPU"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {device}; "
        f"torch {torch.__version__}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}"
    )


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul FLOP/s of this machine (best of ``repeats``), the physical limit."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def write_section(name: str, body: str, path: Path | None = None) -> None:
    """Replace (or append) the section ``## name`` of BENCHMARKS.md (or ``path``) with ``body``."""
    path = (
        BENCHMARKS_MD if path is None else path
    )  # read now: `aiayn bench --out` may have moved it
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nFigures measured side by side in one run; ratios > 1 favour aiayn.\n"
    )
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
