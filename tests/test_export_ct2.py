"""``aiayn export --to ctranslate2``: CTranslate2, an independent C++ implementation, scores and
decodes an exported model exactly as aiayn does, for every layer layout the export accepts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.tokenizers import CharTokenizer
from aiayn.decoding import beam_search, greedy_search
from aiayn.errors import ConfigError
from aiayn.interop.ct2 import ctranslate2_problems, save_ctranslate2, source_pieces
from aiayn.models.seq2seq import PRESETS, Transformer
from aiayn.tasks.translation import TranslationTask
from aiayn.training.checkpoint import WEIGHTS_FILE, save_weights

ctranslate2 = pytest.importorskip("ctranslate2")

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE_TEXT = "abcdefghij klmnop"
TARGET_TEXT = "ABCDEFGHIJ KLMNOP"
SOURCES = ["abc def", "kaj", "ponm lkj ihg", "a", "fed cba ghij"]

#: Layouts CTranslate2 can hold: the paper's post-norm (sinusoidal), Marian's (halves, SiLU, output
#: bias), pre-norm with learned positions and separate output layer, and a Llama-like gated RMSNorm
#: model without biases.
LAYOUTS = {
    "paper": dict(final_norm=False),
    "marian": dict(
        final_norm=False, positional="sinusoidal_halves", activation="silu", output_bias=True
    ),
    "pre-norm": dict(
        norm_first=True, positional="learned", tie_output=False, scale_embeddings=False
    ),
    "gated-rms": dict(norm_first=True, activation="swiglu", norm="rmsnorm", bias=False, d_ff=96),
}


def _model(layout: str) -> tuple[Transformer, CharTokenizer, CharTokenizer]:
    src, tgt = CharTokenizer.train(SOURCE_TEXT), CharTokenizer.train(TARGET_TEXT)
    config = replace(
        PRESETS["micro"],
        src_vocab_size=src.vocab_size,
        tgt_vocab_size=tgt.vocab_size,
        num_encoder_layers=2,
        num_decoder_layers=2,
        max_len=64,
        **LAYOUTS[layout],
    )
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():  # larger than init, so that decoding follows the weights, not noise
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
            elif "norm" not in str(p):
                p.add_(torch.randn_like(p) * 0.1)
    return model, src, tgt


def _batch(tokenizer: CharTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    width = max(map(len, rows))
    src = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
    return src, src != tokenizer.pad_id


@pytest.fixture(scope="module", params=list(LAYOUTS))
def exported(request, tmp_path_factory):
    model, src_tok, tgt_tok = _model(request.param)
    out = tmp_path_factory.mktemp(f"ct2-{request.param}")
    save_ctranslate2(model, src_tok, tgt_tok, out)
    return model, src_tok, tgt_tok, ctranslate2.Translator(str(out), device="cpu", intra_threads=1)


def test_ctranslate2_scores_every_target_token_as_aiayn_does(exported):
    model, src_tok, tgt_tok, translator = exported
    targets = ["ABC DEF", "KA", "PONM", "", "FED"]
    src, mask = _batch(src_tok, SOURCES)
    rows = [[tgt_tok.bos_id, *tgt_tok.encode(t), tgt_tok.eos_id] for t in targets]
    width = max(map(len, rows))
    tgt = torch.tensor([r + [tgt_tok.pad_id] * (width - len(r)) for r in rows])
    with torch.no_grad():
        logp = model(src, tgt[:, :-1], mask).log_softmax(-1)
    theirs = translator.score_batch(
        source_pieces(src_tok, SOURCES), [[tgt_tok.id_to_token(i) for i in r[1:-1]] for r in rows]
    )
    for i, row in enumerate(rows):
        ours = [float(logp[i, t, tok]) for t, tok in enumerate(row[1:])]  # the pieces and <eos>
        assert theirs[i].log_probs == pytest.approx(ours, abs=2e-4)


def test_ctranslate2_greedy_and_beam_write_aiayn_s_tokens(exported):
    model, src_tok, tgt_tok, translator = exported
    src, mask = _batch(src_tok, SOURCES)
    pieces = source_pieces(src_tok, SOURCES)
    with torch.no_grad():
        greedy = greedy_search(model, src, mask, max_len=20)
        beams = beam_search(model, src, mask, beam_size=4, alpha=0.0, max_len=20)
    theirs = translator.translate_batch(
        pieces, beam_size=1, max_decoding_length=20, min_decoding_length=0
    )
    assert [r.hypotheses[0] for r in theirs] == [
        [tgt_tok.id_to_token(i) for i in g] for g in greedy
    ]
    theirs = translator.translate_batch(
        pieces, beam_size=4, length_penalty=0.0, max_decoding_length=20, min_decoding_length=0
    )
    ours = [[tgt_tok.id_to_token(i) for i in b[0].tokens] for b in beams]
    assert [r.hypotheses[0] for r in theirs] == ours


def test_int8_export_writes_a_smaller_model_that_still_translates(tmp_path):
    model, src_tok, tgt_tok = _model("paper")
    save_ctranslate2(model, src_tok, tgt_tok, tmp_path / "f32")
    save_ctranslate2(model, src_tok, tgt_tok, tmp_path / "int8", quantize="int8")
    sizes = {d: (tmp_path / d / "model.bin").stat().st_size for d in ("f32", "int8")}
    assert sizes["int8"] < sizes["f32"]
    translator = ctranslate2.Translator(str(tmp_path / "int8"), device="cpu", intra_threads=1)
    assert translator.translate_batch(source_pieces(src_tok, SOURCES[:1]))[0].hypotheses[0]


def test_layouts_ctranslate2_cannot_hold_are_refused_in_one_line(tmp_path):
    src, tgt = CharTokenizer.train(SOURCE_TEXT), CharTokenizer.train(TARGET_TEXT)
    base = replace(PRESETS["micro"], src_vocab_size=src.vocab_size, tgt_vocab_size=tgt.vocab_size)
    default = Transformer(base)  # post-norm with a final LayerNorm, as torch.nn.Transformer
    assert "final_norm=false" in ctranslate2_problems(default)[0]
    rotary = Transformer(replace(base, final_norm=False, positional="rotary"))
    assert any("rotary" in p for p in ctranslate2_problems(rotary))
    with pytest.raises(ConfigError, match="cannot export to CTranslate2"):
        save_ctranslate2(default, src, tgt, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing written"


def _model_dir(tmp_path: Path, layout: str) -> Path:
    model, src_tok, tgt_tok = _model(layout)
    directory = tmp_path / f"model-{layout}"
    pairs = [(SOURCE_TEXT, TARGET_TEXT)]
    task = TranslationTask(
        model,
        src_tok,
        tgt_tok,
        pairs,
        pairs,
        batch_tokens=256,
        label_smoothing=0.0,
        seed=0,
        device=torch.device("cpu"),
        max_len=model.config.max_len,
    )
    task.write_model_files(directory)
    save_weights(model, directory / WEIGHTS_FILE)
    return directory


def test_export_command_writes_a_folder_ctranslate2_loads(tmp_path, capsys):
    directory = _model_dir(tmp_path, "marian")
    out = tmp_path / "ct2"
    assert main(["export", str(directory), "--to", "ctranslate2", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    assert {"model.bin", "config.json", "aiayn_source_tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    from tokenizers import Tokenizer

    pieces = Tokenizer.from_file(str(out / "aiayn_source_tokenizer.json")).encode("abc").tokens
    assert pieces == ["a", "b", "c"]
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=1)
    assert translator.translate_batch([pieces])[0].hypotheses[0]


def test_export_command_refuses_a_default_layout_and_a_foreign_folder(tmp_path, capsys):
    default = _model_dir(tmp_path, "paper")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", str(default), "--to", "ctranslate2", "--out", str(mine)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


# ---- GPT -> CTranslate2's Generator ----------------------------------------------------------------

GPT_LAYOUTS = {
    "gpt2": dict(),
    "gated-rms": dict(activation="swiglu", norm="rmsnorm", bias=False, d_ff=96, tie_output=False),
    "sinusoidal": dict(positional="sinusoidal", activation="gelu"),
}


@pytest.fixture(scope="module", params=list(GPT_LAYOUTS))
def exported_gpt(request, tmp_path_factory):
    from aiayn.interop.ct2 import save_ctranslate2_generator
    from aiayn.models.gpt import GPT, GPTConfig

    tokenizer = CharTokenizer.train(SOURCE_TEXT)
    shape = dict(max_len=64, d_model=64, num_heads=4, d_ff=128, num_layers=2, dropout=0.0)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        attention_dropout=0.0,
        **{**shape, **GPT_LAYOUTS[request.param]},
    )
    torch.manual_seed(0)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    out = tmp_path_factory.mktemp(f"ct2-gpt-{request.param}")
    save_ctranslate2_generator(model, tokenizer, out)
    generator = ctranslate2.Generator(str(out), device="cpu", intra_threads=1)
    return model, tokenizer, generator


def test_ctranslate2_generator_scores_and_continues_as_aiayn_does(exported_gpt):
    from aiayn.decoding import generate

    model, tokenizer, generator = exported_gpt
    texts = ["abc def", "kaj", "ponm lkj"]
    prompts = [[tokenizer.bos_id, *tokenizer.encode(t)] for t in texts]
    pieces = [[tokenizer.id_to_token(i) for i in p] for p in prompts]
    with torch.no_grad():
        for prompt, scored in zip(prompts, generator.score_batch(pieces)):
            logp = model(torch.tensor([prompt])).log_softmax(-1)[0]
            ours = [float(logp[t, tok]) for t, tok in enumerate(prompt[1:])]
            assert scored.log_probs == pytest.approx(ours, abs=2e-4)
    new = 12  # exactly this many: <eos> kept out on both sides
    ours = generate(
        model, prompts, new, temperature=0.0, suppress=[tokenizer.eos_id], pad_id=tokenizer.pad_id
    )
    theirs = generator.generate_batch(
        pieces, max_length=new, min_length=new, sampling_topk=1, include_prompt_in_result=False
    )
    assert [r.sequences[0] for r in theirs] == [[tokenizer.id_to_token(i) for i in o] for o in ours]


def test_export_command_writes_a_gpt_folder_ctranslate2_s_generator_loads(tmp_path, capsys):
    from tiny_translation import tiny_lm_model_dir

    out = tmp_path / "ct2-gpt"
    assert main(["export", str(tiny_lm_model_dir()), "--to", "ctranslate2", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "gpt"
    assert (out / "aiayn_tokenizer.json").is_file()
    generator = ctranslate2.Generator(str(out), device="cpu", intra_threads=1)
    result = generator.generate_batch([["<bos>", "t", "h"]], max_length=5, sampling_topk=1)
    assert result[0].sequences[0][:2] == ["t", "h"]  # the prompt (CTranslate2 drops <bos>)


def test_export_command_refuses_quantize_for_hf(tmp_path, capsys):
    directory = _model_dir(tmp_path, "paper")
    argv = ["export", str(directory), "--to", "hf", "--out", str(tmp_path / "hf")]
    assert main([*argv, "--quantize", "int8"]) == 2
    assert "only with --to ctranslate2" in capsys.readouterr().err
