"""A Marian folder as Hugging Face really writes it: no tokenizer.json, but SentencePiece.

`MarianTokenizer.save_pretrained` writes `source.spm`, `target.spm`, `vocab.json` and
`tokenizer_config.json`. Each test trains two tiny SentencePiece models here (one per side), numbers
their pieces in a Marian-ordered `vocab.json` (`</s>=0 <unk>=1`, `<pad>` last, a few target pieces
left out so they read as `<unk>`), and saves that with a tiny random `MarianMTModel`. Then: aiayn's
token ids equal `MarianTokenizer`'s on both sides, the imported model's logits equal Marian's, it
translates and fine-tunes, and its export is a folder `MarianTokenizer` and `MarianMTModel` read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from reference import tiny_marian

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
]

SOURCE = ["le chat dort sur le tapis", "le chien mange un os", "un oiseau chante dans l'arbre",
          "le chat et le chien sont amis", "nous aimons la petite maison rouge"] * 3  # fmt: skip
TARGET = ["the cat sleeps on the mat", "the dog eats a bone", "a bird sings in the tree",
          "the cat and the dog are friends", "we like the small red house"] * 3  # fmt: skip
PAIRS = list(zip(SOURCE, TARGET))
#: Sentences to compare on: seen words, unseen ones, a character no model knows, a language code.
PROBES = ["le chat mange", "the dog sleeps on a red mat", "un zèbre inconnu ж!", ">>fr<< le chien",
          "  spaces   and, punctuation.  "]  # fmt: skip
LEFT_OUT = 3  # target pieces vocab.json lacks: MarianTokenizer (and aiayn) read them as <unk>


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _train_spm(prefix: Path, lines: list[str], size: int) -> list[str]:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=size,
        model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    model = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    return [model.id_to_piece(i) for i in range(model.get_piece_size())]


def _marian_folder(folder: Path, work: Path, one_model: bool = False) -> tuple:
    """A saved MarianMTModel + MarianTokenizer, as `save_pretrained` writes them (no tokenizer.json);
    ``one_model``: one SentencePiece model for both sides."""
    work.mkdir()
    source_pieces = _train_spm(work / "source", SOURCE + TARGET if one_model else SOURCE, 40)
    if one_model:
        (work / "target.model").write_bytes((work / "source.model").read_bytes())
    target_pieces = source_pieces if one_model else _train_spm(work / "target", TARGET, 40)
    own = {"<unk>", "<s>", "</s>"}
    pieces = dict.fromkeys(p for p in source_pieces + target_pieces[:-LEFT_OUT] if p not in own)
    vocab = {"</s>": 0, "<unk>": 1, ">>fr<<": 2}
    vocab.update({p: i for i, p in enumerate(pieces, start=len(vocab))})
    vocab["<pad>"] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = transformers.MarianTokenizer(
        str(work / "source.model"), str(work / "target.model"), str(work / "vocab.json")
    )
    hf = tiny_marian(len(vocab), vocab["<pad>"], dropout=0.0, attention_dropout=0.0)
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert not (folder / "tokenizer.json").exists()
    assert (folder / "source.spm").is_file() and (folder / "target.spm").is_file()
    return hf, transformers.MarianTokenizer.from_pretrained(folder)


def _run(args: list[str], capsys) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _theirs(tokenizer, ids: list[int]) -> list[int]:
    return [tokenizer.order[i] for i in ids]


def _marian_logits(hf, src: list[int], tgt: list[int]) -> torch.Tensor:
    start = hf.config.decoder_start_token_id
    with torch.no_grad():
        return hf(
            input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([[start, *tgt]])
        ).logits


def _aiayn_logits(model, src: list[int], tgt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([src + [2]]), torch.tensor([[1, *tgt]]))


def test_token_ids_equal_marian_tokenizers_on_both_sides(tmp_path, capsys):
    from aiayn.tasks.translation import Translator

    hf_dir, imported = tmp_path / "hf", tmp_path / "imported"
    _, hf_tok = _marian_folder(hf_dir, tmp_path / "spm")
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    translator = Translator.load(imported)
    src_tok, tgt_tok = translator.src_tok, translator.tgt_tok
    assert src_tok is not tgt_tok  # two SentencePiece models, one vocab.json
    unknown = 0
    for text in PROBES + TARGET[:5]:
        ours = src_tok.encode(text)
        assert _theirs(src_tok, ours) + [hf_tok.eos_token_id] == hf_tok(text).input_ids, text
        target = tgt_tok.encode(text)
        assert _theirs(tgt_tok, target) + [hf_tok.eos_token_id] == (
            hf_tok(text_target=text).input_ids
        ), text
        unknown += target.count(tgt_tok.unk_id)
        assert src_tok.decode(ours) == hf_tok.decode(
            hf_tok(text).input_ids, skip_special_tokens=True
        )
    assert unknown > 0  # the pieces vocab.json lacks were met, and read as <unk> by both
    assert "ж!" in src_tok.unknown_spans("un zèbre ж!")  # what a warning about them names
    from aiayn.decoding import unknown_pieces

    assert "ж!" in unknown_pieces(src_tok, "un zèbre ж!")  # the warnings go through this


def test_import_translate_fine_tune_and_export(tmp_path, capsys):
    from aiayn.interop.hf_export import marian_rows
    from aiayn.tasks.translation import Translator

    hf_dir, imported, run, exported = (tmp_path / n for n in ("hf", "imported", "run", "out"))
    hf, hf_tok = _marian_folder(hf_dir, tmp_path / "spm")
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    translator = Translator.load(imported)
    rows = marian_rows(translator.src_tok.order)
    source, target = "le chat mange", "the cat eats"
    src, tgt = translator.src_tok.encode(source), translator.tgt_tok.encode(target)
    ours = _aiayn_logits(translator.model, src, tgt)
    marian_src = hf_tok(source).input_ids
    marian_tgt = hf_tok(text_target=target).input_ids[:-1]  # without </s>
    expected = _marian_logits(hf, marian_src, marian_tgt)
    torch.testing.assert_close(ours[..., rows], expected, atol=1e-4, rtol=1e-4)
    _run(["translate", "--model", str(imported), "--max-len", "5", source], capsys)

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    _run(["train", "translate", "--train", str(tsv), "--valid", str(tsv), "--init-from",
          str(hf_dir), "--out", str(run), "--batch-tokens", "128", "--max-steps", "2",
          "--eval-every", "2", "--no-progress", "--device", "cpu", "--seed", "0"], capsys)  # fmt: skip
    tuned = Translator.load(run)
    assert tuned.src_tok.order == translator.src_tok.order
    before, after = translator.model.state_dict(), tuned.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the weights moved
    assert tuned.src_tok.encode(source) == src and tuned.tgt_tok.encode(target) == tgt

    _run(["export", str(run), "--to", "hf", "--out", str(exported)], capsys)
    assert not (exported / "tokenizer.json").exists()
    back_tok = transformers.AutoTokenizer.from_pretrained(exported)
    assert isinstance(back_tok, transformers.MarianTokenizer)
    for text in PROBES:
        assert back_tok(text).input_ids == hf_tok(text).input_ids
        assert back_tok(text_target=text).input_ids == hf_tok(text_target=text).input_ids
    back = transformers.MarianMTModel.from_pretrained(exported, local_files_only=True).eval()
    assert back.config.vocab_size == hf.config.vocab_size
    theirs = _marian_logits(back, marian_src, marian_tgt)
    ours = _aiayn_logits(tuned.model, src, tgt)
    torch.testing.assert_close(theirs, ours[..., rows], atol=1e-4, rtol=1e-4)


def test_one_sentencepiece_model_for_both_sides_is_one_tokenizer(tmp_path, capsys):
    from aiayn.tasks.translation import Translator

    _, hf_tok = _marian_folder(tmp_path / "hf", tmp_path / "spm", one_model=True)
    _run(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "imported")], capsys)
    translator = Translator.load(tmp_path / "imported")
    assert translator.src_tok is translator.tgt_tok
    ids = translator.src_tok.encode(TARGET[0])
    assert _theirs(translator.src_tok, ids) + [0] == hf_tok(text_target=TARGET[0]).input_ids


def test_without_sentencepiece_the_folder_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    _marian_folder(tmp_path / "hf", tmp_path / "spm")
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece: ImportError
    capsys.readouterr()
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install sentencepiece" in err
    assert not (tmp_path / "out").exists()


def test_a_missing_vocab_json_is_named(tmp_path, capsys):
    _marian_folder(tmp_path / "hf", tmp_path / "spm")
    (tmp_path / "hf" / "vocab.json").unlink()
    capsys.readouterr()
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing vocab.json" in err
