"""Q3: time, memory and accuracy of exact vs O(T) attention as the sequence grows.

    python -m experiments.attention_scaling            # full run (T = 256 .. 32768)
    python -m experiments.attention_scaling --quick    # smoke run (T = 256 .. 1024)

For T = 256, 512, ..., 32768 (batch 1, 8 heads, head_dim 64, float32) it measures forward and
forward+backward wall time (compiled, warmed up, median of several repetitions) and the
compiled temporary memory (`jax.jit(f).lower(...).compile().memory_analysis()`) of
`softmax_attention`, `performer_attention` (256 orthogonal features) and `local_attention`
(window 128). A point is skipped where its compiled buffers would not fit in the memory
budget (decided from `memory_analysis` before it runs) or where one call is predicted, from
the previous length, to take longer than max_call_s; its record's reason says which. It
then measures the Performer's error against exact attention for 16..1024 features,
orthogonal vs i.i.d., and computes the crossover lengths and the targets
(`experiments/attention_scaling_analysis.py`) as ratios measured in this one run.

Settings: `configs/attention_scaling.py`. Writes `<out>/attention_scaling.json` and
`<out>/attention_scaling_{time,memory,error}.png` (`experiments/attention_scaling_plots.py`),
and prints the crossovers and targets.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from experiments import cli
from experiments.attention_scaling_analysis import (
    BATCH,
    HEAD_DIM,
    HEADS,
    LINEAR,
    METHODS,
    MODES,
    SKIP_MEMORY,
    SKIP_TIME,
    crossover,
    find_record,
    forward_flops,
    growth_lengths,
    linear_skip,
    random_inputs,
    targets,
)
from experiments.attention_scaling_error import error_vs_features
from experiments.attention_scaling_plots import make_plots
from hw3_jax import attention as att
from hw3_jax.timing import (
    blocking,
    compile_timed,
    machine_info,
    mem_available_bytes,
    time_budgeted,
    time_interleaved,
)
from hw3_jax.train.workdir import Workdir

PROG = "python -m experiments.attention_scaling"
DEFAULT_CONFIG = "configs.attention_scaling"
SHORTCUTS = {
    "--out": cli.Shortcut("out", "output folder"),
    "--min-t": cli.Shortcut("min_t", "smallest length", type=int),
    "--max-t": cli.Shortcut("max_t", "largest length, doubling from --min-t (the quick "
                            "variant: 1024)", type=int),
    "--features": cli.Shortcut("features", "Performer random features for the timing runs",
                               type=int),
    "--window": cli.Shortcut("window", "local attention one-sided window", type=int),
    "--reps": cli.Shortcut("reps", "timed repetitions per point after a warm-up", type=int),
    "--point-budget-s": cli.Shortcut("point_budget_s", "seconds of timed runs per point; slow "
                                     "points get fewer reps (min 1)", type=float),
    "--growth-rounds": cli.Shortcut("growth_rounds", "interleaved rounds for the "
                                    "growth-per-doubling and baseline ratios", type=int),
    "--max-call-s": cli.Shortcut("max_call_s", "skip a point whose one call is predicted (from "
                                 "the previous length) to take longer than this", type=float),
    "--max-memory-gib": cli.Shortcut("max_memory_gib", "skip a point whose compiled buffers "
                                     "exceed this; None: memory_fraction of the free memory "
                                     "at start (the accelerator's, else the host's "
                                     "MemAvailable)", type=float),
    "--seed": cli.Shortcut("seed", type=int),
}


# -------------------------------------------------------------------------------- Calibration.


def calibrate(seed: int) -> dict:
    """This CPU's float32 GEMM rate and memory bandwidth, measured now (for the floor)."""
    rng = np.random.default_rng(seed)
    n = 2048
    a = jnp.asarray(rng.standard_normal((n, n), np.float32))
    gemm = jax.jit(lambda x: x @ x).lower(a).compile()
    t = time_budgeted(blocking(gemm, a), repeats=5, budget_s=5.0)
    big = jnp.asarray(rng.standard_normal(64 * 2**20, np.float32))  # 256 MiB
    scale = jax.jit(lambda x: x * 2.0).lower(big).compile()
    tb = time_budgeted(blocking(scale, big), repeats=5, budget_s=5.0)
    return {
        "gemm_f32_gflops": 2 * n**3 / t["median_s"] / 1e9,
        "gemm_f32_gflops_best": 2 * n**3 / t["min_s"] / 1e9,
        "stream_gb_per_s": 2 * big.nbytes / tb["median_s"] / 1e9,
        "stream_gb_per_s_best": 2 * big.nbytes / tb["min_s"] / 1e9,
    }


