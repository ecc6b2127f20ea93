"""Homework Q1, measured: a small CNN against a row-by-row GRU on real handwritten digits.

    python -m experiments.cnn_vs_rnn [--data digits|mnist] [--epochs N] [--seed S] [--out DIR]

Both models (`hw3_jax.vision`) have about the same number of parameters and are trained by the
project's one training loop (`hw3_jax.train.train`) with the same optimiser, batches and epochs.
Then, with no retraining and no augmentation, it measures:

- test accuracy, parameter count, training time per epoch;
- inference latency (jit-compiled, warm, median of repetitions), for one image and a batch;
- how latency grows with the image side (8, 16, 32, 64), beside the sequential steps (depth of
  the computation) and the multiply-adds per image of each model;
- accuracy on test images shifted by 1 and 2 pixels (zero-filled, up/down/left/right);
- what each model does with images of another height or width (blank rows or columns, a bigger
  canvas, a vertical stretch, a 2x upsampling; for the RNN also a padded batch with per-image
  heights): it runs and gives an accuracy, or it refuses, and why.

`q1_markdown` / `q1_from_results` turn the JSON into the Q1 section of docs/answers.md (with the
GPU run in `results/cnn_vs_rnn_h100/` when present), so the text never drifts from the numbers.

Writes `OUT/cnn_vs_rnn.json`, `OUT/cnn_vs_rnn.md` and three PNG plots (`OUT` = results/ by
default). The default data, scikit-learn's bundled 8x8 digits (1,797 images), needs no download;
`--data mnist` loads MNIST (28x28) through tensorflow-datasets, which needs internet once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = 10
MODEL_NAMES = {"cnn": "CNN", "rnn": "RNN (GRU over rows)"}
SHIFT_DIRECTIONS = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}


class UsageError(Exception):
    """Bad input or missing data: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------ data


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


def load_digits_splits(seed: int, val_fraction: float = 0.1,
                       test_fraction: float = 0.2) -> ImageSplits:
    """scikit-learn's bundled 8x8 digits, split (stratified) by `seed`: 1,257/180/360 images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # pixel values are 0..16
    y = digits.target.astype(np.int32)
    x_rest, test_x, y_rest, test_y = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    train_x, val_x, train_y, val_y = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
        stratify=y_rest)
    return ImageSplits("digits", train_x, train_y, val_x, val_y, test_x, test_y)


def load_mnist_splits(seed: int, data_dir: str | None = None,
                      val_fraction: float = 1 / 12) -> ImageSplits:
    """MNIST through tensorflow-datasets (28x28; 55,000/5,000/10,000). Needs internet once.

    Raises UsageError (one line) when tensorflow-datasets or the download is unavailable.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UsageError(f"--data mnist needs tensorflow-datasets and tensorflow ({e}); "
                         "install the 'tf' extra, or use --data digits (bundled)") from None
    builder = tfds.builder("mnist", data_dir=data_dir)
    if not builder.is_prepared() and not _reachable("storage.googleapis.com", 443):
        raise UsageError("--data mnist: MNIST is not in the tensorflow-datasets cache and its "
                         "download host cannot be reached (no internet?); use --data digits "
                         "(bundled) or --tfds-data-dir DIR with MNIST prepared in it")
    try:
        builder.download_and_prepare()
        train, test = (_tfds_arrays(tfds, builder, split) for split in ("train", "test"))
    except Exception as e:  # noqa: BLE001 - any download/prepare failure is one line to the user
        raise UsageError(f"--data mnist: tensorflow-datasets could not load MNIST "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                         "use --data digits (bundled)") from None
    x = (train[0][..., 0] / 255.0).astype(np.float32)
    y = train[1].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(len(y) * val_fraction))
    val, tr = order[:n_val], order[n_val:]
    return ImageSplits("mnist", x[tr], y[tr], x[val], y[val],
                       (test[0][..., 0] / 255.0).astype(np.float32), test[1].astype(np.int32))


