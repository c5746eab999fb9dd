"""Encoder-decoder speed, side by side in one process.

1. Translation throughput (sentences/s), greedy and beam 4, batch 1 and 8: aiayn vs Hugging Face
   ``MarianMTModel.generate`` holding the *same weights* (a Marian-shaped aiayn model trained on the
   built-in zh-en corpus, exported with :func:`aiayn.interop.marian.to_hf_marian`), on the same
   held-out sentences; the outputs are checked token for token.
2. Training step (forward + backward + Adam), target tokens/s: aiayn ``Transformer`` vs
   ``torch.nn.Transformer`` with the same embeddings and output layer vs HF ``MarianMTModel``, same
   dimensions, same real batches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from aiayn.data.batching import collate_seq2seq
from aiayn.decoding import beam_search, greedy_search
from aiayn.interop.marian import to_hf_marian
from aiayn.masks import make_causal_mask
from aiayn.models.seq2seq import Transformer, TransformerConfig
from aiayn.tasks.translation import Translator, load_pairs, train_translation

from .harness import ROOT, compare, machine_line, write_section

MARIAN_SHAPE = [
    "positional=sinusoidal_halves",
    "final_norm=false",
    "activation=silu",
    "output_bias=true",
]


def trained_marian_shaped(directory: Path, steps: int) -> Translator:
    """A zh-en model Marian can represent, trained once and reused."""
    if not (directory / "model.safetensors").exists():
        train_translation(
            "builtin:zh-en",
            directory,
            preset="demo",
            overrides=MARIAN_SHAPE,
            max_steps=steps,
            progress=False,
        )
    return Translator.load(directory)


def _strip(row: list[int], eos: int = 2) -> list[int]:
    out = []
    for tok in row[1:]:
        if tok == eos:
            break
        out.append(tok)
    return out


def translation_throughput(translator: Translator, n: int, repeats: int) -> list[dict]:
    hf = to_hf_marian(translator.model)
    sources = [s for s, _ in load_pairs("builtin:zh-en", "test")[:n]]
    ids = [translator.src_tok.encode(s) for s in sources]
    model = translator.model
    rows = []
    for batch_size in (1, 8):
        batches = [
            collate_seq2seq([(x, []) for x in ids[i : i + batch_size]])
            for i in range(0, len(ids), batch_size)
        ]
        for beam in (1, 4):

            def ours(batches=batches, beam=beam):
                out = []
                for b in batches:
                    if beam == 1:
                        out += greedy_search(model, b.src, b.src_key_mask)
                    else:
                        hyps = beam_search(model, b.src, b.src_key_mask, beam_size=beam, alpha=0.0)
                        out += [h[0].tokens for h in hyps]
                return out

            def theirs(batches=batches, beam=beam):
                out = []
                with torch.inference_mode():
                    for b in batches:
                        gen = hf.generate(
                            input_ids=b.src,
                            attention_mask=b.src_key_mask.long(),
                            num_beams=beam,
                            do_sample=False,
                            max_new_tokens=b.src.shape[1] + 50,
                            length_penalty=0.0,
                        )
                        out += [_strip(r) for r in gen.tolist()]
                return out

            same = sum(a == b for a, b in zip(ours(), theirs())) / len(ids)
            timing = compare({"aiayn": ours, "hf": theirs}, repeats=repeats, warmup=1)
            rows.append(
                {
                    "batch": batch_size,
                    "beam": beam,
                    "aiayn": len(ids) / timing["aiayn"].median,
                    "hf": len(ids) / timing["hf"].median,
                    "ratio": timing["hf"].median / timing["aiayn"].median,
                    "identical": same,
                }
            )
    return rows


def training_throughput(d_model: int, layers: int, vocab: int, repeats: int) -> dict:
    """Target tokens/s of one optimizer step on real zh-en-shaped batches, three implementations."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    heads, d_ff = max(1, d_model // 64), 4 * d_model
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(160):  # ~ one 4k-token batch of 12-token sentences
        n, m = (
            int(torch.randint(6, 16, (1,), generator=g)),
            int(torch.randint(6, 16, (1,), generator=g)),
        )
        pairs.append(
            (
                torch.randint(4, vocab, (n,), generator=g).tolist(),
                torch.randint(4, vocab, (m,), generator=g).tolist(),
            )
        )
    batch = collate_seq2seq(pairs)
    tokens = batch.num_tgt_tokens

    config = TransformerConfig(
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        d_model=d_model,
        num_heads=heads,
        d_ff=d_ff,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dropout=0.0,
    )
    ours = Transformer(config)

    class TorchSeq2Seq(nn.Module):
        """torch.nn.Transformer with the same embedding, positions and tied output layer."""

        def __init__(self) -> None:
            super().__init__()
            self.src_emb = nn.Embedding(vocab, d_model)
            self.tgt_emb = nn.Embedding(vocab, d_model)
            self.core = nn.Transformer(
                d_model, heads, layers, layers, d_ff, dropout=0.0, batch_first=True
            )
            self.register_buffer("pe", ours.src_pos.table[:256].clone())

        def forward(self, src, tgt, src_pad, causal):
            s = self.src_emb(src) * d_model**0.5 + self.pe[: src.shape[1]]
            t = self.tgt_emb(tgt) * d_model**0.5 + self.pe[: tgt.shape[1]]
            h = self.core(
                s,
                t,
                tgt_mask=causal,
                src_key_padding_mask=src_pad,
                memory_key_padding_mask=src_pad,
                tgt_is_causal=True,
            )
            return h @ self.tgt_emb.weight.T

    ref = TorchSeq2Seq()
    marian = MarianMTModel(
        MarianConfig(
            vocab_size=vocab,
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            activation_function="relu",
            scale_embedding=True,
            pad_token_id=0,
            share_encoder_decoder_embeddings=False,
            decoder_vocab_size=vocab,
        )
    )
    causal = ~make_causal_mask(batch.tgt_in.shape[1])
    ce = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    optims = {
        name: torch.optim.Adam(m.parameters(), lr=1e-4)
        for name, m in (("aiayn", ours), ("torch", ref), ("hf", marian))
    }

    def step(name, logits_fn, targets=batch.tgt_out):
        def run():
            optims[name].zero_grad(set_to_none=True)
            logits = logits_fn()
            ce(logits.reshape(-1, vocab), targets.reshape(-1)).backward()
            optims[name].step()

        return run

    real = batch.tgt_key_mask
    fns = {
        # As aiayn's trainer does (seq2seq_loss): logits only at real target tokens.
        "aiayn": step(
            "aiayn",
            lambda: ours.logits_at(batch.src, batch.tgt_in, batch.src_key_mask, where=real),
            batch.tgt_out[real],
        ),
        "torch": step("torch", lambda: ref(batch.src, batch.tgt_in, ~batch.src_key_mask, causal)),
        "hf": step(
            "hf",
            lambda: (
                marian(
                    input_ids=batch.src,
                    attention_mask=batch.src_key_mask.long(),
                    decoder_input_ids=batch.tgt_in,
                ).logits
            ),
        ),
    }
    timing = compare(fns, repeats=repeats, warmup=2)
    return {name: tokens / t.median for name, t in timing.items()} | {
        "padding": 1 - tokens / batch.tgt_out.numel(),
        "shape": f"d_model={d_model}, {layers}+{layers} layers, {heads} heads, d_ff={d_ff}, "
        f"vocab {vocab}, {len(pairs)} sentence pairs ({tokens} target tokens) per step",
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences and repetitions")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    n, repeats = (40, 3) if args.quick else (200, 5)
    start = time.perf_counter()
    # --quick trains a shorter model (kept apart) so a fresh clone stays within its time.
    steps, name = (150, "marian-zh-en-quick") if args.quick else (400, "marian-zh-en")
    translator = trained_marian_shaped(ROOT / "runs" / "bench" / name, steps=steps)
    rows = translation_throughput(translator, n, repeats)
    lines = [
        f"Machine: {machine_line()}",
        "",
        f"{n} held-out zh-en sentences; the same weights in both (a Marian-shaped aiayn model "
        "exported to `MarianMTModel`); no length penalty on either side (alpha=0 / "
        "length_penalty=0), so the outputs can be compared token for token. Sentences/s, median of "
        f"{repeats} interleaved runs; ratio = aiayn ÷ HF throughput.",
        "",
        "| batch | decoding | aiayn sent/s | HF generate sent/s | ratio | identical outputs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        dec = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(
            f"| {r['batch']} | {dec} | {r['aiayn']:.1f} | {r['hf']:.1f} | "
            f"{r['ratio']:.2f}× | {100 * r['identical']:.0f}% |"
        )
    text = "\n".join(lines)
    print(text)
    train = training_throughput(256, 3, 8000, repeats)
    tlines = [
        f"Machine: {machine_line()}",
        "",
        f"{train['shape']}; forward + backward + Adam step, float32, dropout 0; target tokens/s, "
        f"median of {repeats} interleaved steps. aiayn computes the output layer and loss only "
        "at the real target tokens, as its trainer does; the peers compute them at every padded "
        f"position ({train['padding']:.0%} of this batch is padding; length-bucketed training "
        "batches have less, so part of aiayn's lead here shrinks in real training).",
        "",
        "| implementation | tokens/s | aiayn ÷ it |",
        "| --- | --- | --- |",
        f"| aiayn Transformer | {train['aiayn']:.0f} | 1.00× |",
        f"| torch.nn.Transformer (+ same embeddings/output) | {train['torch']:.0f} | "
        f"{train['aiayn'] / train['torch']:.2f}× |",
        f"| HF MarianMTModel | {train['hf']:.0f} | {train['aiayn'] / train['hf']:.2f}× |",
    ]
    ttext = "\n".join(tlines)
    print(ttext)
    print(f"({time.perf_counter() - start:.0f} s)")
    if not args.no_write:
        write_section("Translation throughput vs Hugging Face Marian", text)
        write_section("Encoder-decoder training step", ttext)


if __name__ == "__main__":
    main()