# ---------------------------------------------------------------------- The measured functions.


def compile_attention(method: str, mode: str, window: int, inputs: tuple) -> tuple[Any, dict]:
    """`method`'s attention compiled for inputs (q, k, v, projection w, cotangent ct): its
    output ("fwd"), or the gradients of <attention(q, k, v), ct> with respect to q, k and v
    ("fwd_bwd"). Returns `hw3_jax.timing.compile_timed`'s (executable, {"compile_s", ...})."""

    def attention(q, k, v, w):
        if method == "softmax":
            return att.softmax_attention(q, k, v)
        if method == "performer":
            return att.performer_attention(q, k, v, w)
        return att.local_attention(q, k, v, window)

    def call(q, k, v, w, ct):
        if mode == "fwd":
            return attention(q, k, v, w)
        return jax.grad(lambda q, k, v: jnp.vdot(attention(q, k, v, w), ct),
                        argnums=(0, 1, 2))(q, k, v)

    return compile_timed(jax.jit(call), *inputs)


# ---------------------------------------------------------------- Experiment 1: scaling with T.


def buffer_bytes(compiled: Any) -> dict[str, int]:
    """{"temp_bytes", "argument_bytes", "output_bytes"} of a compiled call (XLA's
    `memory_analysis`, known before it runs)."""
    ma = compiled.memory_analysis()
    return {"temp_bytes": int(ma.temp_size_in_bytes),
            "argument_bytes": int(ma.argument_size_in_bytes),
            "output_bytes": int(ma.output_size_in_bytes)}


def _skip_reason(rec: dict, predicted: float | None, budget_bytes: int | None,
                 max_call_s: float) -> str | None:
    """Why a compiled point (`buffer_bytes`' fields) is not run (it would not fit, or one
    call would take too long), or None to run it."""
    need = rec["temp_bytes"] + rec["argument_bytes"] + rec["output_bytes"]
    if budget_bytes is not None and need > budget_bytes:
        return (f"{SKIP_MEMORY} {need / 2**30:.1f} GiB > budget "
                f"{budget_bytes / 2**30:.1f} GiB")
    if predicted is not None and predicted > max_call_s:
        return f"{SKIP_TIME} to take {predicted:.0f} s > --max-call-s {max_call_s:.0f}"
    return None


def compiled_points(config: ml_collections.ConfigDict, lengths: Sequence[int],
                    methods: Sequence[str], proj: jax.Array, rng: np.random.Generator, bar,
                    label: str = "") -> Iterator[tuple]:
    """(T, method, mode, inputs, compiled call, its info) for each length and each (method,
    mode), the inputs drawn once per length. Nothing here keeps a compiled call once it is
    handed out, so a caller that drops it frees its buffers before the next compilation."""
    for t in lengths:
        q, k, v, ct = random_inputs(rng, t, 4)
        inputs = (q, k, v, proj, ct)
        for method, mode in itertools.product(methods, MODES):
            bar.set_postfix_str(f"{label}{method} {mode} T={t}")
            yield (t, method, mode, inputs, *compile_attention(method, mode, config.window, inputs))


