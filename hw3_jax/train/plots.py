"""The training curves of a run: loss and accuracy per epoch, train vs validation; and
`save_figure`, how every figure of the project is written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hw3_jax.train.workdir import atomic_path


def plot_curves(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Write the curves of `history` (the loop's per-epoch entries: epoch, train_loss,
    train_accuracy, val_loss, val_accuracy) to `path` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for split, style in (("train", "o-"), ("val", "s--")):
            ys = [h.get(f"{split}_{key}") for h in history]
            ax.plot(epochs, [np.nan if y is None else y for y in ys], style, label=split)
        # Whole epochs only (no 1.2, 1.4, ... between them), few enough for a long run.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(True, alpha=0.3)
        ax.legend()
    save_figure(fig, path, dpi=100)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int) -> None:
    """Lay out `fig` tightly, write it to `path` (a PNG at `dpi`) through a temporary file,
    so that a write cut short leaves the earlier figure whole, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=os.path.splitext(path)[1][1:])
    plt.close(fig)
