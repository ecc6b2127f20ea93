"""The benchmarks run end to end with --quick (tiny sizes) and write their JSON.

Smoke only: no timing is asserted (numbers come from `python -m benchmarks.NAME`).
`benchmarks.train_step --quick` is left out: ~50 s of CPU even on a tiny encoder (XLA
compiles the GRU's scan and its backward for two steps, and transformers loads)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["input_pipeline", "predict", "attention"])
def test_quick_run_writes_json(name, tmp_path, shared_data):
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out-dir", str(tmp_path)]
    if name in ("input_pipeline", "predict"):
        cmd += ["--vocab", str(shared_data / "bert-base-uncased" / "vocab.txt")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / f"bench_{name}.json").read_text())
    assert out["benchmark"] == name and out["quick"] is True
    assert out["table_markdown"].startswith("|")
    assert "|---|" in proc.stdout  # the Markdown table was printed