def scaling(config: ml_collections.ConfigDict, lengths: list[int], budget_bytes: int | None,
            proj: jax.Array, bar) -> list[dict]:
    """One record per (T, method, mode): memory always, time where the point fits."""
    rng = np.random.default_rng(config.seed)
    records = []
    last: dict[tuple[str, str], tuple[int, float]] = {}  # (method, mode) -> (T, one call s)
    for t, method, mode, inputs, compiled, info in compiled_points(config, lengths, METHODS,
                                                                   proj, rng, bar):
        rec = {
            "method": method, "mode": mode, "T": t, **info, **buffer_bytes(compiled),
            "flops": forward_flops(method, t, config.features, config.window) * (
                1 if mode == "fwd" else 3),
        }
        # Predicted time of one call: quadratic growth for softmax, linear otherwise.
        predicted = None
        if (method, mode) in last:
            t_prev, s_prev = last[(method, mode)]
            predicted = s_prev * (t / t_prev) ** (2 if method == "softmax" else 1)
        reason = _skip_reason(rec, predicted, budget_bytes, config.max_call_s)
        if reason is not None:
            rec.update(status="skipped", reason=reason)
        else:
            rec.update(time_budgeted(blocking(compiled, *inputs), repeats=config.reps,
                                     budget_s=config.point_budget_s))
            rec["status"] = "ok"
            last[(method, mode)] = (t, rec["median_s"])
            rec["achieved_gflops"] = rec["flops"] / rec["median_s"] / 1e9
        del compiled
        records.append(rec)
        bar.update(1)
    return records


def favor_unchunked(q, k, v, w):
    """FAVOR+ laid out as google-research's reference lays it out: whole `[B, T, N, m]`
    feature maps, no chunking. Our own few lines (the math of `performer_attention`, without
    the mask), used only as an in-run baseline for that dataflow; `[B, T, N, d]` in and out.
    """
    d = q.shape[-1]
    w = w * d**-0.25
    qp = jnp.einsum("btnh,mh->btnm", q, w)
    phi_q = jnp.exp(qp - jax.lax.stop_gradient(jnp.max(qp, -1, keepdims=True)))
    kp = jnp.einsum("btnh,mh->btnm", k, w) - 0.5 / math.sqrt(d) * jnp.sum(k * k, -1, keepdims=True)
    phi_k = jnp.exp(kp - jax.lax.stop_gradient(jnp.max(kp, axis=(1, 3), keepdims=True)))
    kv = jnp.einsum("btnm,btnh->bnmh", phi_k, v)
    num = jnp.einsum("btnm,bnmh->btnh", phi_q, kv)
    den = jnp.einsum("btnm,bnm->btn", phi_q, jnp.sum(phi_k, 1))
    return num / den[..., None]


def interleaved(calls: dict, rounds: int, bar) -> dict:
    """{name: [seconds per round]} of compiled calls {name: (compiled, args)}, timed once per
    round (`hw3_jax.timing.time_interleaved`), so that ratios are taken round by round."""
    timed = time_interleaved({name: blocking(c, *a) for name, (c, a) in calls.items()},
                             warmup=1, repeats=rounds, rotate=True)
    bar.update(rounds * len(calls))
    return {name: s["times_s"] for name, s in timed.items()}


def _growth_per_step(config: ml_collections.ConfigDict, big: list[int], proj, rng,
                     bar) -> dict:
    """{"growth_per_step": {method_mode: {"T->2T": median of per-round t(2T)/t(T)}},
    "times_s"} of the O(T) methods at the lengths `big` (`growth_lengths`); {} for fewer
    than 2."""
    if len(big) < 2:
        return {}
    calls = {(method, mode, t): (compiled, inputs) for t, method, mode, inputs, compiled, _
             in compiled_points(config, big, LINEAR, proj, rng, bar, "growth: compile ")}
    bar.set_postfix_str("growth: interleaved rounds")
    times = interleaved(calls, config.growth_rounds, bar)
    steps = {}
    for method, mode in itertools.product(LINEAR, MODES):
        per = {}
        for t in big[:-1]:
            a, b = times[(method, mode, t)], times[(method, mode, 2 * t)]
            per[f"{t}->{2 * t}"] = statistics.median(y / x for x, y in zip(a, b, strict=True))
        steps[f"{method}_{mode}"] = per
    return {"growth_per_step": steps,
            "times_s": {f"{m}_{mode}_{t}": v for (m, mode, t), v in times.items()}}


