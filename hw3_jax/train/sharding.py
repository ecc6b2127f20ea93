"""Data-parallel placement over every device (one host or many).

One `Mesh` with a single axis "data" spans the devices; a batch is split along its first
axis over that axis (`P("data")`) and parameters / optimizer state are replicated (`P()`).
`jax.jit` then inserts the gradient all-reduce itself (GSPMD), so the training step is
written as if for one device. The training loop and the benchmarks use the same helpers,
so what is measured is what is trained.

Several processes (JAX's multi-controller runtime, docs/architecture.md) run the same
program after `initialize_distributed`; the mesh spans the devices of all of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hw3_jax.data.errors import first_line
from hw3_jax.train.workdir import TrainingError

DATA_AXIS = "data"

# The environment variables of an explicit launch, by `jax.distributed.initialize` argument.
LAUNCH_ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}

# What the message of a failed cross-process collective or barrier holds (gloo on CPU,
# NCCL on GPU, the coordination service): JAX raises these as plain ValueError /
# RuntimeError, with no type of their own.
_PEER_FAILURE = re.compile(
    r"gloo|nccl|connection (closed|reset|refused)|by peer|heartbeat|coordination service|"
    r"barrier|unavailable|deadline_exceeded", re.IGNORECASE)


class DistributedError(TrainingError):
    """The processes of a multi-process run cannot go on together: one could not join, one
    stopped, or they disagree on what they compute."""


class Launch(NamedTuple):
    """An explicit multi-process launch: `jax.distributed.initialize`'s three arguments."""

    coordinator_address: str  # HOST:PORT where process 0 serves the coordination service
    num_processes: int
    process_id: int  # 0 .. num_processes - 1


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "1"))
    except ValueError:
        return 1


def launched_multiprocess() -> bool:
    """Whether the environment says this process is one of several (multi-host launch)."""
    if any(os.environ.get(k) for k in (LAUNCH_ENV["coordinator_address"], "COORDINATOR_ADDRESS")):
        return True
    if any(_int_env(k) > 1 for k in ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")):
        return True
    # Cloud TPU pod slice: one worker hostname per host.
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h.strip()]) > 1


def _check_address(text: str, label: str) -> str:
    host, colon, port = text.strip().rpartition(":")
    if not (colon and host.strip("[]") and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{label} must be HOST:PORT (e.g. 10.0.0.1:1234, a port 1-65535), "
                         f"got {text!r}")
    return text.strip()


def _check_int(value: str | int, label: str, low: int, high: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ValueError(f"{label} must be a whole number {bound}, got {value!r}")
    return number


def launch_from(coordinator_address: str | None = None, num_processes: str | int | None = None,
                process_id: str | int | None = None, *,
                labels: Mapping[str, str] | None = None) -> Launch | None:
    """The explicit launch the arguments describe, each one not given taken from its
    environment variable (`LAUNCH_ENV`); None when neither gives a coordinator address (and
    no count or id either: then JAX's cluster detection, if any, decides).

    Raises ValueError naming the setting by `labels[argument]` (default: its environment
    variable) for a malformed value, an id outside 0..count-1, or a partial launch."""
    names = {**LAUNCH_ENV, **(labels or {})}
    values = {}
    for k, v in zip(LAUNCH_ENV, (coordinator_address, num_processes, process_id), strict=True):
        if v is None or str(v).strip() == "":  # not given: the environment's, if set
            v = os.environ.get(LAUNCH_ENV[k])
        values[k] = None if v is None or str(v).strip() == "" else v
    if all(v is None for v in values.values()):
        return None
    address, count, index = values.values()
    # Each value given is checked before any missing one is reported.
    if address is not None:
        address = _check_address(str(address), names["coordinator_address"])
    if count is not None:
        count = _check_int(count, names["num_processes"], 1)
    if index is not None:
        index = _check_int(index, names["process_id"], 0, None if count is None else count - 1)
    missing = [names[k] for k, v in values.items() if v is None]
    if missing:
        raise ValueError("a multi-process launch needs all of "
                         f"{', '.join(names.values())}; missing {', '.join(missing)}")
    return Launch(address, count, index)


def initialize_distributed(launch: Launch | None = None, *,
                           heartbeat_timeout_s: int | None = None) -> bool:
    """Join a multi-process run (`jax.distributed.initialize`) when there is one.

    Must run before anything touches a JAX device (call it first in `main`). `launch`: an
    explicit one (`launch_from`); None reads it from the environment (`LAUNCH_ENV`), else
    leaves a cluster launch (SLURM, Open MPI, a multi-host TPU slice: `launched_multiprocess`)
    to JAX's own cluster detection. `heartbeat_timeout_s`: after how long
    without a heartbeat a process counts as dead and JAX ends the others (JAX's default:
    100 s). Returns whether JAX now runs multi-process. Idempotent.

    Raises DistributedError when the coordinator cannot be reached or the processes do not
    all arrive within JAX's initialization timeout (300 s), ValueError for a malformed
    launch in the environment."""
    launch = launch if launch is not None else launch_from()
    if launch is None and not launched_multiprocess():
        return False
    if not jax.distributed.is_initialized():
        # Cross-process collectives of the CPU backend (the only ones a CPU-only run has);
        # set before initialize, and harmless where an accelerator does the collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        kwargs: dict[str, Any] = {} if launch is None else launch._asdict()
        if heartbeat_timeout_s is not None:
            kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s)
        try:
            jax.distributed.initialize(**kwargs)
        except (RuntimeError, ValueError) as e:
            where = "" if launch is None else (
                f" at {launch.coordinator_address} as process {launch.process_id} of "
                f"{launch.num_processes}")
            raise DistributedError(
                f"cannot join the multi-process run{where}: {first_line(e)}. Start every "
                "process with the same coordinator and process count and its own id"
            ) from None
    return jax.process_count() > 1


