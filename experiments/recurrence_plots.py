"""Q2's figure: recurrence.png, the training of the learnable ScalarRNN step by step.

Four panels from the history of `experiments.recurrence.fit` (one line per random init): the
minibatch loss, w_rec, |w_rec + 1|, and w_in * w_out beside w_in and w_out.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file-only backend
import numpy as np  # noqa: E402

from hw3_jax.train.plots import save_figure  # noqa: E402


def plot(history: dict, path: pathlib.Path) -> None:
    """history: {"loss", "w_in", "w_rec", "w_out"}, each [steps][inits]; writes `path`."""
    loss = np.asarray(history["loss"])
    w = {k: np.asarray(history[k]) for k in ("w_in", "w_rec", "w_out")}
    steps = np.arange(1, loss.shape[0] + 1)
    fig, ((ax_loss, ax_rec), (ax_err, ax_scale)) = plt.subplots(2, 2, figsize=(12, 8))
    ax_loss.plot(steps, loss, lw=0.8)
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel="BCE (minibatch)",
        title="training loss, one line per random init",
    )
    ax_rec.plot(steps, w["w_rec"], lw=1)
    ax_rec.axhline(-1.0, color="k", ls="--", lw=0.8, label="figure: -1")
    ax_rec.set(xlabel="step", ylabel="w_rec", title="recurrent weight")
    ax_rec.legend()
    ax_err.plot(steps, np.abs(w["w_rec"] + 1.0), lw=0.8)
    ax_err.set(yscale="log", xlabel="step", ylabel="|w_rec + 1|", title="distance of w_rec from -1")
    for name, style in (("w_in", ":"), ("w_out", "--")):
        ax_scale.plot(steps, w[name], ls=style, lw=0.8, color="gray")
    ax_scale.plot(steps, w["w_in"] * w["w_out"], lw=1.2)
    ax_scale.set(
        yscale="symlog",
        xlabel="step",
        ylabel="weight",
        title="w_in * w_out (solid); w_in (dotted), w_out (dashed)",
    )
    save_figure(fig, path, dpi=110)
