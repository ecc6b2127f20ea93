"""results/cnn_vs_rnn.md: the Q1 experiment's full tables (templates/cnn_vs_rnn.md) from
its JSON; `python -m experiments.cnn_vs_rnn` writes it beside the JSON, and
`python -m experiments.report` rebuilds it."""

from __future__ import annotations

from typing import Any

from experiments.report.text import fill, pct, row


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
    c, n = r["models"]["cnn"], r["models"]["rnn"]
    h, w = r["config"]["image_shape"]
    # The shift directions the run measured, in its order (e.g. down, up, right, left).
    dirs = [k for k in c["shift_accuracy"]["1"] if k != "mean"]
    shift_rows = [row([f"{d} px", *(pct(m["shift_accuracy"][d][k]) for m in (c, n)
                                     for k in dirs)]) for d in ("1", "2")]
    variable_rows = [row([cv["description"], _variant_cell(cv),
                          _variant_cell(n["variable_size"][key])])
                     for key, cv in c["variable_size"].items()]
    values = {
        **r, "cnn": c, "rnn": n, "h": h, "w": w,
        "shift_header": "\n".join([
            row(["shift", *(f"{name} {d}" for name in ("CNN", "RNN") for d in dirs)]),
            "| ---: |" + " ---: |" * (2 * len(dirs))]),
        "shift_rows": "\n".join(shift_rows),
        "variable_rows": "\n".join(variable_rows),
    }
    return fill("cnn_vs_rnn.md", values)
