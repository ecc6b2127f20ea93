"""Smoke test of `python -m experiments.attention_scaling --quick`."""

from __future__ import annotations

import json

import pytest

from experiments import attention_scaling
from experiments.attention_scaling_analysis import BATCH, HEAD_DIM, HEADS, forward_flops


@pytest.mark.slow
def test_quick_run_writes_json_and_plots(tmp_path, capsys):
    rc = attention_scaling.main(["--quick", "--max-t", "512", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "attention_scaling.json").read_text())
    assert data["config"]["lengths"] == [256, 512]
    ok = [r for r in data["records"] if r["status"] == "ok"]
    assert {(r["method"], r["mode"]) for r in ok} == {
        (m, mode) for m in ("softmax", "performer", "local") for mode in ("fwd", "fwd_bwd")
    }
    assert all(r["median_s"] > 0 and r["temp_bytes"] >= 0 for r in ok)
    assert set(data["targets"]) >= {
        "favor_fwd_over_softmax_fwd_at_8192",
        "max_growth_per_doubling_from_4096",
        "performer_temp_over_softmax_temp_at_8192",
    }
    rows = data["error"]["regimes"][0]["rows"]
    assert {r["sampler"] for r in rows} == {"orthogonal", "iid"}
    for name in ("time", "memory", "error"):
        assert (tmp_path / f"attention_scaling_{name}.png").stat().st_size > 1000
    assert "crossover performer_fwd" in capsys.readouterr().out


def test_bad_arguments_exit_with_one_line(capsys):
    assert attention_scaling.main(["--min-t", "1024", "--max-t", "256"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--min-t" in err[-1] and len(err) == 1


def test_quick_variant_and_overrides():
    config, command = attention_scaling.parse_args(["--quick", "--max-t", "512",
                                                    "--config.error.draws=1"])
    assert (config.max_t, config.reps, config.error.draws) == (512, 2, 1)
    assert command == ("python -m experiments.attention_scaling --quick --max-t 512 "
                       "--config.error.draws=1")
    assert attention_scaling.parse_args([])[1] == "python -m experiments.attention_scaling"


@pytest.mark.parametrize("t, padded, span", [
    (512, 512, 384),   # 4 blocks of 128, one scan step of 4 blocks
    (640, 1024, 384),  # 5 blocks: two scan steps of 4 blocks, so 8 blocks are computed
    (1280, 1536, 384),  # 10 blocks: three steps of 4
])
def test_local_flops_count_the_blocks_local_attention_computes(t, padded, span):
    """FLOPs of local attention (window 128) follow the library's own blocking: whole scan
    steps of 512 queries, each query block against its (2r + 1) key blocks."""
    assert forward_flops("local", t, 64, 128) == 4.0 * BATCH * HEADS * padded * span * HEAD_DIM


def test_quick_variant_writes_under_runs_not_results():
    """A smoke run must not replace the recorded results/attention_scaling.json and plots."""
    assert attention_scaling.parse_args(["--quick"])[0].out == "runs/attention_scaling_quick"
    assert attention_scaling.parse_args([])[0].out == "results"
    assert attention_scaling.parse_args(["--quick", "--out", "x"])[0].out == "x"
