"""Q1's images: the digits and MNIST splits, and batches of them for the training loop
(`ImageData`, the data object of `hw3_jax.train`: see the data protocol there)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from hw3_jax.data.batching import full_rows, split_name
from hw3_jax.data.errors import DataError, first_line
from hw3_jax.data.net import can_reach

TFDS_HOST = ("storage.googleapis.com", 443)  # where tensorflow-datasets downloads MNIST from


@dataclasses.dataclass(frozen=True)
class ImageSplits:
    """Grey images float32 [N, H, W] in 0..1 and int32 labels [N] for each split."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def load_digits_splits(seed: int) -> ImageSplits:
    """scikit-learn's bundled 8x8 digits, split 70/10/20 (stratified) by `seed`: 1,257/180/360
    images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # pixel values are 0..16
    y = digits.target.astype(np.int32)
    x_rest, test_x, y_rest, test_y = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y)
    train_x, val_x, train_y, val_y = train_test_split(  # 10% of all images: 0.1 of 0.8
        x_rest, y_rest, test_size=0.1 / (1 - 0.2), random_state=seed, stratify=y_rest)
    return ImageSplits("digits", train_x, train_y, val_x, val_y, test_x, test_y)


def load_mnist_splits(seed: int, data_dir: str | None = None) -> ImageSplits:
    """MNIST through tensorflow-datasets (28x28; 55,000/5,000/10,000). Needs internet once.

    Raises DataError (one line) when tensorflow-datasets or the download is unavailable.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"--data mnist needs tensorflow-datasets and tensorflow ({e}); "
                        "install the 'tf' extra, or use --data digits (bundled)") from None
    builder = tfds.builder("mnist", data_dir=data_dir)
    if not builder.is_prepared() and not can_reach(TFDS_HOST):
        raise DataError("--data mnist: MNIST is not in the tensorflow-datasets cache and its "
                        "download host cannot be reached (no internet?); use --data digits "
                        "(bundled) or --tfds-data-dir DIR with MNIST prepared in it")
    try:
        builder.download_and_prepare()
        (x, y), test = (_tfds_arrays(tfds, builder, split) for split in ("train", "test"))
    except Exception as e:  # noqa: BLE001 - any download/prepare failure is one line to the user
        raise DataError(f"--data mnist: tensorflow-datasets could not load MNIST "
                        f"({first_line(e)}); "
                        "use --data digits (bundled)") from None
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(len(y) * (1 / 12)))  # 5,000 of the 60,000 training images
    val, tr = order[:n_val], order[n_val:]
    return ImageSplits("mnist", x[tr], y[tr], x[val], y[val], *test)


def _tfds_arrays(tfds: Any, builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 28, 28] in 0..1, labels int32 [N]) of one split, read in batches."""
    xs, ys = [], []
    for x, y in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True,
                                                 batch_size=8192)):
        xs.append(x)
        ys.append(y)
    x = (np.concatenate(xs)[..., 0] / 255.0).astype(np.float32)
    return x, np.concatenate(ys).astype(np.int32)


class ImageData:
    """The data object `hw3_jax.train` expects, over in-memory image arrays.

    Batches: {"image": float32 [B, H, W], "label": int32 [B], "weight": float32 [B]}, always B =
    batch_size (static shapes under jit): the last partial batch is padded with weight 0.
    `train_batches(epoch)` is shuffled deterministically by (seed, epoch).
    """

    def __init__(self, splits: ImageSplits, batch_size: int, seed: int):
        self.splits = splits
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(splits.train_y) / batch_size)

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.splits
        return {"train": (s.train_x, s.train_y), "validation": (s.val_x, s.val_y),
                "test": (s.test_x, s.test_y)}[split_name(split)]

    def _batches(self, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> Iterator[dict]:
        for start in range(0, len(order), self.batch_size):
            idx, weight = full_rows(order[start:start + self.batch_size], self.batch_size)
            yield {"image": x[idx], "label": y[idx], "weight": weight}

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """The epoch's batches from its `start_step`-th on (a resumed epoch)."""
        x, y = self._arrays("train")
        order = np.random.default_rng([self.seed, epoch]).permutation(len(y))
        return self._batches(x, y, order[start_step * self.batch_size:])

    def eval_batches(self, split: str) -> Iterator[dict]:
        x, y = self._arrays(split)
        return self._batches(x, y, np.arange(len(y)))

    def eval_steps(self, split: str) -> int:
        return math.ceil(len(self._arrays(split)[1]) / self.batch_size)
