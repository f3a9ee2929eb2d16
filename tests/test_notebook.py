"""The analysis notebook runs top to bottom from any folder on the reference data, writing only into
the output folder it is given (issue 19: it failed from the repository root and wrote into it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "analysis" / "notebook.ipynb"


@pytest.mark.slow
def test_notebook_runs_from_anywhere_on_the_reference_data(reference_db, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip(
        "nbclient", reason="the notebook extra (nbclient, ipykernel) is not installed"
    )
    # A copy: the notebook stores features, and the shared reference database is read-only for tests.
    db = tmp_path / "reference.db"
    shutil.copy(reference_db.removeprefix("sqlite:///"), db)
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{db}")
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace('OUT = "notebook-output"', 'OUT = "results"')
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(elsewhere)}}
    )
    client.execute()
    written = {p.name for p in (elsewhere / "results").iterdir()}
    assert {"report.html", "comparisons.csv", "comparisons.json"} <= written, written
    assert set(elsewhere.iterdir()) == {elsewhere / "results"}  # nothing else written where it ran
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
