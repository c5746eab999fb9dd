"""`aiayn score`: per-sentence teacher-forced log-probabilities, equal to the model's log-softmax summed
by hand and to Hugging Face Marian's loss on the same weights; line numbers; bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from aiayn.cli import main
from aiayn.data.batching import collate_seq2seq
from aiayn.tasks.scoring import score_file, score_ids
from aiayn.tasks.translation import Translator
from reference import tiny_marian
from tiny_translation import PAIRS, tiny_lm_model_dir, tiny_translation_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _tsv(tmp_path, lines: list[str]):
    path = tmp_path / "test.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _by_hand(translator: Translator, src: str, tgt: str) -> tuple[float, int]:
    """One pair alone, the full logits, log-softmax, the reference's entries summed."""
    batch = collate_seq2seq([(translator.src_tok.encode(src), translator.tgt_tok.encode(tgt))])
    with torch.no_grad():
        logits = translator.model(batch.src, batch.tgt_in, batch.src_key_mask)[0]  # (T, V)
    logp = F.log_softmax(logits.double(), dim=-1)
    target = batch.tgt_out[0]
    return float(logp[torch.arange(len(target)), target].sum()), len(target)


def test_scores_equal_the_log_softmax_summed_by_hand_with_file_line_numbers(tmp_path):
    model_dir = tiny_translation_model_dir()
    translator = Translator.load(model_dir)
    lines = [f"{s}\t{t}" for s, t in PAIRS]
    lines.insert(2, "")  # a blank line: skipped, and the lines after it keep their numbers
    lines.append("我是一个学生\tI am a teacher who loves China")
    path = _tsv(tmp_path, lines)
    results = score_file(model_dir, str(path), batch_tokens=24)  # several batches, sorted
    pairs = PAIRS + [("我是一个学生", "I am a teacher who loves China")]
    assert [r["line"] for r in results] == [1, 2, 4, 5, 6, 7]
    for result, (src, tgt) in zip(results, pairs):
        logprob, tokens = _by_hand(translator, src, tgt)
        assert result["tokens"] == tokens
        assert result["logprob"] == pytest.approx(logprob, rel=1e-5, abs=1e-5)
        assert result["ppl"] == pytest.approx(math.exp(-logprob / tokens), rel=1e-5)


def test_batching_and_padding_never_change_a_score():
    translator = Translator.load(tiny_translation_model_dir())
    ids = [(translator.src_tok.encode(s), translator.tgt_tok.encode(t)) for s, t in PAIRS]
    together = score_ids(translator.model, ids, batch_tokens=4096)
    alone = [score_ids(translator.model, [pair])[0] for pair in ids]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_marian_shaped_model_scores_equal_hf_marian_loss():
    """A random MarianMTModel converted by aiayn.interop.marian. Marian starts decoding from its
    <pad> (decoder_start_token_id) where aiayn starts from <bos>: as in test_interop_marian, both
    are given the same decoder start, here Marian's own (pad 59, eos 0)."""
    pytest.importorskip("transformers")
    from aiayn.interop.marian import from_hf_marian

    pad, eos = 59, 0
    hf = tiny_marian(pad=pad, eos=eos)
    ours = from_hf_marian(hf)
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (torch.randint(1, pad, (s,), generator=gen).tolist(),
         torch.randint(1, pad, (t,), generator=gen).tolist())
        for s, t in [(5, 4), (9, 7), (3, 11), (7, 1)]
    ]  # fmt: skip
    scores = score_ids(ours, pairs, batch_tokens=20, bos_id=pad, eos_id=eos, pad_id=pad)
    for (src, tgt), score in zip(pairs, scores):
        with torch.no_grad():
            loss = hf(
                input_ids=torch.tensor([src + [eos]]), labels=torch.tensor([tgt + [eos]])
            ).loss
        assert score.tokens == len(tgt) + 1
        assert -score.logprob / score.tokens == pytest.approx(float(loss), abs=1e-4)


def test_cli_prints_one_json_line_per_pair(tmp_path, capsys):
    path = _tsv(tmp_path, [f"{s}\t{t}" for s, t in PAIRS])
    code = main(["score", "--model", str(tiny_translation_model_dir()), "--test", str(path),
                 "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = [json.loads(line) for line in out]
    assert [r["line"] for r in rows] == list(range(1, len(PAIRS) + 1))
    assert all(set(r) == {"line", "logprob", "tokens", "ppl"} for r in rows)
    assert all(r["logprob"] < 0 and r["ppl"] > 1 for r in rows)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["我是学生\tI am a student", "no tab here"], ":2: no tab"),
        (["我是学生\tI am a student", "", "我\t" + "student " * 80], ":3: reference has"),
    ],
)
def test_bad_lines_exit_2_naming_file_and_line(tmp_path, capsys, lines, message):
    path = _tsv(tmp_path, lines)
    code = main(["score", "--model", str(tiny_translation_model_dir()), "--test", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{path}{message}" in err and "Traceback" not in err


def test_a_model_that_is_not_a_translation_model_exits_2(tmp_path, capsys):
    path = _tsv(tmp_path, ["a\tb"])
    code = main(["score", "--model", str(tiny_lm_model_dir()), "--test", str(path)])
    assert code == 2 and "needs transformer" in capsys.readouterr().err
