"""`--out` is checked before anything is written, and aiayn deletes only folders it wrote."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiayn.cli import main
from aiayn.data.corpus import write_parallel_tsv
from aiayn.errors import AiaynError
from aiayn.training.checkpoint import swap_in_directory
from aiayn.training.rundir import RUN_MARKER, claim_out_dir, remove_own_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    write_parallel_tsv(path, [("le chat", "the cat"), ("le chien", "the dog")] * 10)
    return path


def _train(tsv, out, *extra) -> int:
    return main(
        ["train", "translate", "--train", str(tsv), "--valid", str(tsv), "--out", str(out)]
        + ["--preset", "micro", "--max-steps", "1", "--no-progress", *extra]
    )


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_foreign_folder_is_refused_and_left_untouched(tsv, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "last").mkdir(parents=True)
    (project / "config.json").write_text('{"mine": true}')
    (project / "last" / "notes.txt").write_text("my notes")
    before = _snapshot(project)
    assert _train(tsv, project) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("aiayn: error")]
    assert len(err) == 1 and "not an aiayn run" in err[0] and "--overwrite" in err[0]
    assert _snapshot(project) == before


def test_overwrite_writes_into_it_but_never_deletes_a_folder_aiayn_did_not_write(
    tsv, tmp_path, capsys
):
    project = tmp_path / "project"
    (project / "last").mkdir(parents=True)
    (project / "last" / "notes.txt").write_text("my notes")
    (project / "keep.txt").write_text("keep")
    assert _train(tsv, project, "--overwrite") == 2  # the save would have to move `last` away
    assert "not written by aiayn" in capsys.readouterr().err
    assert (project / "last" / "notes.txt").read_text() == "my notes"
    assert (project / "keep.txt").read_text() == "keep"


def test_overwrite_of_a_folder_with_unrelated_files_trains(tsv, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "keep.txt").write_text("keep")
    assert _train(tsv, project, "--overwrite") == 0
    assert (project / "keep.txt").read_text() == "keep"
    assert (project / "model.safetensors").is_file() and (project / RUN_MARKER).is_file()
    assert _train(tsv, project) == 0  # now it is an aiayn run: no flag needed again


def test_an_out_that_is_a_file_is_exit_2(tsv, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("data")
    assert _train(tsv, target) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "data"


def test_runs_written_before_the_marker_are_recognised(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "config.json").write_text('{"format_version": 1}')
    (run / "metrics.jsonl").write_text("")
    claim_out_dir(run)  # no error
    assert (run / RUN_MARKER).is_file()


def test_only_marked_folders_are_removed(tmp_path):
    foreign = tmp_path / "last.tmp"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    with pytest.raises(AiaynError, match="not written by aiayn"):
        remove_own_folder(foreign)
    assert (foreign / "x").exists()
    (foreign / RUN_MARKER).write_text("")
    remove_own_folder(foreign)
    assert not foreign.exists()


def test_swap_refuses_to_move_a_foreign_folder_aside(tmp_path):
    final, staging = tmp_path / "last", tmp_path / "last.tmp"
    final.mkdir()
    (final / "mine.txt").write_text("mine")
    staging.mkdir()
    (staging / "trainer.pt").write_text("1")
    with pytest.raises(AiaynError, match="not written by aiayn"):
        swap_in_directory(staging, final)
    assert (final / "mine.txt").read_text() == "mine" and not (tmp_path / "last.old").exists()


def test_a_second_writer_is_refused(tsv, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(  # another process holds the folder's lock
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = subprocess.run(
            [sys.executable, "-m", "aiayn", "train", "translate", "--train", str(tsv),
             "--out", str(out), "--preset", "micro", "--max-steps", "1", "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 2
        assert f"another aiayn run (pid {holder.pid}) is writing there" in run.stderr
        assert not (out / "last").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _train(tsv, out) == 0  # the lock died with its process


HOLD_LOCK = """
import sys, time
from pathlib import Path
from aiayn.training.rundir import claim_out_dir
claim_out_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""
