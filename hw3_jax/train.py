"""The one training loop every experiment uses.

`train(model, params, data, config)` trains a Flax linen model with Adam on a binary
(logits [batch], sigmoid BCE, as the notebook) or multiclass (logits [batch, classes],
softmax CE, integer labels) loss, data-parallel over every device, keeps the best
checkpoint by validation loss and the latest one for resuming, evaluates the best one on
the test split, and writes `WORKDIR/metrics.json` and `WORKDIR/curves.png`.

The data object (see `hw3_jax.input_pipeline`) gives
  train_batches(epoch) -> iterator of batch dicts, deterministic in (seed, epoch), so
                          that a resumed run skips the batches already done and sees
                          exactly the batches an uninterrupted run would;
  eval_batches(split)  -> iterator of batch dicts;
  steps_per_epoch      -> int (only for the progress bar);
  eval_steps(split)    -> int, optional (only for the progress bar).
A batch is a dict of NumPy arrays with the model inputs (`config.input_keys`, passed
positionally to `model.apply`), `label` ([batch] float 0/1 or int class) and `weight`
([batch] float, 0 for padding examples). Every loss and metric is
sum(weight * x) / sum(weight), so padding examples never count.

Exactness: dropout keys are `fold_in(PRNGKey(seed), step)`, the batches of an epoch are
a function of (seed, epoch), the per-epoch metric sums are part of the checkpoint, and
steps whose loss is not finite change nothing; so a run killed at any point and resumed
ends bit-identical (on CPU) to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hw3_jax.checkpointing import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointStore,
    TrainingError,
    WorkdirError,
    check_workdir,
    json_safe,
    tree_nbytes,
    tree_signature,
)
from hw3_jax.sharding import DataParallel, data_parallel, pad_batch, replicate, shard_batch

__all__ = [
    "CheckpointError",
    "InferenceCheckpoint",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingError",
    "WorkdirError",
    "create_train_state",
    "data_parallel",
    "evaluate",
    "init_accumulators",
    "learning_rate_schedule",
    "load_for_inference",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "plot_curves",
    "prepare_batch",
    "train",
]

LOSSES = ("binary", "multiclass")
LR_SCHEDULES = ("constant", "cosine")

# Config fields that may change between a run and its resumption without a warning.
_RESUME_FREE_FIELDS = {
    "workdir", "resume", "overwrite", "epochs", "max_steps", "progress", "verbose",
    "log_every_steps", "num_devices", "min_free_bytes", "plot", "debug_nan_at_step",
    "checkpoint_every_steps", "keep_latest",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything the loop needs besides the model, its parameters and the data."""

    workdir: str
    epochs: int = 1
    learning_rate: float = 1e-3  # PyTorch's Adam default, as the notebook
    # "constant" (the notebook); "cosine": decays to 0 by the run's last step. Both start
    # with a linear warmup from 0 over `warmup_steps` (0: none).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    seed: int = 0  # dropout keys; the data object has its own seed for the order
    resume: bool = False  # continue from WORKDIR/checkpoints/latest if present
    overwrite: bool = False  # delete existing checkpoints instead of refusing to start
    loss: str = "binary"  # "binary": logits [B], sigmoid BCE; "multiclass": [B, C], CE
    input_keys: tuple[str, ...] = ("input_ids", "attention_mask")
    label_key: str = "label"
    weight_key: str = "weight"
    val_split: str | None = "validation"  # None: every epoch counts as the best so far
    test_split: str | None = "test"  # None: no test evaluation
    checkpoint_every_steps: int | None = 500  # latest also saved at every epoch end
    keep_latest: int = 2
    max_steps: int | None = None  # total training steps (smoke runs); ends the epoch early
    log_every_steps: int = 50  # progress-bar loss update and non-finite check
    progress: bool = True  # tqdm bars (stderr)
    verbose: bool = True  # one summary line per epoch (stdout)
    fail_on_nonfinite: bool = True  # else non-finite steps are skipped and counted
    debug_nan_at_step: int | None = None  # test option: the loss of this step (1-based) is NaN
    num_devices: int | None = None  # None: all devices
    min_free_bytes: int | None = None  # None: estimated from the checkpoint size
    plot: bool = True  # write WORKDIR/curves.png

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if isinstance(self.input_keys, str):
            object.__setattr__(self, "input_keys", (self.input_keys,))
        object.__setattr__(self, "input_keys", tuple(self.input_keys))
        object.__setattr__(self, "workdir", os.fspath(self.workdir))

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # float32 parameters
    opt_state: Any  # float32 Adam moments (trainable parameters only)
    model_state: Any  # non-parameter collections (e.g. batch_stats); {} for most models


