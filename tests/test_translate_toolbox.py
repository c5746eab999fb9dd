"""The translation toolbox: n-best against exhaustive search, ensembles, forced prefixes, sampling,
alignments, and the ``aiayn translate`` / ``generate`` / ``serve`` flags that expose them."""

from __future__ import annotations

import copy
import itertools
import json
import shutil
import threading

import pytest
import torch

from aiayn.cli import main
from aiayn.data.tokenizers import BPETokenizer
from aiayn.decoding import (
    Sampling,
    SearchOptions,
    align,
    beam_search,
    greedy_search,
    length_penalty,
    sample_search,
    search,
)
from aiayn.logits import DecodingControls
from aiayn.models.seq2seq import Transformer, TransformerConfig
from aiayn.tasks.translation import Translator
from reference import randomize_
from tiny_translation import tiny_lm_model_dir, tiny_translation_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")

BOS, EOS = 1, 2
V = 5  # <pad> <bos> <eos> <unk> and one word: every sequence can be enumerated
BUDGET = 3
SRC = torch.tensor([[5, 6, 7, 8, EOS]])


def _tiny(seed: int, vocab: int = V, decoder_layers: int = 1) -> Transformer:
    torch.manual_seed(seed)
    config = TransformerConfig(
        src_vocab_size=9,
        tgt_vocab_size=vocab,
        d_model=16,
        num_heads=2,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=decoder_layers,
        dropout=0.0,
    )
    return randomize_(Transformer(config), std=0.6).eval()


