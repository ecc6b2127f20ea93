"""Checkpoints of the training loop (orbax), the loop's errors, and inference loading.

Layout under `WORKDIR/checkpoints/`:
  best/<step>/    params (+ model_state) and meta.json of the epoch with the lowest
                  validation loss so far (the notebook's "keep the best valid loss");
                  one kept. A new one is written only when the validation loss improves.
  latest/<step>/  params, opt_state, (model_state,), "loop" (the step and the running
                  sums of the current epoch's training metrics) and meta (history, best
                  so far, config, metadata): what `resume` continues from; saved every
                  `checkpoint_every_steps`, at each epoch end and at the last step;
                  `keep_latest` kept.
`<step>` is the global training step. Saves are synchronous: a step directory appears
only when it is complete (orbax writes to a temporary name and renames), so a process
killed mid-save leaves the previous checkpoints intact.

With several processes each one opens the same managers and calls every save, restore and
delete in the same order, as orbax's barriers require; process 0 (its primary host) writes.

Every failure to read a checkpoint becomes one `CheckpointError` naming the step
directory; nothing on disk is deleted because of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from hw3_jax.data.errors import first_line
from hw3_jax.models import signature_diff, tree_signature
from hw3_jax.train.sharding import sync_processes
from hw3_jax.train.workdir import TrainingError, Workdir, WorkdirError, json_safe

__all__ = ["CheckpointError", "CheckpointStore", "InferenceCheckpoint", "TrainingError",
           "WorkdirError", "claim_workdir", "load_best", "open_store"]

FORMAT_VERSION = 1
_LOCKS: dict[Path, Any] = {}  # workdir -> the open lock file this process holds on it


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, or belongs to a different model configuration."""


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_absl():
    """orbax warns (absl) about read-only managers, which is what inference wants."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _manager(directory: Path, keep: int | None, read_only: bool) -> ocp.CheckpointManager:
    if read_only and not directory.is_dir():
        raise CheckpointError(f"no checkpoint in {directory} (train with this --workdir first)")
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        # Synchronous: the loop donates its state buffers to the next step, so the
        # arrays must be on disk before the step runs; also keeps kill-safety simple.
        enable_async_checkpointing=False,
        cleanup_tmp_directories=not read_only,  # half-written saves of a killed run
        create=not read_only,
        read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        # Every process calls save; process 0 writes (the arrays are replicated).
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0),
    )
    try:
        with _quiet_absl():
            return ocp.CheckpointManager(directory, options=options)
    except Exception as e:  # noqa: BLE001 - any failure here is one clear error
        raise CheckpointError(
            f"cannot open the checkpoint directory {directory}: {first_line(e)}"
        ) from e


# Why a checkpoint's item does not fit the model, by item.
_MISMATCH = {
    "params": "a different model configuration",
    "opt_state": "a different optimizer or set of frozen parameters",
    "model_state": "a different model configuration (model state)",
}


# tensorstore, which writes orbax's arrays, reports a failed file write as a ValueError whose
# message starts with the status and carries the system's errno.
_STORAGE_STATUS = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "FAILED_PRECONDITION",
                   "UNAVAILABLE", "DATA_LOSS")
_ERRNO = re.compile(r"\[os_error_code='?(\d+)")


def _write_failure(e: Exception) -> str | None:
    """Why a checkpoint write failed, in one line; None when `e` is not a storage failure."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    msg = str(e)
    if not msg.startswith(_STORAGE_STATUS):
        return None
    found = _ERRNO.search(msg)
    return os.strerror(int(found.group(1))) if found else first_line(msg)[:200]


# --------------------------------------------------------------------------- store