@dataclasses.dataclass
class TrainResult:
    params: Any  # the best parameters (lowest validation loss)
    model_state: Any
    history: list  # one dict per epoch
    best: dict  # epoch, step, val_loss, val_accuracy of the best checkpoint
    val_loss: float
    val_accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    metrics: dict  # what metrics.json holds
    workdir: Path
    final_state: TrainState  # the state after the last step (for further use)


@dataclasses.dataclass
class InferenceCheckpoint:
    params: Any
    model_state: Any
    config: dict  # the TrainConfig it was trained with
    extra: dict  # extra_metadata passed to train() (e.g. the model configuration)
    step: int
    val_loss: float | None
    val_accuracy: float | None


# --------------------------------------------------------------------------- optimizer


def _labels(trainable_mask: Any) -> Any:
    return jax.tree.map(lambda m: "trainable" if m else "frozen", trainable_mask)


def make_optimizer(learning_rate: float | optax.Schedule = 1e-3, trainable_mask: Any = None):
    """Adam with PyTorch's defaults (betas 0.9/0.999, eps 1e-8); `learning_rate` a float or
    an optax schedule (see `learning_rate_schedule`).

    `trainable_mask`: a pytree of bools shaped like the parameters (False = frozen), e.g.
    `models.trainable_mask(params)`. Frozen parameters get `set_to_zero`, so no Adam
    moments are stored for them (the optimizer state of the notebook model holds only
    its 2.76M trainable parameters).
    """
    adam = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    if trainable_mask is None:
        return adam
    partition = getattr(optax, "partition", None) or optax.multi_transform
    return partition({"trainable": adam, "frozen": optax.set_to_zero()}, _labels(trainable_mask))


def learning_rate_schedule(config: TrainConfig, total_steps: int | None = None):
    """The learning rate as optax takes it: `config.learning_rate` itself when constant
    without warmup (so the optimizer state is plain Adam's, as before schedules existed),
    else an optax schedule of the step count (which the checkpointed Adam state holds, so a
    resumed run continues the schedule). `total_steps`: the run's training steps, needed
    for "cosine"."""
    lr, warmup = config.learning_rate, config.warmup_steps
    if config.lr_schedule == "constant":
        if not warmup:
            return lr
        return optax.linear_schedule(0.0, lr, warmup)  # then lr from step `warmup` on
    if not total_steps:
        raise ValueError("lr_schedule='cosine' needs the number of training steps: a data "
                         "object with steps_per_epoch, or max_steps")
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))


def _total_steps(config: TrainConfig, data) -> int | None:
    spe = _steps_per_epoch(data)
    total = None if spe is None else spe * config.epochs
    if config.max_steps is not None:
        total = config.max_steps if total is None else min(total, config.max_steps)
    return total


# --------------------------------------------------------------------------- steps


def _all_trainable(params: Any) -> Any:
    return jax.tree.map(lambda _: True, params)