@torch.inference_mode()
def _step_logprobs(models: list[Transformer], src: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Teacher forcing: the mean over the models of log p(next token | <bos> + tokens[:t]),
    ``(len(tokens) + 1, V)``."""
    tgt = torch.tensor([[BOS, *tokens]])
    return sum(m(src, tgt)[0].log_softmax(-1) for m in models) / len(models)


def _sequence_logprob(models, src, tokens: list[int], ended: bool) -> float:
    lps = _step_logprobs(models, src, tokens)
    picked = [float(lps[t, tok]) for t, tok in enumerate(tokens)]
    return sum(picked) + (float(lps[len(tokens), EOS]) if ended else 0.0)


def _exhaustive(models, src, alpha: float) -> list[tuple[list[int], float]]:
    """Every hypothesis a search within BUDGET tokens can end with, best score first: the outputs
    that end with <eos> within the budget, and those the budget cuts off."""
    words = [t for t in range(V) if t != EOS]
    found = []
    for length in range(BUDGET + 1):
        for seq in itertools.product(words, repeat=length):
            ended = length < BUDGET
            logprob = _sequence_logprob(models, src, list(seq), ended)
            found.append((list(seq), logprob, logprob / length_penalty(length + 1, alpha)))
    found.sort(key=lambda f: f[2], reverse=True)
    return [(tokens, logprob) for tokens, logprob, _ in found]


def _check_against_exhaustive(models, alpha: float, k: int = 5) -> None:
    # A beam of 64 over 4 live tokens and 3 steps keeps every prefix: the search is exhaustive.
    hyps = beam_search(models, SRC, beam_size=64, alpha=alpha, max_len=BUDGET, scores=True)[0]
    best = _exhaustive(models, SRC, alpha)[:k]
    assert [h.tokens for h in hyps[:k]] == [tokens for tokens, _ in best]
    for h, (_, logprob) in zip(hyps, best):
        assert h.logprob == pytest.approx(logprob, abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_nbest_is_the_k_best_of_exhaustive_search(alpha):
    _check_against_exhaustive([_tiny(0)], alpha)


def test_nbest_of_a_narrow_beam_is_sorted_distinct_and_scored_by_teacher_forcing():
    model = _tiny(1, vocab=12)
    src = torch.tensor([[5, 6, 7, EOS, 0], [8, 5, 5, 6, EOS]])
    options = SearchOptions(beam=4, nbest=3, max_len=8, scores=True)
    for row, hyps in zip(src, search(model, src, None, options)):
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3
        for h in hyps:
            ended = h.eos_logprob is not None
            real = row[row != 0][None]
            lps = _step_logprobs([model], real, h.tokens)
            want = [float(lps[t, tok]) for t, tok in enumerate(h.tokens)]
            assert h.token_logprobs == pytest.approx(want, abs=1e-4)
            assert h.logprob == pytest.approx(
                _sequence_logprob([model], real, h.tokens, ended), abs=1e-4
            )
            assert h.score == pytest.approx(h.logprob / length_penalty(len(h.tokens) + 1, 0.6))


def test_an_ensemble_of_two_copies_is_the_model_itself():
    model = _tiny(1, vocab=12)
    twin = copy.deepcopy(model)
    src = torch.tensor([[5, 6, 7, EOS, 0], [8, 5, 5, 6, EOS]])
    assert greedy_search([model, twin], src, max_len=8) == greedy_search(model, src, max_len=8)
    alone = beam_search(model, src, beam_size=4, max_len=8, scores=True)
    pair = beam_search([model, twin], src, beam_size=4, max_len=8, scores=True)
    for a, b in zip(alone, pair):
        assert [(h.tokens, h.logprob, h.token_logprobs) for h in a] == [
            (h.tokens, h.logprob, h.token_logprobs) for h in b
        ]


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_an_ensemble_of_two_models_equals_brute_force(alpha):
    models = [_tiny(0), _tiny(3)]
    _check_against_exhaustive(models, alpha)
    # Greedy: at every step the argmax of the mean log-probabilities of full decoder passes.
    tokens: list[int] = []
    for _ in range(BUDGET):
        nxt = int(_step_logprobs(models, SRC, tokens)[-1].argmax())
        if nxt == EOS:
            break
        tokens.append(nxt)
    assert greedy_search(models, SRC, max_len=BUDGET) == [tokens]


def test_a_forced_prefix_starts_every_output_with_its_own_log_probabilities():
    model = _tiny(1, vocab=12)
    prefix = (9, 4, 9)
    for options in (
        SearchOptions(beam=1, max_len=8, prefix=prefix, scores=True),
        SearchOptions(beam=4, nbest=4, max_len=8, prefix=prefix, scores=True),
        SearchOptions(nbest=3, max_len=8, prefix=prefix, sampling=Sampling(temperature=1.5)),
    ):
        generator = torch.Generator().manual_seed(0)
        for h in search(model, SRC, None, options, generator=generator)[0]:
            assert tuple(h.tokens[:3]) == prefix
            lps = _step_logprobs([model], SRC, h.tokens)
            want = [float(lps[t, tok]) for t, tok in enumerate(h.tokens)]
            assert h.token_logprobs == pytest.approx(want, abs=1e-4)
    # The controls apply after the prefix: a ban on its token does not undo it.
    out = greedy_search(
        model, SRC, max_len=8, prefix=prefix, controls=DecodingControls(ban=((9,),))
    )
    assert tuple(out[0][:3]) == prefix and 9 not in out[0][3:]


def test_sampling_is_reproducible_with_a_seed_and_greedy_at_temperature_zero():
    model = _tiny(1, vocab=12)
    src = torch.tensor([[5, 6, 7, EOS, 0], [8, 5, 5, 6, EOS]])

    def draw(seed: int, **kw):
        g = torch.Generator().manual_seed(seed)
        found = sample_search(model, src, samples=4, generator=g, max_len=8, **kw)
        return [[h.tokens for h in s] for s in found]

    assert draw(0, temperature=1.5) == draw(0, temperature=1.5)
    assert draw(0, temperature=1.5) != draw(1, temperature=1.5)
    greedy = greedy_search(model, src, max_len=8)
    assert [s[0] for s in draw(0, temperature=0.0)] == greedy


def test_alignment_is_the_argmax_of_the_head_averaged_cross_attention():
    model = _tiny(2, vocab=12, decoder_layers=2)
    source = [5, 6, 7, 8, 6]
    src = torch.tensor([source + [EOS]])
    outputs = [h.tokens for h in beam_search(model, src, beam_size=3, max_len=7)[0]]
    for layer in (0, 1, -1):
        got = align(model, source, outputs, layer)
        for out, alignment in zip(outputs, got):
            assert len(alignment) == len(out)
            # Independently: one unpadded teacher-forced pass per output.
            maps = model.attention_maps(src, torch.tensor([[BOS, *out]]))
            weights = maps.cross[layer][0].mean(0)[: len(out), : len(source)]  # (T, S)
            assert alignment == weights.argmax(-1).tolist()


# ---- the command line ---------------------------------------------------------------------------------


def _run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(tiny_translation_model_dir())


TEXTS = ["我是一个学生", "我爱中国"]


def test_nbest_prints_k_lines_per_input_best_first(model_dir, capsys):
    code, out, _ = _run(
        ["translate", "--model", model_dir, "--nbest", "3", "--max-len", "8", *TEXTS], capsys
    )
    lines = out.splitlines()
    assert code == 0 and len(lines) == 6
    translator = Translator.load(model_dir)
    options = SearchOptions(beam=4, nbest=3, max_len=8)
    assert lines == [h.text for t in translator.decode(TEXTS, options) for h in t.hypotheses]
    assert lines[0] == translator.translate(TEXTS[:1], beam=4, max_len=8)[0]


def test_json_carries_tokens_scores_alignments_and_unknown_input(model_dir, capsys, caplog):
    argv = [
        "translate",
        "--model",
        model_dir,
        "--json",
        "--nbest",
        "2",
        "--align",
        "--max-len",
        "8",
    ]
    code, out, _ = _run([*argv, TEXTS[0], "我X学生"], capsys)
    assert code == 0
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["source"] == TEXTS[0] and first["unknown"] == [] and second["unknown"] == ["X"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["input 2: 'X' not in the model's vocabulary (read as <unk>)"]
    for record in (first, second):
        assert len(record["hypotheses"]) == 2
        for hyp in record["hypotheses"]:
            assert len(hyp["tokens"]) == len(hyp["token_logprobs"]) == len(hyp["alignment"])
            total = sum(hyp["token_logprobs"]) + (hyp["eos_logprob"] or 0.0)
            assert hyp["logprob"] == pytest.approx(total, abs=1e-4)
            assert all(0 <= s < len(record["source_tokens"]) for s in hyp["alignment"])
        best = record["hypotheses"][0]
        steps = len(best["tokens"]) + (best["eos_logprob"] is not None)
        assert record["mean_logprob"] == pytest.approx(best["logprob"] / steps)
    assert second["source_tokens"][2] == "<unk>"


def test_plain_alignment_is_pharaoh_pairs_after_a_tab(model_dir, capsys):
    code, out, _ = _run(
        ["translate", "--model", model_dir, "--align-layer", "0", "--max-len", "6", TEXTS[0]],
        capsys,
    )
    text, pairs = out.rstrip("\n").split("\t")
    translator = Translator.load(model_dir)
    assert text == translator.translate(TEXTS[:1], max_len=6)[0]
    assert all(p.count("-") == 1 for p in pairs.split())
    assert [int(p.split("-")[1]) for p in pairs.split()] == list(range(len(pairs.split())))


def test_prefix_sampling_and_batch_size(model_dir, capsys):
    base = ["translate", "--model", model_dir, "--max-len", "10"]
    code, out, _ = _run([*base, "--prefix", "I am", *TEXTS], capsys)
    assert code == 0 and all(line.startswith("I am") for line in out.splitlines())
    sample = [*base, "--sample", "--temperature", "1.5", "--nbest", "3", *TEXTS]
    first = _run([*sample, "--seed", "4"], capsys)[1]
    assert first == _run([*sample, "--seed", "4"], capsys)[1]
    assert first != _run([*sample, "--seed", "5"], capsys)[1]
    assert len(first.splitlines()) == 6
    beam = _run([*base, *TEXTS], capsys)[1]
    assert _run([*base, "--batch-size", "1", *TEXTS], capsys)[1] == beam


def test_controls_on_the_command_line(model_dir, capsys):
    base = ["translate", "--model", model_dir, "--json", "--max-len", "12", "--beam", "1"]

    def tokens(*extra: str) -> list[str]:
        return json.loads(_run([*base, *extra, TEXTS[1]], capsys)[1])["hypotheses"][0]["tokens"]

    plain = tokens()
    assert "▁are" in plain  # the untrained model's favourite word
    assert "▁are" not in tokens("--ban", "are")
    pairs = tokens("--ban", "are are")  # a sequence: "are" may come, never twice in a row
    assert "▁are" in pairs and ("▁are", "▁are") not in set(zip(pairs, pairs[1:]))
    distinct = tokens("--no-repeat-ngram", "1")
    assert len(set(distinct)) == len(distinct)
    assert tokens("--repetition-penalty", "3") != plain
    assert len(tokens("--min-len", "12")) == 12


def test_an_ensemble_of_a_model_and_its_copy_translates_as_the_model(model_dir, tmp_path, capsys):
    twin = tmp_path / "twin"
    shutil.copytree(model_dir, twin)
    alone = _run(["translate", "--model", model_dir, "--max-len", "8", *TEXTS], capsys)
    pair = _run(
        ["translate", "--model", model_dir, "--model", str(twin), "--max-len", "8", *TEXTS], capsys
    )
    assert alone[0] == pair[0] == 0 and alone[1] == pair[1]


def _other_vocabulary(model_dir: str, tmp_path) -> str:
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    target = other / config["tokenizers"]["target"]
    BPETokenizer.train(["completely different words"], vocab_size=20, min_frequency=1).save(
        other, target.stem
    )
    return str(other)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--nbest", "5"], "more than the beam of 4"),
        (["--temperature", "0.5"], "--temperature only apply with --sample"),
        (["--align-layer", "7"], "layer 7: the model has 2 decoder layers"),
        (["--prefix", "Ω"], "cannot write 'Ω'"),
        ("another vocabulary", "target vocabulary differs"),
    ],
)
def test_bad_toolbox_arguments_exit_2_with_one_line(model_dir, tmp_path, capsys, extra, message):
    if extra == "another vocabulary":
        extra = ["--model", _other_vocabulary(model_dir, tmp_path)]
    code, _, err = _run(["translate", "--model", model_dir, *extra, TEXTS[0]], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min-len", "-1"], "expected an integer >= 0"),
        (["--no-repeat-ngram", "x"], "expected an integer >= 0"),
        (["--repetition-penalty", "0"], "expected a positive number"),
        (["--batch-size", "0"], "expected a positive integer"),
    ],
)
def test_out_of_range_control_flags_are_usage_errors(model_dir, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", "--model", model_dir, *extra, TEXTS[0]])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_generate_takes_the_controls_and_names_unknown_prompt_characters(capsys, caplog):
    model = str(tiny_lm_model_dir())
    base = ["generate", "--model", model, "--prompt", "the cat", "--temperature", "0"]
    code, out, _ = _run([*base, "--max-new-tokens", "12", "--no-repeat-ngram", "1"], capsys)
    continuation = out.rstrip("\n")
    assert code == 0 and len(set(continuation)) == len(continuation)
    assert not set(continuation) & set("the cat")
    code, _, _ = _run(
        ["generate", "--model", model, "--prompt", "the Zebra", "--max-new-tokens", "2"], capsys
    )
    assert code == 0 and "prompt: 'Z', 'b', 'r' not in the model's vocabulary" in caplog.text


def test_serve_applies_the_requests_controls():
    from aiayn.cli.serve import ServeLimits, make_server
    from aiayn.modeldir import load_model_dir
    from test_serve import request

    limits = ServeLimits(max_chars=100, max_tokens=20, max_output_tokens=10)
    srv = make_server(
        load_model_dir(tiny_translation_model_dir()), "127.0.0.1", 0, beam=1, limits=limits
    )
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        body = {"text": TEXTS[0], "no_repeat_ngram": 1, "ban": ["I"]}
        status, _, answer = request(srv, "POST", "/api/translate", body)
        assert status == 200
        translator = Translator.load(tiny_translation_model_dir())
        controls = DecodingControls(no_repeat_ngram=1, ban=(tuple(translator.tgt_tok.encode("I")),))
        want = translator.translate(TEXTS[:1], beam=1, max_len=10, controls=controls)[0]
        assert (
            answer["translation"] == want != translator.translate(TEXTS[:1], beam=1, max_len=10)[0]
        )
        for bad in ({"min_len": -1}, {"min_len": True}, {"ban": "I"}, {"repetition_penalty": "x"}):
            status, _, answer = request(srv, "POST", "/api/translate", {"text": TEXTS[0], **bad})
            assert status == 400 and "must be" in answer["error"]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
