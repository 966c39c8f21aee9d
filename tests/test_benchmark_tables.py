"""The tables generated from ``benchmarks/results`` are the ones the pages show, and the suites stay independent."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _report():
    """``benchmarks/_report.py`` (not an installed package; it needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("benchmarks_report", BENCHMARKS / "_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _report()
EXPECTED = {
    "docs/benchmarks.md": {"summary", *report.BLOCKS} - {"suites"},
    "README.md": {"summary"},
    "benchmarks/README.md": {"suites"},
}


@pytest.mark.parametrize("page", sorted(report.PAGES))
def test_generated_blocks_match_the_stored_results(page):
    text = (ROOT / page).read_text()
    assert set(report.blocks(text)) == EXPECTED[page], f"{page}: missing or unknown <!-- table:NAME --> markers"
    assert report.render(text, page) == text, f"{page} is out of date: run `python -m benchmarks report`"


def test_benchmarks_page_stays_short():
    assert len((ROOT / "docs" / "benchmarks.md").read_text().splitlines()) < 400


def test_no_suite_imports_another_suite():
    for path in BENCHMARKS.glob("*.py"):
        tree = ast.parse(path.read_text())
        local = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        assert local <= {"_common", "_report"}, f"{path.name} imports {sorted(local)}: share code through _common.py"
        absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        assert not absolute & set(report.suites()), f"{path.name} imports another suite"


def test_rendering_needs_neither_storm_nor_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import benchmarks._report as r; "
        "[r.render((r.ROOT / p).read_text(), p) for p in r.PAGES]; "
        "assert not {'storm', 'torch'} & set(sys.modules), sorted({'storm', 'torch'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT)], check=True)
