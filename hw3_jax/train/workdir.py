"""Every path of a training run's directory, and the only writer of its JSON files.

A workdir holds:
  config.json           the experiment's full configuration, written once at the start
  tokenizer.json        the tokenizer the model was trained with (scratch or pretrained)
  tokenizer_source.json what a scratch tokenizer was trained on
  metrics.json          the run's metrics, rewritten atomically at each evaluation
  metrics.jsonl         one JSON line per evaluation, appended
  curves.png            loss / accuracy per epoch
  checkpoints/best/<step>/, checkpoints/latest/<step>/   orbax step folders
  cache/                token and encoder-output caches (unless $HW3_JAX_CACHE is set)
  encoder-<digest>.safetensors   a frozen encoder's params (encoder-cache runs)
  .lock                 locked (flock) while a run trains here: a second one is refused
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class TrainingError(RuntimeError):
    """A training run cannot go on (non-finite loss, bad workdir, bad checkpoint)."""


class WorkdirError(TrainingError):
    """The workdir cannot be written, or a disk lacks the room for what a run writes."""


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_free_space(directory: Path, required_bytes: int, what: str, advice: str) -> None:
    """WorkdirError "DIRECTORY has ... free, but WHAT need about ...: ADVICE" when the disk
    of `directory` (which exists) has less than `required_bytes` free."""
    free = shutil.disk_usage(directory).free
    if free < required_bytes:
        raise WorkdirError(f"{directory} has {_size(free)} free, but {what} need about "
                           f"{_size(required_bytes)}: {advice}")


def json_safe(obj: Any) -> Any:
    """`obj` as strict JSON takes it: NaN/inf -> None, NumPy/JAX scalars -> Python ones,
    tuples -> lists, paths -> strings, keys -> strings."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def temp_path(path: str | os.PathLike, pid: int) -> Path:
    """`.NAME.PID.tmp` next to `path`: where process `pid` writes `path` (`atomic_path`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{pid}.tmp")


def temp_files(path: str | os.PathLike) -> Iterator[tuple[Path, int]]:
    """(file, pid) of every `temp_path` of `path` that exists, whoever wrote it."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            pid = int(tmp.name[len(path.name) + 2:-len(".tmp")])
        except ValueError:  # not one of ours
            continue
        yield tmp, pid


def process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this machine (a temporary file's writer that died)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # a live process of another user
        pass
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` (`temp_path`) to write to; when the block
    ends without an error, rename it onto `path` with `os.replace`, else remove it. A reader
    never sees a half-written file under the final name. A killed run leaves only the
    temporary file, whose name carries the pid of the process that wrote it: the next write
    of `path` removes it once that process is gone. (A writer on another machine of a shared
    folder looks gone; its rename then fails. Of the files every process of a run writes,
    only the token cache's: that process warns and goes on, the cache written by another.)"""
    path = Path(path)
    for old, pid in temp_files(path):
        if process_gone(pid):
            old.unlink(missing_ok=True)
    tmp = temp_path(path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _path(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"WORKDIR/{name}")


class Workdir:
    """One run's directory. `Workdir(path)` creates nothing; `check` creates it.

    Accepted wherever a path is (`os.fspath(workdir)` is its absolute path)."""

    def __init__(self, path: str | os.PathLike):
        if not os.fspath(path):  # e.g. "$WORKDIR" unset: never the current folder unasked
            raise WorkdirError("the folder given is an empty string: name the folder to use")
        self.root = Path(os.fspath(path)).expanduser().absolute()

    def __fspath__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"Workdir({str(self.root)!r})"

    # ---- the paths
    config = _path("config.json")
    tokenizer = _path("tokenizer.json")
    tokenizer_source = _path("tokenizer_source.json")
    metrics = _path("metrics.json")
    metrics_jsonl = _path("metrics.jsonl")
    curves = _path("curves.png")
    checkpoints = _path("checkpoints")

    @property
    def cache(self) -> Path:
        """Where the token and encoder-output caches go: $HW3_JAX_CACHE when set (caches
        shared by runs, or on a larger disk), else WORKDIR/cache."""
        env = os.environ.get("HW3_JAX_CACHE")
        return Path(env).expanduser() if env else self.root / "cache"

    def encoder_params(self, name: str) -> Path:
        """A frozen encoder's params file, by the name saved in the run's metadata."""
        return self.root / name

    # ---- checks
    def check(self, required_bytes: int = 0, flag: str = "--workdir") -> Path:
        """Fail fast, before any training, if the directory cannot hold the run.

        Creates it, writes and removes a probe file (the only reliable test of
        writability: permissions, read-only mounts, quotas), then compares the free space
        with `required_bytes`. Raises `WorkdirError` naming the path and the fix (another
        `flag`, the option that chose the directory)."""
        probe = self.root / f".write_probe_{uuid.uuid4().hex}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"0" * 4096)
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            with contextlib.suppress(OSError):  # a probe the full disk cut short
                probe.unlink(missing_ok=True)
            why = "no space left on the device" if e.errno == errno.ENOSPC else (
                e.strerror or str(e))
            raise WorkdirError(
                f"{self.root} is not writable ({why}): choose another {flag}"
            ) from None
        check_free_space(self.root, required_bytes, "the checkpoints of this run",
                         f"free some space or choose another {flag}")
        return self.root

    def has_checkpoint(self, kind: str | None = None) -> bool:
        """Whether checkpoints/KIND ("best", "latest"; None: either) holds a finished orbax
        step.

        Read with orbax's step-folder probe, not a CheckpointManager: a writable manager
        starts a cleanup thread that close() does not wait for, and a process exiting on an
        error right after would print that thread's traceback."""
        from orbax.checkpoint import utils as ocp_utils

        kinds = ("best", "latest") if kind is None else (kind,)
        return any(ocp_utils.checkpoint_steps(self.checkpoints / k) for k in kinds)

    # ---- JSON files
    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    def write_json(self, name: str, obj: Any) -> Path:
        """Write WORKDIR/NAME as strict JSON through `atomic_path`, so a reader never sees
        a half-written file."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
        return path

    def write_jsonl(self, name: str, rows: Any) -> None:
        """Write WORKDIR/NAME as one JSON line per row, atomically (as `write_json`)."""
        with atomic_path(self.root / name) as tmp:
            tmp.write_text("".join(json.dumps(json_safe(r), allow_nan=False) + "\n"
                                   for r in rows))

    def append_jsonl(self, name: str, obj: Any) -> None:
        """Append `obj` as one JSON line to WORKDIR/NAME."""
        with open(self.root / name, "a") as f:
            f.write(json.dumps(json_safe(obj), allow_nan=False) + "\n")
