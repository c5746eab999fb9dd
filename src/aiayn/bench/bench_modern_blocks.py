"""What the post-2017 blocks cost and save: grouped-query attention in decoding, rotary/ALiBi in training.

1. GQA decoding: a GPT of 6 layers × 384 (6 heads), batch 8, a 16-token prompt, 240 new tokens (greedy,
   KV cache), with 6 KV heads (full multi-head attention), 2 (grouped-query) and 1 (multi-query).
   Tokens/s and the KV cache's size at the end (2 · layers · batch · KV heads · length · Dh floats,
   what the cache holds: only the KV heads are stored).
2. Positions in training: forward + backward + AdamW step of the same GPT shape (4 layers × 256, batch
   8 × 256 tokens) with sinusoidal, learned, rotary and ALiBi positions; milliseconds a step.

Each configuration is timed interleaved with the others in one process (same engine, same thread pool),
median of the repeats. Run: ``python -m aiayn.bench.bench_modern_blocks``.
"""

from __future__ import annotations

import argparse

import torch

from aiayn.decoding import generate
from aiayn.models.gpt import GPT, GPTConfig

from .harness import compare, machine_line, write_section

SECTION = "Modern blocks: grouped-query decoding, rotary/ALiBi training cost"


def _gpt(**fields) -> GPT:
    torch.manual_seed(0)
    base = dict(vocab_size=256, max_len=512, dropout=0.0, attention_dropout=0.0)
    return GPT(GPTConfig(**{**base, **fields})).eval()


def gqa_rows(new_tokens: int = 240, batch: int = 8, repeats: int = 3) -> list[dict]:
    shape = dict(d_model=384, num_heads=6, d_ff=1536, num_layers=6)
    prompts = [[(7 * i + j) % 256 for j in range(16)] for i in range(batch)]
    models = {kv: _gpt(**shape, num_kv_heads=kv) for kv in (6, 2, 1)}

    def run(model: GPT):
        with torch.inference_mode():
            return generate(model, prompts, new_tokens, top_k=1)  # greedy

    timings = compare({kv: (lambda m=m: run(m)) for kv, m in models.items()}, repeats=repeats)
    rows = []
    length, head_dim = 16 + new_tokens, shape["d_model"] // shape["num_heads"]
    for kv, timing in timings.items():
        cache_floats = 2 * shape["num_layers"] * batch * kv * length * head_dim
        rows.append(
            {
                "kv_heads": kv,
                "tokens_per_s": batch * new_tokens / timing.median,
                "cache_mib": cache_floats * 4 / 2**20,
            }
        )
    return rows


def position_rows(repeats: int = 10) -> list[dict]:
    shape = dict(d_model=256, num_heads=4, d_ff=1024, num_layers=4)
    x = torch.randint(0, 256, (8, 257), generator=torch.Generator().manual_seed(0))
    steps = {}
    for kind in ("sinusoidal", "learned", "rotary", "alibi"):
        model = _gpt(**shape, positional=kind).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, optimizer=optimizer):
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[kind] = step
    timings = compare(steps, repeats=repeats)
    base = timings["sinusoidal"].median
    return [
        {"positional": k, "ms": t.median * 1e3, "vs_sinusoidal": t.median / base}
        for k, t in timings.items()
    ]


def section(gqa: list[dict], positions: list[dict], new_tokens: int) -> str:
    full = next(r for r in gqa if r["kv_heads"] == 6)
    lines = [
        f"Machine: {machine_line()}",
        "",
        "Greedy decoding with the KV cache, GPT 6 × 384 (6 heads), batch 8, 16-token prompts, "
        f"{new_tokens} new tokens (fewer KV heads also means smaller key/value projections):",
        "",
        "| KV heads | tokens/s | × full MHA | KV cache at the end | × full MHA |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in gqa:
        lines.append(
            f"| {r['kv_heads']} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / full['tokens_per_s']:.2f} | {r['cache_mib']:.1f} MiB | "
            f"{r['cache_mib'] / full['cache_mib']:.2f} |"
        )
    lines += [
        "",
        "Training step (forward + backward + AdamW), GPT 4 × 256, batch 8 × 256 tokens:",
        "",
        "| positions | ms a step | × sinusoidal |",
        "| --- | ---: | ---: |",
    ]
    for r in positions:
        lines.append(f"| {r['positional']} | {r['ms']:.1f} | {r['vs_sinusoidal']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    new_tokens = 48 if args.quick else 240
    gqa = gqa_rows(new_tokens=new_tokens, repeats=2 if args.quick else 3)
    positions = position_rows(repeats=3 if args.quick else 10)
    body = section(gqa, positions, new_tokens)
    print(body)
    if not args.no_write:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
