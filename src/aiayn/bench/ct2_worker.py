"""Times CTranslate2 alone: run by file path (``python ct2_worker.py ...``), never imported.

Run as a package module, ``aiayn`` would import torch first, and torch's thread pool in the same
process slows CTranslate2 several-fold (measured here: 54 against 424 sentences/s, demo model,
batch 1): so this file imports nothing but the standard library and ``ctranslate2``.

Arguments: CT2_DIR SOURCES_JSON BATCH BEAM MAX_LEN REPEATS THREADS. SOURCES_JSON holds the sources
as lists of token ids (no ``<eos>``: CTranslate2 adds it). Prints one JSON line: the median seconds
of REPEATS runs after a warm-up, and the output token ids of the first hypothesis of each source.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def vocabulary(ct2_dir: Path, side: str) -> list[str]:
    """A side's pieces as CTranslate2 saved them (one shared file when both sides are equal)."""
    path = ct2_dir / f"{side}_vocabulary.json"
    if not path.exists():
        path = ct2_dir / "shared_vocabulary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str]) -> None:
    import ctranslate2

    ct2_dir, sources_json = Path(argv[0]), Path(argv[1])
    batch, beam, max_len, repeats, threads = (int(a) for a in argv[2:7])
    translator = ctranslate2.Translator(
        str(ct2_dir), device="cpu", intra_threads=threads, inter_threads=1
    )
    source, target = vocabulary(ct2_dir, "source"), vocabulary(ct2_dir, "target")
    target_ids = {piece: i for i, piece in enumerate(target)}
    sources = json.loads(sources_json.read_text())
    pieces = [[source[i] for i in ids] for ids in sources]
    batches = [pieces[i : i + batch] for i in range(0, len(pieces), batch)]
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

    tokens = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({"seconds": times[len(times) // 2], "tokens": tokens}))


if __name__ == "__main__":
    main(sys.argv[1:])
