"""Tests for the parallel-corpus and plain-text readers in aiayn.data.corpus."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiayn.data.corpus import MAX_LINE_CHARS, read_parallel_tsv, read_text, write_parallel_tsv
from aiayn.errors import AiaynError, DataError


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _error(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        read_parallel_tsv(path, **kwargs)
    return info.value


# --- good files ------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    pairs = [("我是一个学生", "I am a student"), ("我爱中国", "I love China"), ("a b", "b a")]
    path = tmp_path / "sub" / "corpus.tsv"
    write_parallel_tsv(path, pairs)
    assert read_parallel_tsv(path) == pairs
    assert [p.name for p in path.parent.iterdir()] == ["corpus.tsv"]  # no temp file left over


def test_write_strips_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("old\tfile\n", encoding="utf-8")
    write_parallel_tsv(path, [("  hi ", " there\u3000")])
    assert path.read_bytes() == b"hi\tthere\n"


@pytest.mark.parametrize("bad", [("a\tb", "c"), ("a", "b\nc"), ("  ", "x"), ("a", "b\x00")])
def test_write_rejects_unreadable_pairs(tmp_path: Path, bad: tuple[str, str]) -> None:
    path = tmp_path / "c.tsv"
    with pytest.raises(ValueError, match="pair 1"):
        write_parallel_tsv(path, [("ok", "fine"), bad])
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_extra_columns_blank_lines_and_whitespace(tmp_path: Path) -> None:
    # The shape of a Tatoeba export: English, translation, attribution.
    data = (
        "Hi.\t你好。\tCC-BY 2.0 (France) Attribution: tatoeba.org #538123\n\n   \n  Run! \t 跑！ \n"
    )
    path = _write(tmp_path / "t.tsv", data.encode())
    assert read_parallel_tsv(path) == [("Hi.", "你好。"), ("Run!", "跑！")]
    assert read_parallel_tsv(path, swap=True) == [("你好。", "Hi."), ("跑！", "Run!")]


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.tsv", b"\xef\xbb\xbfone\t1\r\ntwo\t2\r\n")
    assert read_parallel_tsv(path) == [("one", "1"), ("two", "2")]


def test_no_final_newline(tmp_path: Path) -> None:
    assert read_parallel_tsv(_write(tmp_path / "n.tsv", b"a\tb")) == [("a", "b")]


# --- bad files: each names the file and the line ---------------------------------------------------

GOOD = b"good\tline\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"no tab here\n", "no tab: expected 'source<TAB>target'"),
        (b"\tonly target\n", "empty source"),
        (b"only source\t  \n", "empty target"),
        (b"\t\n", "empty source"),
        (b"a\x00b\tc\n", "NUL byte (U+0000) at byte offset 1"),
        (b"a\tb\x07c\n", "control character U+0007 (bell) at column 4"),
        (b"a\tb\x1b[0m\n", "control character U+001B (escape)"),
        (b"a\rb\tc\n", "control character U+000D (carriage return) at column 2"),
        ("a\tb\u0085\n".encode(), "control character U+0085 (next line)"),
        (
            b"caf\xe9\tcafe\n",
            "invalid UTF-8: byte 0xE9 at byte offset 3 of the line (file offset 23)",
        ),
    ],
)
def test_bad_line_reports_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = _write(tmp_path / "bad.tsv", GOOD * 2 + line + b"also\tbad\x00\n")
    err = _error(path)
    assert err.line == 3
    assert message in err.message
    assert str(err).startswith(f"{path}:3: ")


def test_bom_in_middle_is_kept_not_an_error(tmp_path: Path) -> None:
    # U+FEFF after line 1 is a zero-width no-break space: not a control, so the line is accepted.
    path = _write(tmp_path / "b.tsv", GOOD + "\ufeffx\ty\n".encode())
    assert read_parallel_tsv(path)[1] == ("\ufeffx", "y")


def test_first_problem_wins(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.tsv", GOOD + b"notab\n" + b"\xff\xfe\n")
    err = _error(path)
    assert (err.line, err.message.split(":")[0]) == (2, "no tab")


def test_line_too_long(tmp_path: Path) -> None:
    long = "x" * MAX_LINE_CHARS + "\ty"
    path = _write(tmp_path / "l.tsv", GOOD + long.encode() + b"\n")
    err = _error(path)
    assert err.line == 2
    assert (
        err.message
        == f"line too long ({MAX_LINE_CHARS + 2} characters; the limit is {MAX_LINE_CHARS})"
    )
    assert read_parallel_tsv(path, max_line_chars=MAX_LINE_CHARS + 2)[1] == (
        "x" * MAX_LINE_CHARS,
        "y",
    )


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "e.tsv", data)
    err = _error(path)
    assert str(err) == f"{path}: no sentence pairs found"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert str(_error(tmp_path / "nope.tsv")) == f"{tmp_path / 'nope.tsv'}: no such file"
    assert "is a directory" in str(_error(tmp_path))


def test_binary_and_utf16_files(tmp_path: Path) -> None:
    png = _write(tmp_path / "x.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    err = _error(png)
    assert err.line == 1 and "invalid UTF-8: byte 0x89" in err.message
    utf16 = _write(tmp_path / "u16.tsv", "a\tb\n".encode("utf-16"))
    err = _error(utf16)
    assert err.line == 1 and "UTF-16" in err.message
    utf16_no_bom = _write(tmp_path / "u16le.tsv", "a\tb\n".encode("utf-16-le"))
    err = _error(utf16_no_bom)
    assert err.line == 1 and "NUL byte" in err.message and "binary" in err.message


def test_data_error_is_an_aiayn_error(tmp_path: Path) -> None:
    assert isinstance(_error(tmp_path / "missing"), AiaynError)


# --- properties -------------------------------------------------------------------------------------

_lines = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.tuples(st.text(max_size=10), st.text(max_size=10)).map(
            lambda p: f"{p[0]}\t{p[1]}".encode("utf-8", "surrogatepass")
        ),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=_lines, crlf=st.booleans())
def test_junk_never_crashes(lines: list[bytes], crlf: bool) -> None:
    data = (b"\r\n" if crlf else b"\n").join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "junk.tsv"
        path.write_bytes(data)
        try:
            pairs = read_parallel_tsv(path)
        except DataError as e:
            assert e.path == str(path)
            assert e.line is None or 1 <= e.line <= max(1, data.count(b"\n") + 1)
        else:
            assert pairs and all(s and t and s == s.strip() and t == t.strip() for s, t in pairs)
        # read_text is as strict about bytes; it must fail the same clean way.
        with contextlib.suppress(DataError):
            read_text(path)


_side = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20
).filter(lambda s: s.strip())


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(_side, _side), min_size=1, max_size=5))
def test_write_read_round_trip(pairs: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.tsv"
        write_parallel_tsv(path, pairs)
        assert read_parallel_tsv(path) == [(s.strip(), t.strip()) for s, t in pairs]


# --- read_text --------------------------------------------------------------------------------------


def test_read_text_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", b"\xef\xbb\xbfline one\r\n\tindented\x0cpage\r\n")
    assert read_text(path) == "line one\n\tindented\x0cpage\n"


def test_read_text_folder(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    _write(tmp_path / "b" / "2.txt", b"second\n")
    _write(tmp_path / "a.txt", b"\n\nfirst\n\n")
    _write(tmp_path / "c.txt", b"  \n")  # empty: skipped
    _write(tmp_path / "notes.md", b"not text for training")
    _write(tmp_path / ".hidden" / "x.txt", b"hidden")
    _write(tmp_path / "b" / "1.txt", "第一".encode())
    assert read_text(tmp_path) == "first\n\n第一\n\nsecond"


def test_read_text_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=r"no \*\.txt files"):
        read_text(tmp_path)
    empty = _write(tmp_path / "empty.txt", b"\n \n")
    with pytest.raises(DataError, match="no text found"):
        read_text(empty)
    with pytest.raises(DataError, match=r"all 1 \*\.txt files are empty"):
        read_text(tmp_path)
    bad = _write(tmp_path / "sub.txt", b"ok\nok\nbad \xc3\x28 utf8\n")
    with pytest.raises(DataError) as info:
        read_text(tmp_path)
    assert str(info.value).startswith(f"{bad}:3: invalid UTF-8: byte 0xC3 at byte offset 4")
    _write(bad, b"ok\nnul\x00\n")
    with pytest.raises(DataError) as info:
        read_text(bad)
    assert (info.value.line, "NUL byte" in info.value.message) == (2, True)
    _write(bad, b"ok\n\x1b[31mred\n")
    with pytest.raises(DataError, match="U\\+001B"):
        read_text(bad)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "secret.tsv", GOOD)
    path.chmod(0)
    try:
        assert "cannot read" in str(_error(path))
    finally:
        path.chmod(0o600)
