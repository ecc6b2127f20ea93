"""Q1 (CNN vs RNN on images): the named values of docs/templates/q1.md from
results/cnn_vs_rnn.json and, when present, the GPU run in results/cnn_vs_rnn_h100/."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from experiments.report.text import fill, ms, pct, reflow, template

GPU_OUT = "results/cnn_vs_rnn_h100"


def _model_values(key: str, m: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The per-model values, named `cnn_*` / `rnn_*` in the template."""
    values = {
        "params": f"{m['params']:,}",
        "acc": pct(m["test_accuracy"]),
        "s1": pct(m["shift_accuracy"]["1"]["mean"]),
        "s2": pct(m["shift_accuracy"]["2"]["mean"]),
        "s1_right": pct(m["shift_accuracy"]["1"]["right"]),
        "s1_left": pct(m["shift_accuracy"]["1"]["left"]),
        "steps": m["sequential_steps"],
        "steps_last": last[f"{key}_sequential_steps"],
        "madds": f"{m['multiply_adds']:,}",
        "madds_last": f"{last[f'{key}_multiply_adds']:,}",
        "epoch": f"{m['epoch_time_s']:.3f} s",
    }
    return {f"{key}_{name}": value for name, value in values.items()}


def _variable_size_values(c: dict[str, Any], n: dict[str, Any]) -> dict[str, Any]:
    vc, vn = c["variable_size"], n["variable_size"]
    change = vn["taller_bottom_lengths"]["max_abs_logit_change"]
    return {
        "rnn_len_change": "by exactly 0" if change == 0 else f"by at most {change:.1e}",
        "cnn_tall": pct(vc["taller_bottom"]["accuracy"]),
        "rnn_tall": pct(vn["taller_bottom"]["accuracy"]),
        "rnn_tall_len": pct(vn["taller_bottom_lengths"]["accuracy"]),
        "cnn_wide": pct(vc["wider"]["accuracy"]),
    }


def _gpu_values(gpu: dict[str, Any], gpu_out: str) -> dict[str, Any]:
    """The `g_*` values of the GPU run's latency against image side."""
    g0, g1 = gpu["latency_vs_side"][0], gpu["latency_vs_side"][-1]
    per_row_ms = ((g1["rnn_latency_ms"] - g0["rnn_latency_ms"])
                  / (g1["rnn_sequential_steps"] - g0["rnn_sequential_steps"]))
    return {
        "gpu_command": gpu["command"], "gpu_out": gpu_out,
        "gdev": gpu["environment"]["device"].split(" (")[0],
        "g_first_side": g0["side"], "g_last_side": g1["side"],
        "g_cnn_lat_first": ms(g0["cnn_latency_ms"]), "g_cnn_lat_last": ms(g1["cnn_latency_ms"]),
        "g_rnn_lat_first": ms(g0["rnn_latency_ms"]), "g_rnn_lat_last": ms(g1["rnn_latency_ms"]),
        "g_cnn_growth": f"{g1['cnn_latency_ms'] / g0['cnn_latency_ms']:.2f}",
        "g_cnn_work": f"{g1['cnn_multiply_adds'] / g0['cnn_multiply_adds']:.0f}",
        "g_rnn_growth": f"{g1['rnn_latency_ms'] / g0['rnn_latency_ms']:.1f}",
        "g_rnn_steps_first": g0["rnn_sequential_steps"],
        "g_rnn_steps_last": g1["rnn_sequential_steps"],
        "g_us_per_row": f"{1e3 * per_row_ms:.0f}",
        "g_slowdown": f"{g1['rnn_latency_ms'] / g1['cnn_latency_ms']:.0f}",
        "g_less_work": f"{g1['cnn_multiply_adds'] / g1['rnn_multiply_adds']:.0f}",
    }


def q1_values(r: dict[str, Any], gpu: dict[str, Any] | None = None,
              gpu_out: str = GPU_OUT) -> dict[str, Any]:
    """Every named value of docs/templates/q1.md.

    r: the default (CPU) run's results; gpu: optionally the same experiment's results on a GPU
    (written with `--out gpu_out`), for the latency-against-size evidence."""
    c, n = r["models"]["cnn"], r["models"]["rnn"]
    cfg = r["config"]
    h, w = cfg["image_shape"]
    first, last = r["latency_vs_side"][0], r["latency_vs_side"][-1]
    dev = r["environment"]["device"]
    v: dict[str, Any] = {
        "cmd": r["command"], "data": cfg["data"], "h": h, "w": w, "h4": h + 4, "w4": w + 4,
        "n_train": cfg["split_sizes"]["train"], "n_val": cfg["split_sizes"]["val"],
        "n_test": cfg["split_sizes"]["test"], "epochs": cfg["epochs"], "device": dev,
        "device_short": dev.split(" (")[0] if dev.startswith("CPU") else dev,
        "first_side": first["side"], "last_side": last["side"],
        "cnn_lat_first": ms(first["cnn_latency_ms"]), "cnn_lat_last": ms(last["cnn_latency_ms"]),
        "rnn_lat_first": ms(first["rnn_latency_ms"]), "rnn_lat_last": ms(last["rnn_latency_ms"]),
        "madds_ratio": f"{c['multiply_adds'] / n['multiply_adds']:.1f}",
        "madds_ratio_last": f"{last['cnn_multiply_adds'] / last['rnn_multiply_adds']:.0f}",
        "acc_gap": round(abs(c["test_accuracy"] - n["test_accuracy"])
                         * cfg["split_sizes"]["test"]),
        **_model_values("cnn", c, last), **_model_values("rnn", n, last),
        **_variable_size_values(c, n),
    }
    pieces = template("q1.md")
    if gpu is None:
        v.update(gpu_cmd_intro="", gpu_files="", gpu_row="",
                 parallel_evidence=fill(pieces["parallel_cpu"], v, "Q1 template"))
        return v
    v.update(_gpu_values(gpu, gpu_out))
    for key in ("gpu_cmd_intro", "gpu_files", "gpu_row"):
        v[key] = fill(pieces[key], v, "Q1 template")
    v["parallel_evidence"] = fill(pieces["parallel_gpu"], v, "Q1 template")
    return v


def q1_markdown(r: dict[str, Any], gpu: dict[str, Any] | None = None,
                gpu_out: str = GPU_OUT) -> str:
    """The body of docs/answers.md's Q1 section, every number from the JSON results."""
    return reflow(fill(template("q1.md")[""] + "\n", q1_values(r, gpu, gpu_out), "Q1 template"),
                  width=100)


def q1_from_results(results_dir: str | pathlib.Path) -> str:
    """`q1_markdown` of `results_dir/cnn_vs_rnn.json` (+ `cnn_vs_rnn_h100/` when present), or
    the command that measures it."""
    results_dir = pathlib.Path(results_dir)
    path = results_dir / "cnn_vs_rnn.json"
    if not path.is_file():
        return template("q1.md")["missing"] + "\n"
    gpu_path = results_dir / "cnn_vs_rnn_h100" / "cnn_vs_rnn.json"
    gpu = json.loads(gpu_path.read_text()) if gpu_path.exists() else None
    return q1_markdown(json.loads(path.read_text()), gpu)
