"""Q1's three figures, from the results dict that `experiments.cnn_vs_rnn` writes as JSON.

    cnn_vs_rnn_accuracy.png  test accuracy and parameter count of each model
    cnn_vs_rnn_speed.png     training time per epoch, latency, latency and depth against side
    cnn_vs_rnn_shift.png     accuracy on test images shifted by 0, 1, 2 pixels
"""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from hw3_jax.train.plots import save_figure  # noqa: E402

KEYS = ("cnn", "rnn")
MODEL_NAMES = {"cnn": "CNN", "rnn": "RNN (GRU over rows)"}
COLORS = ("tab:blue", "tab:orange")
LABELS = [MODEL_NAMES[k] for k in KEYS]


def _save(fig: Any, out: pathlib.Path, name: str) -> str:
    save_figure(fig, out / name, dpi=110)
    return name


def _labelled_bars(ax: Any, values: list[float], fmt: str) -> None:
    ax.bar_label(ax.bar(LABELS, values, color=COLORS), labels=[fmt.format(v) for v in values])


def plot_accuracy(r: dict[str, Any], out: pathlib.Path) -> str:
    """Test accuracy (axis from 0: a 1-point difference should look like one) and size."""
    m = r["models"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    _labelled_bars(ax[0], [100 * m[k]["test_accuracy"] for k in KEYS], "{:.1f}%")
    ax[0].set_ylabel("test accuracy (%)")
    ax[0].set_ylim(0, 105)
    _labelled_bars(ax[1], [m[k]["params"] for k in KEYS], "{:,}")
    ax[1].set_ylabel("parameters")
    ax[1].margins(y=0.12)
    fig.suptitle(f"{r['config']['data']}: accuracy and size")
    return _save(fig, out, "cnn_vs_rnn_accuracy.png")


def _against_side(ax_latency: Any, ax_steps: Any, rows: list[dict[str, Any]]) -> None:
    """Latency (log-log) and sequential steps of each model against the image side."""
    sides = [row["side"] for row in rows]
    for a, field in ((ax_latency, "latency_ms"), (ax_steps, "sequential_steps")):
        for k, col in zip(KEYS, COLORS, strict=True):
            a.plot(sides, [row[f"{k}_{field}"] for row in rows], "o-", color=col,
                   label=MODEL_NAMES[k])
        a.set_xscale("log", base=2)
        a.set_xticks(sides, [str(s) for s in sides])
        a.set_xlabel("image side (pixels)")
        a.legend(fontsize=8)
    ax_latency.set_yscale("log")
    ax_latency.yaxis.set_major_locator(
        matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_latency.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_latency.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_latency.set_ylabel("ms, 1 image (warm median)")
    ax_latency.set_title("latency against image side")
    ax_steps.set_ylabel("sequential steps")
    ax_steps.set_title("depth of the computation")


def plot_speed(r: dict[str, Any], out: pathlib.Path) -> str:
    """Training time per epoch, latency, and latency and depth against the image side."""
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.9))
    _labelled_bars(ax[0], [r["models"][k]["epoch_time_s"] for k in KEYS], "{:.3f} s")
    ax[0].set_ylabel("s (median over epochs 2..)")
    ax[0].margins(y=0.15)
    ax[0].set_title("training time per epoch")
    # 1-image and batch latency of each model, side by side
    x = np.arange(2)
    for off, field, lab in ((-0.2, "latency_ms_1", "1 image"),
                            (0.2, "latency_ms_batch", f"{r['config']['latency_batch']} images")):
        ax[1].bar_label(ax[1].bar(x + off, [r["models"][k][field] for k in KEYS], 0.4, label=lab),
                        fmt="%.2f", fontsize=8)
    ax[1].set_xticks(x, LABELS)
    ax[1].set_ylabel("ms (warm median)")
    ax[1].margins(y=0.3)
    ax[1].legend(fontsize=8, loc="upper center", ncol=2)
    ax[1].set_title("inference latency")
    _against_side(ax[2], ax[3], r["latency_vs_side"])
    fig.suptitle(f"speed on {r['machine']['device']}")
    return _save(fig, out, "cnn_vs_rnn_speed.png")


def plot_shift(r: dict[str, Any], out: pathlib.Path) -> str:
    """Mean accuracy over the four directions against the shift distance."""
    m = r["models"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ds = sorted(int(d) for d in m["cnn"]["shift_accuracy"])
    for k, col in zip(KEYS, COLORS, strict=True):
        ax.plot(ds, [100 * m[k]["shift_accuracy"][str(d)]["mean"] for d in ds], "o-", color=col,
                label=MODEL_NAMES[k])
    ax.set_xticks(ds)
    ax.set_xlabel("shift (pixels, mean of up/down/left/right)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("translation robustness (no shift augmentation)")
    ax.legend()
    return _save(fig, out, "cnn_vs_rnn_shift.png")


def plot(r: dict[str, Any], out: pathlib.Path) -> list[str]:
    """The three PNGs in `out`; returns their names."""
    return [plot_accuracy(r, out), plot_speed(r, out), plot_shift(r, out)]