def baseline_length(lengths: list[int], records: list[dict]) -> int | None:
    """The length of the unchunked-FAVOR+ baseline: the largest up to 8192 (else the
    smallest) at which the scaling run measured the Performer's forward; None if none."""
    ran = [t for t in lengths
           if (r := find_record(records, "performer", "fwd", t)) and r["status"] == "ok"]
    return max([t for t in ran if t <= 8192], default=min(ran, default=None))


def _baseline(config: ml_collections.ConfigDict, t_base: int | None, budget_bytes: int | None,
              proj, rng, bar) -> dict:
    """Our chunked Performer against the unchunked FAVOR+ dataflow at T = t_base; {"T",
    "not_measured": why} where there is no such length or a compiled call would not fit in
    `budget_bytes` (the unchunked one holds whole [B, T, N, m] feature maps)."""
    if t_base is None:
        return {"T": None, "not_measured": "the Performer's forward was measured at no length"}
    q, k, v = random_inputs(rng, t_base, 3)
    bar.set_postfix_str(f"baseline: ours vs unchunked FAVOR+ T={t_base}")
    args = (q, k, v, proj)
    calls = {n: (compile_timed(jax.jit(f), *args)[0], args)
             for n, f in (("ours", att.performer_attention), ("unchunked", favor_unchunked))}
    sizes = {n: buffer_bytes(c) for n, (c, _) in calls.items()}
    for n, size in sizes.items():
        # No time rule: "ours" ran at t_base in the scaling run; unchunked is ~2x slower.
        reason = _skip_reason(size, None, budget_bytes, config.max_call_s)
        if reason is not None:
            return {"T": t_base, "not_measured": f"{n}: {reason}"}
    temp = {n: size["temp_bytes"] for n, size in sizes.items()}
    times = interleaved(calls, 2 * config.growth_rounds + 1, bar)
    ratio = statistics.median(a / b for a, b in zip(times["ours"], times["unchunked"], strict=True))
    return {
        "T": t_base,
        "ours_ms": 1e3 * statistics.median(times["ours"]),
        "unchunked_ms": 1e3 * statistics.median(times["unchunked"]),
        "ours_over_unchunked": ratio,
        "ours_temp_mib": temp["ours"] / 2**20,
        "unchunked_temp_mib": temp["unchunked"] / 2**20,
    }


# ------------------------------------------------------- The run: flags, measurements, outputs.


def free_memory() -> tuple[int | None, str]:
    """(bytes free to this process's buffers now, where that figure comes from): on an
    accelerator whose allocator reports them (`Device.memory_stats()`), bytes_limit -
    bytes_in_use, as the buffers live there; else the host's MemAvailable (None where
    unknown)."""
    if jax.default_backend() != "cpu":
        dev = jax.devices()[0]
        stats = dev.memory_stats() or {}
        if stats.get("bytes_limit", -1) > 0:  # -1: a statistic the platform does not keep
            free = stats["bytes_limit"] - max(stats.get("bytes_in_use", 0), 0)
            return free, f"{dev.platform} bytes_limit - bytes_in_use"
    return mem_available_bytes(), "host MemAvailable"


def memory_budget(config: ml_collections.ConfigDict) -> tuple[int | None, str]:
    """(bytes of compiled buffers a point may need, where that comes from): --max-memory-gib,
    else memory_fraction of `free_memory()` (the rest: headroom for the run's other arrays and
    fragmentation); None where the free memory is unknown (no point is skipped for memory)."""
    if config.max_memory_gib is not None:
        return int(config.max_memory_gib * 2**30), "--max-memory-gib"
    free, source = free_memory()
    if free is None:
        return None, f"unknown ({source} not available)"
    return int(config.memory_fraction * free), f"{config.memory_fraction} x {source}"


