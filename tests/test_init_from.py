"""Fine-tuning from pretrained weights, and `aiayn import` / `aiayn export`, for every train kind.

Each test builds a tiny Hugging Face model from a config (random weights, no hub access) with a
small tokenizer trained here and saved as `tokenizer.json`, then: imports it (logits equal to
Hugging Face's), fine-tunes it with `aiayn train ... --init-from` for a few steps (the weights move;
for GPT-2 the first step's loss is Hugging Face's loss on the same batch), and exports the result
(Hugging Face's logits of the exported folder equal aiayn's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.modeldir import load_model_dir
from reference import tiny_marian

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers  # noqa: E402
from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer  # noqa: E402
from tokenizers.trainers import BpeTrainer, UnigramTrainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "the cat sat on the mat",
    "the dog ate the bone",
    "a bird sang in the tree",
    "the cat and the dog are friends",
    "we like the small red house",
    "it rains in the city today",
] * 4
PAIRS = [("le chat dort", "the cat sleeps"), ("le chien mange", "the dog eats")] * 6


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _run(args: list[str], capsys) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("loss") is not None]


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


TRAIN_FLAGS = ["--max-steps", "3", "--log-every", "1", "--eval-every", "3", "--no-progress",
               "--device", "cpu", "--seed", "0"]  # fmt: skip


# ---- GPT-2 -> train lm -----------------------------------------------------------------------------


def _gpt2_folder(folder: Path) -> transformers.GPT2LMHeadModel:
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        SENTENCES, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"],
        show_progress=False,
    )  # fmt: skip
    eot = tok.token_to_id("<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return hf


def test_gpt2_import_fine_tune_export(tmp_path, capsys):
    from aiayn.data.lm_data import TokenWindows, encode_text, split_text
    from aiayn.tasks.lm import LanguageModel

    hf_dir, imported, run, exported = (tmp_path / n for n in ("hf", "imported", "run", "out"))
    hf = _gpt2_folder(hf_dir)
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    lm = LanguageModel.load(imported)
    ids = torch.tensor([lm.tokenizer.encode("the cat sat on the red mat")])
    own = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    assert ids.tolist()[0] == own.encode("the cat sat on the red mat").ids  # not renumbered
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
    _run(["generate", "--model", str(imported), "--prompt", "the", "--max-new-tokens", "4"], capsys)

    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    _run(["train", "lm", "--text", str(text), "--init-from", str(hf_dir), "--out", str(run),
          "--context", "16", "--batch-size", "4", *TRAIN_FLAGS], capsys)  # fmt: skip
    tuned = load_model_dir(run, expect="gpt")
    assert tuned.config == lm.model.config  # no other model size, no learned vocabulary
    assert _changed(tuned.model.state_dict(), lm.model.state_dict())
    # The first step's loss is Hugging Face's loss on the same batch, before any update.
    train_text, _ = split_text(text.read_text(encoding="utf-8"))
    windows = TokenWindows(encode_text(lm.tokenizer, train_text), 16, 4, seed=0)
    batch = next(windows.batches(0))
    with torch.no_grad():
        logits = hf(batch[:, :-1]).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    assert _records(run)[0]["loss"] == pytest.approx(float(expected), abs=1e-4)

    _run(["export", str(run), "--to", "hf", "--out", str(exported)], capsys)
    back = transformers.GPT2LMHeadModel.from_pretrained(exported, local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, tuned.model(ids), atol=1e-4, rtol=1e-4)
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    assert hf_tok("the cat sat on the red mat")["input_ids"] == ids.tolist()[0]


def test_gpt2_vocab_and_merges_files_are_read_without_tokenizer_json(tmp_path):
    from aiayn.interop.pretrained import load_initial

    _gpt2_folder(tmp_path)
    reference = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    reference.model.save(str(tmp_path))  # vocab.json + merges.txt, as GPT-2 ships them
    (tmp_path / "tokenizer.json").unlink()
    tokenizer = load_initial("gpt", tmp_path).tokenizer
    text = "the dog sang in the rain"
    assert tokenizer.encode(text) == reference.encode(text).ids
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_id == reference.token_to_id("<|endoftext|>")


def test_llama_import_and_export(tmp_path, capsys):
    """A Llama folder (read without transformers) keeps its own <unk>=0 <s>=1 </s>=2 ids."""
    from aiayn.tasks.lm import LanguageModel

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = BpeTrainer(
        vocab_size=80, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(SENTENCES, trainer)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )  # fmt: skip
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    _run(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "model")], capsys)
    lm = LanguageModel.load(tmp_path / "model")
    assert (lm.tokenizer.unk_id, lm.tokenizer.bos_id, lm.tokenizer.eos_id) == (0, 1, 2)
    ids = torch.tensor([lm.tokenizer.encode("the small dog sat in the tree")])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)
    _run(["export", str(tmp_path / "model"), "--to", "hf", "--out", str(tmp_path / "out")], capsys)
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(ids).logits, hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_an_aiayn_character_model_exports_and_imports_back(tmp_path, capsys):
    """A character tokenizer has no Hugging Face class: it is written as a word-level tokenizer of
    single characters, which transformers' AutoTokenizer reads and encodes the same way."""
    from aiayn.tasks.lm import LanguageModel

    text = tmp_path / "text.txt"
    text.write_text("the cat sat.\nthe dog ran!\n" * 40, encoding="utf-8")
    run, hf_dir, back = tmp_path / "run", tmp_path / "hf", tmp_path / "back"
    _run(["train", "lm", "--text", str(text), "--preset", "micro", "--out", str(run),
          "--max-steps", "1", "--no-progress", "--device", "cpu"], capsys)  # fmt: skip
    _run(["export", str(run), "--to", "hf", "--out", str(hf_dir)], capsys)
    lm = LanguageModel.load(run)
    sample = "the cat ran!\nthe  dog"
    ids = lm.tokenizer.encode(sample)
    assert transformers.AutoTokenizer.from_pretrained(hf_dir)(sample)["input_ids"] == ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    with torch.no_grad():
        expected = lm.model(torch.tensor([ids]))
        torch.testing.assert_close(hf(torch.tensor([ids])).logits, expected, atol=1e-4, rtol=1e-4)
    _run(["import", str(hf_dir), "--out", str(back)], capsys)
    again = LanguageModel.load(back).tokenizer
    assert again.encode(sample) == ids and again.decode(ids) == sample