def is_multiprocess() -> bool:
    """Whether this process is one of several (without touching a device otherwise)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def sync_processes(name: str) -> None:
    """A barrier: return once every process has called it with the same `name` (one
    process: at once). For side effects on the shared workdir that others must see."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def check_same_across_processes(values: Mapping[str, str]) -> None:
    """Raise DistributedError unless every process passes the same `values` (what -> text,
    e.g. the tokenizer's fingerprint): processes that derive their data independently must
    derive the same. One process: nothing to check."""
    if jax.process_count() == 1:
        return
    digests = np.array([zlib.crc32(v.encode()) for v in values.values()], np.uint32)
    table = np.asarray(multihost_utils.process_allgather(digests))  # [processes, len(values)]
    for k, what in enumerate(values):
        if len(set(table[:, k].tolist())) > 1:
            raise DistributedError(
                f"the {jax.process_count()} processes disagree on {what}: each must read "
                "the same data with the same settings (same code, config and files)")


def from_process_zero(tree: Any) -> Any:
    """`tree` (host arrays) as process 0 has it, on every process (one process: as is).
    Starting values computed on each host separately (initialisation, word vectors) could
    differ in the last bits between machines; replicas must start equal."""
    if jax.process_count() == 1:
        return tree
    return multihost_utils.broadcast_one_to_all(jax.device_get(tree))


def peer_failure(e: BaseException) -> BaseException | None:
    """The cross-process collective or barrier that failed in a multi-process run (what
    another process's death looks like from here) behind `e`: `e` itself or an exception
    it was raised from (e.g. a checkpoint error wrapping orbax's barrier); None if none."""
    if not is_multiprocess():
        return None
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, ValueError | RuntimeError) and not isinstance(e, TrainingError)
                and _PEER_FAILURE.search(str(e))):
            return e
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def peer_failures_reported() -> Iterator[None]:
    """Re-raise an error caused by a failed collective with another process (`peer_failure`)
    as one DistributedError line naming this process; everything else passes unchanged."""
    try:
        yield
    except Exception as e:
        cause = peer_failure(e)
        if cause is None:
            raise
        raise DistributedError(
            f"process {jax.process_index()} of {jax.process_count()} stopped: a collective "
            f"with the other processes failed ({first_line(cause)}); another process has "
            "probably died, see its log") from None


