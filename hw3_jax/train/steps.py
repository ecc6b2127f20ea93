"""The optimizer (Adam or AdamW, a learning rate per parameter group, freezing), the train
state and the two step functions of the training loop.

Losses: "binary" (logits [B], sigmoid BCE on 0/1 labels, as the notebook) or "multiclass"
(logits [B, C], softmax CE on integer labels). Every loss and metric is
sum(weight * x) / sum(weight), so weight-0 padding rows never count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from hw3_jax.models import ENCODER_KEY
from hw3_jax.train.sharding import DataParallel, device_batches, from_process_zero, replicate

LOSSES = ("binary", "multiclass")
LR_SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adam", "adamw")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any  # float32 parameters
    opt_state: Any  # float32 optimizer moments (trainable parameters only), step counts
    model_state: Any  # non-parameter collections (e.g. batch_stats); {} for most models


# --------------------------------------------------------------------------- optimizer


def param_groups(tree: Any, trainable_mask: Any = None, by_encoder: bool = True) -> Any:
    """The optimizer group of each leaf of a params-shaped `tree`: "frozen" where
    `trainable_mask` (a pytree of bools like `tree`, or None: all trained) is False, else
    "encoder" under `models.ENCODER_KEY` and "head" elsewhere (`by_encoder`), or
    "trainable" (not `by_encoder`)."""
    mask = trainable_mask if trainable_mask is not None else jax.tree.map(lambda _: True, tree)

    def group(path, _, trained):
        if not trained:
            return "frozen"
        if not by_encoder:
            return "trainable"
        return "encoder" if getattr(path[0], "key", None) == ENCODER_KEY else "head"

    return jax.tree_util.tree_map_with_path(group, tree, mask)


def make_optimizer(learning_rate: float | optax.Schedule, trainable_mask: Any = None, *,
                   optimizer: str, weight_decay: float,
                   encoder_learning_rate: float | optax.Schedule | None = None
                   ) -> optax.GradientTransformation:
    """Adam (PyTorch's defaults: betas 0.9/0.999, eps 1e-8) or AdamW (PyTorch's: decoupled
    weight decay `weight_decay` times the learning rate, on the matrices only).

    The learning rates are floats or optax schedules (`learning_rate_schedule`). Leaves
    where `trainable_mask` (e.g. `models.trainable_mask(params)`) is False go to
    `optax.set_to_zero()`: no update and no Adam moments (`optax.MaskedNode()` there), so the
    notebook model's optimizer state covers only its 2.76M trainable parameters; this is the
    one optimizer-side freezing. With `encoder_learning_rate` the leaves under
    `models.ENCODER_KEY` get that rate and the rest `learning_rate`, each group with its own
    moments and step count (`param_groups`); with neither that nor a mask the state is plain
    Adam's. `optimizer` and `weight_decay` have no default here: the run's come from
    TrainConfig (`config.optimizer_of`)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")

    def one(lr):
        if optimizer == "adamw":
            # Decay the matrices (kernels, embedding tables, GRU weights), not the 1-D
            # leaves, which here are exactly the biases and the LayerNorm scales and biases
            # (BERT's fine-tuning recipe decays neither).
            return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay,
                               mask=lambda tree: jax.tree.map(lambda x: x.ndim > 1, tree))
        return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)

    by_encoder = encoder_learning_rate is not None
    if not by_encoder and trainable_mask is None:
        return one(learning_rate)
    groups = ({"encoder": one(encoder_learning_rate), "head": one(learning_rate)} if by_encoder
              else {"trainable": one(learning_rate)})
    return optax.partition({**groups, "frozen": optax.set_to_zero()},
                           lambda tree: param_groups(tree, trainable_mask, by_encoder))


