"""aiayn vs CTranslate2 (OpenNMT's C++ engine) decoding the same weights, each in its own process.

Two models: the zh-en demo size (a Marian-shaped aiayn model trained on builtin:zh-en, 2+2 × 128,
the one :mod:`.bench_translate` trains) on 32 held-out sentences, and the base size (6+6 × 512,
vocabulary 37000, seeded random weights; 32 sources of 20 tokens; ``<eos>`` kept from winning by
its output bias so both engines write exactly 30 tokens per sentence). Each is exported with
``aiayn export --to ctranslate2`` (:mod:`aiayn.interop.ct2`), float32 and int8. Every engine,
precision, batch size (1, 16) and search (greedy, beam 4; no length penalty, empty outputs
allowed, as aiayn) runs in a fresh process of its own, CTranslate2's in :mod:`.ct2_worker`, which
imports neither aiayn nor torch: torch's thread pool in the same process slows CTranslate2
several-fold (measured: 14× beside torch decoding; 8× with torch merely imported and used to load
the sources). Each cell keeps the faster of 1 and 2 threads (:data:`THREAD_CHOICES`). Float32 outputs are
compared token for token.

Run: ``python -m aiayn.bench.bench_ct2`` (``--quick``: the demo model only, trained shorter, batch
16, one timed run; ``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from .ct2_worker import median_time
from .harness import ROOT, machine_line, write_section

SECTION = "Decoding vs CTranslate2 (same weights, each engine in its own process)"

#: Each cell is timed with 1 and with 2 threads and keeps the faster: on this 2-core VM
#: CTranslate2 with 2 intra-op threads decoded the demo model 16x slower than with 1 (waking a
#: sleeping thread costs more than a 128-wide product), while base-size products gain from two.
THREAD_CHOICES = (1, 2)
SENTENCES = 32
BASE_SOURCE_TOKENS = 20
BASE_OUTPUT_TOKENS = 30
BATCHES = (1, 16)
BEAMS = (1, 4)
ENGINES = ("aiayn", "aiayn-int8", "ct2", "ct2-int8")


# ---- the models (built once, in the parent) ----------------------------------------------------------


def _base_model_dir(directory: Path) -> Path:
    """A base-size model folder with seeded random weights, written as training writes one."""
    from aiayn.data.tokenizers import EOS_ID, CharTokenizer
    from aiayn.models.seq2seq import PRESETS, Transformer
    from aiayn.tasks.translation import TranslationTask
    from aiayn.training.checkpoint import WEIGHTS_FILE, save_weights

    if (directory / WEIGHTS_FILE).exists():
        return directory
    # 37000 distinct one-character pieces: a vocabulary of the base size that CTranslate2 can list
    chars = [chr(0x20000 + i) for i in range(37000 - 4)]  # CJK extension B: all assigned
    tokenizer = CharTokenizer(chars)
    config = replace(
        PRESETS["base"], final_norm=False, tie_output=False, output_bias=True, dropout=0.0
    )
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():
        model.lm_head.bias[EOS_ID] = -1e4  # no sentence ends early: every run does the same work
    pairs = [("".join(chars[:8]), "".join(chars[:8]))]
    task = TranslationTask(
        model,
        tokenizer,
        tokenizer,
        pairs,
        pairs,
        batch_tokens=256,
        label_smoothing=0.0,
        seed=0,
        device=torch.device("cpu"),
        max_len=config.max_len,
    )
    task.write_model_files(directory)
    save_weights(model, directory / WEIGHTS_FILE)
    return directory


def _demo_model_dir(quick: bool) -> Path:
    from .bench_translate import trained_marian_shaped

    steps, name = (150, "marian-zh-en-quick") if quick else (400, "marian-zh-en")
    directory = ROOT / "runs" / "bench" / name
    trained_marian_shaped(directory, steps=steps)
    return directory


def _export(model_dir: Path, quantize: str | None) -> Path:
    out = model_dir.parent / f"{model_dir.name}-ct2-{quantize or 'float32'}"
    if not (out / "model.bin").exists():
        cmd = [sys.executable, "-m", "aiayn", "export", str(model_dir), "--to", "ctranslate2"]
        cmd += ["--out", str(out)] + (["--quantize", quantize] if quantize else [])
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def _sources(kind: str, model_dir: Path) -> list[list[int]]:
    """Token ids of the sources (no ``<eos>``: each engine adds its own)."""
    if kind == "base":
        g = torch.Generator().manual_seed(1)
        return torch.randint(4, 37000, (SENTENCES, BASE_SOURCE_TOKENS), generator=g).tolist()
    from aiayn.tasks.translation import Translator, load_pairs

    tokenizer = Translator.load(model_dir).src_tok
    return [tokenizer.encode(s) for s, _ in load_pairs("builtin:zh-en", "test")[:SENTENCES]]


# ---- one engine, timed in this process ---------------------------------------------------------------


def _aiayn_runner(model_dir: Path, quantize: str | None, sources, batch: int, beam: int, max_len):
    from aiayn.data.batching import collate_seq2seq
    from aiayn.decoding import beam_search, greedy_search
    from aiayn.tasks.translation import Translator

    model = Translator.load(model_dir, quantize=quantize).model
    batches = [
        collate_seq2seq([(x, []) for x in sources[i : i + batch]])
        for i in range(0, len(sources), batch)
    ]

    def run() -> list[list[int]]:
        out: list[list[int]] = []
        with torch.inference_mode():
            for b in batches:
                if beam == 1:
                    out += greedy_search(model, b.src, b.src_key_mask, max_len=max_len)
                else:
                    hyps = beam_search(
                        model, b.src, b.src_key_mask, beam_size=beam, alpha=0.0, max_len=max_len
                    )
                    out += [h[0].tokens for h in hyps]
        return out

    return run


def _max_len(kind: str) -> int:
    """The demo: far above its sentences' lengths; the base: exactly its 30 output tokens."""
    return BASE_OUTPUT_TOKENS if kind == "base" else 64