class CheckpointStore:
    """The 'best' and 'latest' checkpoint managers of one workdir, each opened on first use
    (inference needs only 'best'). `keep_latest`: how many 'latest' checkpoints a save
    keeps (the run's `TrainConfig.keep_latest`); None keeps every one (a reader's store)."""

    def __init__(self, workdir: str | os.PathLike, keep_latest: int | None = None,
                 read_only: bool = False):
        wd = Workdir(workdir)
        self.root = wd.root
        self.best_dir = wd.checkpoints / "best"
        self.latest_dir = wd.checkpoints / "latest"
        self.read_only = read_only
        self.keep_latest = keep_latest

    @functools.cached_property
    def best(self) -> ocp.CheckpointManager:
        # Every best is kept until the loop drops the earlier ones (`drop_best_before`), once
        # the epoch's latest checkpoint confirms the new one: a resume from before it drops it.
        return _manager(self.best_dir, None, self.read_only)

    @functools.cached_property
    def latest(self) -> ocp.CheckpointManager:
        return _manager(self.latest_dir, self.keep_latest, self.read_only)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    # -- saving
    def save_latest(self, step: int, *, meta: dict, **trees: Any) -> None:
        """trees: params, opt_state, model_state and loop (the step and the running sums)."""
        self._save(self.latest, step, meta, trees)

    def save_best(self, step: int, *, meta: dict, **trees: Any) -> None:
        """trees: params and model_state."""
        self._save(self.best, step, meta, trees)

    def _save(self, mgr: ocp.CheckpointManager, step: int, meta: dict, trees: dict) -> None:
        # An empty model_state is not saved (orbax refuses empty items).
        items = {n: ocp.args.StandardSave(t) for n, t in trees.items() if jax.tree.leaves(t)}
        items["meta"] = ocp.args.JsonSave(json_safe(meta))
        # The same step can exist from an attempt killed after this save and before the
        # next 'latest' one: it is rewritten (with the same content, the run being
        # deterministic).
        if step in mgr.all_steps():
            mgr.delete(step)
        try:
            mgr.save(step, args=ocp.args.Composite(**items), force=True)
            mgr.wait_until_finished()
        except (OSError, ValueError) as e:
            reason = _write_failure(e)
            if reason is None:
                raise
            earlier = any(s != step for m in (self.latest, self.best) for s in m.all_steps())
            kept = "the checkpoints before it are kept: " if earlier else ""
            raise WorkdirError(f"cannot write checkpoint {mgr.directory / str(step)}: {reason}; "
                               f"{kept}free space or fix the folder, then continue with "
                               "--resume") from e

    def drop_best_after(self, step: int) -> list[int]:
        """Delete best checkpoints newer than `step` (orphans of a killed attempt)."""
        dropped = [s for s in self.best.all_steps() if s > step]
        for s in dropped:
            self.best.delete(s)
        return dropped

    def drop_best_before(self, step: int) -> None:
        """Delete best checkpoints older than `step` (bests that a newer one replaced)."""
        for s in self.best.all_steps():
            if s < step:
                self.best.delete(s)

    # -- restoring
    def restore_latest(self, template: Mapping[str, Any], sharding: Any) -> tuple[dict, dict]:
        """The newest 'latest' checkpoint in `template`'s structure: (trees, meta).

        `template`: {"params", "opt_state", "loop", "model_state"} (concrete or abstract
        trees). The shapes are compared with the saved ones (orbax's array metadata) first,
        so a checkpoint of another model configuration is reported as such rather than as
        an orbax error."""
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint to resume from in {self.latest_dir}")
        meta = self._read_meta(self.latest, step)
        self._check_signature(self.latest, step, template, ("params", "opt_state",
                                                              "model_state"))
        return self._restore(self.latest, step, template, sharding), meta

    def restore_best(self, template: Mapping[str, Any] | None = None, sharding: Any = None
                     ) -> tuple[Any, Any, dict]:
        """(params, model_state, meta) of the best checkpoint, restored into `template`'s
        {"params", "model_state"} with `sharding`.

        Without a template the arrays come back in the saved structure on this process's
        first device (for inference, where no model has been initialised yet: a checkpoint
        written on another device count or topology restores anywhere)."""
        step = self.best.latest_step()
        if step is None:
            started = self.latest_dir.is_dir() and self.latest_step() is not None
            raise CheckpointError(f"no checkpoint in {self.best_dir} (" + (
                "its run stopped before its first epoch ended: continue it with --resume, "
                "with a larger --max-steps or none"
                if started else "train with this --workdir first") + ")")
        meta = self._read_meta(self.best, step)
        names = ("params", "model_state")
        if template is None:
            template = {n: self._saved_tree(self.best, step, n) for n in names}
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        else:
            self._check_signature(self.best, step, template, names)
        trees = self._restore(self.best, step, template, sharding)
        return trees["params"], trees["model_state"], meta

    def _read_meta(self, mgr: ocp.CheckpointManager, step: int) -> dict:
        try:
            meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if not isinstance(meta, dict) or "format_version" not in meta:
                raise ValueError("meta.json lacks the training-loop fields")
            return meta
        except Exception as e:  # noqa: BLE001
            raise self._error(mgr, step, e) from e

    def _restore(self, mgr: ocp.CheckpointManager, step: int, templates: Mapping[str, Any],
                 sharding: Any) -> dict:
        """The items `templates` names, restored into their structure with `sharding`; an
        empty template is an item not saved (an empty model_state), returned as {}."""

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        args = {n: ocp.args.StandardRestore(jax.tree.map(abstract, t))
                for n, t in templates.items() if jax.tree.leaves(t)}
        try:
            out = mgr.restore(step, args=ocp.args.Composite(**args))
            return {n: out[n] if n in args else {} for n in templates}
        except Exception as e:  # noqa: BLE001
            raise self._error(mgr, step, e) from e

    def _saved_tree(self, mgr: ocp.CheckpointManager, step: int, name: str) -> Any:
        """Shapes and dtypes of item `name` as saved at `step` (orbax's array metadata);
        {} for a model_state not saved (an empty one is not). Any other item missing is a
        damaged checkpoint."""
        path = mgr.directory / str(step) / name
        if not path.exists():
            if name != "model_state":
                raise self._error(mgr, step, FileNotFoundError(f"{name} is missing: {path}"))
            return {}
        # The handler, not a Checkpointer: that one logs an unreadable _METADATA and returns
        # None, which would compare as a checkpoint of another model.
        handler = ocp.StandardCheckpointHandler()
        try:
            with _quiet_absl(), contextlib.closing(handler):
                return handler.metadata(path)
        except Exception as e:  # noqa: BLE001
            raise self._error(mgr, step, e, f"metadata of {name}: ") from e

    def _check_signature(self, mgr: ocp.CheckpointManager, step: int,
                         template: Mapping[str, Any], names: tuple[str, ...]) -> None:
        for name in names:
            current = template.get(name)
            saved = self._saved_tree(mgr, step, name)
            diffs = signature_diff(tree_signature(saved), tree_signature(current),
                                   ("checkpoint", "model"), limit=4)
            if diffs:
                raise CheckpointError(
                    f"checkpoint {mgr.directory / str(step)} was written for {_MISMATCH[name]}: "
                    + "; ".join(diffs)
                    + ". Use the configuration it was trained with, or another --workdir."
                )

    def _error(self, mgr: ocp.CheckpointManager, step: int, e: Exception, where: str = ""
               ) -> CheckpointError:
        older = [s for s in mgr.all_steps() if s != step]
        hint = (
            f" Older checkpoints in {mgr.directory} (steps {older}) were left untouched; "
            f"move {mgr.directory / str(step)} away to use them."
            if older
            else " Nothing was deleted; train again with --overwrite to replace it."
        )
        msg = first_line(e).split(" See full TensorStore details")[0]  # drop a long repr
        return CheckpointError(
            f"checkpoint {mgr.directory / str(step)} is corrupted or unreadable "
            f"({where}{msg}).{hint}"
        )

    def close(self) -> None:
        for name in ("best", "latest"):
            if name in self.__dict__:  # opened (cached_property)
                # Closing must not hide the error that ended the run.
                with contextlib.suppress(Exception):
                    self.__dict__[name].close()
        if not self.read_only and self.root in _LOCKS:  # the run has ended
            _LOCKS.pop(self.root).close()


