"""The physical limit: this machine's float32 matmul peak, measured in the same run as the others."""

from __future__ import annotations

import argparse

import torch

from .harness import machine_line, matmul_peak_flops, write_section


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    sizes = (1024, 2048) if args.quick else (1024, 2048, 4096)
    peaks = {n: matmul_peak_flops(n) for n in sizes}
    best = max(peaks.values())
    lines = [f"Machine: {machine_line()}", "", "| n×n float32 matmul | GFLOP/s |", "| --- | --- |"]
    lines += [f"| {n} | {p / 1e9:.0f} |" for n, p in peaks.items()]
    lines += [
        "",
        f"Peak used for model-FLOP utilisation: **{best / 1e9:.0f} GFLOP/s** "
        f"({torch.get_num_threads()} threads).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("Machine float32 matmul peak", text)
    return best


if __name__ == "__main__":
    main()
