"""Truncated self-attention: the blocked O(T·w) kernel vs full attention with the local mask.

B=1, 4 heads, Dh=64, float32, w=128 (bidirectional), forward+backward, T = 1k, 4k, 16k.

"full" is what a model did before the kernel existed: ``scaled_dot_product_attention(q, k, v,
make_local_mask(T, window=w))`` (SDPA with a T×T boolean mask). "local" is
:func:`aiayn.local_attention.local_attention`, equal to it to rounding (tests/test_local_attention.py).

Memory: each configuration runs in a fresh subprocess, which measures its resident set just before
the call, resets the process's high-water mark there (writing 5 to ``/proc/self/clear_refs``;
otherwise the mark left by importing torch, ~420 MiB, hides every smaller step), and reads the mark
(``VmHWM``) just after the first full-size forward+backward (after a small warm-up call, so that
faulting in kernel code is not counted); the difference is the peak extra memory of the step
(inputs, masks, scores, softmax, gradients), whichever kernel or allocator made it. Inputs and gradients (6·B·H·T·Dh floats) are the same for both. Tracemalloc would miss torch's own allocations, and the
profiler's per-op figures do not add up to a peak; a per-process high-water mark does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .harness import machine_line, write_section

B, H, DH, WINDOW = 1, 4, 64, 128
LENGTHS = (1024, 4096, 16384)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_high_water_mark() -> None:
    """Make the resident set now the process's high-water mark (Linux: ``clear_refs`` = 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _high_water_mark_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(kind: str, T: int, window: int, repeats: int, threads: int) -> dict:
    """Run one configuration in this (fresh) process; returns its peak memory and times."""
    import torch

    from aiayn.attention import scaled_dot_product_attention
    from aiayn.local_attention import local_attention
    from aiayn.masks import make_local_mask

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def step(T: int) -> None:
        q, k, v = (torch.randn(B, H, T, DH, requires_grad=True) for _ in range(3))
        if kind == "local":
            out = local_attention(q, k, v, window)
        else:
            out, _ = scaled_dot_product_attention(q, k, v, make_local_mask(T, window=window))
        out.backward(torch.ones_like(out))

    # A small call first, so that loading kernels' code and thread pools is not counted as memory.
    step(2 * window + 16)
    before = _rss_bytes()
    _reset_high_water_mark()
    start = time.perf_counter()
    step(T)
    first = time.perf_counter() - start
    peak = _high_water_mark_bytes() - before
    times = [first]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        step(T)
        times.append(time.perf_counter() - start)
    return {"kind": kind, "T": T, "peak_bytes": peak, "times": times}


def run(lengths=LENGTHS, window=WINDOW, repeats=3, threads=1) -> list[dict]:
    rows = []
    for T in lengths:
        for kind in ("full", "local"):
            cmd = [sys.executable, "-m", "aiayn.bench.bench_local_attention", "--child", kind]
            cmd += [str(T), str(window), str(repeats), str(threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1]["kind"], T, file=sys.stderr)
    return rows


def table(rows: list[dict], window: int, repeats: int, threads: int) -> str:
    by = {(r["kind"], r["T"]): r for r in rows}
    lengths = sorted({r["T"] for r in rows})
    lines = [
        f"B={B}, {H} heads, Dh={DH}, float32, bidirectional window w={window}, forward+backward; "
        f"median (min–max) of {repeats} calls in a fresh process per configuration, {threads} "
        "torch thread(s). Peak memory = the process's high-water mark during the first call minus "
        "its resident set just before it. Full = SDPA with the T×T local mask.",
        "",
        f"Machine: {machine_line()}",
        "",
        "| T | full time | local time | speed-up | full peak MiB | local peak MiB | memory ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for T in lengths:
        f, lo = by[("full", T)], by[("local", T)]
        ft, lt = statistics.median(f["times"]), statistics.median(lo["times"])
        fm, lm = f["peak_bytes"] / 2**20, lo["peak_bytes"] / 2**20
        lines.append(
            f"| {T} | {_fmt(f['times'])} | {_fmt(lo['times'])} | {ft / lt:.1f}× | {fm:.0f} | "
            f"{lm:.0f} | {lm / fm:.3f} |"
        )
    lo_rows = [by[("local", T)] for T in lengths]
    if len(lo_rows) > 1:
        t_growth = statistics.median(lo_rows[-1]["times"]) / statistics.median(lo_rows[0]["times"])
        m_growth = lo_rows[-1]["peak_bytes"] / max(lo_rows[0]["peak_bytes"], 1)
        lines += [
            "",
            f"T grows {lengths[-1] // lengths[0]}×: local time grows {t_growth:.1f}× and local "
            f"peak memory {m_growth:.1f}× (linear would be {lengths[-1] // lengths[0]}×); full "
            "attention grows quadratically.",
        ]
    return "\n".join(lines)


def _fmt(times: list[float]) -> str:
    return (
        f"{statistics.median(times) * 1e3:.0f} ms ({min(times) * 1e3:.0f}–{max(times) * 1e3:.0f})"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=5, metavar=("KIND", "T", "W", "REPEATS", "THREADS"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="T = 1k and 4k only")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        kind, T, w, repeats, threads = args.child
        print(json.dumps(child(kind, int(T), int(w), int(repeats), int(threads))))
        return
    lengths = LENGTHS[:2] if args.quick else LENGTHS
    rows = run(lengths, WINDOW, args.repeats, args.threads)
    text = table(rows, WINDOW, args.repeats, args.threads)
    print(text)
    if not args.no_write:
        write_section("Truncated (local-window) attention vs full attention", text)


if __name__ == "__main__":
    main()
