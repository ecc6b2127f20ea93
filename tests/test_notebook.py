"""notebooks/hw3_colab.ipynb: committed clean, and executed headless on CPU with small settings."""

from __future__ import annotations

import json
import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "hw3_colab.ipynb"
SHARED_VOCAB = ROOT.parent / "shared" / "data" / "bert-base-uncased" / "vocab.txt"


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def test_notebook_is_committed_clean_and_parameterised():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        "commit the notebook without outputs (Colab users run it themselves)"
    params = nb.cells[_parameters_index(nb)].source
    for name in ("SMALL", "REPO_URL", "OUT_DIR", "BERT_VOCAB"):
        assert f"\n{name} = " in f"\n{params}", f"parameter {name} missing"
    # Every experiment is explained before it runs and its results after (within 2 cells).
    runs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and ".main(" in c.source]
    assert len(runs) == 4, "one cell per experiment: recurrence, attention, cnn_vs_rnn, sentiment"
    for i in runs:
        where = nb.cells[i].source[:60]
        assert nb.cells[i - 1].cell_type == "markdown", where
        assert any(c.cell_type == "markdown" for c in nb.cells[i + 1:i + 4]), where


@pytest.mark.slow
def test_notebook_runs_headless_on_cpu(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    out = tmp_path / "out"
    overrides = {"SMALL": True, "OUT_DIR": str(out)}
    if SHARED_VOCAB.is_file():  # offline: the real vocabulary instead of the hub
        overrides["BERT_VOCAB"] = str(SHARED_VOCAB)
    # papermill's way: a cell after the parameters cell that overrides them.
    injected = nbformat.v4.new_code_cell(
        "\n".join(f"{k} = {v!r}" for k, v in overrides.items()),
        metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(_parameters_index(nb) + 1, injected)

    # Run from notebooks/ as Jupyter would: the install cell finds the checkout above it.
    client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    assert "nothing to install" in text
    assert "SMALL = True" in text
    assert "vocabulary size: 30,522" in text or not SHARED_VOCAB.is_file()
    assert "[7592, 2088, 2129, 2024, 2017, 1029]" in text or not SHARED_VOCAB.is_file()
    assert "112,241,409 parameters" in text and "trainable with BERT frozen: 2,759,169" in text
    assert "P(positive | 'Avengers was great!!') = 0." in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    # recurrence 1, attention 3, cnn_vs_rnn 3, sentiment curves 1
    assert len(images) >= 8

    for name in ("recurrence.json", "attention_scaling.json", "cnn_vs_rnn.json",
                 "sentiment_small/metrics.json", "sentiment_small/curves.png",
                 "sentiment_small.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "sentiment_small" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    collected = json.loads((out / "sentiment_small.json").read_text())
    assert len(collected["predictions"]) == 4
    assert all(0.0 <= p <= 1.0 for p in collected["predictions"].values())
