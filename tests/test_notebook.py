"""Executes notebooks/quickstart.ipynb top to bottom, headless, at smoke size (nbclient).

The notebook trains its own run in a temporary workdir. It uses the session's smoke dataset and
compile cache (tests/conftest.py) and the same 12 steps as `reference_run`, which is requested
first so that the train step and the decoder are compiled once per session, not once more here.
"""

from __future__ import annotations

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO_ROOT, "notebooks", "quickstart.ipynb")


def test_quickstart_notebook_runs_headless(smoke_setup, reference_run, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in smoke_setup.env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    workdir = str(tmp_path / "notebook_run")
    monkeypatch.setenv("ADC_JAX_NOTEBOOK_SIZE", "smoke")
    monkeypatch.setenv("ADC_JAX_NOTEBOOK_STEPS", "12")
    monkeypatch.setenv("ADC_JAX_NOTEBOOK_WORKDIR", workdir)
    monkeypatch.setenv("ADC_JAX_DATA_DIR", smoke_setup.data_dir)
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
    )
    client.execute()  # raises CellExecutionError with the cell and traceback on any error

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # training curves and the attention map
    markdown = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    assert "most frequent caption" in markdown
    audio = [o for o in outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    assert len(audio) == 4  # the data pair and the captioned pair
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "1. " in text and "references:" in text
    assert os.path.exists(os.path.join(workdir, "checkpoints", "12"))
    assert os.path.getsize(os.path.join(workdir, "plots", "attention.png")) > 20_000
