"""``aiayn bench --out FILE``: every section goes to FILE, and the repository's BENCHMARKS.md (the
full run's figures) is left alone."""

from __future__ import annotations

import ast
from pathlib import Path

from aiayn.bench import harness
from aiayn.cli import main
from aiayn.cli.bench import BENCHMARKS


def test_bench_out_writes_there_and_not_to_benchmarks_md(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "BENCHMARKS_MD", harness.BENCHMARKS_MD)  # restored afterwards
    repository = harness.ROOT / "BENCHMARKS.md"
    before = repository.read_bytes() if repository.exists() else None
    out = tmp_path / "quick.md"
    assert main(["bench", "--quick", "--only", "bench_machine", "--out", str(out)]) == 0
    assert "## Machine float32 matmul peak" in out.read_text()
    assert (repository.read_bytes() if repository.exists() else None) == before


def test_no_benchmark_writes_benchmarks_md_by_its_own_path():
    """Each module writes through ``harness.write_section``, which reads ``--out`` at call time;
    none names the file itself (a path bound at import would ignore --out)."""
    for name in BENCHMARKS:
        source = Path(harness.__file__).with_name(f"{name}.py").read_text()
        strings = [n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)]
        assert not any(isinstance(s, str) and s.endswith("BENCHMARKS.md") for s in strings), name
