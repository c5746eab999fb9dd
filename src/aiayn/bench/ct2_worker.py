"""Times CTranslate2 alone: run by file path (``python ct2_worker.py ...``), never imported there.

Run as a package module, ``aiayn`` would import torch first, and torch's thread pool in the same
process slows CTranslate2 several-fold (measured here: 54 against 424 sentences/s, demo model,
batch 1): so this file imports nothing but the standard library and ``ctranslate2``. (aiayn's own
cells import :func:`median_time` from it, which is why it stays free of ``ctranslate2`` at the top.)

Two modes, each printing one JSON line: the median seconds of REPEATS runs after a warm-up, and the
output token ids of each input.

* ``translate CT2_DIR SOURCES_JSON BATCH BEAM MAX_LEN REPEATS THREADS``: ``ctranslate2.Translator``.
  SOURCES_JSON holds the sources as lists of token ids (no ``<eos>``: CTranslate2 adds it); the
  output is the first hypothesis of each source.
* ``generate CT2_DIR PROMPTS_JSON BATCH NEW_TOKENS REPEATS THREADS``: ``ctranslate2.Generator``.
  PROMPTS_JSON holds the prompts as lists of token ids, ``<bos>`` first; the output is exactly
  NEW_TOKENS new ids per prompt (``<eos>`` kept out).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path


def median_time(run: Callable[[], list[list[int]]], repeats: int) -> dict:
    """``run()`` once to warm up (its output is returned), then ``repeats`` timed runs: the median."""
    tokens = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return {"seconds": times[len(times) // 2], "tokens": tokens}


def vocabulary(ct2_dir: Path, side: str) -> list[str]:
    """A side's pieces as CTranslate2 saved them (one shared file when both sides are equal; a
    Generator's is ``vocabulary.json``)."""
    for name in (f"{side}_vocabulary.json", "shared_vocabulary.json", "vocabulary.json"):
        path = ct2_dir / name
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"{ct2_dir}: no vocabulary file")


def _batches(inputs_json: Path, pieces: list[str], batch: int) -> list[list[list[str]]]:
    rows = [[pieces[i] for i in ids] for ids in json.loads(inputs_json.read_text())]
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


def translate(argv: list[str]) -> dict:
    import ctranslate2

    ct2_dir, sources_json = Path(argv[0]), Path(argv[1])
    batch, beam, max_len, repeats, threads = (int(a) for a in argv[2:7])
    translator = ctranslate2.Translator(
        str(ct2_dir), device="cpu", intra_threads=threads, inter_threads=1
    )
    target_ids = {piece: i for i, piece in enumerate(vocabulary(ct2_dir, "target"))}
    batches = _batches(sources_json, vocabulary(ct2_dir, "source"), batch)
    # As aiayn decodes: no length penalty, an empty output allowed, the same length limit.
    options = dict(
        beam_size=beam,
        length_penalty=0.0,
        min_decoding_length=0,
        max_decoding_length=max_len,
        max_batch_size=batch,
    )

    def run() -> list[list[int]]:
        out = []
        for b in batches:
            for result in translator.translate_batch(b, **options):
                out.append([target_ids[p] for p in result.hypotheses[0]])
        return out

    return median_time(run, repeats)


def generate(argv: list[str]) -> dict:
    import ctranslate2

    ct2_dir, prompts_json = Path(argv[0]), Path(argv[1])
    batch, new_tokens, repeats, threads = (int(a) for a in argv[2:6])
    generator = ctranslate2.Generator(
        str(ct2_dir), device="cpu", intra_threads=threads, inter_threads=1
    )
    pieces = vocabulary(ct2_dir, "model")
    ids = {piece: i for i, piece in enumerate(pieces)}
    batches = _batches(prompts_json, pieces, batch)
    # Exactly new_tokens each, as aiayn is asked for: min_length = max_length keeps <eos> out.
    options = dict(
        max_length=new_tokens,
        min_length=new_tokens,
        sampling_topk=1,
        include_prompt_in_result=False,
        max_batch_size=batch,
    )

    def run() -> list[list[int]]:
        out = []
        for b in batches:
            for result in generator.generate_batch(b, **options):
                out.append([ids[p] for p in result.sequences[0]])
        return out

    return median_time(run, repeats)


if __name__ == "__main__":
    mode = {"translate": translate, "generate": generate}[sys.argv[1]]
    print(json.dumps(mode(sys.argv[2:])))
