"""The Q3 attention-scaling experiment: a smoke run of `--quick`, its flags, and the pieces
that decide what is measured and how it is reported."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from experiments import attention_scaling
from experiments.attention_scaling_analysis import (
    BATCH,
    HEAD_DIM,
    HEADS,
    forward_flops,
    growth_lengths,
    linear_skip,
    targets,
)
from experiments.attention_scaling_plots import skip_note
from experiments.report.q3 import q3_markdown
from hw3_jax import attention as att
from hw3_jax.train.workdir import Workdir

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


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


MEMORY_SKIP = "compiled buffers need 9.0 GiB > budget 1.0 GiB"
TIME_SKIP = "one call predicted to take 80 s > --max-call-s 60"


def _records(lengths, skipped=lambda method, mode, t: False):
    """Scaling records of every method and mode at `lengths`; `skipped(method, mode, T)` says
    which were skipped: True for memory, else the reason (a false value: measured)."""
    recs = []
    for t in lengths:
        for m in ("softmax", "performer", "local"):
            for mode in ("fwd", "fwd_bwd"):
                rec = {"method": m, "mode": mode, "T": t, "temp_bytes": 2**20 * t // 256,
                       "flops": 1e9 * t / 256}
                why = skipped(m, mode, t)
                if why:
                    rec.update(status="skipped", reason=MEMORY_SKIP if why is True else why)
                else:
                    rec.update(status="ok", median_s=1e-3 * t / 256)
                recs.append(rec)
    return recs


class _Bar:
    """A stand-in for the tqdm progress bar."""

    def set_postfix_str(self, _):
        pass

    def update(self, _):
        pass


def test_growth_and_baseline_run_only_where_the_scaling_run_measured():
    """Neither the interleaved growth rounds nor the baseline run a length whose scaling
    point was skipped (too big or too slow): e.g. --max-memory-gib so small that nothing ran."""
    lengths = [2048, 4096, 8192, 16384]
    recs = _records(lengths, lambda m, mode, t: (m, mode, t) == ("performer", "fwd_bwd", 16384))
    assert growth_lengths(lengths) == [4096, 8192, 16384]
    assert growth_lengths(lengths, recs) == [4096, 8192]
    assert linear_skip(recs, 16384).startswith("performer fwd_bwd: compiled buffers")
    assert linear_skip(recs, 8192) is None
    assert attention_scaling.baseline_length(lengths, recs) == 8192
    nothing = _records(lengths, lambda *_: True)
    assert growth_lengths(lengths, nothing) == []
    assert attention_scaling.baseline_length(lengths, nothing) is None
    assert attention_scaling.baseline_length([16384, 32768], _records([16384, 32768])) == 16384
    config = attention_scaling.parse_args(["--quick"])[0]
    base = attention_scaling._baseline(config, None, None, None, None, _Bar())
    assert base["T"] is None and "not_measured" in base
    tgt = targets(nothing, {}, {"rounds": 1, "baseline": base})
    assert tgt["performer_over_unchunked_favor"]["value"] is None
    assert tgt["max_growth_per_doubling_from_4096"]["met"] is None


def test_baseline_checks_its_compiled_buffers_against_the_budget():
    """Each call of the baseline (the unchunked one holds whole [B, T, N, m] feature maps) is
    compiled, then not run when its buffers exceed the memory budget."""
    config = attention_scaling.parse_args(["--quick", "--features", "16"])[0]
    proj = att.orthogonal_random_features(jax.random.PRNGKey(0), 16, HEAD_DIM)
    base = attention_scaling._baseline(config, 64, 1024, proj, np.random.default_rng(0), _Bar())
    assert base["T"] == 64 and "compiled buffers need" in base["not_measured"]


class _Accelerator:
    """A jax device whose allocator reports its limit and use, as a GPU's does."""

    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 40 * 2**30, "bytes_in_use": 8 * 2**30}


def test_memory_budget_comes_from_the_accelerator_not_the_host(monkeypatch):
    """On a GPU/TPU the buffers live in its memory: the budget is memory_fraction of its
    allocator's bytes_limit - bytes_in_use; on a CPU, of the host's MemAvailable."""
    config = attention_scaling.parse_args(["--config.memory_fraction=0.5"])[0]
    monkeypatch.setattr(attention_scaling, "mem_available_bytes", lambda: 100 * 2**30)
    assert attention_scaling.memory_budget(config) == (50 * 2**30, "0.5 x host MemAvailable")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", lambda *_: [_Accelerator()])
    budget, source = attention_scaling.memory_budget(config)
    assert budget == 16 * 2**30 and "bytes_limit" in source
    config.max_memory_gib = 2.0
    assert attention_scaling.memory_budget(config) == (2 * 2**30, "--max-memory-gib")