def _to_float32(tree: Any) -> Any:
    def one(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(one, tree)


def _per_example(logits: jax.Array, labels: jax.Array, loss: str):
    """(loss [B], correct [B]) in float32, whatever the model's compute dtype."""
    logits = logits.astype(jnp.float32)
    if loss == "binary":
        if logits.ndim == 2 and logits.shape[-1] == 1:
            logits = logits[:, 0]
        if logits.ndim != 1:
            raise ValueError(
                f"loss='binary' needs logits [batch], the model returned {logits.shape}; "
                "use loss='multiclass' for [batch, classes]"
            )
        y = labels.astype(jnp.float32)
        return optax.sigmoid_binary_cross_entropy(logits, y), ((logits > 0) == (y > 0.5)).astype(
            jnp.float32
        )
    if logits.ndim != 2:
        raise ValueError(f"loss='multiclass' needs logits [batch, classes], got {logits.shape}")
    y = labels.astype(jnp.int32)
    per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return per, (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)


def _apply(model, params, model_state, batch, input_keys, *, train, rng=None):
    variables = {"params": params, **model_state}
    inputs = [batch[k] for k in input_keys]
    if train:
        mutable = list(model_state) if model_state else False
        out = model.apply(
            variables, *inputs, deterministic=False, rngs={"dropout": rng}, mutable=mutable
        )
        return out if mutable else (out, model_state)
    return model.apply(variables, *inputs, deterministic=True)


def init_accumulators(dp: DataParallel | None = None) -> dict:
    """Per-epoch device-side sums: [loss*w, correct*w, w], non-finite step count/first."""
    acc = {
        "sums": jnp.zeros((3,), jnp.float32),
        "nonfinite": jnp.zeros((), jnp.int32),
        "first_nonfinite": jnp.full((), -1, jnp.int32),
    }
    return replicate(acc, dp) if dp is not None else acc


def create_train_state(params, tx, dp: DataParallel, model_state=None) -> TrainState:
    """float32 parameters + optimizer state, replicated over the mesh."""
    # Fresh buffers: the step donates the state, and the caller keeps its own params.
    params = replicate(_to_float32(params), dp, copy=True)
    opt_state = jax.jit(tx.init, out_shardings=dp.replicated)(params)
    return TrainState(
        step=replicate(jnp.zeros((), jnp.int32), dp),
        params=params,
        opt_state=opt_state,
        model_state=replicate(model_state or {}, dp, copy=True),
    )


def make_train_step(model, tx, config: TrainConfig, dp: DataParallel, trainable_mask=None):
    """jit(train_step)(state, acc, batch) -> (state, acc); state and acc are donated.

    One Adam step on the weighted mean loss of the global batch (split over "data";
    GSPMD all-reduces the gradients). Frozen parameters are behind `stop_gradient`, so
    no backward pass runs through a frozen encoder, and pass through unchanged. A step
    whose loss or gradients are not finite leaves state unchanged and is counted in acc.
    """
    base_key = jax.random.PRNGKey(config.seed)
    keys, loss_kind = config.input_keys, config.loss
    lkey, wkey = config.label_key, config.weight_key
    nan_step = config.debug_nan_at_step

    def step_fn(state: TrainState, acc: dict, batch: dict):
        mask = _all_trainable(state.params) if trainable_mask is None else trainable_mask
        rng = jax.random.fold_in(base_key, state.step)
        w = batch[wkey].astype(jnp.float32)
        wsum = w.sum()

        def loss_fn(params):
            p = jax.tree.map(lambda m, x: x if m else jax.lax.stop_gradient(x), mask, params)
            logits, new_ms = _apply(model, p, state.model_state, batch, keys, train=True, rng=rng)
            per, correct = _per_example(logits, batch[lkey], loss_kind)
            loss = jnp.where(wsum > 0, (per * w).sum() / jnp.maximum(wsum, 1e-12), 0.0)
            if nan_step is not None:  # test option: a forced non-finite loss
                loss = loss * jnp.where(state.step + 1 == nan_step, jnp.nan, 1.0)
            return loss, (per, correct, new_ms)

        (loss, (per, correct, new_ms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        ok = jnp.isfinite(loss)
        for m, g in zip(jax.tree.leaves(mask), jax.tree.leaves(grads), strict=True):
            if m:  # frozen gradients are zeros by construction
                ok = ok & jnp.isfinite(g).all()
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = jax.tree.map(
            lambda m, p, u: jnp.where(ok, p + u, p) if m else p, mask, state.params, updates
        )
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        new_state = TrainState(
            step=state.step + 1,  # also on a skipped step: the next one gets a new dropout key
            params=new_params,
            opt_state=keep(new_opt, state.opt_state),
            model_state=keep(new_ms, state.model_state),
        )
        batch_sums = jnp.stack([(per * w).sum(), (correct * w).sum(), wsum])
        new_acc = {
            "sums": jnp.where(ok, acc["sums"] + batch_sums, acc["sums"]),
            "nonfinite": acc["nonfinite"] + (~ok).astype(jnp.int32),
            "first_nonfinite": jnp.where(
                (acc["first_nonfinite"] < 0) & ~ok, state.step + 1, acc["first_nonfinite"]
            ),
        }
        return new_state, new_acc

    return jax.jit(
        step_fn,
        in_shardings=(dp.replicated, dp.replicated, dp.data),
        out_shardings=(dp.replicated, dp.replicated),
        donate_argnums=(0, 1),
    )


def make_eval_step(model, config: TrainConfig, dp: DataParallel):
    """jit(eval_step)(params, model_state, batch, sums) -> sums + [loss*w, correct*w, w]."""
    keys, loss_kind = config.input_keys, config.loss
    lkey, wkey = config.label_key, config.weight_key

    def eval_fn(params, model_state, batch, sums):
        logits = _apply(model, params, model_state, batch, keys, train=False)
        per, correct = _per_example(logits, batch[lkey], loss_kind)
        w = batch[wkey].astype(jnp.float32)
        return sums + jnp.stack([(per * w).sum(), (correct * w).sum(), w.sum()])

    return jax.jit(
        eval_fn,
        in_shardings=(dp.replicated, dp.replicated, dp.data, dp.replicated),
        out_shardings=dp.replicated,
        donate_argnums=(3,),
    )


_STEP_FIELDS = ("seed", "loss", "input_keys", "label_key", "weight_key", "debug_nan_at_step")


@functools.lru_cache(maxsize=8)
def _cached_steps(model, lr_key, mask_key, step_key, dp):
    mask = None if mask_key is None else jax.tree_util.tree_unflatten(mask_key[0], mask_key[1])
    cfg = TrainConfig(workdir=".", **dict(step_key), **dict(lr_key[:-1]))
    tx = make_optimizer(learning_rate_schedule(cfg, lr_key[-1]), mask)
    return tx, make_train_step(model, tx, cfg, dp, mask), make_eval_step(model, cfg, dp)


def _steps_for(model, config: TrainConfig, dp: DataParallel, mask, total_steps=None):
    """(tx, train_step, eval_step), shared by train() calls with the same model and
    settings in one process, so that they compile once (jit caches per function)."""
    step_key = tuple((f, getattr(config, f)) for f in _STEP_FIELDS)
    # A constant rate does not depend on the run's length: runs of other lengths share it.
    lr_key = (("learning_rate", config.learning_rate), ("lr_schedule", config.lr_schedule),
              ("warmup_steps", config.warmup_steps),
              total_steps if config.lr_schedule != "constant" else None)
    mask_key = None
    if mask is not None:
        leaves, treedef = jax.tree_util.tree_flatten(mask)
        mask_key = (treedef, tuple(leaves))
    try:
        return _cached_steps(model, lr_key, mask_key, step_key, dp)
    except TypeError:  # an unhashable model: build them afresh
        tx = make_optimizer(learning_rate_schedule(config, total_steps), mask)
        return tx, make_train_step(model, tx, config, dp, mask), make_eval_step(model, config, dp)


# --------------------------------------------------------------------------- batches


def prepare_batch(batch: Mapping, dp: DataParallel, config: TrainConfig) -> dict:
    """Host batch -> device batch: the keys the step uses, padded to a multiple of the
    device count with weight-0 rows (so any batch size works on any mesh), sharded."""
    needed = (*config.input_keys, config.label_key)
    missing = [k for k in needed if k not in batch]
    if missing:
        raise TrainingError(f"batch lacks {missing} (it has {sorted(batch)})")
    sub = {k: batch[k] for k in needed}
    if config.weight_key in batch:
        sub[config.weight_key] = batch[config.weight_key]
    return shard_batch(pad_batch(sub, dp.local_num_devices, config.weight_key), dp)


def _device_batches(batches: Iterable[Mapping], dp: DataParallel, config: TrainConfig):
    """Host batches -> sharded device batches, one ahead, flagged (batch, is_last)."""

    def put(b):
        return prepare_batch(b, dp, config)

    it = iter(batches)
    try:
        nxt = put(next(it))
    except StopIteration:
        return
    for b in it:
        cur, nxt = nxt, put(b)  # the next transfer starts before the current step runs
        yield cur, False
    yield nxt, True


def _metric(sums) -> dict:
    s = np.asarray(jax.device_get(sums), np.float64)
    n = s[2]
    return {
        "loss": float(s[0] / n) if n > 0 else float("nan"),
        "accuracy": float(s[1] / n) if n > 0 else float("nan"),
        "examples": int(round(n)),
    }


def _eval_total(data, split) -> int | None:
    f = getattr(data, "eval_steps", None)
    try:
        return int(f(split)) if callable(f) else None
    except Exception:  # noqa: BLE001 - only a progress-bar total
        return None


def _run_eval(eval_step, params, model_state, batches, dp, config, *, desc, total=None) -> dict:
    sums = replicate(jnp.zeros((3,), jnp.float32), dp)
    bar = tqdm(total=total, desc=desc, leave=False, disable=not _bars_on(config),
               dynamic_ncols=True)
    for batch, _ in _device_batches(batches, dp, config):
        sums = eval_step(params, model_state, batch, sums)
        bar.update(1)
    bar.close()
    return _metric(sums)


def evaluate(
    model,
    params,
    batches: Iterable[Mapping],
    *,
    loss: str = "binary",
    input_keys: tuple[str, ...] = ("input_ids", "attention_mask"),
    label_key: str = "label",
    weight_key: str = "weight",
    model_state: Any = None,
    dp: DataParallel | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict:
    """Weighted loss and accuracy of `params` over `batches`: {loss, accuracy, examples}.

    `examples` is the sum of the weights (every real example once, padding none).
    """
    dp = dp or data_parallel()
    cfg = TrainConfig(
        workdir=".", loss=loss, input_keys=input_keys, label_key=label_key,
        weight_key=weight_key, progress=progress,
    )
    _, _, step = _steps_for(model, cfg, dp, None)
    params = replicate(_to_float32(params), dp)
    return _run_eval(step, params, replicate(model_state or {}, dp), batches, dp, cfg, desc=desc)


# --------------------------------------------------------------------------- outputs


def _bars_on(config: TrainConfig) -> bool:
    return config.progress and jax.process_index() == 0


def _log(config: TrainConfig, msg: str) -> None:
    if config.verbose and jax.process_index() == 0:
        print(msg, flush=True)


def plot_curves(history: list, path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, train vs validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for split, style in (("train", "o-"), ("val", "s--")):
            ys = [h.get(f"{split}_{key}") for h in history]
            ys = [np.nan if y is None else y for y in ys]
            ax.plot(epochs, ys, style, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)  # never a half-written metrics.json


def _count(tree, mask=None) -> int:
    leaves = jax.tree.leaves(tree)
    if mask is None:
        return int(sum(np.size(x) for x in leaves))
    return int(sum(np.size(x) for m, x in zip(jax.tree.leaves(mask), leaves, strict=True) if m))


# --------------------------------------------------------------------------- loop


def _steps_per_epoch(data) -> int | None:
    s = getattr(data, "steps_per_epoch", None)
    try:
        if callable(s):
            s = s()
        return int(s) if s is not None else None
    except (TypeError, ValueError):  # only a progress-bar total
        return None


def train(
    model,
    params,
    data,
    config: TrainConfig,
    trainable_mask: Any = None,
    *,
    model_state: Any = None,
    extra_metadata: Mapping[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `model` from `params` on `data`; see the module docstring.

    model: a linen Module applied as model.apply({"params": p, **model_state},
        *[batch[k] for k in config.input_keys], deterministic=..., rngs={"dropout": key}).
    params: its initial parameters (any float dtype; kept float32).
    trainable_mask: pytree of bools like params (False = frozen), or None (all trainable).
    model_state: non-parameter variable collections (e.g. {"batch_stats": ...}), updated
        in training (mutable) and read in evaluation; None for models without.
    extra_metadata: JSON-able facts saved in every checkpoint and in metrics.json (e.g.
        the model configuration and tokenizer, for `load_for_inference`).
    on_step: called with the global step after each training step is dispatched.

    Raises TrainingError (non-finite loss, empty data), WorkdirError (before any
    training), CheckpointError (resume from a corrupted or foreign checkpoint).
    """
    t_start = time.perf_counter()
    for name in ("train_batches", "eval_batches"):
        if not callable(getattr(data, name, None)):
            raise TypeError(f"data object lacks {name}(); see hw3_jax.train's docstring")
    dp = data_parallel(num_devices=config.num_devices)
    mask = None if trainable_mask is None else jax.tree.map(bool, trainable_mask)
    params = _to_float32(params)
    tx, train_step, eval_step = _steps_for(model, config, dp, mask, _total_steps(config, data))

    # Preflight: the workdir must take the checkpoints before any time is spent.
    state_bytes = tree_nbytes(params) + tree_nbytes(jax.eval_shape(tx.init, params))
    state_bytes += tree_nbytes(model_state or {})
    required = (
        config.min_free_bytes
        if config.min_free_bytes is not None
        else (config.keep_latest + 2) * state_bytes + (64 << 20)
    )
    workdir = check_workdir(config.workdir, required)
    store = CheckpointStore(workdir, keep_latest=config.keep_latest)
    try:
        if store.has_any() and not config.resume:
            if not config.overwrite:
                raise TrainingError(
                    f"{workdir} already holds checkpoints of a run; pass resume=True (--resume) "
                    "to continue it, overwrite=True to start over, or use another workdir"
                )
            store.close()
            shutil.rmtree(store.root)
            store = CheckpointStore(workdir, keep_latest=config.keep_latest)
        loop = _Loop(model, params, data, config, mask, tx, dp, store, workdir,
                     model_state or {}, dict(extra_metadata or {}), on_step,
                     train_step, eval_step)
        return loop.run(t_start)
    finally:
        store.close()


class _Loop:
    """State of one train() call (kept out of train() to keep it readable)."""

    def __init__(self, model, params, data, config, mask, tx, dp, store, workdir, model_state,
                 extra, on_step, train_step, eval_step):
        self.model, self.data, self.config, self.mask, self.tx = model, data, config, mask, tx
        self.dp, self.store, self.workdir = dp, store, workdir
        self.extra, self.on_step = extra, on_step
        self.state = create_train_state(params, tx, dp, model_state)
        self.acc = init_accumulators(dp)
        self.train_step, self.eval_step = train_step, eval_step
        self.history: list = []
        self.best: dict = {}
        self.epoch, self.step_in_epoch, self.epoch_done = 0, 0, False
        self.stopped_mid_epoch = False
        self.epoch_elapsed = 0.0
        self.n_params = _count(params)
        self.n_trainable = _count(params, mask)

    # ---- checkpoint metadata
    def _meta(self, kind: str) -> dict:
        sig = {"params": tree_signature(self.state.params),
               "model_state": tree_signature(self.state.model_state)}
        if kind == "latest":
            sig["opt_state"] = tree_signature(self.state.opt_state)
        return {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "config": self.config.to_dict(),
            "extra": self.extra,
            "progress": {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "epoch_done": self.epoch_done,
                "epoch_elapsed_s": self.epoch_elapsed,
            },
            "history": self.history,
            "best": self.best,
            "signature": sig,
            "has_model_state": bool(jax.tree.leaves(self.state.model_state)),
        }

    def _save_latest(self, global_step: int) -> None:
        self.store.save_latest(
            global_step,
            params=self.state.params,
            opt_state=self.state.opt_state,
            model_state=self.state.model_state,
            loop={"step": self.state.step, "acc": self.acc},
            meta=self._meta("latest"),
        )

    def _resume(self) -> None:
        cfg = self.config
        if not cfg.resume or self.store.latest_step() is None:
            if cfg.resume:
                _log(cfg, f"resume: no checkpoint in {self.store.latest_dir}; starting afresh")
            self.store.drop_best_after(-1)  # orphans of an attempt killed before any 'latest'
            return
        template = {
            "params": self.state.params,
            "opt_state": self.state.opt_state,
            "model_state": self.state.model_state,
            "loop": {"step": self.state.step, "acc": self.acc},
        }
        trees, meta = self.store.restore_latest(template, self.dp.replicated)
        self.state = TrainState(
            step=trees["loop"]["step"], params=trees["params"],
            opt_state=trees["opt_state"], model_state=trees["model_state"],
        )
        self.acc = trees["loop"]["acc"]
        p = meta["progress"]
        self.epoch, self.step_in_epoch = int(p["epoch"]), int(p["step_in_epoch"])
        self.epoch_done, self.epoch_elapsed = bool(p["epoch_done"]), float(p["epoch_elapsed_s"])
        self.history, self.best = list(meta["history"]), dict(meta["best"])
        step = int(jax.device_get(self.state.step))
        dropped = self.store.drop_best_after(step)
        changed = {
            k: (v, cfg.to_dict().get(k))
            for k, v in meta["config"].items()
            if k not in _RESUME_FREE_FIELDS and cfg.to_dict().get(k) != v
        }
        where = "end of" if self.epoch_done else f"batch {self.step_in_epoch} of"
        _log(cfg, f"resumed from {self.store.latest_dir / str(step)} "
                  f"(step {step}, {where} epoch {self.epoch + 1})"
                  + (f"; dropped unfinished best checkpoints {dropped}" if dropped else ""))
        if changed:
            _log(cfg, "warning: resuming with changed settings: "
                 + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))

    # ---- non-finite handling
    def _check_finite(self, acc_host: dict, epoch: int) -> None:
        if not self.config.fail_on_nonfinite or int(acc_host["nonfinite"]) == 0:
            return
        step = int(acc_host["first_nonfinite"])
        self._fail(
            f"training stopped: the loss became non-finite (NaN or inf) at step {step} "
            f"(epoch {epoch + 1}); {self._best_note()}. Lower the learning rate "
            f"(now {self.config.learning_rate:g}) or check the data."
        )

    def _best_note(self) -> str:
        if self.best:
            vl = self.best.get("val_loss")
            vl = "n/a" if vl is None else f"{vl:.4f}"
            return (f"the best checkpoint so far (epoch {self.best['epoch']}, val_loss "
                    f"{vl}) is kept in {self.store.best_dir}")
        return "no epoch had finished, so there is no best checkpoint yet"

    def _fail(self, msg: str):
        self._write_metrics(status="failed", error=msg)
        if self.config.plot and self.history and jax.process_index() == 0:
            plot_curves(self.history, self.workdir / "curves.png")
        raise TrainingError(msg)

    # ---- outputs
    def _write_metrics(self, status: str, error: str | None = None, test: dict | None = None,
                       timings: dict | None = None) -> dict:
        dev = jax.devices()[0]
        metrics = {
            "status": status,
            "error": error,
            "config": self.config.to_dict(),
            "extra": self.extra,
            "history": self.history,
            "best": self.best,
            "val_loss": self.best.get("val_loss"),
            "val_accuracy": self.best.get("val_accuracy"),
            "test_loss": (test or {}).get("loss"),
            "test_accuracy": (test or {}).get("accuracy"),
            "test_examples": (test or {}).get("examples"),
            "steps": int(jax.device_get(self.state.step)),
            "params": {"total": self.n_params, "trainable": self.n_trainable},
            "devices": {
                "backend": jax.default_backend(),
                "kind": dev.device_kind,
                "num_devices": self.dp.num_devices,
                "process_count": jax.process_count(),
            },
            "timings": timings or {},
        }
        if jax.process_index() == 0:
            _write_json(self.workdir / "metrics.json", metrics)
        return metrics

    # ---- the loop
    def run(self, t_start: float) -> TrainResult:
        cfg, dp = self.config, self.dp
        self._resume()
        _log(cfg, f"training on {dp.num_devices} {jax.default_backend()} device(s): "
                  f"{self.n_params:,} parameters, {self.n_trainable:,} trainable; "
                  f"workdir {self.workdir}")
        global_step = int(jax.device_get(self.state.step))
        spe = _steps_per_epoch(self.data)
        first_epoch = self.epoch + 1 if self.epoch_done else self.epoch
        for epoch in range(first_epoch, cfg.epochs):
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                break
            if epoch != self.epoch or self.epoch_done:  # a fresh epoch
                self.epoch, self.step_in_epoch, self.epoch_done = epoch, 0, False
                self.epoch_elapsed = 0.0
                self.acc = init_accumulators(dp)
            global_step = self._train_epoch(epoch, global_step, spe)
            if self.stopped_mid_epoch:  # by max_steps: --resume finishes this epoch
                self._save_latest(global_step)
                _log(cfg, f"stopped at step {global_step} (--max-steps), batch "
                          f"{self.step_in_epoch} of epoch {epoch + 1}; --resume continues "
                          "from there")
                break
            self._end_epoch(epoch, global_step)
        return self._finish(t_start)

    def _train_epoch(self, epoch: int, global_step: int, spe: int | None) -> int:
        cfg = self.config
        skip = self.step_in_epoch
        batches = itertools.islice(self.data.train_batches(epoch), skip, None)
        bar = tqdm(total=spe, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs} train",
                   leave=False, disable=not _bars_on(cfg), dynamic_ncols=True)
        t0 = time.perf_counter()
        elapsed0 = self.epoch_elapsed
        ran, ckpt_time = False, 0.0
        self.stopped_mid_epoch = False
        for batch, is_last in _device_batches(batches, self.dp, cfg):
            self.state, self.acc = self.train_step(self.state, self.acc, batch)
            ran = True
            global_step += 1
            self.step_in_epoch += 1
            bar.update(1)
            if self.on_step is not None:
                self.on_step(global_step)
            if not is_last and cfg.max_steps is not None and global_step >= cfg.max_steps:
                self.stopped_mid_epoch = is_last = True
            log_now = cfg.log_every_steps and global_step % cfg.log_every_steps == 0
            ckpt_now = (cfg.checkpoint_every_steps and global_step % cfg.checkpoint_every_steps == 0
                        and not is_last)
            if log_now or ckpt_now:
                acc = jax.device_get(self.acc)
                self._check_finite(acc, epoch)
                m = _metric(acc["sums"])
                bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}")
            if ckpt_now:
                self.epoch_elapsed = elapsed0 + time.perf_counter() - t0 - ckpt_time
                t_ckpt = time.perf_counter()
                self._save_latest(global_step)
                ckpt_time += time.perf_counter() - t_ckpt  # not training time
            if is_last:
                break
        jax.block_until_ready(self.acc)
        self.epoch_elapsed = elapsed0 + time.perf_counter() - t0 - ckpt_time
        bar.close()
        if not ran and skip == 0:
            raise TrainingError(f"the data gave no training batches for epoch {epoch + 1}")
        self._check_finite(jax.device_get(self.acc), epoch)
        return global_step

    def _end_epoch(self, epoch: int, global_step: int) -> None:
        cfg, dp = self.config, self.dp
        acc = jax.device_get(self.acc)
        train_m = _metric(acc["sums"])
        train_time = self.epoch_elapsed
        t0 = time.perf_counter()
        if cfg.val_split is not None:
            val_m = _run_eval(self.eval_step, self.state.params, self.state.model_state,
                              self.data.eval_batches(cfg.val_split), dp, cfg,
                              desc=f"epoch {epoch + 1}/{cfg.epochs} {cfg.val_split}",
                              total=_eval_total(self.data, cfg.val_split))
        else:
            val_m = {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
        val_time = time.perf_counter() - t0
        entry = {
            "epoch": epoch + 1,
            "step": global_step,
            "train_loss": train_m["loss"],
            "train_accuracy": train_m["accuracy"],
            "val_loss": val_m["loss"],
            "val_accuracy": val_m["accuracy"],
            "epoch_time_s": train_time + val_time,
            "train_time_s": train_time,
            "val_time_s": val_time,
            "examples_per_s": train_m["examples"] / train_time if train_time > 0 else None,
            "train_examples": train_m["examples"],
            "val_examples": val_m["examples"],
        }
        if int(acc["nonfinite"]):
            entry["nonfinite_steps_skipped"] = int(acc["nonfinite"])
        self.history.append(entry)
        self.epoch_done = True
        if cfg.val_split is not None and not math.isfinite(val_m["loss"]):
            if cfg.fail_on_nonfinite:
                self._fail(f"training stopped: the validation loss is {val_m['loss']} after epoch "
                           f"{epoch + 1}; {self._best_note()}.")
        improved = cfg.val_split is None or (
            math.isfinite(val_m["loss"])
            and (not self.best or val_m["loss"] < self.best["val_loss"])
        )
        if improved:
            self.best = {"epoch": epoch + 1, "step": global_step,
                         "val_loss": val_m["loss"], "val_accuracy": val_m["accuracy"]}
            # best before latest: a kill in between re-does this epoch and rewrites it.
            self.store.save_best(global_step, params=self.state.params,
                                 model_state=self.state.model_state, meta=self._meta("best"))
        self._save_latest(global_step)
        self._write_metrics(status="running")
        _log(cfg, (
            f"epoch {epoch + 1}/{cfg.epochs} | train loss {train_m['loss']:.4f} "
            f"acc {100 * train_m['accuracy']:.2f}% | val loss {val_m['loss']:.4f} "
            f"acc {100 * val_m['accuracy']:.2f}% | {entry['epoch_time_s']:.1f} s, "
            f"{entry['examples_per_s'] or 0:.0f} ex/s" + (" | best" if improved else "")
        ))

    def _finish(self, t_start: float) -> TrainResult:
        cfg, dp = self.config, self.dp
        if self.store.best_step() is not None:
            template = {"params": self.state.params, "model_state": self.state.model_state}
            params, model_state, _ = self.store.restore_best(template, dp.replicated)
        else:
            params, model_state = self.state.params, self.state.model_state
        test_m, t_test = None, 0.0
        if cfg.test_split is not None:
            t0 = time.perf_counter()
            test_m = _run_eval(self.eval_step, params, model_state,
                               self.data.eval_batches(cfg.test_split), dp, cfg,
                               desc=cfg.test_split, total=_eval_total(self.data, cfg.test_split))
            t_test = time.perf_counter() - t0
            _log(cfg, f"{cfg.test_split} (best epoch {self.best.get('epoch')}): loss "
                      f"{test_m['loss']:.4f} acc {100 * test_m['accuracy']:.2f}% "
                      f"({test_m['examples']} examples)")
        timings = {
            "total_s": time.perf_counter() - t_start,
            "train_s": sum(h["train_time_s"] for h in self.history),
            "val_s": sum(h["val_time_s"] for h in self.history),
            "test_s": t_test,
            "mean_epoch_s": (sum(h["epoch_time_s"] for h in self.history) / len(self.history)
                             if self.history else None),
        }
        metrics = self._write_metrics(status="completed", test=test_m, timings=timings)
        if cfg.plot and self.history and jax.process_index() == 0:
            plot_curves(self.history, self.workdir / "curves.png")
        return TrainResult(
            params=params,
            model_state=model_state,
            history=self.history,
            best=self.best,
            val_loss=self.best.get("val_loss"),
            val_accuracy=self.best.get("val_accuracy"),
            test_loss=None if test_m is None else test_m["loss"],
            test_accuracy=None if test_m is None else test_m["accuracy"],
            metrics=metrics,
            workdir=self.workdir,
            final_state=self.state,
        )


# --------------------------------------------------------------------------- inference


def load_for_inference(
    workdir: str | os.PathLike, params_template: Any = None
) -> InferenceCheckpoint:
    """The best checkpoint of `workdir`: parameters, model state and the saved config.

    Without `params_template` the parameters come back in their saved structure (nested
    dicts of arrays), which is what `model.apply({"params": ...})` takes. Raises
    CheckpointError (one line naming the directory) when there is none or it is unreadable.
    """
    store = CheckpointStore(workdir, read_only=True)
    try:
        template = None
        if params_template is not None:
            template = {"params": params_template, "model_state": {}}
        params, model_state, meta = store.restore_best(template)
    finally:
        store.close()
    best = meta.get("best") or {}
    return InferenceCheckpoint(
        params=params,
        model_state=model_state,
        config=meta.get("config", {}),
        extra=meta.get("extra", {}),
        step=int(best.get("step", -1)),
        val_loss=best.get("val_loss"),
        val_accuracy=best.get("val_accuracy"),
    )