def measure(config: ml_collections.ConfigDict, lengths: list[int],
            budget: int | None) -> tuple[list[dict], dict, dict]:
    """(scaling records, interleaved growth and baseline, Performer error), one progress bar;
    the timing runs share one orthogonal projection of `config.features` rows."""
    proj = att.orthogonal_random_features(jax.random.PRNGKey(config.seed), config.features,
                                          HEAD_DIM)
    big = growth_lengths(lengths)

    def growth_points(n: int) -> int:  # progress steps of the growth rounds over n lengths
        return config.growth_rounds * len(LINEAR) * len(MODES) * n if n >= 2 else 0

    baseline_points = 2 * (2 * config.growth_rounds + 1)
    total = (
        len(lengths) * len(METHODS) * len(MODES)
        + 2 * len(config.error.features) * len(config.error.sigmas)
        + growth_points(len(big))
        + baseline_points
    )
    with tqdm(total=total, desc="attention_scaling", unit="pt") as bar:
        records = scaling(config, lengths, budget, proj, bar)
        # Interleaved measurements behind two targets: growth per doubling and the baseline,
        # only where the scaling run measured the points they repeat (there, memory and
        # predicted time were checked; a skipped point could take the process down here).
        rng = np.random.default_rng(config.seed + 2)
        timed = growth_lengths(lengths, records)
        timed = timed if len(timed) >= 2 else []
        bar.total -= growth_points(len(big)) - growth_points(len(timed))
        extra = {"rounds": config.growth_rounds,
                 **_growth_per_step(config, timed, proj, rng, bar)}
        left = {str(t): linear_skip(records, t) or "not in an unbroken run of two or more "
                "measured lengths" for t in big if t not in timed}
        if left:
            extra["growth_not_measured"] = left
        extra["baseline"] = _baseline(config, baseline_length(lengths, records), budget, proj,
                                      rng, bar)
        if "not_measured" in extra["baseline"]:
            bar.total -= baseline_points
        err = error_vs_features(config, bar)
    return records, extra, err


def write_outputs(folder: Workdir, out: Path, result: dict) -> Path:
    """Write `folder`/attention_scaling.json, then the plots into `out` (the same folder as
    given), then the JSON again with their paths under "plots": the JSON first, so that a
    plot that fails loses none of the measurements. Returns the JSON's path."""
    path = folder.write_json("attention_scaling.json", result)
    result["plots"] = make_plots(result["records"], result["config"]["lengths"],
                                 result["error"], result["machine"]["device"], out)
    folder.write_json(path.name, result)
    return out / path.name


