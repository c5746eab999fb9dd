"""aiayn vs CTranslate2's ``Generator`` continuing prompts with the same GPT, each in its own process.

The model: a character-level GPT the size of ``aiayn train lm``'s ``small`` preset (6 layers ×
384, 6 heads, learned positions, a vocabulary of 98 characters), seeded random weights scaled up so the
greedy choice is decisive (as the export test does). 16 prompts of ``<bos>`` + 16 characters; each
engine writes exactly :data:`NEW_TOKENS` new tokens per prompt (``<eos>`` kept out on both sides),
greedy, at batch 1 and 8, float32 and int8. Exported with :func:`aiayn.interop.ct2.save_ctranslate2_generator`
(what ``aiayn export --to ctranslate2`` writes for a GPT). As in :mod:`.bench_ct2`, every cell runs in
fresh processes with 1 and with 2 threads and keeps the faster; CTranslate2 runs in
:mod:`.ct2_worker`, a process without torch. Float32 outputs are compared token for token.

Run: ``python -m aiayn.bench.bench_ct2_gpt`` (``--quick``: batch 8, one timed run; ``--no-write``:
print only).
"""

from __future__ import annotations

import json
import string
import sys
import time
from pathlib import Path

import torch

from .bench_ct2 import (
    ENGINE_HEADER,
    ct2_worker_command,
    engine_bench_args,
    engine_cells,
    fastest,
    measure_engines,
)
from .ct2_worker import median_time
from .harness import ROOT, machine_line, write_section

SECTION = "GPT generation vs CTranslate2's Generator (same weights, each engine in its own process)"

PROMPTS = 16
PROMPT_CHARS = 16
NEW_TOKENS = 128
BATCHES = (1, 8)
CHARS = string.printable[:-2]  # 98 characters: no \x0b, \x0c


def _model_and_tokenizer():
    from aiayn.data.tokenizers import CharTokenizer
    from aiayn.models.gpt import GPT, GPTConfig

    tokenizer = CharTokenizer(list(CHARS))
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        max_len=256,
        d_model=384,
        num_heads=6,
        d_ff=1536,
        num_layers=6,
        dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)  # decisive greedy choices: float rounding does not flip them
    return model, tokenizer


def _prompts(tokenizer) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, len(CHARS), (PROMPTS, PROMPT_CHARS), generator=g).tolist()
    return [[tokenizer.bos_id, *tokenizer.encode("".join(CHARS[i] for i in row))] for row in ids]


def _folder() -> Path:
    return ROOT / "runs" / "bench" / "gpt-char-random"


def _export(quantize: str | None) -> Path:
    from aiayn.interop.ct2 import save_ctranslate2_generator

    out = _folder() / f"ct2-{quantize or 'float32'}"
    if not (out / "model.bin").exists():
        model, tokenizer = _model_and_tokenizer()
        save_ctranslate2_generator(model, tokenizer, out, quantize=quantize)
    return out


def child(engine: str, batch: int, repeats: int, threads: int) -> dict:
    """One aiayn cell, in this process."""
    from aiayn.decoding import generate
    from aiayn.quantize import quantize_model

    torch.set_num_threads(threads)
    model, tokenizer = _model_and_tokenizer()
    model = quantize_model(model, "int8" if engine.endswith("int8") else None)
    prompts = _prompts(tokenizer)
    batches = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]

    def run() -> list[list[int]]:
        out: list[list[int]] = []
        with torch.inference_mode():
            for b in batches:
                out += generate(
                    model,
                    b,
                    NEW_TOKENS,
                    temperature=0.0,
                    suppress=[tokenizer.eos_id],
                    pad_id=tokenizer.pad_id,
                )
        return out

    return median_time(run, repeats)


def _cell(engine: str, batch: int, repeats: int) -> dict:
    """One cell, timed in a fresh process per thread count (the faster kept)."""

    def command(threads: int) -> list[str]:
        if engine.startswith("ct2"):
            ct2_dir = _export("int8" if engine.endswith("int8") else None)
            cmd = [*ct2_worker_command("generate"), str(ct2_dir), str(_folder() / "prompts.json")]
            return cmd + [str(batch), str(NEW_TOKENS), str(repeats), str(threads)]
        cmd = [sys.executable, "-m", "aiayn.bench.bench_ct2_gpt", "--child", engine, str(batch)]
        return cmd + ["--repeats", str(repeats), "--threads", str(threads)]

    return fastest(command)


def run_all(repeats: int, batches: tuple[int, ...] = BATCHES) -> list[dict]:
    _folder().mkdir(parents=True, exist_ok=True)
    _, tokenizer = _model_and_tokenizer()
    (_folder() / "prompts.json").write_text(json.dumps(_prompts(tokenizer)))
    for quantize in (None, "int8"):
        _export(quantize)
    rows = []
    for batch in batches:
        row = {"batch": batch}
        row |= measure_engines(_cell, PROMPTS * NEW_TOKENS, batch, repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict], repeats: int) -> str:
    lines = [
        f"Machine: {machine_line()}",
        "",
        f"New tokens/s, {PROMPTS} prompts of {PROMPT_CHARS} characters, {NEW_TOKENS} new tokens "
        f"each, greedy, median of {repeats} runs after a warm-up; every cell timed in fresh "
        "processes with 1 and with 2 threads and the faster kept (its thread count in brackets); "
        "CTranslate2 in processes without torch. The model: a character GPT, 6 layers × 384, "
        "random weights. CTranslate2 loads the `aiayn export --to ctranslate2` folder (int8 by "
        "its own quantisation); aiayn int8 is `--quantize int8`. 'identical' compares the "
        "float32 outputs token for token.",
        "",
        "| batch " + ENGINE_HEADER,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} " + engine_cells(r, 0))
    return "\n".join(lines)


def main(argv=None) -> None:
    args, repeats = engine_bench_args(
        argv, __doc__.splitlines()[0], "batch 8 only, one timed run", ("ENGINE", "BATCH")
    )
    if args.child:
        engine, batch = args.child
        print(json.dumps(child(engine, int(batch), repeats, args.threads)))
        return
    start = time.perf_counter()
    body = table(run_all(repeats, (8,) if args.quick else BATCHES), repeats)
    print(body)
    print(f"({time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
