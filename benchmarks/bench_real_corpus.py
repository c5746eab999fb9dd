"""Real text, fixed CPU budget: aiayn's defaults vs a tutorial-style ``torch.nn.Transformer``.

The corpus is ``builtin:bible-fr-en`` (:mod:`aiayn.data.bible`): about 11,500 French-English verse
pairs of at most 20 words for training, 1,000 unseen verses for test. Both systems get the same
wall-clock training budget (8 minutes by default) on the same machine, one after the other, and are
scored with sacreBLEU (BLEU and chrF) on the same test verses.

* aiayn: ``aiayn train translate --train builtin:bible-fr-en --max-minutes 8`` with no preset and no
  option, so :func:`aiayn.translation.auto_plan` picks the model, batch, vocabulary and schedule
  (its periodic validation runs inside the budget); then ``aiayn evaluate`` with beam 4 (and greedy).
* the peer, written the way PyTorch's "Language Translation with nn.Transformer" tutorial does it:
  word-level vocabularies of every training word (the tutorial's spaCy tokenisation stands in for a
  word/punctuation regex here), ``nn.Transformer`` with 3+3 layers, d_model 512, 8 heads, FFN 512,
  dropout 0.1, scaled embeddings + sinusoidal positions, Xavier initialisation, batches of 128
  sentences, Adam(lr 1e-4, betas (0.9, 0.98), eps 1e-9) with a constant learning rate, plain
  cross-entropy, greedy decoding up to source length + 5 tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aiayn.metrics import corpus_bleu_chrf
from aiayn.translation import Translator, evaluate_translation, load_pairs, train_translation
from benchmarks.harness import ROOT, machine_line, write_section

CORPUS = "builtin:bible-fr-en"
UNK, PAD, BOS, EOS = 0, 1, 2, 3  # the tutorial's special-token indices
RESULTS = ROOT / "runs" / "bench" / "real-corpus"
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


# ---- the tutorial-style peer ---------------------------------------------------------------------


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    return re.sub(r" ([.,;:!?)\]»])", r"\1", text)


class Vocab:
    def __init__(self, sentences: list[str]) -> None:
        counts = Counter(w for s in sentences for w in words(s))
        self.itos = ["<unk>", "<pad>", "<bos>", "<eos>"] + sorted(counts)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def encode(self, text: str) -> list[int]:
        return [BOS] + [self.stoi.get(w, UNK) for w in words(text)] + [EOS]

    def decode(self, ids: list[int]) -> str:
        return detokenize([self.itos[i] for i in ids if i not in (BOS, EOS, PAD)])


class TutorialSeq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, d: int = 512, heads: int = 8) -> None:
        super().__init__()
        self.d = d
        self.transformer = nn.Transformer(
            d_model=d,
            nhead=heads,
            num_encoder_layers=3,
            num_decoder_layers=3,
            dim_feedforward=512,
            dropout=0.1,
            batch_first=True,
        )
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, d), nn.Embedding(tgt_vocab, d)
        self.generator = nn.Linear(d, tgt_vocab)
        self.dropout = nn.Dropout(0.1)
        pos = torch.arange(5000).unsqueeze(1)
        div = torch.exp(-torch.arange(0, d, 2) * math.log(10000) / d)
        pe = torch.zeros(5000, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(table(ids) * math.sqrt(self.d) + self.pe[: ids.shape[1]])

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.transformer.encoder(
            self.embed(self.src_emb, src), src_key_padding_mask=src == PAD
        )

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        out = self.transformer.decoder(
            self.embed(self.tgt_emb, tgt),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=tgt == PAD,
            memory_key_padding_mask=src == PAD,
        )
        return self.generator(out)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt, self.encode(src), src)


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


@torch.no_grad()
def greedy(model: TutorialSeq2Seq, src_rows: list[list[int]]) -> list[list[int]]:
    src = _pad(src_rows)
    memory = model.encode(src)
    ys = torch.full((len(src_rows), 1), BOS)
    done = torch.zeros(len(src_rows), dtype=torch.bool)
    for _ in range(src.shape[1] + 5 - 1):
        nxt = model.decode(ys, memory, src)[:, -1].argmax(-1)
        nxt = torch.where(done, PAD, nxt)
        ys = torch.cat([ys, nxt[:, None]], 1)
        done |= nxt == EOS
        if done.all():
            break
    return [[t for t in row if t not in (BOS, PAD)] for row in ys.tolist()]


def tutorial_run(minutes: float, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    train, test = load_pairs(CORPUS, "train"), load_pairs(CORPUS, "test")
    src_vocab, tgt_vocab = Vocab([s for s, _ in train]), Vocab([t for _, t in train])
    data = [(src_vocab.encode(s), tgt_vocab.encode(t)) for s, t in train]
    model = TutorialSeq2Seq(len(src_vocab.itos), len(tgt_vocab.itos))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    start, steps, epochs, losses = time.monotonic(), 0, 0, []
    while time.monotonic() - start < minutes * 60:
        order = list(range(len(data)))
        random.shuffle(order)
        model.train()
        for i in range(0, len(order), 128):
            batch = [data[j] for j in order[i : i + 128]]
            src, tgt = _pad([s for s, _ in batch]), _pad([t for _, t in batch])
            logits = model(src, tgt[:, :-1])
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(float(loss))
            if time.monotonic() - start >= minutes * 60:
                break
        else:
            epochs += 1
    train_s = time.monotonic() - start
    model.eval()
    hyps: list[str] = []
    sources = [src_vocab.encode(s) for s, _ in test]
    for i in range(0, len(sources), 64):
        hyps += [tgt_vocab.decode(r) for r in greedy(model, sources[i : i + 64])]
    scores = corpus_bleu_chrf(hyps, [t for _, t in test])
    return {
        "name": "tutorial nn.Transformer (3+3 × 512, word vocab, Adam 1e-4, batch 128, greedy)",
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "epochs": epochs,
        "train_s": train_s,
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "samples": hyps[:5],
    }


# ---- aiayn ---------------------------------------------------------------------------------------


def aiayn_run(out: Path, minutes: float) -> dict:
    summary = train_translation(CORPUS, out, max_minutes=minutes, progress=False)
    beam = evaluate_translation(out, CORPUS, beam=4)
    greedy_scores = evaluate_translation(out, CORPUS, beam=1)
    test = load_pairs(CORPUS, "test")
    samples = Translator.load(out).translate([s for s, _ in test[:5]], beam=4)
    return {
        "name": "aiayn defaults (auto_plan), beam 4",
        "params": summary.get("parameters"),
        "steps": summary.get("steps"),
        "train_s": summary.get("train_seconds", summary.get("seconds")),
        "summary": summary,
        "bleu": beam["bleu"],
        "chrf": beam["chrf"],
        "greedy_bleu": greedy_scores["bleu"],
        "greedy_chrf": greedy_scores["chrf"],
        "samples": samples,
    }


def section(runs: dict[str, dict], minutes: float) -> str:
    test = load_pairs(CORPUS, "test")
    lines = [
        f"Corpus `{CORPUS}` (Louis Segond 1910 → World English Bible, verses of ≤ 20 words): "
        f"{len(load_pairs(CORPUS, 'train')):,} training pairs, {len(test):,} test pairs never seen "
        f"in training. Training budget {minutes:g} minutes of wall-clock time each, run one after "
        "the other on an otherwise idle machine; sacreBLEU on the detokenised test output.",
        "",
        f"Machine: {machine_line()}",
        "",
        "| system | parameters | steps | training time | test BLEU | test chrF |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs.values():
        params = f"{r['params'] / 1e6:.1f} M" if r.get("params") else "—"
        train_s = f"{r['train_s'] / 60:.1f} min" if r.get("train_s") else "—"
        lines.append(
            f"| {r['name']} | {params} | {r['steps']} | {train_s} | **{r['bleu']:.1f}** | "
            f"{r['chrf']:.1f} |"
        )
        if "greedy_bleu" in r:
            lines.append(
                f"| aiayn, same model, greedy | | | | {r['greedy_bleu']:.1f} | "
                f"{r['greedy_chrf']:.1f} |"
            )
    lines += ["", "First test verses:", ""]
    for i, (src, ref) in enumerate(test[:3]):
        lines.append(f"- source: {src}\n  - reference: {ref}")
        for r in runs.values():
            lines.append(f"  - {r['name'].split(' (')[0].split(',')[0]}: {r['samples'][i]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument(
        "--only",
        choices=["aiayn", "tutorial"],
        help="run one system; the other's last result (from --results) goes in the table",
    )
    parser.add_argument("--out-dir", help="keep aiayn's model here (default: a temp dir)")
    parser.add_argument(
        "--results", default=str(RESULTS), help="folder of each system's last result (JSON)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--quick", action="store_true", help="skip (two 8-minute training runs)")
    args = parser.parse_args(argv)
    if args.quick:
        print("bench_real_corpus: skipped by --quick (it trains two models for 8 minutes each)")
        return
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="aiayn-bench-real-"))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    runners = {
        "aiayn": lambda: aiayn_run(out, args.minutes),
        "tutorial": lambda: tutorial_run(args.minutes),
    }
    runs: dict[str, dict] = {}
    for name, run in runners.items():
        saved = results / f"{name}.json"
        if args.only in (None, name):
            runs[name] = run()
            saved.write_text(json.dumps(runs[name], ensure_ascii=False, indent=1))
        elif saved.exists():
            runs[name] = json.loads(saved.read_text())
        print(name, runs.get(name), flush=True)
    text = section(runs, args.minutes)
    print(text)
    if not args.no_write:
        write_section(f"Translation on a real corpus in {args.minutes:g} minutes", text)


if __name__ == "__main__":
    main()
