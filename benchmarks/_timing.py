"""Shared pieces of the benchmarks: timing (warm-up, repetitions, median), machine facts,
the JSON writer and Markdown tables.

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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


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


def time_interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int = 1,
                     repeats: int = 5) -> dict[str, dict]:
    """Time several callables side by side: each round calls every one once, in turn.

    On a shared machine the load changes over minutes; interleaving exposes each contender
    to the same load, so their ratio is fairer than timing one after the other.
    Returns {name: summarize(times)}."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: summarize(v) for k, v in times.items()}


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


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # NumPy / jax scalars
        return _json_safe(obj.item())
    return obj


def write_json(name: str, obj: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `obj` to OUT_DIR/bench_NAME.json (default results/), atomically."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


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


def fail(msg: str) -> None:
    """One clear line on stderr, exit status 2, no traceback."""
    import sys

    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)