def child(
    kind: str, engine: str, batch: int, beam: int, repeats: int, quick: bool, threads: int
) -> dict:
    """One aiayn cell, in this process (CTranslate2's cells run in :mod:`.ct2_worker`)."""
    torch.set_num_threads(threads)
    model_dir = _base_model_dir(_base_dir()) if kind == "base" else _demo_model_dir(quick)
    sources = json.loads(_sources_file(model_dir).read_text())
    quantize = "int8" if engine.endswith("int8") else None
    run = _aiayn_runner(model_dir, quantize, sources, batch, beam, _max_len(kind))
    return median_time(run, repeats)


def _base_dir() -> Path:
    return ROOT / "runs" / "bench" / "base-random"


def _sources_file(model_dir: Path) -> Path:
    """The model's benchmark sources as token ids, written once by the parent: the CTranslate2
    worker reads them without aiayn (which would import torch into its process)."""
    return model_dir.parent / f"{model_dir.name}-sources.json"


def _cell(
    engine: str, kind: str, model_dir: Path, batch: int, beam: int, repeats: int, quick: bool
) -> dict:
    """Time one cell in a fresh process per thread count; the faster result, with its threads."""

    def command(threads: int) -> list[str]:
        if engine.startswith("ct2"):
            ct2_dir = _export(model_dir, "int8" if engine.endswith("int8") else None)
            cmd = [*ct2_worker_command("translate"), str(ct2_dir), str(_sources_file(model_dir))]
            return cmd + [str(batch), str(beam), str(_max_len(kind)), str(repeats), str(threads)]
        cmd = [sys.executable, "-m", "aiayn.bench.bench_ct2", "--child", kind, engine]
        cmd += [str(batch), str(beam), "--repeats", str(repeats), "--threads", str(threads)]
        return cmd + (["--quick"] if quick else [])

    return fastest(command)


def ct2_worker_command(mode: str) -> list[str]:
    """The start of a command line running :mod:`.ct2_worker` by file path (a process without torch)."""
    return [sys.executable, str(Path(__file__).with_name("ct2_worker.py")), mode]


def fastest(command: Callable[[int], list[str]]) -> dict:
    """Run ``command(threads)`` in a fresh process for each of :data:`THREAD_CHOICES`; the result
    (its last stdout line, JSON) with the fewest seconds, and its thread count."""
    best: dict | None = None
    for threads in THREAD_CHOICES:
        out = subprocess.run(command(threads), check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1]) | {"threads": threads}
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    return best


# ---- the parent ----------------------------------------------------------------------------------------