def _tfds_arrays(tfds: Any, builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28, 1], labels [N]) of one split, read in batches."""
    xs, ys = [], []
    for x, y in tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True,
                                                 batch_size=8192)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _reachable(host: str, port: int, timeout: float = 5.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ImageData:
    """The data object `hw3_jax.train.train` expects, over in-memory image arrays.

    Batches: {"image": float32 [B, H, W], "label": int32 [B], "weight": float32 [B]}, always B =
    batch_size (static shapes under jit): the last partial batch is padded with weight 0.
    `train_batches(epoch)` is shuffled deterministically by (seed, epoch).
    """

    def __init__(self, splits: ImageSplits, batch_size: int = 64, seed: int = 0):
        self.splits = splits
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(splits.train_y) / batch_size)

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        s = self.splits
        try:
            return {"train": (s.train_x, s.train_y), "val": (s.val_x, s.val_y),
                    "validation": (s.val_x, s.val_y), "test": (s.test_x, s.test_y)}[split]
        except KeyError:
            raise ValueError(f"unknown split {split!r} (train, val, test)") from None

    def _batches(self, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> Iterator[dict]:
        b = self.batch_size
        for start in range(0, len(order), b):
            idx = order[start:start + b]
            n = len(idx)
            weight = np.zeros(b, np.float32)
            weight[:n] = 1.0
            pad = np.zeros(b - n, dtype=idx.dtype)  # repeat example 0, weight 0
            idx = np.concatenate([idx, pad])
            yield {"image": x[idx], "label": y[idx], "weight": weight}

    def train_batches(self, epoch: int) -> Iterator[dict]:
        x, y = self._arrays("train")
        rng = np.random.default_rng([self.seed, epoch])
        return self._batches(x, y, rng.permutation(len(y)))

    def eval_batches(self, split: str) -> Iterator[dict]:
        x, y = self._arrays(split)
        return self._batches(x, y, np.arange(len(y)))


# ---------------------------------------------------------------------------------------- models


def build_models(image_shape: tuple[int, int], dtype: Any = None) -> dict[str, Any]:
    """The two classifiers, with comparable parameter budgets (about 14-15k on 8x8 digits)."""
    import jax.numpy as jnp

    from hw3_jax.vision import CNNClassifier, RowGRUClassifier

    dtype = dtype or jnp.float32
    return {"cnn": CNNClassifier(num_classes=CLASSES, dtype=dtype),
            "rnn": RowGRUClassifier(input_width=image_shape[1], num_classes=CLASSES,
                                    hidden_size=64, dtype=dtype)}


def init_params(model: Any, image_shape: tuple[int, int], seed: int) -> Any:
    import jax
    import jax.numpy as jnp

    return model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32))["params"]


def count_params(params: Any) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def train_model(model: Any, params: Any, data: ImageData, epochs: int, learning_rate: float,
                seed: int, workdir: str) -> Any:
    """Train through the project's one loop (`hw3_jax.train`), softmax cross-entropy."""
    from hw3_jax.train import TrainConfig, train

    config = TrainConfig(workdir=workdir, epochs=epochs, learning_rate=learning_rate, seed=seed,
                         loss="multiclass", input_keys=("image",), progress=False,
                         verbose=False, plot=False)
    return train(model, params, data, config)