@pytest.mark.parametrize("arg, flag", [
    ("--config.error.features=(0, 16)", "--config.error.features"),
    ("--config.error.features=()", "--config.error.features"),
    ("--config.error.features=(16.5,)", "--config.error.features"),
    ("--config.error.sigmas=()", "--config.error.sigmas"),
    ("--config.error.sigmas=(1.0, -0.5)", "--config.error.sigmas"),
    ("--config.error.draws=0", "--config.error.draws"),
    ("--config.error.length=1", "--config.error.length"),
    ("--seed=-1", "--seed"),
    ("--seed=4294967296", "--seed"),
    ("--max-memory-gib=0", "--max-memory-gib"),
    ("--max-memory-gib=inf", "--max-memory-gib"),
    ("--config.memory_fraction=1.5", "--config.memory_fraction"),
    ("--config.memory_fraction=0", "--config.memory_fraction"),
    ("--max-call-s=0", "--max-call-s"),
    ("--config.min_t=None", "--min-t"),
    ("--config.window=-1", "--window"),
    ("--config.out=None", "--out"),
])
def test_settings_no_run_can_use_are_one_line_before_measuring(arg, flag, capsys):
    assert attention_scaling.main(["--quick", arg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0], err


def test_json_is_written_before_the_plots(tmp_path, monkeypatch):
    """A plot that fails leaves the measurements on disk."""
    def broken(*_):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(attention_scaling, "make_plots", broken)
    result = {"config": {"lengths": [256]}, "records": [], "error": {},
              "machine": {"device": "CPU"}}
    with pytest.raises(RuntimeError, match="plotting failed"):
        attention_scaling.write_outputs(Workdir(tmp_path), tmp_path, result)
    assert json.loads((tmp_path / "attention_scaling.json").read_text())["config"] == {
        "lengths": [256]}


def _q3_result(recs, lengths):
    """A hand-made attention_scaling.json of `recs` with what templates/q3.md reads."""
    rows = [{"sampler": s, "features": m, "rel_error_mean": 0.5, "tv_mean": 0.1}
            for s in ("orthogonal", "iid") for m in (16, 64)]
    return {"command": "python -m experiments.attention_scaling", "records": recs,
            "config": {"lengths": lengths, "batch": 1, "heads": 8, "head_dim": 64,
                       "dtype": "float32", "performer_features": 256, "local_window": 128,
                       "reps": 2, "max_call_s": 60.0},
            "machine": {"device": "CPU"}, "crossover": {}, "targets": {}, "wall_s": 42.0,
            "error": {"T": 1024, "draws": 2, "features": [16, 64],
                      "regimes": [{"sigma": 0.5, "logit_std": 0.25, "local_window": 128,
                                   "local_rel_error": 0.05, "local_tv": 0.01, "rows": rows}]}}


@pytest.mark.parametrize("why, says", [
    (True, "on: its compiled buffers would not fit in memory."),
    (TIME_SKIP, "on: one call was predicted to take longer than 60 s (`--max-call-s`)."),
])
def test_skipped_points_are_explained_by_their_own_reason(why, says):
    """The answer and the time plot say why exact attention was skipped: its memory, or the
    predicted time of one call (the record's reason), not memory whatever the cause."""
    lengths = [256, 512, 1024]
    recs = _records(lengths, lambda m, mode, t: m == "softmax" and t == 1024 and why)
    flat = " ".join(q3_markdown(_q3_result(recs, lengths)).split())
    assert f"Exact attention was not run from $T = 1{{,}}024$ {says}" in flat
    assert ("would not fit" in flat) == (why is True)
    note = skip_note(recs)
    assert note == ("skipped, would not fit" if why is True
                    else "skipped, one call predicted over max_call_s")
    assert skip_note(_records(lengths)) == ""


def test_quoted_reference_is_compared_only_on_its_own_machine():
    """The quoted 150 ms of the reference FAVOR+ is a time on one CPU: another machine's
    measurement gets no ratio to it; the recorded run's targets come out as recorded."""
    r = json.loads((RESULTS / "attention_scaling.json").read_text())
    args = r["records"], r["calibration"], r["interleaved"]
    same = targets(*args, r["machine"]["device"])
    floor = same["performer_fwd_8192_vs_floor"]
    recorded = r["targets"]["performer_fwd_8192_vs_floor"]
    assert floor["measured_over_quoted_reference"] == recorded["measured_over_quoted_reference"]
    for key in ("quoted_reference_device", "note"):
        floor.pop(key), recorded.pop(key, None)
    assert same == r["targets"]
    other = targets(*args, "NVIDIA H100 80GB HBM3 (GPU)")["performer_fwd_8192_vs_floor"]
    assert other["measured_over_quoted_reference"] is None
    assert other["measured_over_floor"] == floor["measured_over_floor"]


def test_fwd_bwd_at_32768_is_not_judged_where_that_length_was_not_run():
    """--min-t 384 doubles from 24,576 to 49,152: T = 32768 is never tried, so the target is
    not measured (None), not failed; a point tried and skipped there fails it."""
    run = targets(_records([24576, 49152]), {}, {})["fwd_bwd_runs_at_32768"]
    assert run["met"] is None and run["performer"] is None and "not measured" in run["note"]
    skipped = _records([16384, 32768], lambda m, mode, t: (m, mode, t) == ("local", "fwd_bwd",
                                                                          32768))
    run = targets(skipped, {}, {})["fwd_bwd_runs_at_32768"]
    assert run == {"performer": True, "local": False, "met": False}
    assert targets(_records([16384, 32768]), {}, {})["fwd_bwd_runs_at_32768"]["met"] is True