def run_all(quick: bool, repeats: int) -> list[dict]:
    # --quick: the demo model at batch 16 only (a quick run must stay within minutes).
    model_dirs = {"demo": _demo_model_dir(quick)}
    if not quick:
        model_dirs["base"] = _base_model_dir(_base_dir())
    for kind, directory in model_dirs.items():
        _sources_file(directory).write_text(json.dumps(_sources(kind, directory)))
        for quantize in (None, "int8"):
            _export(directory, quantize)
    rows = []
    for kind, directory in model_dirs.items():
        for batch in (16,) if quick else BATCHES:
            for beam in BEAMS:
                row = {"model": kind, "batch": batch, "beam": beam}
                row |= measure_engines(
                    _cell, SENTENCES, kind, directory, batch, beam, repeats, quick
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def measure_engines(cell: Callable[..., dict], work: int, *args: object) -> dict:
    """Each of :data:`ENGINES` timed by ``cell(engine, *args)``: its rate (``work`` / seconds) and
    thread count, and the fraction of inputs whose float32 outputs agree token for token
    (``identical``)."""
    row, outputs = {}, {}
    for engine in ENGINES:
        result = cell(engine, *args)
        row[engine] = work / result["seconds"]
        row[f"{engine} threads"] = result["threads"]
        outputs[engine] = result["tokens"]
    same = sum(a == b for a, b in zip(outputs["aiayn"], outputs["ct2"]))
    return row | {"identical": same / len(outputs["ct2"])}


#: The engine columns every CTranslate2 table ends with (see :func:`engine_cells`).
ENGINE_HEADER = (
    "| aiayn | aiayn int8 | CT2 float32 | CT2 int8 | aiayn ÷ CT2 (float32) "
    "| aiayn int8 ÷ CT2 int8 | identical |"
)


def engine_cells(row: dict, digits: int) -> str:
    """A :func:`measure_engines` row as :data:`ENGINE_HEADER`'s cells, rates to ``digits`` places."""
    rates = " | ".join(
        f"{row[e]:.{digits}f} ({row[f'{e} threads']})"
        for e in ("aiayn", "aiayn-int8", "ct2", "ct2-int8")
    )
    return (
        f"| {rates} | {row['aiayn'] / row['ct2']:.2f}× "
        f"| {row['aiayn-int8'] / row['ct2-int8']:.2f}× | {100 * row['identical']:.0f}% |"
    )


def table(rows: list[dict], repeats: int) -> str:
    lines = [
        f"Machine: {machine_line()}",
        "",
        f"Sentences/s, {SENTENCES} sentences, median of {repeats} runs after a warm-up; every "
        "cell timed in fresh processes with 1 and with 2 threads and the faster kept (its thread "
        "count in brackets); CTranslate2 in processes without torch. demo: a Marian-shaped "
        "2+2 × 128 zh-en model (1.1M parameters) on held-out builtin:zh-en sentences; base: "
        "6+6 × 512, vocabulary 37000, random weights, sources of 20 tokens, 30 output tokens "
        "each. CTranslate2 loads `aiayn export --to ctranslate2` folders (float32, and int8 "
        "by its own quantisation); aiayn int8 is `--quantize int8`. No length penalty; "
        "'identical' compares the float32 outputs token for token.",
        "",
        "| model | batch | decoding " + ENGINE_HEADER,
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        dec = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(f"| {r['model']} | {r['batch']} | {dec} " + engine_cells(r, 1))
    return "\n".join(lines)


def engine_bench_args(
    argv, description: str, quick_help: str, child_fields: tuple[str, ...]
) -> tuple[argparse.Namespace, int]:
    """The command line both CTranslate2 benches take (``--child`` runs one aiayn cell), and the
    timed runs per cell."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--repeats", type=int, help="timed runs per cell")
    parser.add_argument("--child", nargs=len(child_fields), metavar=child_fields)
    parser.add_argument("--threads", type=int, default=2, help="with --child: torch threads")
    args = parser.parse_args(argv)
    return args, args.repeats or (1 if args.quick else 3)


def main(argv=None) -> None:
    args, repeats = engine_bench_args(
        argv,
        __doc__.splitlines()[0],
        "fewer repeats, shorter demo model",
        ("MODEL", "ENGINE", "BATCH", "BEAM"),
    )
    if args.child:
        kind, engine, batch, beam = args.child
        result = child(kind, engine, int(batch), int(beam), repeats, args.quick, args.threads)
        print(json.dumps(result))
        return
    start = time.perf_counter()
    body = table(run_all(args.quick, repeats), repeats)
    print(body)
    print(f"({time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
