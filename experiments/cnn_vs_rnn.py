"""Homework Q1, measured: a small CNN against a row-by-row GRU on real handwritten digits.

    python -m experiments.cnn_vs_rnn [--config configs/cnn_vs_rnn.py[:VARIANT]]
        [--data digits|mnist] [--epochs N] [--seed S] [--out DIR] [--config.FIELD=VALUE]

Both models (`hw3_jax.vision`) have about the same number of parameters and are trained by the
project's one training loop (`hw3_jax.train`) with the same optimiser, batches and epochs.
Then, with no retraining and no augmentation, it measures:

- test accuracy, parameter count, training time per epoch;
- inference latency (jit-compiled, warm, median of repetitions), for one image and a batch;
- how latency grows with the image side (8, 16, 32, 64), beside the sequential steps (depth of
  the computation) and the multiply-adds per image of each model;
- accuracy on test images shifted by 1 and 2 pixels (zero-filled, up/down/left/right);
- what each model does with images of another height or width (blank rows or columns, a bigger
  canvas, a vertical stretch, a 2x upsampling; for the RNN also a padded batch with per-image
  heights): it runs and gives an accuracy, or it refuses, and why.

The settings are `configs/cnn_vs_rnn.py`'s, the models' sizes `hw3_jax.vision`'s defaults.
Writes `OUT/cnn_vs_rnn.json`, `OUT/cnn_vs_rnn.md` and three PNG plots
(`experiments/cnn_vs_rnn_plots.py`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import cli
from experiments.cnn_vs_rnn_plots import MODEL_NAMES, plot
from experiments.report.cnn_tables import markdown_report
from experiments.report.text import pct
from hw3_jax import vision
from hw3_jax.data.images import ImageData, load_digits_splits, load_mnist_splits
from hw3_jax.models import count_params
from hw3_jax.timing import blocking, machine_info, time_interleaved
from hw3_jax.train.loop import TrainConfig, train
from hw3_jax.train.workdir import TrainingError, Workdir, atomic_path

PROG = "python -m experiments.cnn_vs_rnn"
DEFAULT_CONFIG = "configs.cnn_vs_rnn"
SHIFT_DIRECTIONS = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}
# The shift distances (pixels) the report and experiments/report/templates/q1.md compare.
REPORTED_SHIFTS = (1, 2)
# The command-line shortcuts, each onto one config field, in the order a command lists them.
SHORTCUTS = {
    "--data": cli.Shortcut("data", "digits: scikit-learn's bundled 8x8 digits (no download); "
                           "mnist: 28x28 through tensorflow-datasets (needs internet once)",
                           choices=("digits", "mnist")),
    "--epochs": cli.Shortcut("epochs", type=int),
    "--seed": cli.Shortcut("seed", type=int),
    "--batch-size": cli.Shortcut("batch_size", type=int),
    "--learning-rate": cli.Shortcut("learning_rate", type=float),
    "--latency-reps": cli.Shortcut("latency_reps", "repetitions per latency measurement (the "
                                   "median is reported)", type=int),
    "--sides": cli.Shortcut("sides", "image sides for the latency-against-size measurement",
                            type=int, nargs="+"),
    "--out": cli.Shortcut("out", "output folder"),
    "--tfds-data-dir": cli.Shortcut("tfds_data_dir", "tensorflow-datasets data_dir (mnist)"),
}
NOT_IN_COMMAND = ("out", "tfds_data_dir")  # where files go, not what is measured


# ---------------------------------------------------------------------------------------- models


def build_models(image_shape: tuple[int, int]) -> dict[str, Any]:
    """The two classifiers at their default sizes (10 classes; comparable parameter budgets,
    about 14-15k on 8x8 digits); the RNN reads rows of the images' width."""
    return {"cnn": vision.CNNClassifier(),
            "rnn": vision.RowGRUClassifier(input_width=image_shape[1])}


def init_params(model: Any, image_shape: tuple[int, int], seed: int) -> Any:
    return model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32))["params"]


def train_model(model: Any, params: Any, data: ImageData, epochs: int, learning_rate: float,
                seed: int, workdir: str) -> Any:
    """Train through the project's one loop (`hw3_jax.train`), softmax cross-entropy."""
    config = TrainConfig(epochs=epochs, learning_rate=learning_rate, seed=seed,
                         loss="multiclass", input_keys=("image",), progress=False,
                         verbose=False, plot=False)
    return train(model, params, data, config, workdir)


