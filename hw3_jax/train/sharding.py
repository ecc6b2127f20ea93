"""Data-parallel placement over every device (one host or many).

One `Mesh` with a single axis "data" spans the devices; a batch is split along its first
axis over that axis (`P("data")`) and parameters / optimizer state are replicated (`P()`).
`jax.jit` then inserts the gradient all-reduce itself (GSPMD), so the training step is
written as if for one device. The training loop and the benchmarks use the same helpers,
so what is measured is what is trained.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# Environment variables whose presence means "launched as one process of several".
_MULTIPROCESS_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "COORDINATOR_ADDRESS",
)


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "1"))
    except ValueError:
        return 1


def launched_multiprocess() -> bool:
    """Whether the environment says this process is one of several (multi-host launch)."""
    if any(os.environ.get(k) for k in _MULTIPROCESS_ENV):
        return True
    if _int_env("JAX_NUM_PROCESSES") > 1 or _int_env("SLURM_NTASKS") > 1:
        return True
    if _int_env("OMPI_COMM_WORLD_SIZE") > 1:
        return True
    # Cloud TPU pod slice: one worker hostname per host.
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h.strip()]) > 1


def initialize_distributed(force: bool | None = None) -> bool:
    """Call `jax.distributed.initialize()` when launched as several processes.

    Must run before anything touches a JAX device (call it first in `main`). With
    `force=None` the launch is detected from the environment (coordinator address,
    SLURM, Open MPI, a multi-host TPU slice); `True`/`False` override. Returns whether
    JAX now runs multi-process. Idempotent.
    """
    want = launched_multiprocess() if force is None else force
    if not want:
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize()
    return jax.process_count() > 1


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


def data_parallel(
    devices: Sequence[jax.Device] | None = None, num_devices: int | None = None
) -> DataParallel:
    """The data-parallel mesh over `devices` (default: all, or the first `num_devices`)."""
    devs = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
        if not 1 <= num_devices <= len(devs):
            raise ValueError(f"num_devices={num_devices}, but {len(devs)} devices available")
        devs = devs[:num_devices]
    mesh = Mesh(np.array(devs), (DATA_AXIS,))
    return DataParallel(mesh, NamedSharding(mesh, P(DATA_AXIS)), NamedSharding(mesh, P()))


def replicate(tree: Any, dp: DataParallel, copy: bool = False) -> Any:
    """Place every leaf of `tree` on all devices of the mesh (identical copies).

    `copy=True` guarantees fresh buffers, for trees that a jit step will donate (else
    an array already in place is returned as is, and donating it would delete the
    caller's array).
    """
    return jax.device_put(tree, dp.replicated, may_alias=False if copy else None)


def pad_batch(batch: Mapping[str, np.ndarray], multiple: int, weight_key: str = "weight"):
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
    if weight_key not in batch:
        batch[weight_key] = np.ones((size,), np.float32)
    pad = (-size) % multiple
    if pad == 0:
        return batch
    out = {}
    for k, v in batch.items():
        fill = np.zeros_like(v[-1:]) if k == weight_key else v[-1:]
        out[k] = np.concatenate([v, np.repeat(fill, pad, axis=0)], axis=0)
    return out


def shard_batch(batch: Mapping[str, np.ndarray], dp: DataParallel) -> dict[str, jax.Array]:
    """Host batch (NumPy, this process's share) -> global arrays split over "data".

    On one process this is `device_put` with the data sharding; on several, each
    process passes its own rows and `make_array_from_process_local_data` assembles the
    global batch (the global batch size is the per-process size times the process count).
    """
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), dp.data)
    return {
        k: jax.make_array_from_process_local_data(dp.data, np.asarray(v))
        for k, v in batch.items()
    }


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
    it = iter(batches)
    try:
        nxt = prepare_batch(next(it), dp, input_keys)
    except StopIteration:
        return
    for b in it:
        cur, nxt = nxt, prepare_batch(b, dp, input_keys)
        yield cur
    yield nxt