def leave_failed_run(code: int) -> None:
    """End this process now with exit status `code` if it is one of several and failed.

    JAX's exit handler would first wait at a shutdown barrier for every other process,
    but those stop only when a collective with this one fails, which happens once it is
    gone: leaving at once lets them fail fast instead of all waiting for the barrier's
    timeout. Does nothing for `code` 0 or a single process."""
    if not code or not is_multiprocess():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class DataParallel(NamedTuple):
    """The mesh and the two shardings a data-parallel program needs."""

    mesh: Mesh
    data: NamedSharding  # batch arrays: first axis split over "data"
    replicated: NamedSharding  # parameters, optimizer state, scalars

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def local_num_devices(self) -> int:
        """Devices of this process in the mesh: the per-host batch must divide by it."""
        return len(self.mesh.local_devices)


def data_parallel(num_devices: int | None = None) -> DataParallel:
    """The data-parallel mesh over every device, or `num_devices`, as many of each process's."""
    devs, count = jax.devices(), jax.process_count()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devs) or num_devices % count:
            where = f" over {count} processes (use a multiple of {count})" if count > 1 else ""
            raise ValueError(f"num_devices={num_devices}, but {len(devs)} devices available"
                             f"{where}")
        # The same number from every process: each feeds its own part of every batch.
        devs = [d for i in range(count)
                for d in jax.local_devices(process_index=i)[:num_devices // count]]
    mesh = Mesh(np.array(devs), (DATA_AXIS,))
    return DataParallel(mesh, NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P()))


def replicate(tree: Any, dp: DataParallel, copy: bool = False) -> Any:
    """Place every leaf of `tree` on all devices of the mesh (identical copies).

    `copy=True` guarantees fresh buffers, for trees that a jit step will donate (else
    an array already in place is returned as is, and donating it would delete the
    caller's array).
    """
    return jax.device_put(tree, dp.replicated, may_alias=False if copy else None)


def pad_batch(batch: Mapping[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Pad the first axis of every array to a multiple of `multiple`.

    Padded rows repeat the last example and get weight 0, so they change no loss, metric
    or gradient (every reduction in the loop is weighted). A batch without a weight entry
    gets weights of one first.
    """
    batch = {k: np.asarray(v) for k, v in batch.items()}
    sizes = {v.shape[0] for v in batch.values()}
    if len(sizes) != 1:
        shapes = {k: v.shape for k, v in batch.items()}
        raise ValueError(f"batch arrays disagree on the batch size: {shapes}")
    (size,) = sizes
    if "weight" not in batch:
        batch["weight"] = np.ones((size,), np.float32)
    pad = (-size) % multiple
    if pad == 0:
        return batch
    return {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1),
                      mode="constant" if k == "weight" else "edge")
            for k, v in batch.items()}


def shard_batch(batch: Mapping[str, np.ndarray], dp: DataParallel) -> dict[str, jax.Array]:
    """Host batch (NumPy, this process's share) -> global arrays split over "data": each
    process passes its own rows (the global batch size is the per-process size times the
    process count); on one process this is `device_put` with the data sharding."""
    return jax.make_array_from_process_local_data(dp.data, dict(batch))


def prepare_batch(batch: Mapping[str, np.ndarray], dp: DataParallel,
                  input_keys: Sequence[str]) -> dict[str, jax.Array]:
    """Host batch -> device batch: the model inputs, "label" and "weight", padded to a
    multiple of this process's device count with weight-0 rows (so any batch size works on
    any mesh), then split over "data". Arrays [B, ...] -> [B + pad, ...]."""
    needed = (*input_keys, "label")
    missing = [k for k in needed if k not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing} (it has {sorted(batch)})")
    sub = {k: batch[k] for k in needed}
    if "weight" in batch:
        sub["weight"] = batch["weight"]
    return shard_batch(pad_batch(sub, dp.local_num_devices), dp)


def device_batches(batches: Iterable[Mapping[str, np.ndarray]], dp: DataParallel,
                   input_keys: Sequence[str]) -> Iterator[dict[str, jax.Array]]:
    """`prepare_batch` over `batches`, one batch ahead: the next transfer starts before the
    current step runs."""
    prepared = (prepare_batch(b, dp, input_keys) for b in batches)
    current = next(prepared, None)
    for following in prepared:  # prepared before `current` is handed out
        yield current
        current = following
    if current is not None:
        yield current
