"""The output folder of a training run: claimed before anything is written, and only aiayn's own
folders are ever deleted from it.

``--out`` may be mistyped (``~``, a project folder, an existing file). A run therefore writes into a
folder only when it is new, empty, or already an aiayn run (it holds :data:`RUN_MARKER`, or the
``config.json`` + ``metrics.jsonl`` of a run written before the marker existed); anything else needs
``--overwrite``. Even then, the folders a run replaces (``last``, ``last.old``, ``last.tmp``) are removed
only when they hold aiayn's marker or training state, so a user's folder of the same name survives.

One writer at a time: the run holds an exclusive lock on :data:`LOCK_FILE` (``fcntl.flock``, released by
the operating system when the process ends, however it ends), so a second run on the same folder is
refused instead of sharing ``last.tmp`` with the first. (Where ``fcntl`` does not exist, Windows, there
is no lock.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO

from ..errors import AiaynError

#: Written into every run folder and every checkpoint folder aiayn creates: proof that it wrote them.
RUN_MARKER = ".aiayn-run"
#: Locked by the run writing the folder.
LOCK_FILE = ".aiayn-lock"
#: The checkpoint folders a run replaces inside its output folder.
CHECKPOINT_FOLDERS = ("last", "last.old", "last.tmp")
#: Files whose presence shows a checkpoint folder is aiayn's (runs older than the marker).
_STATE_FILES = ("trainer.pt",)


def is_aiayn_run(directory: Path) -> bool:
    """True when ``directory`` is a training run's folder that aiayn wrote."""
    if (directory / RUN_MARKER).is_file():
        return True
    config, metrics = directory / "config.json", directory / "metrics.jsonl"
    if not (config.is_file() and metrics.is_file()):
        return False
    try:
        return "format_version" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def claim_out_dir(directory: Path, overwrite: bool = False, lock: bool = True) -> None:
    """Check ``directory`` can be this run's folder, or refuse with a clear error (exit 2).

    A folder that exists is marked as aiayn's and locked now; one that does not is created (and
    then marked and locked) by the trainer when it first writes, so bad input found later (an
    unreadable corpus) leaves no folder behind.

    Args:
        directory: the ``--out`` folder.
        overwrite: write into a non-empty folder that is not an aiayn run (``--overwrite``).
        lock: take the writer's lock (only the process that writes: rank 0 of a distributed run).

    Raises:
        AiaynError: ``directory`` is a file, a non-empty foreign folder without ``overwrite``, holds
            a ``last*`` folder aiayn did not write, or another run is writing it.
    """
    if directory.exists() and not directory.is_dir():
        raise AiaynError(f"--out {directory}: is a file, not a folder")
    if not directory.exists():
        return
    foreign = not is_aiayn_run(directory) and any(directory.iterdir())
    if foreign and not overwrite:
        raise AiaynError(
            f"--out {directory}: the folder is not empty and is not an aiayn run; "
            "choose a new folder, or pass --overwrite to write aiayn's files into it"
        )
    for name in CHECKPOINT_FOLDERS:  # replaced by every save: refuse now rather than mid-run
        if (directory / name).exists() and not is_own_folder(directory / name):
            raise AiaynError(
                f"{directory / name}: exists but was not written by aiayn, which keeps its "
                "checkpoints there; move it away (it is not deleted)"
            )
    try:
        mark(directory)  # before the lock file, so the folder is never seen unmarked and non-empty
        if lock:
            _lock(directory)
    except OSError as e:
        raise AiaynError(f"--out {directory}: {e.strerror or e}") from None


def create_out_dir(directory: Path, lock: bool = True) -> None:
    """Create (if needed), mark and lock the run's folder: the trainer's first write."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AiaynError(f"--out {directory}: {e.strerror or e}") from None
    claim_out_dir(directory, lock=lock)  # an existing folder is checked like any other


def release_out_dir(directory: Path) -> None:
    """Give up this process's lock on ``directory`` (training there is over)."""
    handle = _HELD.pop(directory.resolve(), None)
    if handle is not None:
        handle.close()


#: The locks this process holds, by folder: kept open until the process ends.
_HELD: dict[Path, IO[str]] = {}


def _lock(directory: Path) -> None:
    key = directory.resolve()
    if key in _HELD:  # this process already writes there (one run after another in one process)
        return
    try:
        import fcntl
    except ImportError:  # Windows
        return
    handle = open(directory / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AiaynError(
            f"--out {directory}: another aiayn run (pid {holder}) is writing there; wait for it "
            "to finish or choose another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD[key] = handle


def mark(directory: Path) -> None:
    """Leave aiayn's marker in a folder it created."""
    marker = directory / RUN_MARKER
    if not marker.exists():
        marker.write_text("written by aiayn; safe to delete with its folder\n", encoding="utf-8")


def is_own_folder(directory: Path) -> bool:
    """True when ``directory`` holds aiayn's marker or training state."""
    return (directory / RUN_MARKER).is_file() or any(
        (directory / name).is_file() for name in _STATE_FILES
    )


def remove_own_folder(directory: Path) -> None:
    """Delete ``directory`` recursively, but only if aiayn wrote it.

    Raises:
        AiaynError: it exists and does not carry aiayn's marker or training state.
    """
    if not directory.exists():
        return
    if not directory.is_dir() or not is_own_folder(directory):
        raise AiaynError(
            f"{directory}: exists but was not written by aiayn; move it away (it is not deleted)"
        )
    shutil.rmtree(directory)
