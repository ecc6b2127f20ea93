"""Shared pieces of the benchmarks: timing (warm-up, repetitions, median), ahead-of-time
compilation, a measurement in a fresh process, machine facts, the JSON report
and Markdown tables (their command line: `benchmarks.inputs`).

Every benchmark times a callable that returns only when its work is done (a jax call made
so by `blocking`), so the timings are wall-clock seconds of finished work.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]  # where `python -m` finds these packages
# Relative to the current folder, as the experiments' results and configs/sentiment.py's
# shared paths: the checkout's root when run from there, never an installed package's folder.
RESULTS = Path("results")
SHARED_DATA = Path("../shared/data")  # ../shared/data/README.md lists what it holds
SHARED_ARCHIVE = SHARED_DATA / "aclImdb_v1.tar.gz"
SHARED_VOCAB = SHARED_DATA / "bert-base-uncased" / "vocab.txt"
BF16_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")


def shared_file(path: Path) -> str | None:
    """`path` (one of the SHARED_* files) as a string if it is there, else None: a default
    input that a machine without the shared data folder does without."""
    return str(path) if path.is_file() else None


def blocking(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A zero-argument call of `fn(*args)` that returns once its jax work is done."""
    import jax  # here: the PyTorch-only processes that import this module load no jax

    return lambda: jax.block_until_ready(fn(*args))


def time_calls(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> dict:
    """Call `fn` `warmup` times untimed, then `repeats` times timed.

    Returns {"median_s", "min_s", "max_s", "times_s"} (seconds per call)."""
    return time_interleaved({"fn": fn}, warmup=warmup, repeats=repeats)["fn"]


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


def compile_timed(fn: Any, *args: Any) -> tuple[Any, dict]:
    """`fn` (a jitted function) compiled ahead of time for `args`: (the executable,
    {"compile_s"} with XLA's cost analysis, "xla_flops" and "xla_bytes_accessed")."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    info = {"compile_s": time.perf_counter() - t0}
    cost = compiled.cost_analysis()
    if cost:
        info["xla_flops"] = float(cost.get("flops", 0.0))
        info["xla_bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
    return compiled, info


def _proc_field(file: str, field: str) -> str | None:
    """The first value of `field` in /proc/`file` (cpuinfo, meminfo); None where there is
    none (or no file)."""
    try:
        for line in Path("/proc", file).read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_bf16_flags() -> list[str]:
    """Which of BF16_CPU_FLAGS the CPU has (/proc/cpuinfo)."""
    flags = (_proc_field("cpuinfo", "flags") or "").split()
    return [f for f in BF16_CPU_FLAGS if f in flags]


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC ...", "Intel(R) Xeon(R) Processor")."""
    return _proc_field("cpuinfo", "model name") or platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the numbers were measured on (CPU, its bfloat16 flags, cores, load, library
    versions, and the device in words: `device_name()`)."""
    import jax

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_bf16": cpu_bf16_flags(),
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
    info["jax"] = jax.__version__
    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["device"] = device_name()
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
    kb = _proc_field("meminfo", "MemAvailable:")  # "123456 kB"
    return None if kb is None else int(kb.split()[0]) * 1024


def device_name() -> str:
    """The first jax device in words, naming the CPU model on CPU (and AMX, which the same
    model name may or may not have): "CPU (AMD EPYC, 2 cores)", "CPU (Intel(R) Xeon(R)
    Processor with AMX-BF16, 2 cores)", "NVIDIA H100 80GB HBM3 (GPU)"."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        amx = " with AMX-BF16" if "amx_bf16" in cpu_bf16_flags() else ""
        return f"CPU ({cpu_model()}{amx}, {os.cpu_count()} cores)"
    return f"{dev.device_kind} ({dev.platform.upper()})"


def report(result: dict, out_dir: str | os.PathLike | None = None,
           notes: Sequence[str] = ()) -> Path:
    """Write `result` to OUT_DIR/bench_NAME.json (default results/; NAME is its "benchmark"),
    atomically, as strict JSON (NaN/inf -> null); print its Markdown tables (the fields
    ending in "_markdown", in order), then `notes` (lines for the reader, not stored) and
    where it went."""
    path = Workdir(out_dir if out_dir is not None else RESULTS).write_json(
        f"bench_{result['benchmark']}.json", result)
    print("\n\n".join(v for k, v in result.items() if k.endswith("_markdown")))
    for line in notes:
        print(line)
    print(f"wrote {path}")
    return path


def bf16_note(machine: Mapping[str, Any]) -> str:
    """The CPU of a benchmark's `machine` facts and its bfloat16 flags ("cpu_bf16"): without
    them, bfloat16 only converts."""
    return (f"CPU: {machine['cpu']}, {machine['cores']} cores; bfloat16 flags: "
            f"{', '.join(machine['cpu_bf16']) or 'none'}")


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


def in_fresh_process(argv: Sequence[str], env: Mapping[str, str | None]) -> dict:
    """`python ARGV` in a new process, run from the repository root with the environment
    changed by `env` (a None value unsets the variable), and the JSON object its last line
    of stdout holds. For settings read once when a library loads (OpenMP's OMP_WAIT_POLICY,
    XLA_FLAGS), and to keep one framework's threads out of another's timings.
    Raises RuntimeError with the last line of the process's stderr when it fails, or when it
    prints no JSON object."""
    full = {k: v for k, v in os.environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    proc = subprocess.run([sys.executable, *argv], env=full, cwd=ROOT, capture_output=True,
                          text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0 or not last.startswith("{"):
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no "
                                                    "output"])[-1]
        raise RuntimeError(why)
    return json.loads(last)