def run(config: ml_collections.ConfigDict, command: str) -> dict:
    """Measure, write OUT/attention_scaling.json and the plots, print the crossovers and
    targets."""
    out = Path(config.out).expanduser()  # one root for every output
    folder = Workdir(out)
    folder.check(flag="--out")  # a WorkdirError before any measurement if it cannot be written
    lengths = [config.min_t * 2**i for i in range((config.max_t // config.min_t).bit_length())]
    budget, budget_source = memory_budget(config)
    t_start = time.perf_counter()
    info = machine_info()
    print(f"attention_scaling: T={lengths}, on {info['device']}, "
          f"memory budget {budget / 2**30 if budget else float('nan'):.1f} GiB "
          f"({budget_source})", flush=True)
    calib = calibrate(config.seed)
    records, extra, err = measure(config, lengths, budget)
    crossovers = {f"{m}_{mode}": crossover(records, m, mode) for m in LINEAR for mode in MODES}
    tgt = targets(records, calib, extra, info["device"])
    result = {
        "command": command,
        "config": {
            "batch": BATCH,
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "dtype": "float32",
            "lengths": lengths,
            "performer_features": config.features,
            "performer_sampler": "orthogonal",
            "local_window": config.window,
            "reps": config.reps,
            "point_budget_s": config.point_budget_s,
            "memory_budget_bytes": budget,
            "memory_budget_source": budget_source,
            "seed": config.seed,
            "max_call_s": config.max_call_s,
            "timing": "compiled executable, 1 warm-up, then the median of up to `reps` timed "
            "calls (fewer, down to 1, when one call is slow: they must fit in point_budget_s)",
        },
        "machine": info,
        "calibration": calib,
        "records": records,
        "interleaved": extra,
        "crossover": crossovers,
        "targets": tgt,
        "error": err,
        "wall_s": time.perf_counter() - t_start,
    }
    path = write_outputs(folder, out, result)
    print(f"wrote {path} and {', '.join(result['plots'])} in {result['wall_s']:.0f} s")
    for name, c in crossovers.items():
        print(f"crossover {name}: " + (c.get("note") or f"T ~ {c['T']:.0f}"))
    for name, v in tgt.items():
        if v.get("target") is not None:
            value = "n/a" if v["value"] is None else f"{v['value']:.3g}"
            print(f"{name}: {value} (target {v['target']}, met {v['met']})")
    return result


def parse_args(argv: list[str] | None = None) -> tuple[ml_collections.ConfigDict, str]:
    """Command line -> (the config, the command that regenerates the run)."""
    config, command = cli.parse_flags(
        PROG, "Time, memory and error of softmax vs Performer vs local attention.", argv,
        default_config=DEFAULT_CONFIG, shortcuts=SHORTCUTS,
        quick_help="the config's quick variant: T = 256..1024, few features, few repetitions, "
                   "into runs/attention_scaling_quick",
        skip=("out",))
    check(config)
    return config, command


def check(config: ml_collections.ConfigDict) -> None:
    """A value no run can use is a UserError naming its flag, before minutes of measurements
    (any field can be set to None, so each is checked for its type too)."""
    require, err = cli.require, config.error
    require(cli.whole(config.min_t, 16) and cli.whole(config.max_t, config.min_t),
            "--min-t and --max-t", "whole numbers with 16 <= --min-t <= --max-t",
            (config.min_t, config.max_t))
    for flag, value in (("--features", config.features), ("--reps", config.reps),
                        ("--growth-rounds", config.growth_rounds),
                        ("--config.error.draws", err.draws)):
        require(cli.whole(value, 1), flag, "at least 1 (a whole number)", value)
    require(cli.whole(config.window), "--window", "a whole number >= 0", config.window)
    require(cli.whole(err.length, 2), "--config.error.length", "at least 2 (a whole number)",
            err.length)
    cli.check_seed(config.seed)
    for flag, value in (("--max-call-s", config.max_call_s),
                        ("--point-budget-s", config.point_budget_s)):
        require(cli.positive(value), flag, "a finite number > 0", value)
    require(config.max_memory_gib is None or cli.positive(config.max_memory_gib),
            "--max-memory-gib", "a finite number > 0", config.max_memory_gib)
    require(cli.positive(config.memory_fraction) and config.memory_fraction <= 1,
            "--config.memory_fraction", "in (0, 1]", config.memory_fraction)
    require(err.features and all(cli.whole(m, 1) for m in err.features),
            "--config.error.features", "one or more whole numbers >= 1", err.features)
    require(err.sigmas and all(cli.positive(x) for x in err.sigmas), "--config.error.sigmas",
            "one or more finite numbers > 0", err.sigmas)
    require(isinstance(config.out, str) and config.out, "--out", "a folder", config.out)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 after one line on stderr for bad input or an output folder that cannot
    be written."""
    return cli.run_main(lambda: run(*parse_args(argv)) and 0)


if __name__ == "__main__":
    cli.exit_with(main())
