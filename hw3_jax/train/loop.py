"""The one training loop every experiment uses.

`train(model, params, data, config, workdir)` trains a Flax linen model with Adam or AdamW
(`steps.make_optimizer`) on a binary or multiclass loss, data-parallel over every device.
It counts global steps, `range(start_step, total_steps(config, steps_per_epoch))`: epoch =
step // steps_per_epoch and the position in the epoch is step % steps_per_epoch. At each
epoch end it evaluates on the validation split and keeps the best checkpoint by validation
loss ('latest' ones as `checkpoints.py` says). At the end the best parameters are evaluated
on the test split.

The data object gives
  train_batches(epoch, start_step=0) -> iterator of batch dicts, deterministic in
                          (seed, epoch), starting at position `start_step` of the epoch;
  eval_batches(split)  -> iterator of batch dicts;
  steps_per_epoch      -> int, the same for every epoch;
  eval_steps(split)    -> int (progress-bar totals).
A batch is a dict of NumPy arrays: the model inputs (`config.input_keys`, passed
positionally to `model.apply`), "label" ([B] float 0/1 or int class) and "weight"
([B] float, 0 for padding).

Exactness: dropout keys are fold_in(PRNGKey(seed), step), batches depend on (seed, epoch)
and the position only, and the latest checkpoint holds the state, the running sums of the
epoch's training metrics, the history and the best so far; steps whose loss is not finite
change nothing. So a run killed at any point and resumed ends bit-identical (on CPU) to an
uninterrupted one. Ctrl-C or SIGTERM (`stopping.py`) stops it after the current step with a
'latest' checkpoint of that step, so the resumed run redoes none.

Of the workdir's files (`workdir.py`) the loop alone writes config.json, metrics.json,
metrics.jsonl and curves.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
from flax.traverse_util import flatten_dict
from tqdm.auto import tqdm

from hw3_jax.models import count_params
from hw3_jax.timing import device_name
from hw3_jax.train.checkpoints import FORMAT_VERSION, CheckpointStore, TrainingError, open_store
from hw3_jax.train.config import TrainConfig, optimizer_of, total_steps
from hw3_jax.train.plots import plot_curves
from hw3_jax.train.sharding import DataParallel, data_parallel, device_batches
from hw3_jax.train.steps import (
    TrainState,
    create_train_state,
    init_metrics,
    jit_eval_step,
    jit_train_step,
    metrics_from_sums,
    run_eval,
)
from hw3_jax.train.stopping import StopRequested, stop_requests
from hw3_jax.train.workdir import Workdir, json_safe

# Fields that may change between a run and its resumption without a warning.
_RESUME_FREE_FIELDS = {
    "resume", "overwrite", "epochs", "max_steps", "progress", "verbose", "log_every_steps",
    "num_devices", "plot", "checkpoint_every_steps", "keep_latest",
}


@dataclasses.dataclass
class TrainResult:
    params: Any  # the best parameters (lowest validation loss)
    model_state: Any
    history: list  # one dict per epoch
    best: dict  # epoch, step, val_loss, val_accuracy of the best checkpoint
    val_loss: float | None
    val_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    metrics: dict  # what metrics.json holds
    workdir: Path
    final_state: TrainState  # the state after the last step


@dataclasses.dataclass
class _Progress:
    """What the latest checkpoint holds, i.e. all a resumed run needs to go on exactly."""

    state: TrainState
    acc: dict  # the running sums of the current epoch's training metrics (steps.init_metrics)
    history: list
    best: dict

    def trees(self) -> dict:
        """The arrays of a 'latest' checkpoint (history and best go in its meta)."""
        return {"params": self.state.params, "opt_state": self.state.opt_state,
                "model_state": self.state.model_state,
                "loop": {"step": self.state.step, "acc": self.acc}}


@dataclasses.dataclass(frozen=True)
class _Run:
    """The fixed context of one train() call."""

    config: TrainConfig
    data: Any
    workdir: Workdir
    store: CheckpointStore
    dp: DataParallel
    eval_fn: Callable
    metadata: dict  # the caller's `metadata`, {} for none
    counts: dict  # {"total", "trainable"} parameters
    devices: dict  # what the run trains on, as metrics.json records it


def train(model, params, data, config: TrainConfig, workdir, *, trainable_mask: Any = None,
          model_state: Any = None, metadata: Mapping[str, Any] | None = None,
          report: Callable[[Any], dict] | None = None) -> TrainResult:
    """Train `model` from `params` on `data` into `workdir`; see the module docstring.

    model: a linen Module applied as model.apply({"params": p, **model_state},
        *[batch[k] for k in config.input_keys], deterministic=..., rngs={"dropout": key}).
    params: its initial parameters (any float dtype; kept float32).
    trainable_mask: pytree of bools like params (False = frozen), or None (all trainable).
    model_state: non-parameter collections (e.g. {"batch_stats": ...}), updated in training
        (mutable) and read in evaluation; None for models without.
    metadata: JSON-able configuration of the run (the experiment's config), written as
        WORKDIR/config.json and kept in every checkpoint (`checkpoints.load_best`).
    report: called with the best parameters at the end; its dict is merged into
        metrics.json.

    Raises TrainingError (non-finite loss, empty data), WorkdirError (before any
    training), CheckpointError (resume from a corrupted or foreign checkpoint).
    """
    t_start = time.perf_counter()
    num_steps = total_steps(config, int(data.steps_per_epoch))
    dp = data_parallel(num_devices=config.num_devices)
    mask = None if trainable_mask is None else jax.tree.map(bool, trainable_mask)
    tx = optimizer_of(config, num_steps, mask)
    state = create_train_state(params, tx, dp, model_state)
    wd = Workdir(workdir)
    # The checkpoints need keep_latest + 3 states of free disk, and some slack: the kept
    # 'latest' ones, one being written and two bests (the old one stays until the new one's
    # epoch has its 'latest' checkpoint).
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    wd.check((config.keep_latest + 3) * state_bytes + (64 << 20))
    store = open_store(wd, keep_latest=config.keep_latest, resume=config.resume,
                       overwrite=config.overwrite)
    try:
        counts = {"total": count_params(params), "trainable": count_params(params, mask)}
        eval_fn = jit_eval_step(dp, model=model, loss=config.loss, input_keys=config.input_keys)
        devices = {"backend": jax.default_backend(), "kind": jax.devices()[0].device_kind,
                   "name": device_name(), "num_devices": dp.num_devices,
                   "process_count": jax.process_count()}
        run = _Run(config, data, wd, store, dp, eval_fn, dict(metadata or {}), counts, devices)
        progress = _restore(run, _Progress(state, init_metrics(dp), [], {}))
        if jax.process_index() == 0:  # after the restore: a refused resume changes nothing
            if metadata is not None:
                wd.write_json(wd.config.name, metadata)
            wd.write_jsonl(wd.metrics_jsonl.name, progress.history)
        _log(config, f"training on {dp.num_devices} {jax.default_backend()} device(s): "
                     f"{counts['total']:,} parameters, {counts['trainable']:,} trainable; "
                     f"workdir {wd.root}")
        step_fn = jit_train_step(dp, model=model, tx=tx, loss=config.loss,
                                 input_keys=config.input_keys, seed=config.seed)
        with stop_requests() as requested:
            _train_steps(run, progress, step_fn, num_steps, requested)
        return _finish(run, progress, report, t_start)
    finally:
        store.close()


def _train_steps(run: _Run, p: _Progress, step_fn: Callable, num_steps: int,
                 requested: Callable[[int], bool]) -> None:
    """Steps from the state's step to `num_steps`, with evaluation and checkpoints; after
    a step at which `requested` says so, a checkpoint and StopRequested."""
    cfg, spe = run.config, int(run.data.steps_per_epoch)
    start = int(jax.device_get(p.state.step))
    batches = bar = marker = None
    for step in range(start, num_steps):
        epoch, pos = divmod(step, spe)
        if batches is None or pos == 0:  # an epoch (re)starts in this process
            if pos == 0:
                p.acc = init_metrics(run.dp)
            batches = device_batches(run.data.train_batches(epoch, pos), run.dp,
                                     cfg.input_keys)
            bar = tqdm(total=spe, initial=pos, desc=f"epoch {epoch + 1}/{cfg.epochs} train",
                       leave=False, disable=not _bars_on(cfg), dynamic_ncols=True)
            clock = {"t0": time.perf_counter(), "ckpt_s": 0.0,
                     "examples0": float(jax.device_get(p.acc["sums"])[2])}
        batch = next(batches, None)
        if batch is None:
            raise TrainingError(f"the data gave {pos} training batches for epoch {epoch + 1}, "
                                f"but its steps_per_epoch is {spe}" if pos else
                                f"the data gave no training batches for epoch {epoch + 1}")
        p.state, p.acc = step_fn(p.state, p.acc, batch)
        # The bar and the clocks count finished steps, not steps queued ahead of the device
        # (on a CPU, dispatch ran minutes ahead of the compute). Waiting for the previous
        # step keeps this one queued, so an accelerator never idles between steps; what is
        # waited on is a copy, since the next step donates the state and the sums.
        finished, marker = marker, p.acc["sums"][2]
        jax.block_until_ready(finished)
        bar.update(1)
        done = step + 1
        epoch_end, last = done % spe == 0, done == num_steps
        every = cfg.checkpoint_every_steps
        stop = requested(done)
        save = epoch_end or last or stop or bool(every and done % every == 0)
        if save or (cfg.log_every_steps and done % cfg.log_every_steps == 0):
            m = _train_metrics(run, p, epoch)
            bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['accuracy']:.3f}")
        if epoch_end:
            bar.close()
            _end_epoch(run, p, epoch, clock)
        if save:
            t0 = time.perf_counter()
            run.store.save_latest(done, meta=_meta(run, p, "latest"), **p.trees())
            if epoch_end and p.best:  # the epoch's best is now one a resume keeps
                run.store.drop_best_before(p.best["step"])
            clock["ckpt_s"] += time.perf_counter() - t0  # not training time
        if stop:
            bar.close()
            raise StopRequested(f"stopped after step {done} (batch {pos + 1} of epoch "
                                f"{epoch + 1}), saved in {run.store.latest_dir}")
        if last and not epoch_end:
            bar.close()
            _log(cfg, f"stopped at step {done} (max_steps), batch {pos + 1} of epoch "
                      f"{epoch + 1}; resume continues from there")


def _train_metrics(run: _Run, p: _Progress, epoch: int) -> dict:
    """The epoch's training metrics so far; fails the run on a non-finite step."""
    acc = jax.device_get(p.acc)
    if run.config.fail_on_nonfinite and int(acc["nonfinite"]):
        _fail(run, p, f"training stopped: the loss became non-finite (NaN or inf) at step "
                      f"{int(acc['first_nonfinite'])} (epoch {epoch + 1}); {_best_note(run, p)}"
                      f". Lower the learning rate (now {run.config.learning_rate:g}) or check "
                      "the data.")
    return {**metrics_from_sums(acc["sums"]), "nonfinite": int(acc["nonfinite"])}


def _end_epoch(run: _Run, p: _Progress, epoch: int, clock: dict) -> None:
    """Validation, the history entry, the best checkpoint and the metrics of an epoch end."""
    cfg = run.config
    train_m = _train_metrics(run, p, epoch)
    train_time = time.perf_counter() - clock["t0"] - clock["ckpt_s"]
    t0 = time.perf_counter()
    val_m = {"loss": float("nan"), "accuracy": float("nan"), "examples": 0}
    if cfg.val_split is not None:
        val_m = _eval_split(run, p.state.params, p.state.model_state, cfg.val_split,
                            f"epoch {epoch + 1}/{cfg.epochs} {cfg.val_split}")
    val_time = time.perf_counter() - t0
    trained_here = train_m["examples"] - clock["examples0"]  # this process's share
    entry = {
        "epoch": epoch + 1, "step": int(jax.device_get(p.state.step)),
        "train_loss": train_m["loss"], "train_accuracy": train_m["accuracy"],
        "val_loss": val_m["loss"], "val_accuracy": val_m["accuracy"],
        "epoch_time_s": train_time + val_time, "train_time_s": train_time,
        "val_time_s": val_time,
        "examples_per_s": trained_here / train_time if train_time > 0 else None,
        "train_examples": train_m["examples"], "val_examples": val_m["examples"],
    }
    if train_m["nonfinite"]:
        entry["nonfinite_steps_skipped"] = train_m["nonfinite"]
    p.history.append(entry)
    finite = math.isfinite(val_m["loss"])
    if cfg.val_split is not None and not finite and cfg.fail_on_nonfinite:
        _fail(run, p, f"training stopped: the validation loss is {val_m['loss']} after epoch "
                      f"{epoch + 1}; {_best_note(run, p)}.")
    improved = cfg.val_split is None or (
        finite and (not p.best or val_m["loss"] < p.best["val_loss"]))
    if improved:
        p.best = {"epoch": epoch + 1, "step": entry["step"], "val_loss": val_m["loss"],
                  "val_accuracy": val_m["accuracy"]}
        # best before latest: a kill in between redoes this epoch and rewrites it, and the
        # earlier best stays until the latest is saved.
        run.store.save_best(entry["step"], params=p.state.params,
                            model_state=p.state.model_state, meta=_meta(run, p, "best"))
    _write_metrics(run, p, status="running")
    if jax.process_index() == 0:
        run.workdir.append_jsonl(run.workdir.metrics_jsonl.name, entry)
    _log(cfg, f"epoch {epoch + 1}/{cfg.epochs} | train loss {train_m['loss']:.4f} "
              f"acc {100 * train_m['accuracy']:.2f}% | val loss {val_m['loss']:.4f} "
              f"acc {100 * val_m['accuracy']:.2f}% | {entry['epoch_time_s']:.1f} s, "
              f"{entry['examples_per_s'] or 0:.0f} ex/s" + (" | best" if improved else ""))


# --------------------------------------------------------------------------- checkpoints


def _meta(run: _Run, p: _Progress, kind: str) -> dict:
    return {
        "format_version": FORMAT_VERSION, "kind": kind, "config": run.config.to_dict(),
        "metadata": run.metadata, "history": p.history, "best": p.best,
    }


def _restore(run: _Run, p: _Progress) -> _Progress:
    """`p` itself for a fresh run; with resume, the latest checkpoint's progress."""
    cfg, store = run.config, run.store
    if not cfg.resume or store.latest_step() is None:
        if cfg.resume:
            _log(cfg, f"resume: no checkpoint in {store.latest_dir}; starting afresh")
        store.drop_best_after(-1)  # orphans of an attempt killed before any 'latest'
        return p
    trees, meta = store.restore_latest(p.trees(), run.dp.replicated)
    state = TrainState(step=trees["loop"]["step"], params=trees["params"],
                       opt_state=trees["opt_state"], model_state=trees["model_state"])
    p = _Progress(state, trees["loop"]["acc"], list(meta["history"]), dict(meta["best"]))
    step = int(jax.device_get(state.step))
    dropped = store.drop_best_after(step)
    spe = int(run.data.steps_per_epoch)
    _log(cfg, f"resumed from {store.latest_dir / str(step)} (step {step}, batch "
              f"{step % spe} of epoch {step // spe + 1})"
              + (f"; dropped unfinished best checkpoints {dropped}" if dropped else ""))
    _warn_changes(run, meta, step, spe)
    return p


def _warn_changes(run: _Run, meta: dict, step: int, spe: int) -> None:
    """Log what a resumed run changes: the loop's settings, the experiment's config (its
    metadata, as JSON stores it; its train section is the loop's settings, and its command
    differs by --resume itself) and the length of a decaying learning-rate schedule."""
    cfg = run.config
    now = cfg.to_dict()
    changed = {k: (v, now.get(k)) for k, v in meta["config"].items()
               if k not in _RESUME_FREE_FIELDS and now.get(k) != v}
    was = flatten_dict(meta.get("metadata") or {}, sep=".")
    now = flatten_dict(json.loads(json.dumps(json_safe(run.metadata))), sep=".")
    changed |= {k: (v, now.get(k)) for k, v in was.items()
                if k.split(".")[0] not in ("train", "command") and now.get(k) != v}
    if changed:
        _log(cfg, "warning: resuming with changed settings: "
             + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    # A decaying schedule is fixed by the run's length, which epochs and max_steps set.
    old = meta["config"]
    steps = total_steps(dataclasses.replace(cfg, epochs=old.get("epochs", cfg.epochs),
                                            max_steps=old.get("max_steps", cfg.max_steps)), spe)
    if cfg.lr_schedule != "constant" and steps != total_steps(cfg, spe):
        _log(cfg, f"warning: the {cfg.lr_schedule} learning-rate schedule now runs over "
                  f"{total_steps(cfg, spe)} steps instead of {steps}, so the run from step "
                  f"{step} on differs from an uninterrupted run of either length")


# --------------------------------------------------------------------------- outputs


def _best_note(run: _Run, p: _Progress) -> str:
    if not p.best:
        return "no epoch had finished, so there is no best checkpoint yet"
    vl = p.best.get("val_loss")
    vl = "n/a" if vl is None else f"{vl:.4f}"
    return (f"the best checkpoint so far (epoch {p.best['epoch']}, val_loss {vl}) is kept in "
            f"{run.store.best_dir}")


def _fail(run: _Run, p: _Progress, msg: str):
    _write_metrics(run, p, status="failed", error=msg)
    raise TrainingError(msg)


def _write_metrics(run: _Run, p: _Progress, status: str, error: str | None = None,
                   test: dict | None = None, timings: dict | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """metrics.json: status, config, history, best, test metrics, counts, devices, timings
    and `extra` (the caller's report) on top; once the run has ended (status "failed" or
    "completed"), curves.png too."""
    test = test or {}
    metrics = {
        "status": status, "error": error, "config": run.config.to_dict(),
        "history": p.history, "best": p.best,
        "val_loss": p.best.get("val_loss"), "val_accuracy": p.best.get("val_accuracy"),
        "test_loss": test.get("loss"), "test_accuracy": test.get("accuracy"),
        "test_examples": test.get("examples"),
        "steps": int(jax.device_get(p.state.step)),
        "params": dict(run.counts),
        "devices": dict(run.devices),
        "timings": timings or {},
        **(extra or {}),
    }
    if jax.process_index() == 0:
        run.workdir.write_json(run.workdir.metrics.name, metrics)
        if status != "running" and run.config.plot and p.history:
            plot_curves(p.history, run.workdir.curves)
    return metrics


def _finish(run: _Run, p: _Progress, report: Callable | None, t_start: float) -> TrainResult:
    """Test evaluation of the best parameters, the final metrics.json and curves."""
    cfg, store = run.config, run.store
    params, model_state = p.state.params, p.state.model_state
    if store.best.latest_step() is not None:
        template = {"params": params, "model_state": model_state}
        params, model_state, _ = store.restore_best(template, run.dp.replicated)
    test_m, t_test = None, 0.0
    if cfg.test_split is not None:
        t0 = time.perf_counter()
        test_m = _eval_split(run, params, model_state, cfg.test_split, cfg.test_split)
        t_test = time.perf_counter() - t0
        which = (f"best epoch {p.best['epoch']}" if p.best else
                 "the last parameters: no epoch ended")
        _log(cfg, f"{cfg.test_split} ({which}): loss "
                  f"{test_m['loss']:.4f} acc {100 * test_m['accuracy']:.2f}% "
                  f"({test_m['examples']} examples)")
    h = p.history
    timings = {
        "total_s": time.perf_counter() - t_start,
        "train_s": sum(e["train_time_s"] for e in h), "val_s": sum(e["val_time_s"] for e in h),
        "test_s": t_test,
        "mean_epoch_s": sum(e["epoch_time_s"] for e in h) / len(h) if h else None,
    }
    extra = report(params) if report is not None else None
    metrics = _write_metrics(run, p, "completed", test=test_m, timings=timings, extra=extra)
    return TrainResult(
        params=params, model_state=model_state, history=h, best=p.best,
        val_loss=p.best.get("val_loss"), val_accuracy=p.best.get("val_accuracy"),
        test_loss=None if test_m is None else test_m["loss"],
        test_accuracy=None if test_m is None else test_m["accuracy"],
        metrics=metrics, workdir=run.workdir.root, final_state=p.state,
    )


# --------------------------------------------------------------------------- evaluation


def _eval_split(run: _Run, params, model_state, split: str, desc: str) -> dict:
    return run_eval(run.eval_fn, params, model_state, run.data.eval_batches(split), run.dp,
                     run.config.input_keys, desc=desc, total=run.data.eval_steps(split),
                     bars=_bars_on(run.config))


def _bars_on(config: TrainConfig) -> bool:
    return config.progress and jax.process_index() == 0


def _log(config: TrainConfig, msg: str) -> None:
    if config.verbose and jax.process_index() == 0:
        print(msg, flush=True)
