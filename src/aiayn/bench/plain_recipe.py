"""The peer of the robustness suite: a plain ``torch.nn.Transformer`` recipe, as tutorials write it.

What a user would otherwise copy from PyTorch's "Language Translation with nn.Transformer" tutorial,
with one improvement that makes it a fair peer on any corpus: one joint byte-level BPE vocabulary of
1,000 pieces (Hugging Face ``tokenizers``) instead of a word vocabulary (words never seen in training
are then still spelled out). Everything else is the tutorial's: ``nn.Transformer`` with 3+3 layers,
d_model 512, 8 heads, FFN 512, dropout 0.1, scaled embeddings + sinusoidal positions, Xavier
initialisation, batches of 128 sentence pairs, Adam(lr 1e-4, betas (0.9, 0.98), eps 1e-9) at a fixed
learning rate, plain cross-entropy, greedy decoding. Decoding may run to the longest training target
plus 5 tokens (the tutorial's "source length + 5" would cut off targets longer than their sources).
It trains until the wall-clock budget is spent.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F
from tokenizers import ByteLevelBPETokenizer
from torch import nn

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]


class PlainSeq2Seq(nn.Module):
    def __init__(self, vocab: int, d: int = 512, heads: int = 8) -> None:
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
        self.src_emb, self.tgt_emb = nn.Embedding(vocab, d), nn.Embedding(vocab, d)
        self.generator = nn.Linear(d, vocab)
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
def greedy(model: PlainSeq2Seq, src_rows: list[list[int]], max_len: int) -> list[list[int]]:
    src = _pad(src_rows)
    memory = model.encode(src)
    ys = torch.full((len(src_rows), 1), BOS)
    done = torch.zeros(len(src_rows), dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.decode(ys, memory, src)[:, -1].argmax(-1)
        nxt = torch.where(done, PAD, nxt)
        ys = torch.cat([ys, nxt[:, None]], 1)
        done |= nxt == EOS
        if done.all():
            break
    return [[t for t in row if t not in (BOS, PAD, EOS)] for row in ys.tolist()]


def train_and_translate(
    train: list[tuple[str, str]], sources: list[str], minutes: float, seed: int = 0
) -> dict:
    """Train on ``train`` for ``minutes`` of wall-clock time, then translate ``sources``."""
    torch.manual_seed(seed)
    random.seed(seed)
    start = time.monotonic()
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        [s for s, _ in train] + [t for _, t in train], vocab_size=1000, special_tokens=SPECIALS
    )

    def ids(text: str) -> list[int]:
        return tok.encode(text).ids

    data = [([BOS, *ids(s), EOS], [BOS, *ids(t), EOS]) for s, t in train]
    max_len = max(len(t) for _, t in data) + 5
    model = PlainSeq2Seq(tok.get_vocab_size())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    steps, epochs = 0, 0
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
            if time.monotonic() - start >= minutes * 60:
                break
        else:
            epochs += 1
    train_s = time.monotonic() - start
    model.eval()
    rows = [[BOS, *ids(s), EOS] for s in sources]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    hyps = [""] * len(rows)
    for i in range(0, len(order), 64):
        chunk = order[i : i + 64]
        for j, out in zip(chunk, greedy(model, [rows[j] for j in chunk], max_len)):
            hyps[j] = tok.decode(out).strip()
    return {
        "system": "plain nn.Transformer recipe",
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "epochs": epochs,
        "train_seconds": round(train_s, 1),
        "vocab": tok.get_vocab_size(),
        "hypotheses": hyps,
    }
