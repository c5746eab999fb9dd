"""Bad input anywhere a user reaches gives one clear message, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiayn.cli import main


def _run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(min_size=1, max_size=300))
def test_junk_corpus_files_never_crash_the_cli(tmp_path, capsys, junk):
    path = tmp_path / "junk.tsv"
    path.write_bytes(junk + b"\x00")  # a NUL makes sure the file can never be a valid corpus
    code, err = _run(
        [
            "train",
            "translate",
            "--train",
            str(path),
            "--out",
            str(tmp_path / "m"),
            "--max-steps",
            "1",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2
    assert str(path) in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["translate", "--model", "/nonexistent/model", "hi"],
        ["evaluate", "--model", "/nonexistent/model", "--test", "builtin:zh-en"],
        ["train", "translate", "--train", "builtin:nope", "--out", "/tmp/x", "--max-steps", "1"],
        ["train", "translate", "--train", "/nonexistent.tsv", "--out", "/tmp/x"],
        ["info", "--preset", "gigantic"],
        ["info", "--set", "d_model=abc"],
        ["info", "--set", "d_model=30", "--set", "num_heads=4"],
        ["info", "--set", "no_such_field=1"],
    ],
)
def test_bad_arguments_and_paths_exit_2_with_a_message(argv, capsys):
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert err.strip() and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["translate", "--model", "m", "--beam", "0", "x"],
        ["train", "translate", "--train", "x", "--out", "y", "--max-steps", "-5"],
        ["train", "translate", "--train", "x", "--out", "y", "--max-minutes", "nan"],
        ["train", "translate", "--train", "x", "--out", "y", "--max-minutes", "1e308"],
        ["train", "translate", "--train", "x", "--out", "y", "--guided-attention", "-1"],
        ["train", "translate", "--train", "x", "--out", "y", "--guided-attention", "nan"],
        ["train", "lm", "--text", "x", "--out", "y", "--weight-decay", "-1"],
        ["train", "vit", "--dataset", "x", "--out", "y", "--lr", "inf"],
        ["translate"],
        ["no-such-command"],
    ],
)
def test_out_of_range_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_model_directory_problems(tmp_path, capsys):
    d = tmp_path / "model"
    d.mkdir()
    code, err = _run(["translate", "--model", str(d), "x"], capsys)
    assert code == 2 and "config.json" in err
    (d / "config.json").write_text("{not json")
    code, err = _run(["translate", "--model", str(d), "x"], capsys)
    assert code == 2 and "not valid JSON" in err
    (d / "config.json").write_text(json.dumps({"format": "aiayn", "kind": "gpt", "config": {}}))
    code, err = _run(["translate", "--model", str(d), "x"], capsys)
    assert code == 2 and "gpt" in err
    (d / "config.json").write_text(
        json.dumps({"format": "aiayn", "kind": "transformer", "config": {"d_model": -1}})
    )
    code, err = _run(["translate", "--model", str(d), "x"], capsys)
    assert code == 2 and "config" in err


def test_a_vit_image_size_too_large_to_build_is_refused(tmp_path, capsys):
    # 100,000-pixel images in 4-pixel patches: 625 million positions, a 50 TB allocation.
    code, err = _run(
        ["train", "vit", "--dataset", "builtin:digits", "--out", str(tmp_path / "v"),
         "--image-size", "100000", "--max-steps", "1", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "patches" in err and "Traceback" not in err
    assert not (tmp_path / "v").exists()


def test_running_out_of_memory_is_one_line_exit_2(monkeypatch, capsys):
    import aiayn.cli as cli

    def allocate(args):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr(cli, "_cmd_info", allocate)
    code, err = _run(["info"], capsys)
    assert code == 2 and "out of memory" in err and len(err.strip().splitlines()) == 1


def test_other_runtime_errors_are_not_called_out_of_memory(monkeypatch):
    import aiayn.cli as cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_cmd_info", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["info"])
