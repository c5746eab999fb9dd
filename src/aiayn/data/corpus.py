"""Readers and a writer for the text a user brings: parallel TSV corpora and plain text.

A parallel corpus is UTF-8 text with one sentence pair per line::

    source<TAB>target[<TAB>anything ...]

which is what Tatoeba and Anki exports already look like; columns after the second are ignored.

The readers are strict on purpose. A corpus with one broken line (a stray NUL, a Latin-1 byte, a missing
tab) usually means the whole file was exported or converted wrongly, and silently skipping or mangling
that line would hide the mistake until it shows up as a worse model. So every line is checked, and the
first problem raises :class:`~aiayn.errors.DataError` naming the file, the 1-based line and what is wrong,
e.g. ``corpus.tsv:17: no tab: expected 'source<TAB>target'``.

Accepted without complaint: a UTF-8 byte-order mark at the start of the file, ``\\r\\n`` line endings,
blank lines (skipped) and whitespace around each side (stripped).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from aiayn.errors import DataError

__all__ = [
    "MAX_LINE_CHARS",
    "read_parallel_tsv",
    "read_text",
    "write_parallel_tsv",
]

MAX_LINE_CHARS = 10_000
"""Longest TSV line accepted, in characters. Real sentence pairs are far shorter; a longer line is
almost always a file that is not line-oriented (a minified JSON dump, a binary blob that happens to
decode) and would otherwise become one enormous training example."""

# Category Cc is exactly U+0000-U+001F and U+007F-U+009F. Newline never reaches these patterns
# because text is split on it first.
_TSV_BAD_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# Plain text may also hold form feeds (page breaks in many plain-text books and sources).
_TEXT_BAD_CONTROL = re.compile("[\x00-\x08\x0a\x0b\x0d-\x1f\x7f-\x9f]")

_CONTROL_NAMES = {
    0x00: "NUL",
    0x07: "bell",
    0x08: "backspace",
    0x0B: "vertical tab",
    0x0C: "form feed",
    0x0D: "carriage return",
    0x1B: "escape",
    0x7F: "delete",
    0x85: "next line",
}

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _open_checked(path: Path) -> BinaryIO:
    """Open a file for reading, turning every way of not being a readable file into a DataError."""
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):  # /dev/zero, a FIFO nobody closes: reading would never end
        raise DataError(
            path, "is not a regular file (a device, pipe or socket); save the text to a file first"
        )
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None


def _raw_lines(path: Path, max_line_bytes: int | None) -> Iterator[bytes]:
    """The file's lines as bytes (without the ``\\n``), read one at a time: a large corpus is never
    held twice in memory, and with ``max_line_bytes`` a file without line breaks (a dump, a binary
    blob) is refused after that many bytes instead of being read whole."""
    with _open_checked(path) as f:
        number = 0
        while True:
            try:
                raw = f.readline(-1 if max_line_bytes is None else max_line_bytes + 1)
            except OSError as e:
                raise DataError(path, f"cannot read: {e.strerror or e}") from None
            number += 1
            if max_line_bytes is not None and len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DataError(
                    path,
                    f"line too long (over {max_line_bytes:,} bytes; the limit is "
                    f"{max_line_bytes // 4:,} characters)",
                    line=number,
                )
            if raw.endswith(b"\n"):
                yield raw[:-1]
            else:  # the last line: with or without a final line break, as str.split gives it
                yield raw
                return


def _describe_control(ch: str) -> str:
    code = ord(ch)
    name = _CONTROL_NAMES.get(code)
    return f"U+{code:04X} ({name})" if name else f"U+{code:04X}"


def _lines(
    path: Path, raw_lines: Iterable[bytes], bad_control: re.Pattern[str]
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line, checking encoding and control characters.

    Lines are split on ``\\n`` only, so a trailing ``\\r`` (CRLF files) is dropped and any other
    ``\\r`` is reported as a control character rather than silently becoming a line break.
    """
    offset = 0  # byte offset of the current line in the file, for hexdump-friendly messages
    for number, raw in enumerate(raw_lines, start=1):
        if number == 1 and raw.startswith(_UTF16_BOMS):
            raise DataError(
                path,
                "file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8",
                line=1,
            )
        line_start = offset
        offset += len(raw) + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
            line_start += len(_UTF8_BOM)
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise DataError(
                path,
                f"NUL byte (U+0000) at byte offset {nul} of the line: this looks like a binary or "
                "UTF-16 file, not UTF-8 text",
                line=number,
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = raw[e.start]
            raise DataError(
                path,
                f"invalid UTF-8: byte 0x{bad:02X} at byte offset {e.start} of the line "
                f"(file offset {line_start + e.start}); save the file as UTF-8",
                line=number,
            ) from None
        match = bad_control.search(text)
        if match:
            hint = "; lines must end in \\n or \\r\\n" if match.group() == "\r" else ""
            raise DataError(
                path,
                f"control character {_describe_control(match.group())} at column "
                f"{match.start() + 1}{hint}",
                line=number,
            )
        yield number, text


def read_parallel_tsv(
    path: str | os.PathLike[str],
    swap: bool = False,
    *,
    max_line_chars: int = MAX_LINE_CHARS,
) -> list[tuple[str, str]]:
    """Read a parallel corpus: one ``source<TAB>target[<TAB>anything]`` pair per line.

    Args:
        path: the TSV file.
        swap: exchange the columns, so the second column becomes the source (for reading an
            English-first Tatoeba export as a Chinese-to-English corpus, say).
        max_line_chars: longest line accepted, in characters.

    Returns:
        ``(source, target)`` pairs in file order, each side stripped of surrounding whitespace.

    Raises:
        DataError: the file is missing, a directory, unreadable, not UTF-8 text, holds no pairs, or
            has a malformed line (no tab, an empty side, a control character, an over-long line).
            The first problem in file order is reported, with its line number.
    """
    path = Path(path)
    pairs: list[tuple[str, str]] = []
    # UTF-8 spends at most 4 bytes a character: a longer line cannot be within the limit.
    raw_lines = _raw_lines(path, 4 * max_line_chars + 1)  # + 1: a CRLF line's carriage return
    for number, text in _lines(path, raw_lines, _TSV_BAD_CONTROL):
        if len(text) > max_line_chars:
            raise DataError(
                path,
                f"line too long ({len(text)} characters; the limit is {max_line_chars})",
                line=number,
            )
        # A line holding only spaces is blank; one holding a tab is a row with empty fields.
        if "\t" not in text and not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < 2:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise DataError(
                path, f"no tab: expected 'source<TAB>target', got {shown!r}", line=number
            )
        source, target = fields[0].strip(), fields[1].strip()
        if not source:
            raise DataError(path, "empty source (first column)", line=number)
        if not target:
            raise DataError(path, "empty target (second column)", line=number)
        pairs.append((target, source) if swap else (source, target))
    if not pairs:
        raise DataError(path, "no sentence pairs found")
    return pairs


def _read_text_file(path: Path) -> str:
    # _lines checks every line; rejoining with \n also normalizes \r\n and drops the BOM.
    return "\n".join(text for _, text in _lines(path, _raw_lines(path, None), _TEXT_BAD_CONTROL))


def _text_files(folder: Path) -> list[Path]:
    """Every ``*.txt`` file under ``folder``, sorted by relative path, hidden entries skipped."""
    found: list[Path] = []
    # os.walk does not follow symlinked folders, so a link loop cannot make this run forever.
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root) / f for f in files if f.endswith(".txt") and not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def read_text(path: str | os.PathLike[str]) -> str:
    """Read the training text for a language model: one UTF-8 file, or a folder of them.

    A folder contributes every ``*.txt`` file below it (recursively, hidden files and folders
    skipped), in order of relative path, each with leading and trailing blank lines removed, joined
    with one empty line (``"\\n\\n"``) so documents stay separated. Empty files in a folder are
    skipped. ``\\r\\n`` becomes ``\\n`` and a leading byte-order mark is dropped.

    Args:
        path: a text file or a folder.

    Returns:
        The text.

    Raises:
        DataError: the path is missing, a file is not UTF-8 text (invalid bytes, NUL, control
            characters other than tab and form feed; reported with file and line), or there is no
            text at all.
    """
    path = Path(path)
    if not path.is_dir():
        text = _read_text_file(path)
        if not text.strip():
            raise DataError(path, "no text found (the file is empty)")
        return text
    files = _text_files(path)
    if not files:
        raise DataError(path, "no *.txt files found in this folder")
    parts = [t for t in (_read_text_file(f).strip("\n") for f in files) if t.strip()]
    if not parts:
        raise DataError(path, f"no text found (all {len(files)} *.txt files are empty)")
    return "\n\n".join(parts)


