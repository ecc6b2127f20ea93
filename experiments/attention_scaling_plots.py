"""Q3's three figures, from the records and error measurements of
`experiments.attention_scaling`:

    attention_scaling_time.png    wall time against T, forward and forward + backward
    attention_scaling_memory.png  compiled temporary memory against T
    attention_scaling_error.png   the Performer's error against its number of features
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import numpy as np  # noqa: E402

from experiments.attention_scaling_analysis import (  # noqa: E402
    BATCH,
    HEAD_DIM,
    HEADS,
    METHODS,
    MODES,
    ok_times,
    skip_cause,
)
from hw3_jax.train.plots import save_figure  # noqa: E402

COLORS = {"softmax": "tab:red", "performer": "tab:blue", "local": "tab:green"}
# What a skipped point's dotted vertical means, by `skip_cause`.
SKIP_WORDS = {"memory": "would not fit", "time": "one call predicted over max_call_s",
              "other": "see the JSON's reasons"}


def skip_note(records: list[dict]) -> str:
    """The time plot's legend for its dotted verticals, naming why points were skipped
    ("skipped, would not fit"); "" when none was."""
    causes = {skip_cause(r) for r in records} - {None}
    if not causes:
        return ""
    return "skipped, " + " or ".join(w for c, w in SKIP_WORDS.items() if c in causes)


def _save(fig: Any, path: Path) -> str:
    save_figure(fig, path, dpi=120)
    return str(path)


def _time_panel(ax: Any, records: list[dict], lengths: list[int], mode: str) -> None:
    """Each method's time against T (dotted verticals: skipped points), with O(T) and O(T^2)
    guides through the first performer and the first softmax point."""
    for m in METHODS:
        times = ok_times(records, m, mode)
        if times:
            ts = sorted(times)
            ax.loglog(ts, [times[t] for t in ts], "o-", color=COLORS[m], label=m)
        for r in records:
            if r["method"] == m and r["mode"] == mode and r["status"] != "ok":
                ax.axvline(r["T"], color=COLORS[m], ls=":", lw=1)
    ts = np.array(lengths, float)
    pt = ok_times(records, "performer", mode)
    st = ok_times(records, "softmax", mode)
    if pt:
        t0 = min(pt)
        ax.loglog(ts, pt[t0] * ts / t0, "--", color="grey", lw=1, label="O(T) guide")
    if st:
        t0 = min(st)
        ax.loglog(ts, st[t0] * (ts / t0) ** 2, ":", color="black", lw=1, label="O(T$^2$) guide")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length T")
    ax.set_title({"fwd": "forward", "fwd_bwd": "forward + backward"}[mode])
    ax.grid(True, which="both", alpha=0.3)


def plot_time(records: list[dict], lengths: list[int], device: str, out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        _time_panel(ax, records, lengths, mode)
    axes[0].set_ylabel("wall time per call (s, median)")
    axes[0].legend()
    note = skip_note(records)
    fig.suptitle(
        f"Attention time on {device}\n"
        f"(batch {BATCH}, {HEADS} heads, head_dim {HEAD_DIM}, float32"
        + (f"; dotted verticals: {note})" if note else ")")
    )
    return _save(fig, out / "attention_scaling_time.png")


def plot_memory(records: list[dict], out: Path) -> str:
    """Temporary memory of every compiled point, the skipped ones included."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for m in METHODS:
        for mode, ls in (("fwd", "o-"), ("fwd_bwd", "s--")):
            rs = [r for r in records if r["method"] == m and r["mode"] == mode]  # T ascending
            if rs:
                ax.loglog([r["T"] for r in rs], [max(r["temp_bytes"], 1) / 2**20 for r in rs], ls,
                          color=COLORS[m], label=f"{m} {mode}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("compiled temporary memory (MiB)")
    ax.set_title("XLA temp buffers (memory_analysis; includes skipped points)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / "attention_scaling_memory.png")


def plot_error(err: dict, out: Path) -> str:
    """Output error and attention-row error (mean +- std over draws) against the features."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for reg, marker in zip(err["regimes"], ("o", "s"), strict=False):
        for sampler, ls in (("orthogonal", "-"), ("iid", "--")):
            rows = [r for r in reg["rows"] if r["sampler"] == sampler]
            ms = [r["features"] for r in rows]
            label = f"{sampler}, q,k~N(0,{reg['sigma']}$^2$)"
            for ax, field in zip(axes, ("rel_error", "tv"), strict=True):
                ax.errorbar(ms, [r[f"{field}_mean"] for r in rows],
                            yerr=[r[f"{field}_std"] for r in rows], fmt=marker + ls, capsize=2,
                            label=label)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("random features m")
        ax.grid(True, which="both", alpha=0.3)
    ms = np.array(err["features"], float)
    r0 = err["regimes"][0]["rows"][0]
    axes[0].plot(
        ms, r0["rel_error_mean"] * np.sqrt(ms[0] / ms), ":", color="grey", label="$m^{-1/2}$ guide"
    )
    axes[0].set_ylabel(r"$\|\hat Y - Y\|_F / \|Y\|_F$")
    axes[0].set_title(f"Performer output error (T={err['T']})")
    axes[1].set_ylabel("mean total-variation distance of attention rows")
    axes[1].set_title("Performer attention-row error")
    axes[0].legend(fontsize=8)
    return _save(fig, out / "attention_scaling_error.png")


def make_plots(records: list[dict], lengths: list[int], err: dict, device: str, out: Path
               ) -> list[str]:
    """The three PNGs in `out` (`device`: what the times were measured on, in words); returns
    their paths."""
    return [plot_time(records, lengths, device, out), plot_memory(records, out),
            plot_error(err, out)]
