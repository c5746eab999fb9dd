"""CLI: ``aiayn bench`` runs the side-by-side benchmarks of :mod:`aiayn.bench`."""

from __future__ import annotations

import argparse
import importlib
import logging
import time
from pathlib import Path

log = logging.getLogger("aiayn")

#: benchmark modules, cheapest first; each has ``main(argv)`` accepting --quick/--no-write
BENCHMARKS = (
    "bench_machine",
    "bench_attention",
    "bench_local_attention",
    "bench_translate",
    "bench_gpt",
    "bench_embed",
    "bench_vit",
    # fine-tuned MiniLM vs TF-IDF + logistic regression on Bible verses by genre (about 4 minutes)
    "bench_classify",
    "bench_modern_blocks",
    # --quantize int8 vs float32 decoding at base size, each in its own process (about 3 minutes)
    "bench_quantize",
    # aiayn vs CTranslate2 on the same weights (demo and base size), each engine in its own
    # process (about 10 minutes; --quick: the demo model at batch 16 only)
    "bench_ct2",
    # GPT generation: aiayn vs CTranslate2's Generator, same weights, own processes (about 4 minutes)
    "bench_ct2_gpt",
    # `aiayn serve` under 64 concurrent clients: dynamic batching vs one at a time (about 5 minutes)
    "bench_serve",
    # aiayn's defaults vs a plain recipe on 20 corpora, Bible verses in 8 minutes included (87
    # training minutes per system, about three and a half hours in all); skipped by --quick
    "bench_robustness",
)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import harness

    if args.out:
        harness.BENCHMARKS_MD = Path(args.out).resolve()
    names = args.only or BENCHMARKS
    for name in names:
        module = importlib.import_module(f"aiayn.bench.{name}")
        start = time.monotonic()
        log.info("== %s", name)
        argv = ["--quick"] if args.quick else []
        module.main(argv)
        log.info("== %s done in %.0f s", name, time.monotonic() - start)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the side-by-side benchmarks, write BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="smaller settings (under 3 minutes)")
    p.add_argument("--out", help="write the table here instead of BENCHMARKS.md")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    p.set_defaults(func=_cmd_bench)
