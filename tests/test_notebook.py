"""The H.E.S.S. tutorial notebook runs top to bottom; its cells assert what they show."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "background_model.ipynb"
ATTRIBUTION = (
    "This work made use of data from the H.E.S.S. DL3 public test data release 1 "
    "(HESS DL3 DR1, H.E.S.S. collaboration, 2018)."
)


@pytest.fixture()
def notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_is_committed_with_outputs_cleared(notebook):
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_states_the_data_attribution(notebook):
    markdown = " ".join(" ".join(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown")
    assert ATTRIBUTION in markdown


@pytest.mark.slow
def test_notebook_runs_against_the_hess_data(notebook, hess_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BKGXR_DATA", str(hess_dir))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's exported models land here
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "105 observations in the store, 45 off runs" in text
    assert "gammapy's bkg equals the exported model for 6 observations" in text
    assert "observed 1637, predicted" in text
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 7
    assert len(list(tmp_path.glob("bkgxr-*/bkg-models*.fits"))) == 2
