"""Shared pieces of the benchmarks: timing (warm-up, repetitions, median), a measurement in
a fresh process, machine facts, the JSON writer and Markdown tables.

Every benchmark times a callable that returns only when its work is done (callers wrap
jax calls in `jax.block_until_ready`), so the timings are wall-clock seconds of finished work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hw3_jax.train.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"  # ../shared/data/README.md lists what it holds
SHARED_ARCHIVE = SHARED_DATA / "aclImdb_v1.tar.gz"
SHARED_VOCAB = SHARED_DATA / "bert-base-uncased" / "vocab.txt"


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> dict:
    """Call `fn` `warmup` times untimed, then `repeats` times timed.

    Returns {"median_s", "min_s", "max_s", "times_s"} (seconds per call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_interleaved(fns: dict[Any, Callable[[], Any]], *, warmup: int = 1,
                     repeats: int = 5, rotate: bool = False) -> dict[Any, dict]:
    """Time several callables side by side: each round calls every one once, in turn.

    On a shared machine the load changes over minutes; interleaving exposes each contender
    to the same load, so their ratio is fairer than timing one after the other. `rotate`
    starts round r at the r-th callable, so none always runs first (or right after another).
    Returns {name: summarize(times)}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        k = r % len(names) if rotate else 0
        for name in names[k:] + names[:k]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: summarize(v) for k, v in times.items()}


def time_budgeted(fn: Callable[[], Any], *, repeats: int, budget_s: float) -> dict:
    """One timed warm-up call, then up to `repeats` timed calls, fewer (down to 1) when
    `repeats` calls of the warm-up's duration would not fit in `budget_s` seconds.

    Returns summarize(times) and "warmup_s"."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    n = max(1, min(repeats, int(budget_s // max(warm, 1e-9))))
    return {**time_calls(fn, warmup=0, repeats=n), "warmup_s": warm}


def summarize(times: Sequence[float]) -> dict:
    times = [float(t) for t in times]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times}


def machine_info() -> dict:
    """What the numbers were measured on (CPU, cores, load, library versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    return info


def benchmark_command(name: str, quick: bool) -> str:
    """The command line of benchmark `name`, in its --quick form or not."""
    return f"python -m benchmarks.{name}" + (" --quick" if quick else "")


def benchmark_header(name: str, quick: bool, **machine_extra: Any) -> dict:
    """The fields every benchmark's JSON opens with: its name, the command that gave it,
    whether it was the --quick form, and `machine_info()` (plus `machine_extra`)."""
    return {"benchmark": name, "command": benchmark_command(name, quick), "quick": quick,
            "machine": {**machine_info(), **machine_extra}}


def mem_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_name() -> str:
    """The first jax device in words: "CPU (2 cores)", "NVIDIA H100 80GB HBM3 (GPU)"."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    return f"{dev.device_kind} ({dev.platform.upper()})"


def write_json(name: str, obj: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `obj` to OUT_DIR/bench_NAME.json (default results/), atomically, as strict
    JSON (NaN/inf -> null)."""
    return Workdir(out_dir if out_dir is not None else RESULTS).write_json(
        f"bench_{name}.json", obj)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; floats get 3 significant digits (>= 100: no decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if not math.isfinite(v):
                return "-"
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --quick, --out-dir, --repeats, --warmup."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repetitions: a smoke run, not a measurement")
    p.add_argument("--out-dir", default=None,
                   help=f"where bench_NAME.json goes (default {RESULTS})")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    return p


def in_fresh_process(argv: Sequence[str], env: Mapping[str, str | None]) -> dict:
    """`python ARGV` in a new process, run from the repository root with the environment
    changed by `env` (a None value unsets the variable), and the JSON object its last line
    of stdout holds. For settings read once when a library loads (OpenMP's OMP_WAIT_POLICY,
    XLA_FLAGS), and to keep one framework's threads out of another's timings.
    Raises RuntimeError with the last line of the process's stderr when it fails."""
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    proc = subprocess.run([sys.executable, *argv], env=full, cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["(no output)"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fail(msg: str) -> None:
    """One clear line on stderr, exit status 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)
