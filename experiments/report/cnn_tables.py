"""results/cnn_vs_rnn.md: the Q1 experiment's full tables (docs/templates/cnn_vs_rnn.md) from
its JSON; `python -m experiments.cnn_vs_rnn` writes it beside the JSON, and
`python -m experiments.report` rebuilds it."""

from __future__ import annotations

from typing import Any

from experiments.report.text import fill, pct, row, template

MODELS = ("cnn", "rnn")


def directions(r: dict[str, Any]) -> list[str]:
    """The shift directions the run measured, in its order (e.g. down, up, right, left)."""
    return [k for k in r["models"]["cnn"]["shift_accuracy"]["1"] if k != "mean"]


def _summary_rows(r: dict[str, Any]) -> list[str]:
    c, n = (r["models"][k] for k in MODELS)
    cfg = r["config"]
    h, w = cfg["image_shape"]

    def both(fmt) -> list[str]:
        return [fmt(c), fmt(n)]

    rows = [
        ["architecture", *both(lambda m: m["architecture"])],
        ["parameters", *both(lambda m: f"{m['params']:,}")],
        ["test accuracy", *both(lambda m: pct(m["test_accuracy"]))],
    ]
    for d in ("1", "2"):
        rows.append([f"test accuracy, shifted {d} px (mean of 4 directions)",
                     *both(lambda m, d=d: pct(m["shift_accuracy"][d]["mean"]))])
    rows += [
        ["training time per epoch (median, after the first)",
         *both(lambda m: f"{m['epoch_time_s']:.3f} s")],
        ["inference latency, 1 image (warm median)",
         *both(lambda m: f"{m['latency_ms_1']:.3f} ms")],
        [f"inference latency, {cfg['latency_batch']} images (warm median)",
         *both(lambda m: f"{m['latency_ms_batch']:.3f} ms")],
        [f"sequential steps ({h}x{w} image)", *both(lambda m: m["sequential_steps"])],
        ["multiply-adds per image", *both(lambda m: f"{m['multiply_adds']:,}")],
    ]
    return [row(cells) for cells in rows]


def _side_row(s: dict[str, Any]) -> str:
    return row([s["side"], f"{s['cnn_latency_ms']:.3f} ms", f"{s['rnn_latency_ms']:.3f} ms",
                f"{s['rnn_latency_ms'] / s['cnn_latency_ms']:.2f}",
                s["cnn_sequential_steps"], s["rnn_sequential_steps"],
                f"{s['cnn_multiply_adds']:,}", f"{s['rnn_multiply_adds']:,}"])


def _variant_cell(v: dict[str, Any]) -> str:
    if v["runs"] is None:
        return "n/a (" + v["note"] + ")"
    if not v["runs"]:
        return "refused: row width fixed by the input projection"
    cell = f"runs: {pct(v['accuracy'])}"
    if "max_abs_logit_change" in v:
        cell += f" (logits change at most {v['max_abs_logit_change']:.1e})"
    return cell


def markdown_report(r: dict[str, Any]) -> str:
    """The Markdown of `results/cnn_vs_rnn.md` from the experiment's JSON results `r`."""
    c, n = (r["models"][k] for k in MODELS)
    cfg = r["config"]
    h, w = cfg["image_shape"]
    dirs = directions(r)
    shift_rows = [row([f"{d} px", *(pct(m["shift_accuracy"][d][k]) for m in (c, n)
                                     for k in dirs)]) for d in ("1", "2")]
    variable_rows = [row([cv["description"], _variant_cell(cv),
                          _variant_cell(n["variable_size"][key])])
                     for key, cv in c["variable_size"].items()]
    values = {
        "data": cfg["data"], "h": h, "w": w, "seed": cfg["seed"], "epochs": cfg["epochs"],
        "n_train": cfg["split_sizes"]["train"], "n_val": cfg["split_sizes"]["val"],
        "n_test": cfg["split_sizes"]["test"], "batch": cfg["batch_size"],
        "lr": cfg["learning_rate"], "device": r["environment"]["device"],
        "command": r["command"],
        "summary_rows": "\n".join(_summary_rows(r)),
        "side_rows": "\n".join(_side_row(s) for s in r["latency_vs_side"]),
        "shift_header": "\n".join([
            row(["shift", *(f"{name} {d}" for name in ("CNN", "RNN") for d in dirs)]),
            "| ---: |" + " ---: |" * (2 * len(dirs))]),
        "shift_rows": "\n".join(shift_rows),
        "variable_rows": "\n".join(variable_rows),
    }
    return fill(template("cnn_vs_rnn.md")[""] + "\n", values, "cnn_vs_rnn template")
