"""The tutorials in ``tutorials/`` run from top to bottom on real data, and their stored outputs are complete.

Executing them takes minutes, so the execution test is marked ``slow`` (CI's second step); the stored-output check is
fast and runs with the suite, so a tutorial saved without its outputs (or with an error in them) is caught.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((REPO_ROOT / "tutorials").glob("*.ipynb"))
NEEDS_DATA = {"02_her2st", "03_he_only", "04_pretraining", "06_integration"}


def test_the_tutorials_exist_and_are_in_the_docs():
    names = [path.stem for path in TUTORIALS]
    assert names == [
        "01_quickstart",
        "02_her2st",
        "03_he_only",
        "04_pretraining",
        "05_pathology_encoder",
        "06_integration",
    ]
    index = (REPO_ROOT / "docs" / "index.md").read_text()
    assert all(f"tutorials/{name}" in index for name in names)
    assert (REPO_ROOT / "docs" / "tutorials").resolve() == (REPO_ROOT / "tutorials").resolve()


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_stored_outputs_are_complete_and_error_free(path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code"
    assert all(cell.execution_count is not None for cell in code), f"{path.name} was saved without running every cell"
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} was not run top to bottom in one kernel: {counts}"
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name} stores an error: {errors[0].ename}: {errors[0].evalue}"
    figures = sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs)
    assert figures >= 1, f"{path.name} stores no figure"


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_executes(path, tmp_path, monkeypatch, request):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if path.stem in NEEDS_DATA:
        monkeypatch.setenv("STORM_DATA_DIR", str(request.getfixturevalue("shared_data")))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "Traceback" not in text
    Path(tmp_path / f"{path.stem}.ipynb").write_text(nbformat.writes(notebook))
