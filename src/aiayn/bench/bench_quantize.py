"""int8 vs float32 decoding speed at base size (``--quantize int8``, :mod:`aiayn.quantize`).

A base Transformer (6+6 layers × 512, 8 heads, FFN 2048, shared 37000-token vocabulary; seeded random
weights: speed does not depend on what the weights say) translates a batch of 16 random 20-token
sources, greedy and beam 4, exactly 30 output tokens each (no token ends a sentence, so every run
does the same work). Each precision and search runs in its own process (a fresh allocator and thread
pool, and nothing of the other precision's kernels warmed up), median of the repeats.

Run: ``python -m aiayn.bench.bench_quantize`` (``--quick``: fewer repeats; ``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from .harness import compare, machine_line, write_section

SECTION = "int8 quantisation: base-size decoding"

BATCH = 16
SOURCE_TOKENS = 20
OUTPUT_TOKENS = 30
PRECISIONS = ("float32", "int8")
SEARCHES = ("greedy", "beam4")


def child(precision: str, search: str, repeats: int, threads: int) -> dict:
    """Seconds per batch for one precision and search, in this process."""
    from aiayn.decoding import beam_search, greedy_search
    from aiayn.models.seq2seq import PRESETS, Transformer
    from aiayn.quantize import quantize_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Transformer(PRESETS["base"]).eval()
    model = quantize_model(model, None if precision == "float32" else precision)
    vocab = model.config.tgt_vocab_size
    src = torch.randint(
        4, vocab, (BATCH, SOURCE_TOKENS), generator=torch.Generator().manual_seed(1)
    )
    # eos_id -1: no token ends a hypothesis, so every run decodes exactly OUTPUT_TOKENS tokens.
    never = -1

    def run() -> object:
        with torch.inference_mode():
            if search == "greedy":
                return greedy_search(model, src, None, eos_id=never, max_len=OUTPUT_TOKENS)
            return beam_search(model, src, None, beam_size=4, eos_id=never, max_len=OUTPUT_TOKENS)

    timing = compare({"run": run}, repeats=repeats, warmup=1)["run"]
    return {"precision": precision, "search": search, "seconds": timing.median}


def run(repeats: int, threads: int) -> list[dict]:
    rows = []
    for search in SEARCHES:
        for precision in PRECISIONS:
            cmd = [sys.executable, "-m", "aiayn.bench.bench_quantize", "--child", precision, search]
            cmd += ["--repeats", str(repeats), "--threads", str(threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def table(rows: list[dict], repeats: int, threads: int) -> str:
    seconds = {(r["precision"], r["search"]): r["seconds"] for r in rows}
    lines = [
        f"Base Transformer (6+6 × 512, vocabulary 37000, random weights), batch {BATCH} sources of "
        f"{SOURCE_TOKENS} tokens, {OUTPUT_TOKENS} output tokens each; median of {repeats} batches, "
        f"each precision and search in its own process, {threads} torch thread(s). "
        "int8: `--quantize int8` (every Linear, the output layer included, dynamic int8).",
        "",
        "| search | float32 (sentences/s) | int8 (sentences/s) | int8 speed-up |",
        "| --- | ---: | ---: | ---: |",
    ]
    for search in SEARCHES:
        f32, int8 = seconds[("float32", search)], seconds[("int8", search)]
        lines.append(f"| {search} | {BATCH / f32:.1f} | {BATCH / int8:.1f} | {f32 / int8:.2f}× |")
    lines += ["", machine_line()]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--repeats", type=int, help="batches timed per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--child", nargs=2, metavar=("PRECISION", "SEARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if args.child:
        precision, search = args.child
        print(json.dumps(child(precision, search, repeats, args.threads)))
        return
    body = table(run(repeats, args.threads), repeats, args.threads)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