def write_parallel_tsv(path: str | os.PathLike[str], pairs: Iterable[tuple[str, str]]) -> None:
    """Write ``(source, target)`` pairs as a TSV file that :func:`read_parallel_tsv` reads back.

    Each side is stripped of surrounding whitespace, as the reader would. The file is written to a
    temporary name in the same folder and renamed into place, so an interrupted write never leaves
    a half-written corpus behind. Missing parent folders are created.

    Args:
        path: the file to write (replaced if it exists).
        pairs: the sentence pairs.

    Raises:
        ValueError: a side is empty after stripping or holds a tab, newline or other control
            character (it could not be read back as the same pair); nothing is written.
    """
    path = Path(path)
    lines = []
    for i, pair in enumerate(pairs):
        source, target = (side.strip() for side in pair)
        for side, name in ((source, "source"), (target, "target")):
            if not side:
                raise ValueError(f"pair {i}: empty {name}")
            match = _TSV_BAD_CONTROL.search(side) or re.search("\t", side)
            if match:
                raise ValueError(
                    f"pair {i}: {name} holds {_describe_control(match.group())}, which a TSV line "
                    "cannot carry"
                )
        lines.append(f"{source}\t{target}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave nothing half-done on disk, whatever interrupted the write.
        Path(tmp).unlink(missing_ok=True)
        raise
