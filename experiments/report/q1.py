"""Q1 (CNN vs RNN on images): the values of templates/q1.md from results/cnn_vs_rnn.json
and, when present, the GPU run in results/cnn_vs_rnn_h100/."""

from __future__ import annotations

import pathlib
from typing import Any

from experiments.report.text import read_json, render

GPU_DIR = "cnn_vs_rnn_h100"  # the GPU run's folder in results/


def q1_values(r: dict[str, Any], gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values of templates/q1.md.

    r: the default (CPU) run's results; gpu: optionally the same experiment's results on a GPU
    (written with `--out results/GPU_DIR`), for the latency-against-size evidence; a GPU run
    of one image side has none (no growth to show), so it is left out as if absent."""
    if gpu and len(gpu["latency_vs_side"]) < 2:
        gpu = None
    c, n = r["models"]["cnn"], r["models"]["rnn"]
    h, w = r["config"]["image_shape"]
    last = r["latency_vs_side"][-1]
    dev = r["machine"]["device"]
    values = {
        **r, "cnn": c, "rnn": n, "first": r["latency_vs_side"][0], "last": last,
        "h": h, "w": w, "h4": h + 4, "w4": w + 4,
        "device_short": dev.split(" (")[0] if dev.startswith("CPU") else dev,
        "madds_ratio": c["multiply_adds"] / n["multiply_adds"],
        "madds_ratio_last": last["cnn_multiply_adds"] / last["rnn_multiply_adds"],
        "acc_gap": round(abs(c["test_accuracy"] - n["test_accuracy"])
                         * r["config"]["split_sizes"]["test"]),
        "len_change": n["variable_size"]["taller_bottom_lengths"]["max_abs_logit_change"],
        "gpu": gpu, "gpu_out": f"results/{GPU_DIR}",
    }
    if gpu:  # the GPU run's latency against image side, from its first (`g0`) to last (`g1`)
        g0, g1 = gpu["latency_vs_side"][0], gpu["latency_vs_side"][-1]
        values.update({
            "g0": g0, "g1": g1, "gdev": gpu["machine"]["device"].split(" (")[0],
            "g_cnn_growth": g1["cnn_latency_ms"] / g0["cnn_latency_ms"],
            "g_cnn_work": g1["cnn_multiply_adds"] / g0["cnn_multiply_adds"],
            "g_rnn_growth": g1["rnn_latency_ms"] / g0["rnn_latency_ms"],
            "g_us_per_row": 1e3 * (g1["rnn_latency_ms"] - g0["rnn_latency_ms"])
            / (g1["rnn_sequential_steps"] - g0["rnn_sequential_steps"]),
            "g_slowdown": g1["rnn_latency_ms"] / g1["cnn_latency_ms"],
            "g_less_work": g1["cnn_multiply_adds"] / g1["rnn_multiply_adds"],
        })
    return values


def q1_markdown(r: dict[str, Any] | None, gpu: dict[str, Any] | None = None) -> str:
    """The body of docs/answers.md's Q1 section, every number from the JSON results; with no
    results (`r` None), the command that measures them."""
    return render("q1.md", None if r is None else q1_values(r, gpu), width=100)


def q1_from_results(results_dir: str | pathlib.Path) -> str:
    """`q1_markdown` of `results_dir/cnn_vs_rnn.json` (+ `GPU_DIR/` when present), or the
    command that measures it."""
    results_dir = pathlib.Path(results_dir)
    return q1_markdown(read_json(results_dir / "cnn_vs_rnn.json"),
                       read_json(results_dir / GPU_DIR / "cnn_vs_rnn.json"))
