"""Times CTranslate2's Generator alone: run by file path (``python ct2_gpt_worker.py ...``), never
imported, so that nothing but the standard library and ``ctranslate2`` is in its process (torch's
thread pool beside CTranslate2 slows it several-fold; see :mod:`aiayn.bench.ct2_worker`).

Arguments: CT2_DIR PROMPTS_JSON BATCH NEW_TOKENS REPEATS THREADS. PROMPTS_JSON holds the prompts as
lists of token ids, ``<bos>`` first. Prints one JSON line: the median seconds of REPEATS runs after a
warm-up, and the new token ids of each prompt (exactly NEW_TOKENS: ``<eos>`` is kept out).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    import ctranslate2

    ct2_dir, prompts_json = Path(argv[0]), Path(argv[1])
    batch, new_tokens, repeats, threads = (int(a) for a in argv[2:6])
    generator = ctranslate2.Generator(
        str(ct2_dir), device="cpu", intra_threads=threads, inter_threads=1
    )
    vocabulary = json.loads((ct2_dir / "vocabulary.json").read_text(encoding="utf-8"))
    ids = {piece: i for i, piece in enumerate(vocabulary)}
    prompts = [[vocabulary[i] for i in p] for p in json.loads(prompts_json.read_text())]
    batches = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
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