def claim_workdir(workdir: Workdir, *, resume: bool, overwrite: bool,
                  also: tuple[Path, ...] = ()) -> None:
    """The one rule for a workdir holding checkpoints of an earlier run: `resume` keeps
    them, `overwrite` deletes them with that run's config, metrics and curves and the files
    `also` names (the caches stay), neither is a TrainingError. Process 0 then holds
    WORKDIR/.lock until the run's store closes (or the process ends): a second run started
    in the workdir meanwhile is a WorkdirError instead of writing over this one's files."""
    claimed = workdir.has_checkpoint() and not resume
    if claimed and not overwrite:
        raise TrainingError(
            f"{workdir.root} already holds checkpoints of a run: pass --resume "
            "(resume=True) to continue it, --overwrite (overwrite=True) to start over, "
            "or use another --workdir")
    if jax.process_index() == 0 and workdir.root not in _LOCKS:  # the workdir is shared
        lock = open(workdir.root / ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _LOCKS[workdir.root] = lock
        except BlockingIOError:
            lock.close()
            raise WorkdirError(f"{workdir.root} is in use by another training run: wait for "
                               "it to end, or use another --workdir") from None
        except OSError:  # a filesystem without locks: nothing to hold
            lock.close()
    if claimed and jax.process_index() == 0:  # the workdir is shared by every process
        shutil.rmtree(workdir.checkpoints)
        for path in (workdir.config, workdir.metrics, workdir.metrics_jsonl, workdir.curves,
                     *also):
            path.unlink(missing_ok=True)
    sync_processes("workdir claimed")  # none may read or open the workdir's files before


def open_store(workdir: Workdir, *, keep_latest: int, resume: bool, overwrite: bool
               ) -> CheckpointStore:
    """The writable store of `workdir`, claimed first (`claim_workdir`)."""
    claim_workdir(workdir, resume=resume, overwrite=overwrite)
    return CheckpointStore(workdir, keep_latest=keep_latest)


@dataclasses.dataclass
class InferenceCheckpoint:
    params: Any
    model_state: Any
    config: dict  # the TrainConfig it was trained with
    metadata: dict  # the `metadata` passed to train() (the experiment's configuration)
    step: int
    val_loss: float | None
    val_accuracy: float | None


def load_best(workdir: str | os.PathLike) -> InferenceCheckpoint:
    """The best checkpoint of `workdir`: parameters, model state and the saved configs.

    The parameters come back in their saved structure (nested dicts of arrays), which is
    what `model.apply({"params": ...})` takes. Raises CheckpointError (one line naming the
    directory) when there is none or it is unreadable."""
    store = CheckpointStore(workdir, read_only=True)
    try:
        params, model_state, meta = store.restore_best()
    finally:
        store.close()
    best = meta.get("best") or {}
    return InferenceCheckpoint(
        params=params,
        model_state=model_state,
        config=meta.get("config", {}),
        metadata=meta.get("metadata", {}),
        step=int(best.get("step", -1)),
        val_loss=best.get("val_loss"),
        val_accuracy=best.get("val_accuracy"),
    )