def make_predict(model: Any) -> Callable:
    """jit-compiled logits -> predicted class, [B, H, W] -> int32 [B]."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def predict(params, images):
        return jnp.argmax(model.apply({"params": params}, images), axis=-1)

    return predict


def accuracy(predict: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 512) -> float:
    """Fraction correct; batches of one size (the last padded) so it compiles once per shape."""
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size]
        n = len(x)
        if n < batch_size and len(labels) > batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        pred = np.asarray(predict(params, x))[:n]
        correct += int((pred == labels[start:start + n]).sum())
    return correct / len(labels)


# ----------------------------------------------------------------------------------- measurement


def median_times(cases: dict[Any, tuple[Callable, tuple]], reps: int = 50,
                 warmup: int = 3) -> dict[Any, float]:
    """Median wall time (s) of each `fn(*args)`, blocked until ready, after compile + warm-up.

    The repetitions are interleaved (one call of every case per round, in a rotating order),
    so a burst of load on a shared machine hits all cases alike instead of one.
    """
    import jax

    names = list(cases)
    for name in names:
        fn, args = cases[name]
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    times: dict[Any, list[float]] = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn, args = cases[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def shift_accuracies(predict: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
                     distances=(0, 1, 2)) -> dict[str, Any]:
    """Accuracy on test images translated by d pixels in each of 4 directions, zero-filled."""
    from hw3_jax.vision import shift_images

    out = {}
    for d in distances:
        if d == 0:
            out["0"] = {"mean": accuracy(predict, params, images, labels)}
            continue
        per = {name: accuracy(predict, params, shift_images(images, dy * d, dx * d), labels)
               for name, (dy, dx) in SHIFT_DIRECTIONS.items()}
        out[str(d)] = {"mean": float(np.mean(list(per.values()))), **per}
    return out


@dataclasses.dataclass(frozen=True)
class SizeVariant:
    """One input of another size for the variable-size test (the content is never resized
    back to the training size). `real_rows`: rows 0..real_rows-1 hold the image, the rest is
    bottom padding that a model taking per-image `lengths` (the RNN) may be told to skip."""

    key: str
    description: str
    transform: Callable[[np.ndarray], np.ndarray]
    real_rows: int | None = None


def size_variants(h: int, w: int) -> list[SizeVariant]:
    from hw3_jax.vision import pad_images, upsample_images

    return [
        SizeVariant("original", f"original {h}x{w}", lambda x: x),
        SizeVariant("taller_bottom", f"taller: 4 blank rows below ({h + 4}x{w})",
                    lambda x: pad_images(x, bottom=4)),
        SizeVariant("taller_bottom_lengths",
                    f"taller: 4 blank rows below ({h + 4}x{w}), per-image height given "
                    f"(lengths={h})", lambda x: pad_images(x, bottom=4), real_rows=h),
        SizeVariant("taller_centred", f"taller: 2 blank rows above and below ({h + 4}x{w})",
                    lambda x: pad_images(x, top=2, bottom=2)),
        SizeVariant("stretched", f"stretched 2x vertically ({2 * h}x{w}, rows repeated)",
                    lambda x: upsample_images(x, 2, 1)),
        SizeVariant("wider", f"wider: 2 blank columns left and right ({h}x{w + 4})",
                    lambda x: pad_images(x, left=2, right=2)),
        SizeVariant("bigger", f"bigger canvas: 2-pixel blank border ({h + 4}x{w + 4})",
                    lambda x: pad_images(x, 2, 2, 2, 2)),
        SizeVariant("upsampled", f"upsampled 2x ({2 * h}x{2 * w}, pixels repeated 2x2)",
                    lambda x: upsample_images(x, 2)),
    ]


def variable_size(model: Any, params: Any, images: np.ndarray,
                  labels: np.ndarray) -> dict[str, Any]:
    """Run a trained model, unchanged, on images of other sizes: accuracy, or why it cannot.

    Per variant: {"description", "shape", "runs": bool | None (None: not applicable),
    "accuracy", "error" | "note", and for the `lengths` variant "max_abs_logit_change"
    against the original images (0 means the padding had exactly no effect)}.
    """
    import jax
    import jax.numpy as jnp

    from hw3_jax.vision import RowGRUClassifier

    predict = make_predict(model)
    out = {}
    h, w = images.shape[1:]
    for v in size_variants(h, w):
        x = v.transform(images)
        entry: dict[str, Any] = {"description": v.description, "shape": list(x.shape[1:])}
        out[v.key] = entry
        if v.real_rows is not None:
            if not isinstance(model, RowGRUClassifier):
                entry.update(runs=None, accuracy=None,
                             note="no per-image length input: same as without lengths")
                continue
            lengths = jnp.full((len(x),), v.real_rows, jnp.int32)
            logits = jax.jit(lambda p, x, n: model.apply({"params": p}, x, n))(params, x, lengths)
            ref = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
            pred = np.asarray(jnp.argmax(logits, -1))
            entry.update(runs=True, accuracy=float((pred == labels).mean()),
                         max_abs_logit_change=float(jnp.max(jnp.abs(logits - ref))))
            continue
        try:
            entry.update(runs=True, accuracy=accuracy(predict, params, x, labels))
        except ValueError as e:  # the RNN refuses another row width (its input projection)
            entry.update(runs=False, accuracy=None, error=str(e))
    return out


def measure_latency(models: dict[str, Any], trained: dict[str, Any], test_x: np.ndarray,
                    batch: int, sides, reps: int, seed: int) -> tuple[dict, list[dict]]:
    """Inference latency (ms, warm median), all cases interleaved in one pass.

    Returns ({model: {"latency_ms_1", "latency_ms_batch"}} on test images, and one row per
    image side with each model's batch-1 latency, sequential steps and multiply-adds). For the
    sides, the CNN is the trained one (it takes any size); the RNN's input width must equal the
    side, so each side gets a freshly initialised RNN of that width (timing does not depend on
    the weights' values); its hidden size stays 64. Side inputs are random images; at the test
    images' own side the row is the 1-test-image measurement (the same computation).
    """
    import jax.numpy as jnp

    from hw3_jax.vision import multiply_adds, sequential_steps

    x1, xb = jnp.asarray(test_x[:1]), jnp.asarray(test_x[:batch])
    cases: dict[Any, tuple[Callable, tuple]] = {}
    rows = []
    rng = np.random.default_rng(seed)
    for key, model in models.items():
        predict = make_predict(model)
        cases[(key, "1")] = (predict, (trained[key], x1))
        cases[(key, "batch")] = (predict, (trained[key], xb))
    for side in sides:
        x = jnp.asarray(rng.random((1, side, side), np.float32))
        row: dict[str, Any] = {"side": side}
        for key, model in models.items():
            if key == "rnn":
                model = model.clone(input_width=side)
            if test_x.shape[1:] != (side, side):
                params = trained[key] if key == "cnn" else init_params(model, (side, side), seed)
                cases[(key, side)] = (make_predict(model), (params, x))
            # else: the same computation as the 1-test-image case, measured once (below)
            row[f"{key}_sequential_steps"] = sequential_steps(model, side)
            row[f"{key}_multiply_adds"] = multiply_adds(model, side, side)
        rows.append(row)
    t = median_times(cases, reps=reps)
    per_model = {key: {"latency_ms_1": 1e3 * t[(key, "1")],
                       "latency_ms_batch": 1e3 * t[(key, "batch")]} for key in models}
    for row in rows:
        for key in models:
            row[f"{key}_latency_ms"] = 1e3 * t.get((key, row["side"]), t[(key, "1")])
    return per_model, rows


# --------------------------------------------------------------------------------------- outputs


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown_report(r: dict[str, Any]) -> str:
    """The Markdown tables of `results/cnn_vs_rnn.md`, from the JSON results."""
    c, n = r["models"]["cnn"], r["models"]["rnn"]
    cfg = r["config"]
    h, w = cfg["image_shape"]
    lines = [
        "# CNN vs RNN for image classification (measured)",
        "",
        f"Data: {cfg['data']} {h}x{w}, {cfg['split_sizes']['train']} train / "
        f"{cfg['split_sizes']['val']} val / {cfg['split_sizes']['test']} test images "
        f"(seed {cfg['seed']}); {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
        f"Adam lr {cfg['learning_rate']}, best epoch by validation loss. "
        f"Device: {r['environment']['device']}. Regenerate: `{r['command']}`.",
        "",
        "| | CNN | RNN (GRU over rows) |",
        "| --- | ---: | ---: |",
        f"| architecture | {c['architecture']} | {n['architecture']} |",
        f"| parameters | {c['params']:,} | {n['params']:,} |",
        f"| test accuracy | {_fmt_pct(c['test_accuracy'])} | {_fmt_pct(n['test_accuracy'])} |",
        f"| test accuracy, shifted 1 px (mean of 4 directions) | "
        f"{_fmt_pct(c['shift_accuracy']['1']['mean'])} | "
        f"{_fmt_pct(n['shift_accuracy']['1']['mean'])} |",
        f"| test accuracy, shifted 2 px (mean of 4 directions) | "
        f"{_fmt_pct(c['shift_accuracy']['2']['mean'])} | "
        f"{_fmt_pct(n['shift_accuracy']['2']['mean'])} |",
        f"| training time per epoch (median, after the first) | {c['epoch_time_s']:.3f} s | "
        f"{n['epoch_time_s']:.3f} s |",
        f"| inference latency, 1 image (warm median) | {c['latency_ms_1']:.3f} ms | "
        f"{n['latency_ms_1']:.3f} ms |",
        f"| inference latency, {cfg['latency_batch']} images (warm median) | "
        f"{c['latency_ms_batch']:.3f} ms | {n['latency_ms_batch']:.3f} ms |",
        f"| sequential steps ({h}x{w} image) | {c['sequential_steps']} | "
        f"{n['sequential_steps']} |",
        f"| multiply-adds per image | {c['multiply_adds']:,} | {n['multiply_adds']:,} |",
        "",
        "## Latency and depth against image side (1 image, warm median)",
        "",
        "| side | CNN latency | RNN latency | RNN/CNN | CNN steps | RNN steps "
        "| CNN multiply-adds | RNN multiply-adds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in r["latency_vs_side"]:
        lines.append(
            f"| {row['side']} | {row['cnn_latency_ms']:.3f} ms | {row['rnn_latency_ms']:.3f} ms "
            f"| {row['rnn_latency_ms'] / row['cnn_latency_ms']:.2f} "
            f"| {row['cnn_sequential_steps']} | {row['rnn_sequential_steps']} "
            f"| {row['cnn_multiply_adds']:,} | {row['rnn_multiply_adds']:,} |")
    lines += [
        "",
        "The CNN is the trained one; the RNN at side s is a fresh one with input width s (the "
        "timing does not depend on the weights).",
        "",
        "## Translation: accuracy on shifted test images (zero-filled, no shift augmentation)",
        "",
        "| shift | " + " | ".join(f"CNN {d}" for d in SHIFT_DIRECTIONS) + " | "
        + " | ".join(f"RNN {d}" for d in SHIFT_DIRECTIONS) + " |",
        "| ---: |" + " ---: |" * (2 * len(SHIFT_DIRECTIONS)),
    ]
    for d in ("1", "2"):
        cells = [_fmt_pct(m["shift_accuracy"][d][k]) for m in (c, n) for k in SHIFT_DIRECTIONS]
        lines.append(f"| {d} px | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Variable-size input (the trained models, no retraining, no resizing)",
        "",
        "| input | CNN | RNN (GRU over rows) |",
        "| --- | --- | --- |",
    ]
    for key, cv in c["variable_size"].items():
        cells = [_variant_cell(v) for v in (cv, n["variable_size"][key])]
        lines.append(f"| {cv['description']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _variant_cell(v: dict[str, Any]) -> str:
    if v["runs"] is None:
        return "n/a (" + v["note"] + ")"
    if not v["runs"]:
        return "refused: row width fixed by the input projection"
    cell = f"runs: {_fmt_pct(v['accuracy'])}"
    if "max_abs_logit_change" in v:
        cell += f" (logits change at most {v['max_abs_logit_change']:.1e})"
    return cell


Q1_TEMPLATE = r"""
Measured by `<<cmd>>` (<<data>>: <<h>>x<<w>> real handwritten digits, <<n_train>> train /
<<n_val>> validation / <<n_test>> test images, <<epochs>> epochs of Adam through the project's one
training loop, on <<device>>)<<gpu_cmd_intro>>. Full tables and plots: `results/cnn_vs_rnn.md`,
`results/cnn_vs_rnn_*.png`<<gpu_files>>.

The two models have about the same parameter budget. The CNN: 3x3 convolutions with 16 and
32 channels, a 2x2 max-pool, a third 3x3 convolution with 32 channels, global average pooling
and a linear head
(**<<cnn_params>>** parameters). The RNN: a GRU with 64 hidden units that reads the image one row
per step ($x_t \in \mathbb{R}^{<<w>>}$ is row $t$) and a linear head on its last state
(**<<rnn_params>>** parameters).

<<table>>

**Two benefits of CNNs over RNNs**

1. *Translation robustness, built in.* A convolution applies one kernel $K$ at every position,
   $(K * x)_{i,j} = \sum_{a,b} K_{a,b}\, x_{i+a,\,j+b}$, so it commutes with a shift $T_\delta$:
   $K * (T_\delta x) = T_\delta (K * x)$ (equivariance), and the global average pool
   $g_c = \frac{1}{HW}\sum_{i,j} y_{i,j,c}$ does not care where a feature is (invariance, up to
   the border and the max-pool's stride). The row GRU has no such structure: a horizontal shift
   changes every input vector $x_t$, and a vertical one changes which step reads which row.
   Trained without any shift augmentation, on test images shifted by 1 pixel (zero-filled, mean
   over up/down/left/right) the CNN keeps **<<cnn_s1>>** (from <<cnn_acc>>) and the RNN
   **<<rnn_s1>>** (from <<rnn_acc>>); at 2 pixels <<cnn_s2>> against <<rnn_s2>> (such a shift
   pushes 2 of the <<h>> rows or columns off the image, so both suffer). The RNN is
   hurt most by horizontal shifts (1 px right/left: <<rnn_s1_right>> / <<rnn_s1_left>>, against the
   CNN's <<cnn_s1_right>> / <<cnn_s1_left>>).
2. *Parallel, constant-depth computation.* All output positions of a convolution layer are
   independent, so the CNN is <<cnn_steps>> dependent steps (its layers) for every image size,
   while the recurrence $h_t = \mathrm{GRU}(h_{t-1}, x_t)$ cannot start row $t$ before row
   $t-1$ is done: $H + 1$ dependent steps, $O(1)$ against $O(H)$ depth for $O(HW)$ work each.
   On parallel hardware the depth is what you wait for: <<parallel_evidence>>

**Two benefits of RNNs over CNNs**

1. *Any number of rows with the same weights, and exact variable-size batches.* Nothing in the
   recurrence depends on $H$, and images of different heights share one padded batch exactly:
   with `lengths` the state simply stops updating after an image's last row. Measured: the
   trained RNN on test images given 4 extra blank rows below, with their true height, changes its
   logits <<rnn_len_change>> and keeps **<<rnn_tall_len>>** (unpadded: <<rnn_acc>>); a test
   (`tests/test_vision.py`) checks that a batch of images of heights 3, 8 and 6 gives each
   image's own logits. The CNN has
   no per-image size input: it runs on the padded batch only because global average pooling
   removed the fixed size (a flatten + dense head would refuse any other size), and the blank
   rows then enter its average: **<<cnn_tall>>**. Honest limits: the RNN's row width is fixed by
   its input projection $W_{ih} \in \mathbb{R}^{3 \cdot 64 \times <<w>>}$, so a wider image is
   refused unless padded or cropped (the CNN runs on it: <<cnn_wide>>), and without `lengths`
   blank rows change the RNN's state too (<<rnn_tall>>).
2. *Less arithmetic and memory per image for the same parameters, and a global view in one
   layer.* Each weight of the GRU is used once per row, $H \cdot 3h(W + h)$ multiply-adds, while
   each CNN kernel is applied at every position,
   $\sum_l H_l W_l\, k^2 C_{l-1} C_l$; its state is $h = 64$ numbers whatever the image size
   (the CNN keeps $H W C$ activations), and after the last row that state has seen every pixel,
   where the CNN's receptive field is 10x10 pixels. At the same budget the RNN does
   <<madds_ratio>>x fewer multiply-adds on <<h>>x<<w>> digits (<<rnn_madds>> against
   <<cnn_madds>>) and <<madds_ratio_last>>x fewer at <<last_side>>x<<last_side>>. Where time
   follows work, as on this <<device_short>>, that is the faster model: <<rnn_epoch>> against
   <<cnn_epoch>> per training epoch, and one <<last_side>>x<<last_side>> image in
   <<rnn_lat_last>> against <<cnn_lat_last>>, for a test accuracy of <<rnn_acc>> against
   <<cnn_acc>> (<<acc_gap>> of <<n_test>> test images apart).
"""


def _ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def q1_markdown(r: dict[str, Any], gpu: dict[str, Any] | None = None,
                gpu_out: str = "results/cnn_vs_rnn_h100") -> str:
    """The body of docs/answers.md's Q1 section, every number from the JSON results.

    r: the default (CPU) run's results; gpu: optionally the same experiment's results on a GPU
    (written with `--out gpu_out`), for the latency-against-size evidence.
    """
    c, n = r["models"]["cnn"], r["models"]["rnn"]
    cfg = r["config"]
    h, w = cfg["image_shape"]
    first, last = r["latency_vs_side"][0], r["latency_vs_side"][-1]
    vc, vn = c["variable_size"], n["variable_size"]
    dev = r["environment"]["device"]
    v = {
        "cmd": r["command"], "data": cfg["data"], "h": h, "w": w, "h4": h + 4, "w4": w + 4,
        "n_train": cfg["split_sizes"]["train"], "n_val": cfg["split_sizes"]["val"],
        "n_test": cfg["split_sizes"]["test"], "epochs": cfg["epochs"], "device": dev,
        "device_short": dev.split(" (")[0] if dev.startswith("CPU") else dev,
        "cnn_params": f"{c['params']:,}", "rnn_params": f"{n['params']:,}",
        "first_side": first["side"], "last_side": last["side"],
        "cnn_lat_first": _ms(first["cnn_latency_ms"]), "cnn_lat_last": _ms(last["cnn_latency_ms"]),
        "rnn_lat_first": _ms(first["rnn_latency_ms"]), "rnn_lat_last": _ms(last["rnn_latency_ms"]),
        "madds_ratio": f"{c['multiply_adds'] / n['multiply_adds']:.1f}",
        "madds_ratio_last": f"{last['cnn_multiply_adds'] / last['rnn_multiply_adds']:.0f}",
        "rnn_len_change": ("by exactly 0" if vn["taller_bottom_lengths"]["max_abs_logit_change"]
                           == 0 else "by at most "
                           f"{vn['taller_bottom_lengths']['max_abs_logit_change']:.1e}"),
        "acc_gap": round(abs(c["test_accuracy"] - n["test_accuracy"])
                         * cfg["split_sizes"]["test"]),
        "cnn_tall": _fmt_pct(vc["taller_bottom"]["accuracy"]),
        "rnn_tall": _fmt_pct(vn["taller_bottom"]["accuracy"]),
        "rnn_tall_len": _fmt_pct(vn["taller_bottom_lengths"]["accuracy"]),
        "cnn_wide": _fmt_pct(vc["wider"]["accuracy"]),
    }
    for key, m in (("cnn", c), ("rnn", n)):
        v[f"{key}_acc"] = _fmt_pct(m["test_accuracy"])
        v[f"{key}_s1"] = _fmt_pct(m["shift_accuracy"]["1"]["mean"])
        v[f"{key}_s2"] = _fmt_pct(m["shift_accuracy"]["2"]["mean"])
        v[f"{key}_s1_right"] = _fmt_pct(m["shift_accuracy"]["1"]["right"])
        v[f"{key}_s1_left"] = _fmt_pct(m["shift_accuracy"]["1"]["left"])
        v[f"{key}_steps"] = m["sequential_steps"]
        v[f"{key}_steps_last"] = last[f"{key}_sequential_steps"]
        v[f"{key}_madds"] = f"{m['multiply_adds']:,}"
        v[f"{key}_madds_last"] = f"{last[f'{key}_multiply_adds']:,}"
        v[f"{key}_epoch"] = f"{m['epoch_time_s']:.3f} s"
    if gpu is not None:
        g0, g1 = gpu["latency_vs_side"][0], gpu["latency_vs_side"][-1]
        gdev = gpu["environment"]["device"].split(" (")[0]
        per_row_ms = ((g1["rnn_latency_ms"] - g0["rnn_latency_ms"])
                      / (g1["rnn_sequential_steps"] - g0["rnn_sequential_steps"]))
        v["gpu_cmd_intro"] = (f"; the latency-against-size evidence on a GPU by `{gpu['command']}"
                              f" --out {gpu_out}` on {gdev}")
        v["gpu_files"] = f" and `{gpu_out}/`"
        v["gpu_row"] = (f"| latency, 1 image, side {g0['side']} / {g1['side']} ({gdev}) | "
                        f"{_ms(g0['cnn_latency_ms'])} / {_ms(g1['cnn_latency_ms'])} | "
                        f"{_ms(g0['rnn_latency_ms'])} / {_ms(g1['rnn_latency_ms'])} |")
        v["parallel_evidence"] = (
            f"on {gdev}, from side {g0['side']} to side {g1['side']} (1 image, warm median) the "
            f"CNN went from {_ms(g0['cnn_latency_ms'])} to {_ms(g1['cnn_latency_ms'])} "
            f"(x{g1['cnn_latency_ms'] / g0['cnn_latency_ms']:.2f}, for "
            f"{g1['cnn_multiply_adds'] / g0['cnn_multiply_adds']:.0f}x the work) and the RNN "
            f"from {_ms(g0['rnn_latency_ms'])} to {_ms(g1['rnn_latency_ms'])} "
            f"(x{g1['rnn_latency_ms'] / g0['rnn_latency_ms']:.1f}, in step with its "
            f"{g0['rnn_sequential_steps']} -> {g1['rnn_sequential_steps']} steps, about "
            f"{1e3 * per_row_ms:.0f} us "
            f"per row); at side {g1['side']} the RNN is "
            f"{g1['rnn_latency_ms'] / g1['cnn_latency_ms']:.0f}x slower with "
            f"{g1['cnn_multiply_adds'] / g1['rnn_multiply_adds']:.0f}x less work. On this "
            f"{v['device_short']}, which has no parallelism to spare, time follows work instead "
            f"(RNN benefit 2 below).")
    else:
        v["gpu_cmd_intro"] = v["gpu_files"] = ""
        v["parallel_evidence"] = (
            f"on {dev}, from side {first['side']} to {last['side']}, the CNN went from "
            f"{v['cnn_lat_first']} to {v['cnn_lat_last']} and the RNN from {v['rnn_lat_first']} "
            f"to {v['rnn_lat_last']} (1 image, warm median). A CPU with few cores has no "
            "parallelism to spare, so there time follows work (RNN benefit 2 below); run the "
            "experiment on a GPU or TPU to see the depth dominate.")
    hs, ls = f"{h}x{w}", f"{last['side']}x{last['side']}"
    rows = [
        ("parameters", "params"),
        ("test accuracy", "acc"),
        ("test accuracy, images shifted 1 / 2 px (no shift augmentation)", "s1", "s2"),
        (f"sequential steps, {hs} / {ls} image", "steps", "steps_last"),
        (f"multiply-adds per image, {hs} / {ls}", "madds", "madds_last"),
        (f"training time per epoch ({v['device_short']})", "epoch"),
        (f"latency, 1 image, side {first['side']} / {last['side']} ({v['device_short']})",
         "lat_first", "lat_last"),
    ]
    table = ["| measured | CNN | RNN (GRU over rows) |", "| --- | ---: | ---: |"]
    for label, *fields in rows:
        cells = [" / ".join(str(v[f"{k}_{f}"]) for f in fields) for k in ("cnn", "rnn")]
        table.append(f"| {label} | {cells[0]} | {cells[1]} |")
    if gpu is not None:
        table.append(v.pop("gpu_row"))
    table += [
        f"| taller image, 4 blank rows below ({h + 4}x{w}) | {v['cnn_tall']} | {v['rnn_tall']} |",
        f"| same, per-image height given (`lengths`) | no such input | {v['rnn_tall_len']} |",
        f"| wider image, 2 blank columns each side ({h}x{w + 4}) | {v['cnn_wide']} "
        "| refused (width fixed) |",
    ]
    v["table"] = "\n".join(table)
    text = Q1_TEMPLATE.strip("\n")
    for key, val in v.items():
        text = text.replace(f"<<{key}>>", str(val))
    if "<<" in text:
        raise KeyError(f"unfilled placeholder in the Q1 template: {text[text.index('<<'):][:40]}")
    return _reflow(text) + "\n"


def _reflow(text: str, width: int = 100) -> str:
    """Re-wrap the paragraphs and numbered items of Markdown text (numbers change the line
    lengths); tables and headings stay as they are."""
    import re
    import textwrap

    wrap = dict(width=width, break_long_words=False, break_on_hyphens=False)
    blocks = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith(("|", "#", "**")) and len(lines) == 1 or lines[0].startswith("|"):
            blocks.append(block)
            continue
        items: list[list[str]] = []
        for line in lines:
            if re.match(r"\d+\. ", line) or not items:
                items.append([line.strip()])
            else:
                items[-1].append(line.strip())
        out = []
        for item in items:
            joined = " ".join(item)
            indent = "   " if re.match(r"\d+\. ", joined) else ""
            # No line break inside inline math or code: protect their spaces while wrapping.
            joined = re.sub(r"\$[^$]+\$|`[^`]+`", lambda m: m.group(0).replace(" ", "\0"),
                            joined)
            out.append(textwrap.fill(joined, subsequent_indent=indent, **wrap).replace("\0", " "))
        blocks.append("\n".join(out))
    return "\n\n".join(blocks)


def q1_from_results(results_dir: str | os.PathLike = ROOT / "results") -> str:
    """`q1_markdown` from `results_dir/cnn_vs_rnn.json` (+ `cnn_vs_rnn_h100/` when present)."""
    results_dir = pathlib.Path(results_dir)
    r = json.loads((results_dir / "cnn_vs_rnn.json").read_text())
    gpu_path = results_dir / "cnn_vs_rnn_h100" / "cnn_vs_rnn.json"
    gpu = json.loads(gpu_path.read_text()) if gpu_path.exists() else None
    return q1_markdown(r, gpu)


def plot(r: dict[str, Any], out: pathlib.Path) -> list[str]:
    """Three PNGs: accuracy/params, speed/scaling, translation. Returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - the formatters below

    keys = ("cnn", "rnn")
    labels = [MODEL_NAMES[k] for k in keys]
    colors = ["tab:blue", "tab:orange"]
    m = r["models"]
    names = []

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    acc = [100 * m[k]["test_accuracy"] for k in keys]
    ax[0].bar(labels, acc, color=colors)
    ax[0].set_ylabel("test accuracy (%)")
    ax[0].set_ylim(0, 105)  # from 0: a 1-point difference should look like one
    for i, v in enumerate(acc):
        ax[0].text(i, v, f"{v:.1f}%", ha="center", va="bottom")
    params = [m[k]["params"] for k in keys]
    ax[1].bar(labels, params, color=colors)
    ax[1].set_ylabel("parameters")
    ax[1].margins(y=0.12)
    for i, v in enumerate(params):
        ax[1].text(i, v, f"{v:,}", ha="center", va="bottom")
    fig.suptitle(f"{r['config']['data']}: accuracy and size")
    fig.tight_layout()
    names.append("cnn_vs_rnn_accuracy.png")
    fig.savefig(out / names[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.9))
    et = [m[k]["epoch_time_s"] for k in keys]
    ax[0].bar(labels, et, color=colors)
    for i, v in enumerate(et):
        ax[0].text(i, v, f"{v:.3f} s", ha="center", va="bottom")
    ax[0].set_ylabel("s (median over epochs 2..)")
    ax[0].margins(y=0.15)
    ax[0].set_title("training time per epoch")
    x = np.arange(2)
    batch = r["config"]["latency_batch"]
    for off, field, lab in ((-0.2, "latency_ms_1", "1 image"),
                            (0.2, "latency_ms_batch", f"{batch} images")):
        vals = [m[k][field] for k in keys]
        ax[1].bar(x + off, vals, 0.4, label=lab)
        for i, v in enumerate(vals):
            ax[1].text(i + off, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax[1].set_xticks(x, labels)
    ax[1].set_ylabel("ms (warm median)")
    ax[1].margins(y=0.3)
    ax[1].legend(fontsize=8, loc="upper center", ncol=2)
    ax[1].set_title("inference latency")
    sides = [row["side"] for row in r["latency_vs_side"]]
    for k, col in zip(keys, colors, strict=True):
        ax[2].plot(sides, [row[f"{k}_latency_ms"] for row in r["latency_vs_side"]], "o-",
                   color=col, label=MODEL_NAMES[k])
        ax[3].plot(sides, [row[f"{k}_sequential_steps"] for row in r["latency_vs_side"]], "o-",
                   color=col, label=MODEL_NAMES[k])
    for a in ax[2:]:
        a.set_xscale("log", base=2)
        a.set_xticks(sides, [str(s) for s in sides])
        a.set_xlabel("image side (pixels)")
        a.legend(fontsize=8)
    ax[2].set_yscale("log")
    ax[2].yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax[2].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax[2].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax[2].set_ylabel("ms, 1 image (warm median)")
    ax[2].set_title("latency against image side")
    ax[3].set_ylabel("sequential steps")
    ax[3].set_title("depth of the computation")
    fig.suptitle(f"speed on {r['environment']['device']}")
    fig.tight_layout()
    names.append("cnn_vs_rnn_speed.png")
    fig.savefig(out / names[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ds = sorted(int(d) for d in m["cnn"]["shift_accuracy"])
    for k, col in zip(keys, colors, strict=True):
        ax.plot(ds, [100 * m[k]["shift_accuracy"][str(d)]["mean"] for d in ds], "o-", color=col,
                label=MODEL_NAMES[k])
    ax.set_xticks(ds)
    ax.set_xlabel("shift (pixels, mean of up/down/left/right)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("translation robustness (no shift augmentation)")
    ax.legend()
    fig.tight_layout()
    names.append("cnn_vs_rnn_shift.png")
    fig.savefig(out / names[-1], dpi=110)
    plt.close(fig)
    return names


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.cnn_vs_rnn",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("digits", "mnist"), default="digits",
                   help="digits: scikit-learn's bundled 8x8 digits (default, no download); "
                        "mnist: 28x28 through tensorflow-datasets (needs internet once)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--latency-reps", type=int, default=50,
                   help="repetitions per latency measurement (the median is reported)")
    p.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32, 64],
                   help="image sides for the latency-against-size measurement")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "results",
                   help="output folder (default: results/)")
    p.add_argument("--tfds-data-dir", default=None, help="tensorflow-datasets data_dir (mnist)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "latency_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.sides) < 1:
        p.error("--sides must be positive")
    if not args.learning_rate > 0:
        p.error("--learning-rate must be positive")
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates these results (the options that differ from the defaults,
    and always --epochs and --seed)."""
    defaults = parse_args([])
    parts = ["python -m experiments.cnn_vs_rnn"]
    if args.data != defaults.data:
        parts.append(f"--data {args.data}")
    parts += [f"--epochs {args.epochs}", f"--seed {args.seed}"]
    for name in ("batch_size", "learning_rate", "latency_reps"):
        if getattr(args, name) != getattr(defaults, name):
            parts.append(f"--{name.replace('_', '-')} {getattr(args, name)}")
    if list(args.sides) != list(defaults.sides):
        parts.append("--sides " + " ".join(map(str, args.sides)))
    return " ".join(parts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from hw3_jax.vision import multiply_adds, sequential_steps

    t_start = time.perf_counter()
    splits = (load_digits_splits(args.seed) if args.data == "digits"
              else load_mnist_splits(args.seed, args.tfds_data_dir))
    h, w = splits.image_shape
    data = ImageData(splits, batch_size=args.batch_size, seed=args.seed)
    models = build_models((h, w))
    latency_batch = min(256, len(splits.test_y))
    cmd = command_line(args)
    dev = jax.devices()[0]
    device = (f"CPU ({os.cpu_count()} cores)" if dev.platform == "cpu"
              else f"{dev.device_kind} ({dev.platform.upper()})")
    results: dict[str, Any] = {
        "command": cmd,
        "config": {"data": splits.name, "image_shape": [h, w], "split_sizes": splits.sizes(),
                   "epochs": args.epochs, "seed": args.seed, "batch_size": args.batch_size,
                   "learning_rate": args.learning_rate, "optimizer": "adam",
                   "latency_reps": args.latency_reps, "latency_batch": latency_batch,
                   "sides": list(args.sides)},
        "environment": {"device": device, "jax": jax.__version__,
                        "python": platform.python_version()},
        "models": {},
    }
    architectures = {
        "cnn": "conv3x3(16)-conv3x3(32)-maxpool2-conv3x3(32)-global avg pool-dense",
        "rnn": f"GRU(64) over {h} rows of {w} pixels-dense",
    }
    trained = {}
    test_x, test_y = splits.test_x, splits.test_y
    phases = {"data_and_setup": time.perf_counter() - t_start}
    for key, model in models.items():
        print(f"[{MODEL_NAMES[key]}] training {args.epochs} epochs ...", flush=True)
        params = init_params(model, (h, w), args.seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"cnn_vs_rnn_{key}_") as workdir:
            res = train_model(model, params, data, args.epochs, args.learning_rate, args.seed,
                              workdir)
        phases[f"train_{key}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        params = res.params
        trained[key] = params
        history = [dict(e) for e in res.history]
        train_times = [e["train_time_s"] for e in history]
        predict = make_predict(model)
        entry = {
            "architecture": architectures[key],
            "params": count_params(params),
            "test_accuracy": accuracy(predict, params, test_x, test_y),
            "test_loss": res.test_loss,  # the loop's evaluation of the same parameters
            "test_accuracy_loop": res.test_accuracy,
            "best_epoch": res.best.get("epoch"),
            "val_accuracy": res.val_accuracy,
            # Training only (no validation, no checkpoints); the first epoch compiles.
            "epoch_time_s": statistics.median(train_times[1:] or train_times),
            "first_epoch_time_s": train_times[0],
            "sequential_steps": sequential_steps(model, h),
            "multiply_adds": multiply_adds(model, h, w),
            "shift_accuracy": shift_accuracies(predict, params, test_x, test_y),
            "variable_size": variable_size(model, params, test_x, test_y),
            "history": history,
        }
        results["models"][key] = entry
        phases[f"accuracy_shift_size_{key}"] = time.perf_counter() - t0
        print(f"[{MODEL_NAMES[key]}] {entry['params']:,} params, test accuracy "
              f"{_fmt_pct(entry['test_accuracy'])} (best epoch {entry['best_epoch']}), "
              f"{entry['epoch_time_s']:.3f} s per epoch", flush=True)
    print(f"latency: 1 and {latency_batch} test images, 1 image at sides {list(args.sides)}, "
          f"{args.latency_reps} repetitions ...", flush=True)
    t0 = time.perf_counter()
    per_model, rows = measure_latency(models, trained, test_x, latency_batch, args.sides,
                                      args.latency_reps, args.seed)
    for key, lat in per_model.items():
        results["models"][key].update(lat)
    results["latency_vs_side"] = rows
    phases["latency"] = time.perf_counter() - t0
    results["phase_times_s"] = phases
    results["wall_time_s"] = time.perf_counter() - t_start
    return results


def write_outputs(results: dict[str, Any], out: pathlib.Path) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "cnn_vs_rnn.json", out / "cnn_vs_rnn.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown_report(results))
    paths += [out / name for name in plot(results, out)]
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(results, args.out)
    print(markdown_report(results))
    print(f"wrote {', '.join(str(p) for p in paths)} in {results['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
