"""A text classifier's folder (`aiayn train classify`) read by the commands that need only a BERT:
`aiayn embed` embeds with its encoder, `aiayn attention` draws its heads (and prints its label),
`aiayn search` ranks with it; `aiayn serve` and `aiayn export` refuse it in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from aiayn.errors import CheckpointError
from aiayn.modeldir import load_model_dir, save_model_dir
from aiayn.models.bert import BertConfig, BertForMaskedLM
from aiayn.models.bert_classifier import KIND, BertClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["apple", "banana", "cherry", "red", "green", "blue", "cat", "dog", "horse"]
LABELS = ["animal", "colour", "fruit"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """A random micro classifier, written as `aiayn train classify` writes one."""
    root = tmp_path_factory.mktemp("classifier")
    vocab = root / "vocab.txt"
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab.write_text("\n".join([*SPECIAL_TOKENS, *letters, *WORDS]) + "\n", encoding="utf-8")
    tokenizer = WordPieceTokenizer.from_vocab(vocab)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, num_heads=2, d_ff=64, num_layers=2,
        max_len=32, dropout=0.0, attention_dropout=0.0, pooler=False,
    )  # fmt: skip
    model = BertClassifier(config, len(LABELS))
    with torch.no_grad():
        model.head.weight.normal_(0, 1)  # labels that differ
    directory = root / "classifier"
    save_model_dir(directory, KIND, model, config, task="classify", labels=LABELS,
                   max_length=16, init="test", tokenizers={"text": "tokenizer.json"})  # fmt: skip
    tokenizer.save(directory, "tokenizer")
    return directory


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_the_folder_reads_whole_or_as_its_encoder(classifier_dir):
    whole = load_model_dir(classifier_dir)
    assert whole.kind == KIND and isinstance(whole.model, BertClassifier)
    encoder = load_model_dir(classifier_dir, expect="bert")
    assert encoder.kind == "bert" and type(encoder.model).__name__ == "BertModel"
    torch.testing.assert_close(encoder.model.state_dict(), whole.model.bert.state_dict())
    with pytest.raises(
        CheckpointError, match="holds a bert-classifier model, but this command needs gpt"
    ):
        load_model_dir(classifier_dir, expect="gpt")


def test_embed_uses_the_classifiers_encoder(classifier_dir, capsys):
    from aiayn.tasks.classify import TextClassifier
    from aiayn.tasks.mlm import SentenceEncoder

    code, out, err = _run(["embed", "--model", str(classifier_dir), "red apple", "a dog"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["red apple", "a dog"]
    classifier = TextClassifier.load(classifier_dir)
    expected = SentenceEncoder(classifier.model.bert, classifier.tokenizer).encode(
        ["red apple", "a dog"]
    )
    torch.testing.assert_close(
        torch.tensor([r["embedding"] for r in rows]), expected, atol=1e-5, rtol=0
    )


def test_search_ranks_with_the_classifiers_encoder(classifier_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("red apple\nthe dog\ngreen cherry\n", encoding="utf-8")
    args = ["search", "--model", str(classifier_dir), "--corpus", str(corpus), "red apple"]
    code, out, err = _run(args, capsys)
    assert code == 0, err
    assert "red apple" in out


def test_attention_draws_its_bert_heads_and_prints_the_label(classifier_dir, tmp_path, capsys):
    from aiayn.tasks.classify import TextClassifier

    out_file = tmp_path / "attention.png"
    args = ["attention", "--model", str(classifier_dir), "red apple", "--out", str(out_file),
            "--device", "cpu"]  # fmt: skip
    code, out, err = _run(args, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert out_file.stat().st_size > 0
    (top,) = TextClassifier.load(classifier_dir).classify(["red apple"])
    assert (result["label"], result["probability"]) == (top["label"], top["probability"])
    assert result["query_tokens"] == ["[CLS]", "red", "apple", "[SEP]"]
    assert result["heads"] == [0, 1] and result["layer"] == 1
    code, _, err = _run([*args, "--kind", "cross"], capsys)
    assert code == 2 and "a text classifier has only self-attention" in err


def test_serve_refuses_in_one_line_naming_what_to_run(classifier_dir, capsys):
    code, _, err = _run(["serve", "--model", str(classifier_dir), "--port", "0"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "not bert-classifier" in err and "aiayn classify-text" in err


def test_export_refuses_in_one_line(classifier_dir, tmp_path, capsys):
    args = ["export", str(classifier_dir), "--to", "hf", "--out", str(tmp_path / "hf")]
    code, _, err = _run(args, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "bert-classifier" in err


def test_its_encoder_starts_a_masked_lm(classifier_dir):
    from aiayn.interop.pretrained import load_initial

    initial = load_initial("bert", classifier_dir)
    model = initial.build()
    assert isinstance(model, BertForMaskedLM) and initial.untrained == ("mlm.",)
    whole = load_model_dir(classifier_dir).model
    torch.testing.assert_close(model.bert.state_dict(), whole.bert.state_dict())
