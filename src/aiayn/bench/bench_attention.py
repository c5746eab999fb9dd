"""MultiHeadAttention forward+backward: aiayn vs torch.nn.MultiheadAttention, same weights and shapes.

B=8, d_model=512, 8 heads, float32, self-attention, T=256 and T=1024. The peer runs its fastest
configuration (need_weights=False, so it takes SDPA).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from aiayn.attention import MultiHeadAttention

from .harness import compare, machine_line, write_section


def _copy(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())


def _time_one(T: int, batch: int, d_model: int, heads: int, repeats: int, causal: bool) -> dict:
    ours = MultiHeadAttention(d_model, heads)
    ref = nn.MultiheadAttention(d_model, heads, batch_first=True)
    _copy(ours, ref)
    x = torch.randn(batch, T, d_model, requires_grad=True)
    mask = ~torch.ones(T, T, dtype=torch.bool).tril() if causal else None  # torch: True = blocked

    def step_ours():
        out, _ = ours(x, is_causal=causal)
        out.sum().backward()

    def step_ref():
        out, _ = ref(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)
        out.sum().backward()

    timing = compare({"aiayn": step_ours, "torch": step_ref}, repeats=repeats)
    ratio = timing["torch"].median / timing["aiayn"].median
    return {"T": T, "aiayn": timing["aiayn"], "torch": timing["torch"], "speedup": ratio}


def run(lengths=(256, 1024), batch=8, d_model=512, heads=8, repeats=10, causal=False) -> list[dict]:
    return [_time_one(T, batch, d_model, heads, repeats, causal) for T in lengths]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    rows = run(repeats=args.repeats)
    lines = [
        "B=8, d_model=512, 8 heads, float32, self-attention, forward+backward; median (min–max) of "
        f"{args.repeats} interleaved repetitions. Speed-up = torch time ÷ aiayn time (≥ 1.0 is the goal).",
        "",
        f"Machine: {machine_line()}",
        "",
        "| T | aiayn | nn.MultiheadAttention | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['aiayn'].fmt()} | {r['torch'].fmt()} | {r['speedup']:.2f}× |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("MultiHeadAttention forward+backward", text)


if __name__ == "__main__":
    main()