# ---- Marian -> train translate ---------------------------------------------------------------------


def _marian_tokenizer() -> Tokenizer:
    """A SentencePiece-like unigram tokenizer with Marian's ids: </s>=0, <unk>=1, <pad> last."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(
        vocab_size=60, special_tokens=["</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator([s for pair in PAIRS for s in pair] + SENTENCES, trainer)
    tok.add_special_tokens(["<pad>"])
    return tok


def _marian_folder(folder: Path) -> tuple[transformers.MarianMTModel, Tokenizer]:
    tok = _marian_tokenizer()
    pad = tok.token_to_id("<pad>")
    hf = tiny_marian(
        tok.get_vocab_size(), pad, randomized=False, dropout=0.0, attention_dropout=0.0
    )
    hf.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return hf, tok


def _marian_logits(hf, tok: Tokenizer, source: str, target: str) -> torch.Tensor:
    pad = hf.config.pad_token_id
    src = torch.tensor([tok.encode(source).ids + [0]])  # + </s>
    tgt = torch.tensor([[pad] + tok.encode(target).ids])  # Marian starts from <pad>
    with torch.no_grad():
        return hf(input_ids=src, decoder_input_ids=tgt).logits


def _aiayn_logits(model, tokenizer, source: str, target: str) -> torch.Tensor:
    src = torch.tensor([tokenizer.encode(source) + [2]])  # + <eos>
    tgt = torch.tensor([[1] + tokenizer.encode(target)])  # <bos> + ...
    with torch.no_grad():
        return model(src, tgt)


def test_marian_import_fine_tune_export(tmp_path, capsys):
    from aiayn.interop.hf_export import marian_rows
    from aiayn.tasks.translation import Translator

    hf_dir, imported, run, exported = (tmp_path / n for n in ("hf", "imported", "run", "out"))
    hf, tok = _marian_folder(hf_dir)
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    translator = Translator.load(imported)
    order = translator.src_tok.order  # aiayn id -> Marian id: <pad> <bos>=<pad> </s> <unk> ...
    assert order[:4] == [hf.config.pad_token_id, hf.config.pad_token_id, 0, 1]
    rows = marian_rows(order)
    source, target = "le chat mange", "the cat eats"
    ours = _aiayn_logits(translator.model, translator.src_tok, source, target)
    expected = _marian_logits(hf, tok, source, target)
    torch.testing.assert_close(ours[..., rows], expected, atol=1e-4, rtol=1e-4)
    _run(["translate", "--model", str(imported), "--max-len", "5", source], capsys)

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    _run(["train", "translate", "--train", str(tsv), "--valid", str(tsv), "--init-from",
          str(hf_dir), "--out", str(run), "--batch-tokens", "128", *TRAIN_FLAGS], capsys)  # fmt: skip
    tuned = Translator.load(run)
    assert tuned.model.config == translator.model.config
    assert tuned.src_tok.order == order
    assert _changed(tuned.model.state_dict(), translator.model.state_dict())

    _run(["export", str(run), "--to", "hf", "--out", str(exported)], capsys)
    back = transformers.MarianMTModel.from_pretrained(exported, local_files_only=True).eval()
    assert back.config.vocab_size == hf.config.vocab_size  # Marian's own rows and ids again
    exported_tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    theirs = _marian_logits(back, exported_tok, source, target)
    ours = _aiayn_logits(tuned.model, tuned.src_tok, source, target)
    torch.testing.assert_close(theirs, ours[..., rows], atol=1e-4, rtol=1e-4)


def test_marian_folder_without_any_tokenizer_is_refused(tmp_path, capsys):
    # (A folder with Marian's SentencePiece files instead is read: tests/test_marian_spm.py.)
    _marian_folder(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").unlink()
    (tmp_path / "hf" / "source.spm").write_bytes(b"\x00")
    capsys.readouterr()
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no tokenizer.json" in err and "missing target.spm, vocab.json" in err


# ---- BERT -> train mlm -----------------------------------------------------------------------------


def _bert_folder(folder: Path) -> transformers.BertForMaskedLM:
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(SENTENCES, vocab_size=120, min_frequency=1, show_progress=False)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return hf


def _bert_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, torch.ones_like(ids, dtype=torch.bool))


def test_bert_import_fine_tune_export(tmp_path, capsys):
    from aiayn.data.wordpiece import WordPieceTokenizer

    hf_dir, imported, run, exported = (tmp_path / n for n in ("hf", "imported", "run", "out"))
    hf = _bert_folder(hf_dir)
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    loaded = load_model_dir(imported, expect="bert")
    tokenizer = loaded.tokenizer("text", WordPieceTokenizer.from_file)
    text = "the cat sat in the red house"
    ids = torch.tensor([tokenizer.encode(text)])
    assert ids.tolist()[0] == Tokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(text).ids
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    torch.testing.assert_close(_bert_logits(loaded.model, ids), expected, atol=1e-4, rtol=1e-4)
    embedded = _run(["embed", "--model", str(imported), text], capsys)
    assert len(json.loads(embedded)["embedding"]) == 32

    corpus = tmp_path / "text.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    _run(["train", "mlm", "--text", str(corpus), "--init-from", str(hf_dir), "--out", str(run),
          "--seq-len", "16", "--batch-size", "4", *TRAIN_FLAGS], capsys)  # fmt: skip
    tuned = load_model_dir(run, expect="bert")
    assert tuned.config == loaded.config
    assert tuned.tokenizer("text", WordPieceTokenizer.from_file).encode(text) == ids.tolist()[0]
    assert _changed(tuned.model.state_dict(), loaded.model.state_dict())

    _run(["export", str(run), "--to", "hf", "--out", str(exported)], capsys)
    back = transformers.BertForMaskedLM.from_pretrained(exported, local_files_only=True).eval()
    with torch.no_grad():
        theirs = back(input_ids=ids).logits
    torch.testing.assert_close(theirs, _bert_logits(tuned.model, ids), atol=1e-4, rtol=1e-4)


# ---- ViT -> train vit ------------------------------------------------------------------------------


def _vit_folder(folder: Path) -> transformers.ViTForImageClassification:
    labels = [str(d) for d in range(10)]  # builtin:digits' classes: the head is kept
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=8, patch_size=4, num_channels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )  # fmt: skip
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(folder)
    processor = {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3], "do_normalize": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return hf


def test_vit_import_fine_tune_export(tmp_path, capsys):
    from PIL import Image

    from aiayn.tasks.vision import ImageClassifier

    hf_dir, imported, run, exported = (tmp_path / n for n in ("hf", "imported", "run", "out"))
    hf = _vit_folder(hf_dir)
    _run(["import", str(hf_dir), "--out", str(imported)], capsys)
    classifier = ImageClassifier.load(imported)
    assert classifier.classes == tuple(str(d) for d in range(10))
    images = torch.rand(3, 3, 8, 8)
    pixels = classifier.normalize(images)  # Hugging Face's rescale + normalize, done by hand
    with torch.no_grad():
        expected = hf(pixel_values=pixels).logits
        torch.testing.assert_close(classifier.model(pixels), expected, atol=1e-4, rtol=1e-4)
    picture = tmp_path / "digit.png"
    Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(picture)
    assert json.loads(_run(["classify", "--model", str(imported), str(picture)], capsys))["label"]

    _run(["train", "vit", "--dataset", "builtin:digits", "--init-from", str(hf_dir), "--out",
          str(run), "--batch-size", "32", *TRAIN_FLAGS], capsys)  # fmt: skip
    tuned = ImageClassifier.load(run)
    assert tuned.model.config == classifier.model.config
    assert torch.equal(tuned.mean, classifier.mean)  # the pretrained model's normalisation
    assert _changed(tuned.model.state_dict(), classifier.model.state_dict())

    _run(["export", str(run), "--to", "hf", "--out", str(exported)], capsys)
    back = transformers.ViTForImageClassification.from_pretrained(exported, local_files_only=True)
    assert back.config.id2label[3] == "3"
    processor = json.loads((exported / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == pytest.approx([0.4, 0.5, 0.6])
    with torch.no_grad():
        theirs = back.eval()(pixel_values=pixels).logits
        torch.testing.assert_close(theirs, tuned.model(pixels), atol=1e-4, rtol=1e-4)


# ---- the flag and the folders ----------------------------------------------------------------------


def test_a_folder_of_another_kind_is_refused_in_one_line(tmp_path, capsys):
    _vit_folder(tmp_path / "hf")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES), encoding="utf-8")
    capsys.readouterr()
    code = main(["train", "lm", "--text", str(text), "--init-from", str(tmp_path / "hf"),
                 "--out", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "vit model, which `aiayn train lm` cannot train" in err


def test_import_and_export_never_write_into_a_foreign_folder(tmp_path, capsys):
    _vit_folder(tmp_path / "hf")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["import", str(tmp_path / "hf"), "--out", str(foreign)]) == 2
    assert "not an aiayn run" in capsys.readouterr().err
    _run(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "model")], capsys)
    assert main(["export", str(tmp_path / "model"), "--to", "hf", "--out", str(foreign)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # An aiayn model folder is never the export's target, even with --overwrite.
    args = ["export", str(tmp_path / "model"), "--to", "hf", "--overwrite", "--out"]
    assert main([*args, str(tmp_path / "model")]) == 2
    _run([*args, str(foreign)], capsys)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (foreign / "config.json").is_file()


def test_every_train_command_has_the_flag_once():
    from aiayn.cli import build_parser

    parser = build_parser()
    for kind in ("translate", "lm", "mlm", "vit"):
        args = parser.parse_args(["train", kind, "--out", "x", "--init-from", "SRC",
                                  *{"translate": ["--train", "t"], "lm": ["--text", "t"],
                                    "mlm": ["--text", "t"], "vit": ["--dataset", "d"]}[kind]])  # fmt: skip
        assert args.init_from == "SRC"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