def learning_rate_schedule(learning_rate: float, schedule: str, warmup_steps: int,
                           total_steps: int | None = None) -> float | optax.Schedule:
    """The learning rate as optax takes it.

    "constant" without warmup: the float itself (the optimizer state is then plain Adam's).
    Otherwise a schedule of the step count, which the checkpointed optimizer state holds,
    so a resumed run continues it: a linear warmup from 0 over `warmup_steps`, then
    constant; for "cosine" a cosine decay and for "linear" (BERT's fine-tuning schedule) a
    straight line, both reaching 0 at `total_steps` (the run's training steps, required)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if schedule == "constant":
        if not warmup_steps:
            return learning_rate
        return optax.linear_schedule(0.0, learning_rate, warmup_steps)
    if not total_steps:
        raise ValueError(f"lr_schedule={schedule!r} needs the number of training steps: a "
                         "data object with steps_per_epoch, or max_steps")
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                  max(total_steps, warmup_steps + 1))
    decay = optax.linear_schedule(learning_rate, 0.0, max(total_steps - warmup_steps, 1))
    if not warmup_steps:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps), decay], [warmup_steps])


# --------------------------------------------------------------------------- state


def to_float32(tree: Any) -> Any:
    """Floating leaves as float32 (the stored precision of parameters); others as they are."""

    def one(x):
        x = jnp.asarray(x)
        return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(one, tree)


def create_train_state(params: Any, tx: optax.GradientTransformation, dp: DataParallel,
                       model_state: Any = None) -> TrainState:
    """float32 parameters + optimizer state at step 0, replicated over the mesh (with
    several processes, process 0's values: every replica starts the same)."""
    # Fresh buffers: the step donates the state, and the caller keeps its own params.
    params = replicate(from_process_zero(to_float32(params)), dp, copy=True)
    opt_state = jax.jit(tx.init, out_shardings=dp.replicated)(params)
    return TrainState(
        step=replicate(jnp.zeros((), jnp.int32), dp),
        params=params,
        opt_state=opt_state,
        model_state=replicate(from_process_zero(model_state or {}), dp, copy=True),
    )


def init_metrics(dp: DataParallel) -> dict:
    """The running sums of one epoch's training metrics, kept on the device:
    sums [3] = [sum loss*w, sum correct*w, sum w]; nonfinite: steps skipped;
    first_nonfinite: the first skipped step (1-based), -1 for none."""
    return replicate({
        "sums": jnp.zeros((3,), jnp.float32),
        "nonfinite": jnp.zeros((), jnp.int32),
        "first_nonfinite": jnp.full((), -1, jnp.int32),
    }, dp)


# --------------------------------------------------------------------------- steps


def per_example(logits: jax.Array, labels: jax.Array, loss: str) -> tuple[jax.Array, jax.Array]:
    """(loss [B], correct [B]) in float32, whatever the model's compute dtype.

    logits: [B] (or [B, 1]) for "binary", [B, C] for "multiclass"; labels [B]."""
    logits = logits.astype(jnp.float32)
    if loss == "binary":
        if logits.ndim == 2 and logits.shape[-1] == 1:
            logits = logits[:, 0]
        if logits.ndim != 1:
            raise ValueError(f"loss='binary' needs logits [batch], the model returned "
                             f"{logits.shape}; use loss='multiclass' for [batch, classes]")
        y = labels.astype(jnp.float32)
        correct = ((logits > 0) == (y > 0.5)).astype(jnp.float32)
        return optax.sigmoid_binary_cross_entropy(logits, y), correct
    if logits.ndim != 2:
        raise ValueError(f"loss='multiclass' needs logits [batch, classes], got {logits.shape}")
    y = labels.astype(jnp.int32)
    per = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return per, (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)


def _apply(model, params, model_state, batch, input_keys, rng=None):
    """Logits of `model` on `batch`; with `rng`, in training mode: (logits, new model_state)."""
    variables = {"params": params, **model_state}
    inputs = [batch[k] for k in input_keys]
    if rng is None:
        return model.apply(variables, *inputs, deterministic=True)
    mutable = list(model_state) if model_state else False
    out = model.apply(variables, *inputs, deterministic=False, rngs={"dropout": rng},
                      mutable=mutable)
    return out if mutable else (out, model_state)


def _weighted_sums(per: jax.Array, correct: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.stack([(per * w).sum(), (correct * w).sum(), w.sum()])


def train_step(state: TrainState, acc: dict, batch: dict, model, tx, loss: str,
               input_keys: tuple[str, ...], seed: int) -> tuple[TrainState, dict]:
    """One optimizer step on the weighted mean loss of the global batch -> (state, acc).

    batch: {input_keys..., "label" [B], "weight" [B]}, split over the mesh's "data" axis
    (GSPMD all-reduces the gradients). The dropout key is fold_in(PRNGKey(seed), step), so a
    resumed run draws the same masks. A step whose loss or updates are not finite changes
    neither parameters nor optimizer or model state and is counted in `acc`; the step
    counter advances either way, so the next step gets a new dropout key."""
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
    w = batch["weight"].astype(jnp.float32)
    wsum = w.sum()

    def loss_fn(params):
        logits, new_ms = _apply(model, params, state.model_state, batch, input_keys, rng)
        per, correct = per_example(logits, batch["label"], loss)
        mean = jnp.where(wsum > 0, (per * w).sum() / jnp.maximum(wsum, 1e-12), 0.0)
        return mean, (per, correct, new_ms)

    (mean, (per, correct, new_ms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    # Frozen leaves have zero updates (set_to_zero), whatever their gradients hold.
    ok = jnp.isfinite(mean)
    for u in jax.tree.leaves(updates):
        ok = ok & jnp.isfinite(u).all()

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    new_state = TrainState(
        step=state.step + 1,
        params=keep(optax.apply_updates(state.params, updates), state.params),
        opt_state=keep(new_opt, state.opt_state),
        model_state=keep(new_ms, state.model_state),
    )
    new_acc = {
        "sums": jnp.where(ok, acc["sums"] + _weighted_sums(per, correct, w), acc["sums"]),
        "nonfinite": acc["nonfinite"] + (~ok).astype(jnp.int32),
        "first_nonfinite": jnp.where((acc["first_nonfinite"] < 0) & ~ok, state.step + 1,
                                     acc["first_nonfinite"]),
    }
    return new_state, new_acc


def eval_step(params: Any, model_state: Any, batch: dict, sums: jax.Array, model,
              loss: str, input_keys: tuple[str, ...]) -> jax.Array:
    """sums [3] + [sum loss*w, sum correct*w, sum w] of `batch` (deterministic model)."""
    logits = _apply(model, params, model_state, batch, input_keys)
    per, correct = per_example(logits, batch["label"], loss)
    return sums + _weighted_sums(per, correct, batch["weight"].astype(jnp.float32))


def jit_train_step(dp: DataParallel, *, model, tx: optax.GradientTransformation, loss: str,
                   input_keys: tuple[str, ...], seed: int) -> Callable:
    """`(state, acc, batch) -> (state, acc)`: `train_step` jitted over `dp`'s mesh, the state
    and the sums donated."""
    step = jax.jit(train_step, static_argnums=(3, 4, 5, 6, 7),
                   in_shardings=(dp.replicated, dp.replicated, dp.data),
                   out_shardings=(dp.replicated, dp.replicated), donate_argnums=(0, 1))
    static = (model, tx, loss, tuple(input_keys), seed)
    return lambda state, acc, batch: step(state, acc, batch, *static)


def jit_eval_step(dp: DataParallel, *, model, loss: str, input_keys: tuple[str, ...]
                  ) -> Callable:
    """`(params, model_state, batch, sums) -> sums`: `eval_step` jitted over `dp`'s mesh."""
    step = jax.jit(eval_step, static_argnums=(4, 5, 6),
                   in_shardings=(dp.replicated, dp.replicated, dp.data, dp.replicated),
                   out_shardings=dp.replicated, donate_argnums=(3,))
    static = (model, loss, tuple(input_keys))
    return lambda params, model_state, batch, sums: step(params, model_state, batch, sums,
                                                         *static)


def metrics_from_sums(sums) -> dict:
    """sums [3] = [sum loss*w, sum correct*w, sum w] -> {loss, accuracy, examples}."""
    s = np.asarray(jax.device_get(sums), np.float64)
    n = s[2]
    return {"loss": float(s[0] / n) if n > 0 else float("nan"),
            "accuracy": float(s[1] / n) if n > 0 else float("nan"),
            "examples": int(round(n))}


def run_eval(eval_fn: Callable, params: Any, model_state: Any, batches: Iterable[dict],
             dp: DataParallel, input_keys: tuple[str, ...], *, desc: str,
             total: int | None = None, bars: bool = False) -> dict:
    """`eval_fn` (`jit_eval_step`) over `batches` -> {loss, accuracy, examples}."""
    sums = replicate(jnp.zeros((3,), jnp.float32), dp)
    bar = tqdm(total=total, desc=desc, leave=False, disable=not bars, dynamic_ncols=True)
    for batch in device_batches(batches, dp, input_keys):
        sums = eval_fn(params, model_state, batch, sums)
        bar.update(1)
    bar.close()
    return metrics_from_sums(sums)
