"""The walkthrough notebook (notebooks/pytorch_and_jax_side_by_side.ipynb) runs: executed headless with nbclient in
its quick setting (MNIST_NOTEBOOK_QUICK=1), it raises in no cell and every figure cell (tagged ``figure``) draws
its PNG. The committed copy keeps the outputs of such a run, so that GitHub shows its pictures."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "pytorch_and_jax_side_by_side.ipynb"
#: The longest one cell may run before nbclient calls it hung: a guard against a hang, not a speed claim (the run's
#: seconds are printed; speed is measured in benchmarks/, never asserted in a test).
CELL_TIMEOUT = 180
#: The cells that draw: sample digits; both runs' curves and step losses; both confusion matrices.
FIGURES = 3


def figure_cells(notebook) -> list:
    return [c for c in notebook.cells if "figure" in c.get("metadata", {}).get("tags", [])]


def test_the_committed_notebook_is_small_and_shows_its_figures():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert NOTEBOOK.stat().st_size < 1_000_000, f"{NOTEBOOK.name} is {NOTEBOOK.stat().st_size} bytes; keep it < 1 MB"
    cells = figure_cells(notebook)
    assert len(cells) == FIGURES
    for cell in cells:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source[:80]


@pytest.mark.e2e
def test_the_notebook_runs_in_its_quick_setting_and_draws_every_figure(monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("MNIST_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()  # a cell that raises raises CellExecutionError here, naming the cell and the error
    seconds = time.perf_counter() - start
    print(f"the notebook ran in {seconds:.1f} s")
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    missing = [
        c.source[:80] for c in figure_cells(notebook) if not any("image/png" in o.get("data", {}) for o in c.outputs)
    ]
    assert len(figure_cells(notebook)) == FIGURES and not missing, missing
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "QUICK=True" in text and "max |logit difference|" in text and "not the benchmark" in text
