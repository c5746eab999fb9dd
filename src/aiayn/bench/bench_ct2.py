"""aiayn vs CTranslate2 (OpenNMT's C++ engine) decoding the same weights, each in its own process.

Two models: the zh-en demo size (a Marian-shaped aiayn model trained on builtin:zh-en, 2+2 × 128,
the one :mod:`.bench_translate` trains) on 32 held-out sentences, and the base size (6+6 × 512,
vocabulary 37000, seeded random weights; 32 sources of 20 tokens; ``<eos>`` kept from winning by
its output bias so both engines write exactly 30 tokens per sentence). Each is exported with
``aiayn export --to ctranslate2`` (:mod:`aiayn.interop.ct2`), float32 and int8. Every engine,
precision, batch size (1, 16) and search (greedy, beam 4; no length penalty, empty outputs
allowed, as aiayn) runs in a fresh process of its own: two thread pools in one process slow each
other (measured: CTranslate2 14× slower beside torch). Both use 2 threads. Float32 outputs are
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
from dataclasses import replace
from pathlib import Path

import torch

from .harness import ROOT, machine_line, write_section

SECTION = "Decoding vs CTranslate2 (same weights, each engine in its own process)"

THREADS = 2
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


def _vocabulary(ct2_dir: Path, side: str) -> list[str]:
    """A side's pieces as CTranslate2 saved them (one shared file when both sides are equal)."""
    path = ct2_dir / f"{side}_vocabulary.json"
    if not path.exists():
        path = ct2_dir / "shared_vocabulary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _ct2_runner(ct2_dir: Path, sources, batch: int, beam: int, max_len):
    import ctranslate2

    translator = ctranslate2.Translator(
        str(ct2_dir), device="cpu", intra_threads=THREADS, inter_threads=1
    )
    vocab, target = (_vocabulary(ct2_dir, side) for side in ("source", "target"))
    target_ids = {piece: i for i, piece in enumerate(target)}
    pieces = [[vocab[i] for i in ids] for ids in sources]
    batches = [pieces[i : i + batch] for i in range(0, len(pieces), batch)]
    options = dict(beam_size=beam, length_penalty=0.0, min_decoding_length=0)
    options["max_decoding_length"] = max_len if max_len is not None else 256

    def run() -> list[list[int]]:
        out: list[list[int]] = []
        for b in batches:
            for result in translator.translate_batch(b, max_batch_size=batch, **options):
                out.append([target_ids[p] for p in result.hypotheses[0]])
        return out

    return run


def child(kind: str, engine: str, batch: int, beam: int, repeats: int, quick: bool) -> dict:
    torch.set_num_threads(THREADS)
    model_dir = _base_model_dir(_base_dir()) if kind == "base" else _demo_model_dir(quick)
    sources = _sources(kind, model_dir)
    # The demo: each engine's own limit, far above these sentences; the base: exactly 30 tokens.
    max_len = BASE_OUTPUT_TOKENS if kind == "base" else 64
    quantize = "int8" if engine.endswith("int8") else None
    if engine.startswith("ct2"):
        run = _ct2_runner(_export(model_dir, quantize), sources, batch, beam, max_len)
    else:
        run = _aiayn_runner(model_dir, quantize, sources, batch, beam, max_len)
    tokens = run()  # warm-up, and the outputs to compare
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"seconds": times[len(times) // 2], "tokens": tokens}


def _base_dir() -> Path:
    return ROOT / "runs" / "bench" / "base-random"


# ---- the parent ----------------------------------------------------------------------------------------


def run_all(quick: bool, repeats: int) -> list[dict]:
    model_dirs = [_demo_model_dir(quick)] + ([] if quick else [_base_model_dir(_base_dir())])
    for directory in model_dirs:
        for quantize in (None, "int8"):
            _export(directory, quantize)
    rows = []
    # --quick: the demo model at batch 16 only (a quick run must stay within minutes).
    for kind in ("demo",) if quick else ("demo", "base"):
        for batch in (16,) if quick else BATCHES:
            for beam in BEAMS:
                row = {"model": kind, "batch": batch, "beam": beam}
                outputs = {}
                for engine in ENGINES:
                    cmd = [sys.executable, "-m", "aiayn.bench.bench_ct2", "--child", kind, engine]
                    cmd += [str(batch), str(beam), "--repeats", str(repeats)]
                    cmd += ["--quick"] if quick else []
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    row[engine] = SENTENCES / result["seconds"]
                    outputs[engine] = result["tokens"]
                same = sum(a == b for a, b in zip(outputs["aiayn"], outputs["ct2"]))
                row["identical"] = same / SENTENCES
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict], repeats: int) -> str:
    lines = [
        f"Machine: {machine_line()}",
        "",
        f"Sentences/s, {SENTENCES} sentences, median of {repeats} runs after a warm-up, "
        f"{THREADS} threads each, every cell in its own fresh process. demo: a Marian-shaped "
        "2+2 × 128 zh-en model (1.1M parameters) on held-out builtin:zh-en sentences; base: "
        "6+6 × 512, vocabulary 37000, random weights, sources of 20 tokens, 30 output tokens "
        "each. CTranslate2 loads `aiayn export --to ctranslate2` folders (float32, and int8 "
        "by its own quantisation); aiayn int8 is `--quantize int8`. No length penalty; "
        "'identical' compares the float32 outputs token for token.",
        "",
        "| model | batch | decoding | aiayn | aiayn int8 | CT2 float32 | CT2 int8 "
        "| aiayn ÷ CT2 (float32) | aiayn int8 ÷ CT2 int8 | identical |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        dec = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(
            f"| {r['model']} | {r['batch']} | {dec} | {r['aiayn']:.1f} | {r['aiayn-int8']:.1f} "
            f"| {r['ct2']:.1f} | {r['ct2-int8']:.1f} | {r['aiayn'] / r['ct2']:.2f}× "
            f"| {r['aiayn-int8'] / r['ct2-int8']:.2f}× | {100 * r['identical']:.0f}% |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter demo model")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--repeats", type=int, help="timed runs per cell")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "ENGINE", "BATCH", "BEAM"))
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.child:
        kind, engine, batch, beam = args.child
        result = child(kind, engine, int(batch), int(beam), repeats, args.quick)
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
