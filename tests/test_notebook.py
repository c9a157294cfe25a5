"""``examples/quickstart.ipynb`` runs headless from a clean checkout and draws its figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REASON = "executing the notebook needs the 'notebook' extra: pip install -e '.[notebook]'"
nbformat = pytest.importorskip("nbformat", reason=REASON)
nbclient = pytest.importorskip("nbclient", reason=REASON)
pytest.importorskip("ipykernel", reason=REASON)

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
KERNEL = "chironsim-test"


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                "store the notebook clean (Kernel > Restart & Clear Output)")


def test_notebook_executes_and_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel spec of our own on JUPYTER_PATH (searched before the user's kernels) runs this
    # interpreter, so the notebook sees the chironsim under test, not whatever 'python3' means
    # on the machine; and no MPLBACKEND override, so figures come back as inline PNGs.
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "chironsim test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, "the notebook should draw its efficiency and attainment figures"
