"""notebooks/migrate_history.ipynb is stored without outputs and runs top to bottom without errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "migrate_history.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.timeout(240)
def test_notebook_runs_top_to_bottom_from_another_folder(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    # A "python3" kernel that is this interpreter, found before any other installed kernel.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (tests)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the package under test, as pytest sees it
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "out"
    monkeypatch.setenv("BULKIMPORT_OUT", str(out))
    workdir = tmp_path / "elsewhere"  # not the repository: paths must not depend on the cwd
    workdir.mkdir()
    for name in list(__import__("os").environ):
        if name.startswith("BITRIX24_"):
            monkeypatch.delenv(name)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=150, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    setup = client.setup_kernel()
    try:
        setup.__enter__()
    except Exception as exc:  # only a kernel that cannot start is a reason to skip
        pytest.skip(f"no Jupyter kernel could start here: {exc}")
    try:
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError on any error
    finally:
        setup.__exit__(None, None, None)

    assert (out / "history.report.xlsx").is_file()
    assert (out / "sandbox.db").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "report written to" in text
    png = out / "history.report.png"  # the plots, saved next to the report
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