def make_predict(model: Any) -> Callable:
    """jit-compiled logits -> predicted class, [B, H, W] -> int32 [B]."""

    @jax.jit
    def predict(params, images):
        return jnp.argmax(model.apply({"params": params}, images), axis=-1)

    return predict


def accuracy(predict: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
             batch_size: int) -> float:
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


def shift_accuracies(predict: Callable, params: Any, images: np.ndarray, labels: np.ndarray,
                     distances: Sequence[int], batch_size: int) -> dict[str, Any]:
    """Accuracy on test images translated by d pixels (each of `distances`; 0: the images as
    they are) in each of 4 directions, zero-filled; `batch_size` as in `accuracy`."""
    out = {}
    for d in distances:
        if d == 0:
            out["0"] = {"mean": accuracy(predict, params, images, labels, batch_size)}
            continue
        per = {name: accuracy(predict, params, vision.shift_images(images, dy * d, dx * d),
                              labels, batch_size)
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
    return [
        SizeVariant("original", f"original {h}x{w}", lambda x: x),
        SizeVariant("taller_bottom", f"taller: 4 blank rows below ({h + 4}x{w})",
                    lambda x: vision.pad_images(x, bottom=4)),
        SizeVariant("taller_bottom_lengths",
                    f"taller: 4 blank rows below ({h + 4}x{w}), per-image height given "
                    f"(lengths={h})", lambda x: vision.pad_images(x, bottom=4), real_rows=h),
        SizeVariant("taller_centred", f"taller: 2 blank rows above and below ({h + 4}x{w})",
                    lambda x: vision.pad_images(x, top=2, bottom=2)),
        SizeVariant("stretched", f"stretched 2x vertically ({2 * h}x{w}, rows repeated)",
                    lambda x: vision.upsample_images(x, 2, 1)),
        SizeVariant("wider", f"wider: 2 blank columns left and right ({h}x{w + 4})",
                    lambda x: vision.pad_images(x, left=2, right=2)),
        SizeVariant("bigger", f"bigger canvas: 2-pixel blank border ({h + 4}x{w + 4})",
                    lambda x: vision.pad_images(x, 2, 2, 2, 2)),
        SizeVariant("upsampled", f"upsampled 2x ({2 * h}x{2 * w}, pixels repeated 2x2)",
                    lambda x: vision.upsample_images(x, 2)),
    ]


def variable_size(model: Any, params: Any, images: np.ndarray, labels: np.ndarray,
                  batch_size: int) -> dict[str, Any]:
    """Run a trained model, unchanged, on images of other sizes: accuracy (`batch_size` as in
    `accuracy`), or why it cannot.

    Per variant: {"description", "shape", "runs": bool | None (None: not applicable),
    "accuracy", "error" | "note", and for the `lengths` variant "max_abs_logit_change"
    against the original images (0 means the padding had exactly no effect)}.
    """
    predict = make_predict(model)
    out = {}
    h, w = images.shape[1:]
    for v in size_variants(h, w):
        x = v.transform(images)
        entry: dict[str, Any] = {"description": v.description, "shape": list(x.shape[1:])}
        out[v.key] = entry
        if v.real_rows is not None and not isinstance(model, vision.RowGRUClassifier):
            entry.update(runs=None, accuracy=None,
                         note="no per-image length input: same as without lengths")
        elif v.real_rows is not None:  # the RNN told each image's height, all in one batch
            lengths = jnp.full((len(x),), v.real_rows, jnp.int32)
            logits = jax.jit(lambda p, x, n: model.apply({"params": p}, x, n))(params, x, lengths)
            ref = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
            pred = np.asarray(jnp.argmax(logits, -1))
            entry.update(runs=True, accuracy=float((pred == labels).mean()),
                         max_abs_logit_change=float(jnp.max(jnp.abs(logits - ref))))
        else:
            try:
                entry.update(runs=True,
                             accuracy=accuracy(predict, params, x, labels, batch_size))
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
    the weights' values); its hidden size stays the same. Side inputs are random images; at
    the test images' own side the row is the 1-test-image measurement (the same computation).
    Every case runs on one device: training returns parameters replicated over all devices,
    and a program over several would not be comparable with the freshly initialised RNNs.
    """
    device = jax.local_devices()[0]  # where jnp.asarray and init_params put their arrays
    trained = jax.device_put(trained, device)
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
            row[f"{key}_sequential_steps"] = vision.sequential_steps(model, side)
            row[f"{key}_multiply_adds"] = vision.multiply_adds(model, side, side)
        rows.append(row)
    timed = time_interleaved(
        {name: blocking(fn, *args) for name, (fn, args) in cases.items()},
        warmup=3, repeats=reps, rotate=True)
    t = {name: s["median_s"] for name, s in timed.items()}
    per_model = {key: {"latency_ms_1": 1e3 * t[(key, "1")],
                       "latency_ms_batch": 1e3 * t[(key, "batch")]} for key in models}
    for row in rows:
        for key in models:
            row[f"{key}_latency_ms"] = 1e3 * t.get((key, row["side"]), t[(key, "1")])
    return per_model, rows


# ------------------------------------------------------------------------------------------- run


def train_and_measure(key: str, model: Any, data: ImageData,
                      config: ml_collections.ConfigDict) -> tuple[dict, Any, dict]:
    """Train one model, then measure it on the test images: (its results entry, its trained
    parameters, {phase: seconds})."""
    splits = data.splits
    h, w = splits.image_shape
    test_x, test_y = splits.test_x, splits.test_y
    print(f"[{MODEL_NAMES[key]}] training {config.epochs} epochs ...", flush=True)
    params = init_params(model, (h, w), config.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"cnn_vs_rnn_{key}_") as workdir:
        res = train_model(model, params, data, config.epochs, config.learning_rate, config.seed,
                          workdir)
    phases = {f"train_{key}": time.perf_counter() - t0}
    t0 = time.perf_counter()
    params = res.params
    history = [dict(e) for e in res.history]
    train_times = [e["train_time_s"] for e in history]
    predict = make_predict(model)
    batch = config.eval_batch
    entry = {
        "architecture": vision.architecture(model, h, w),
        "params": count_params(params),
        # The loop's evaluation of the best parameters (shift_accuracy's "0" is the same
        # number through `predict`).
        "test_accuracy": res.test_accuracy,
        "test_loss": res.test_loss,
        "best_epoch": res.best.get("epoch"),
        "val_accuracy": res.val_accuracy,
        # Training only (no validation, no checkpoints); the first epoch compiles.
        "epoch_time_s": statistics.median(train_times[1:] or train_times),
        "first_epoch_time_s": train_times[0],
        "sequential_steps": vision.sequential_steps(model, h),
        "multiply_adds": vision.multiply_adds(model, h, w),
        "shift_accuracy": shift_accuracies(predict, params, test_x, test_y,
                                           config.shift_distances, batch),
        "variable_size": variable_size(model, params, test_x, test_y, batch),
        "history": history,
    }
    phases[f"accuracy_shift_size_{key}"] = time.perf_counter() - t0
    print(f"[{MODEL_NAMES[key]}] {entry['params']:,} params, test accuracy "
          f"{pct(entry['test_accuracy'])} (best epoch {entry['best_epoch']}), "
          f"{entry['epoch_time_s']:.3f} s per epoch", flush=True)
    return entry, params, phases


def run(config: ml_collections.ConfigDict, command: str, folder: Workdir) -> dict[str, Any]:
    """The whole measurement; `command` (what regenerates it) is recorded in the results.

    The data are loaded first (missing data leaves no output folder behind), then the output
    `folder` is checked writable (a WorkdirError), before any training."""
    t_start = time.perf_counter()
    splits = (load_digits_splits(config.seed) if config.data == "digits"
              else load_mnist_splits(config.seed, config.tfds_data_dir))
    folder.check(flag="--out")
    h, w = splits.image_shape
    data = ImageData(splits, batch_size=config.batch_size, seed=config.seed)
    models = build_models((h, w))
    latency_batch = min(config.latency_batch, len(splits.test_y))
    sides = list(config.sides)
    results: dict[str, Any] = {
        "command": command,
        "config": {"data": splits.name, "image_shape": [h, w], "split_sizes": splits.sizes(),
                   "epochs": config.epochs, "seed": config.seed, "batch_size": config.batch_size,
                   "learning_rate": config.learning_rate, "optimizer": "adam",
                   "latency_reps": config.latency_reps, "latency_batch": latency_batch,
                   "sides": sides, "shift_distances": list(config.shift_distances),
                   "eval_batch": config.eval_batch},
        "machine": machine_info(),
        "models": {},
    }
    phases = {"data_and_setup": time.perf_counter() - t_start}
    trained = {}
    for key, model in models.items():
        results["models"][key], trained[key], times = train_and_measure(key, model, data, config)
        phases.update(times)
    print(f"latency: 1 and {latency_batch} test images, 1 image at sides {sides}, "
          f"{config.latency_reps} repetitions ...", flush=True)
    t0 = time.perf_counter()
    per_model, rows = measure_latency(models, trained, splits.test_x, latency_batch, sides,
                                      config.latency_reps, config.seed)
    for key, lat in per_model.items():
        results["models"][key].update(lat)
    results["latency_vs_side"] = rows
    phases["latency"] = time.perf_counter() - t0
    results["phase_times_s"] = phases
    results["wall_time_s"] = time.perf_counter() - t_start
    return results


# ----------------------------------------------------------------------------------------- flags


def check(config: ml_collections.ConfigDict) -> None:
    """A value no run can use is a UserError naming its flag (any field can be set to None,
    `--config.epochs=None`, so each is checked for its type too)."""
    flags = {s.field: flag for flag, s in SHORTCUTS.items()}

    def flag(name: str) -> str:  # named by its shortcut flag, else by its override
        return flags.get(name, f"{cli.OVERRIDE_PREFIX}{name}")

    require = cli.require
    require(config.data in ("digits", "mnist"), "--data", "digits or mnist", config.data)
    require(isinstance(config.out, str) and config.out, "--out", "a folder", config.out)
    cli.check_seed(config.seed)
    for name in ("epochs", "batch_size", "latency_reps", "latency_batch", "eval_batch"):
        require(cli.whole(config[name], 1), flag(name), "at least 1 (a whole number)",
                config[name])
    require(cli.positive(config.learning_rate), "--learning-rate", "positive and finite",
            config.learning_rate)
    shifts = config.shift_distances
    require(shifts and all(cli.whole(d) for d in shifts), "--config.shift_distances",
            "pixel counts >= 0 (whole numbers)", shifts)
    if not set(REPORTED_SHIFTS) <= set(shifts):
        raise cli.UserError(
            f"--config.shift_distances must include {' and '.join(map(str, REPORTED_SHIFTS))} "
            f"(the report compares those shifts), got {tuple(shifts)}")
    require(config.sides and all(cli.whole(side, 1) for side in config.sides), "--sides",
            "positive whole numbers", config.sides)


def parse_args(argv: list[str] | None = None) -> tuple[ml_collections.ConfigDict, str]:
    """Command line -> (the config, the command that regenerates the run)."""
    config, command = cli.parse_flags(PROG, __doc__.split("\n\n")[0], argv,
                                      default_config=DEFAULT_CONFIG, shortcuts=SHORTCUTS,
                                      always=("epochs", "seed"), skip=NOT_IN_COMMAND)
    check(config)
    return config, command


def _main(argv: list[str] | None) -> int:
    config, command = parse_args(argv)
    # One root for every output, `~` expanded (as given otherwise, for the print).
    out = pathlib.Path(config.out).expanduser()
    folder = Workdir(out)
    results = run(config, command, folder)
    folder.write_json("cnn_vs_rnn.json", results)
    with atomic_path(out / "cnn_vs_rnn.md") as tmp:
        tmp.write_text(markdown_report(results))
    names = ["cnn_vs_rnn.json", "cnn_vs_rnn.md", *plot(results, out)]
    print(f"wrote {', '.join(str(out / n) for n in names)} in {results['wall_time_s']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 after one line on stderr for bad input, missing data, an output
    folder that cannot be written or a training run that cannot go on (a non-finite loss)."""
    return cli.run_main(lambda: _main(argv), (TrainingError,),
                        memory_fix="pass a smaller --batch-size")


if __name__ == "__main__":
    cli.exit_with(main())
