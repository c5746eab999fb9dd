"""The planner of `aiayn train translate`: vocabulary from the corpus, measured plans, budget schedules,
checkpoint averaging."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.corpus import write_parallel_tsv
from aiayn.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from aiayn.data.vocab import learn_vocabulary, rare_fraction, shares_alphabet
from aiayn.decoding import SearchOptions
from aiayn.logits import DecodingControls
from aiayn.modeldir import load_model_dir
from aiayn.tasks import translation
from aiayn.tasks.translation import Translator, plan_translation, train_translation
from aiayn.training.average import average_model_dirs
from aiayn.training.budget import Budget, linear_cost
from aiayn.training.checkpoint import WEIGHTS_FILE, save_weights
from aiayn.training.schedules import BudgetSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _spelled(n: int) -> str:
    """A number spelled digit by digit with no spaces: 907 -> 'ninezeroseven'."""
    return "".join(DIGITS[int(d)] for d in str(n))


# ---- vocabulary --------------------------------------------------------------------------------


def test_no_whole_sentence_pieces_on_a_corpus_written_without_spaces():
    rng = random.Random(0)
    train = [_spelled(rng.randrange(10**5, 10**6)) for _ in range(3000)]
    tok = learn_vocabulary(train)
    # Every piece is at most a couple of digit words, and pieces stay frequent in training text.
    longest = max(len(tok.id_to_token(i)) for i in range(tok.vocab_size))
    assert longest <= 12, f"a piece of {longest} characters"
    assert rare_fraction(tok, train, 20) <= 0.5  # most pieces stay frequent after later merges
    # Unseen sentences are made of pieces the model has seen many times, never <unk>.
    unseen = [_spelled(rng.randrange(10**5, 10**6)) for _ in range(200)]
    for text in unseen:
        assert 3 not in tok.encode(text)  # <unk>
        assert len(tok.encode(text)) >= 3  # no piece spans most of a six-word sentence
    # The old rule (2·sqrt(n)·10 = 1,095 pieces, min_frequency 2) learned pieces that span most of
    # a sentence: the frequency rule stays far smaller.
    assert tok.vocab_size < 400


def test_vocabulary_is_characters_for_a_tiny_corpus_and_grows_with_text():
    small = learn_vocabulary(["a cat sat", "a dog ran"] * 5)
    assert all(len(small.id_to_token(i).replace("▁", "")) <= 1 for i in range(4, small.vocab_size))
    rng = random.Random(1)
    lexicon = ["".join(rng.choice("abcdefghij") for _ in range(5)) for _ in range(300)]
    words = [lexicon[i % 300] for i in range(30000)]
    large = learn_vocabulary([" ".join(words[i : i + 10]) for i in range(0, 30000, 10)])
    assert large.vocab_size > 50  # frequent words become pieces


def test_vocab_size_override_is_used_exactly():
    texts = [f"{a} and {b} more words" for a in ("cat", "dog", "bird") for b in ("red", "blue")]
    frequent = learn_vocabulary(texts * 50)
    fixed = learn_vocabulary(texts * 50, vocab_size=frequent.vocab_size - 5)
    assert fixed.vocab_size == frequent.vocab_size - 5


def test_shared_alphabet_decision():
    assert shares_alphabet(["le chat est noir"], ["the cat is black"])
    assert shares_alphabet(["2023年5月12日"], ["2023-05-12"])  # digits are copied
    assert not shares_alphabet(["我是一个学生"], ["I am a student"])
    assert not shares_alphabet(["привет мир"], ["privet mir"])


def test_length_ratio_is_the_longest_target_to_source_ratio_with_a_margin():
    ids = [([5] * 3, [6] * 7), ([5] * 1, [6] * 9), ([5] * 9, [6] * 1)]
    assert translation.length_ratio(ids) == pytest.approx(1.25 * 10 / 2)


# ---- schedules and budgets -----------------------------------------------------------------------


def test_budget_schedule_warms_up_then_decays_to_the_floor_exactly_at_the_end():
    s = BudgetSchedule(1e-3, warmup_steps=1000, warmup_fraction=0.05, min_ratio=0.1)
    assert s(1, 0.0) == pytest.approx(1e-6)  # step 1 of 1000
    assert s(10, 0.025) == pytest.approx(0.5e-3)  # half the time-warm-up: further than steps
    cosine = 0.5 * (1 + math.cos(math.pi * 0.05))
    assert s(10, 0.05) == pytest.approx(1e-3 * (0.1 + 0.9 * cosine))  # warm-up over: the decay
    assert s(1000, 0.0) == pytest.approx(1e-3)  # 1000 steps also end the warm-up
    values = [s(10**6, u / 100) for u in range(5, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert s(10**6, 1.0) == pytest.approx(1e-4) and s(10**6, 1.7) == pytest.approx(1e-4)


def test_budget_defaults_to_ten_minutes():
    assert Budget.from_args(None, None) == Budget(None, 600.0)
    assert Budget.from_args(50, None) == Budget(50, None)
    assert Budget.from_args(50, 2) == Budget(50, 120.0)


def test_linear_cost_fits_measured_points():
    fixed, per = linear_cost({1000: 0.2, 4000: 0.5})
    assert fixed == pytest.approx(0.1) and per == pytest.approx(1e-4)


# ---- the measured plan ---------------------------------------------------------------------------


def _ids(n: int, length: int = 10) -> list[tuple[list[int], list[int]]]:
    return [([5] * length, [6] * length) for _ in range(n)]


def _fake_costs(monkeypatch, slowdown: dict[str, float]):
    """Step costs as a machine would measure them: fixed 20 ms + 0.1 ms a token, times a factor."""
    seen = []

    def measure(config, train_ids, batch_tokens, device, label_smoothing=0.1, seed=0):
        name = {128: "tiny", 256: "small", 512: "base"}[config.d_model]
        seen.append((name, batch_tokens))
        return slowdown[name] * (0.02 + 1e-4 * batch_tokens)

    monkeypatch.setattr(translation, "measure_step_seconds", measure)
    return seen


def _plan(ids, minutes, **kw):
    return plan_translation(
        ids, Budget(None, 60 * minutes), 100, 100, True, torch.device("cpu"), **kw
    )


def test_plan_prefers_many_small_steps_when_the_budget_is_short(monkeypatch):
    _fake_costs(monkeypatch, {"tiny": 1, "small": 4, "base": 20})
    plan = _plan(_ids(20_000), minutes=5)
    assert plan.model_name == "tiny"
    # 270 s of training: 2048-token steps (0.22 s) give 1,200, 1024-token steps (0.12 s) 2,200.
    assert plan.batch_tokens == 1024
    assert plan.measured["tiny"]["steps"] >= translation.TARGET_STEPS


def test_plan_picks_a_larger_model_when_the_budget_allows_it(monkeypatch):
    seen = _fake_costs(monkeypatch, {"tiny": 1, "small": 4, "base": 20})
    plan = _plan(_ids(2_000), minutes=20)
    assert plan.model_name == "small"  # base: too few steps in the budget
    assert {name for name, _ in seen} == {"tiny", "small", "base"}
    fast = _plan(_ids(2_000), minutes=2)
    assert fast.model_name == "tiny"


def test_plan_writes_its_measurements_and_schedule(monkeypatch):
    _fake_costs(monkeypatch, {"tiny": 1, "small": 4, "base": 20})
    plan = _plan(_ids(5_000), minutes=3)
    row = plan.measured["tiny"]
    assert set(row) == {"seconds_per_step", "batch", "steps", "epochs"}
    assert plan.budget_seconds == 180 and plan.max_steps is None
    assert isinstance(plan.schedule(), BudgetSchedule)
    text = translation.describe_plan(plan, 5000, 123, 100, 100)
    assert "measured tiny" in text and "batch" in text and "3 minutes" in text


def test_real_calibration_measures_positive_step_times():
    ids = _ids(300, 6)
    plan = plan_translation(
        ids, Budget(None, 30.0), 20, 20, False, torch.device("cpu"), preset="micro"
    )
    costs = plan.measured["micro"]["seconds_per_step"]
    assert set(costs) == {"1024", "4096"} and all(v > 0 for v in costs.values())


# ---- training end to end -------------------------------------------------------------------------

FR_EN = [
    ("le chat est noir", "the cat is black"),
    ("le chien est blanc", "the dog is white"),
    ("la maison est grande", "the house is big"),
    ("le chat est petit", "the cat is small"),
]
ZH_EN = [("我是一个学生", "I am a student"), ("我爱中国", "I love China")]


@pytest.fixture
def fr_en(tmp_path) -> Path:
    path = tmp_path / "fr-en.tsv"
    write_parallel_tsv(path, FR_EN * 5)
    return path


@pytest.fixture
def zh_en(tmp_path) -> Path:
    path = tmp_path / "zh-en.tsv"
    write_parallel_tsv(path, ZH_EN * 5)
    return path


def test_joint_vocabulary_round_trip(tmp_path, fr_en):
    out = tmp_path / "model"
    train_translation(
        str(fr_en), out, valid_spec=str(fr_en), preset="micro", max_steps=3, progress=False
    )
    info = json.loads((out / "config.json").read_text())
    assert info["tokenizers"]["source"] == info["tokenizers"]["target"]  # one file, both roles
    assert info["config"]["share_embeddings"] is True
    assert info["training"]["plan"]["joint_vocab"] is True
    translator = Translator.load(out)
    assert translator.length_ratio == info["training"]["length_ratio"] > 1.0  # decoding budget
    assert translator.src_tok is translator.tgt_tok
    model = translator.model
    assert model.src_emb.weight is model.tgt_emb.weight  # one embedding matrix
    assert len(translator.translate(["le chat est blanc"], beam=1)) == 1


def test_a_model_trained_on_no_empty_target_never_writes_an_empty_output(tmp_path, fr_en):
    """fairseq's min_len of 1: with every training target non-empty, <eos> cannot come first,
    even where the model prefers it (here: forced on its output layer), greedy and beam alike, and
    never <pad> or <bos> instead; a
    model that saw an empty target (or says nothing, written before the rule) may end at once."""
    out = tmp_path / "model"
    train_translation(
        str(fr_en), out, valid_spec=str(fr_en), preset="micro", max_steps=3, progress=False
    )
    assert json.loads((out / "config.json").read_text())["training"]["shortest_target"] >= 1
    translator = Translator.load(out)
    lm_head = translator.model.lm_head
    prefer_eos = torch.zeros(lm_head.out_features)
    prefer_eos[EOS_ID] = 1e4
    lm_head.register_forward_hook(lambda module, args, logits: logits + prefer_eos)
    for beam in (1, 4):
        (found,) = translator.decode(["le chat est blanc"], SearchOptions(beam=beam))
        tokens = found.hypotheses[0].hypothesis.tokens
        assert tokens and not set(tokens) & {PAD_ID, BOS_ID, EOS_ID}  # nor <pad>, nor <bos>
    translator.shortest_target = 0  # an empty target was seen: no rule
    assert translator.translate(["le chat est blanc"], beam=4) == [""]
    options = translation.output_rules(SearchOptions(controls=DecodingControls(min_len=3)), 5)
    assert options.controls.min_len == 3  # an asked-for minimum stands
    assert translation.output_rules(SearchOptions(), 0).controls.min_len == 0


@pytest.mark.parametrize("corpus, joint", [("zh_en", False), ("fr_en", True)])
def test_preset_base_trains_a_step_on_either_kind_of_corpus(request, tmp_path, corpus, joint):
    path = request.getfixturevalue(corpus)
    out = tmp_path / "base"
    code = main(
        ["train", "translate", "--train", str(path), "--valid", str(path), "--out", str(out),
         "--preset", "base", "--max-steps", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    config = load_model_dir(out).config
    assert config.share_embeddings is joint and config.d_model == 512


def test_no_joint_vocab_flag_gives_two_vocabularies(tmp_path, fr_en):
    out = tmp_path / "model"
    code = main(
        ["train", "translate", "--train", str(fr_en), "--valid", str(fr_en), "--out", str(out),
         "--preset", "micro", "--max-steps", "2", "--no-joint-vocab", "--vocab-size", "40",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    info = json.loads((out / "config.json").read_text())
    assert info["tokenizers"]["source"] != info["tokenizers"]["target"]
    assert info["config"]["share_embeddings"] is False


def test_a_time_budget_is_used_whole_and_the_schedule_ends_at_its_floor(tmp_path, fr_en):
    out = tmp_path / "model"
    train_translation(
        str(fr_en), out, valid_spec=str(fr_en), preset="micro", max_minutes=0.1, progress=False
    )
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if r.get("loss") is not None]
    assert trained[-1]["elapsed_s"] >= 0.95 * 6
    assert trained[-1]["lr"] < 0.15 * translation.peak_lr_for(64)  # decayed to ~ its floor
    assert max(r["lr"] for r in trained) > 0.5 * translation.peak_lr_for(64)
    averaged = [r for r in records if "averaged" in r]
    assert averaged and averaged[-1]["averaged"] >= 2


# ---- averaging -----------------------------------------------------------------------------------


def test_average_is_the_arithmetic_mean_of_the_parameters(tmp_path, fr_en):
    first = tmp_path / "m0"
    train_translation(str(fr_en), first, valid_spec=str(fr_en), preset="micro", max_steps=2,
                      progress=False)  # fmt: skip
    dirs = [first]
    for i in (1, 2):  # checkpoints of one run: same config and tokenizer, other weights
        other = tmp_path / f"m{i}"
        shutil.copytree(first, other)
        loaded = load_model_dir(other)
        with torch.no_grad():
            for p in loaded.model.parameters():
                p.add_(torch.randn_like(p))
        save_weights(loaded.model, other / WEIGHTS_FILE)
        dirs.append(other)
    code = main(["average", *map(str, dirs), "--out", str(tmp_path / "avg")])
    assert code == 0
    models = [load_model_dir(d).model.state_dict() for d in dirs]
    averaged = load_model_dir(tmp_path / "avg").model.state_dict()
    for name, value in averaged.items():
        if value.is_floating_point():
            expected = sum(m[name].double() for m in models) / 3
            torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
    assert Translator.load(tmp_path / "avg").translate(["le chat"], beam=1)


def test_average_refuses_models_of_different_configs_and_a_used_out(tmp_path, fr_en):
    a, b = tmp_path / "a", tmp_path / "b"
    train_translation(
        str(fr_en), a, valid_spec=str(fr_en), preset="micro", max_steps=1, progress=False
    )
    train_translation(
        str(fr_en), b, valid_spec=str(fr_en), preset="micro", max_steps=1, progress=False,
        overrides=["d_ff=64"],
    )  # fmt: skip
    from aiayn.errors import AiaynError

    with pytest.raises(AiaynError, match="config"):
        average_model_dirs([a, b], tmp_path / "out")
    with pytest.raises(AiaynError, match="already exists"):
        average_model_dirs([a, a], b)
