"""Where a compiled JAX step's time goes: one step under `jax.profiler`, its XLA ops
attributed to model parts (encoder, GRU forward/backward, dropout RNG, head + loss + Adam)
through the source metadata in the compiled HLO."""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time
from typing import Any

import jax

_HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_WEIGHT_GRAD = re.compile(r"f32\[\d+,(\d+),(\d+)\]")


def _hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """{instruction name: (result type, metadata op_name)} of a compiled HLO module."""
    out = {}
    for line in hlo_text.splitlines():
        m = _HLO_LINE.match(line)
        if m:
            meta = _OP_NAME.search(line)
            out[m.group(1)] = (m.group(2), meta.group(1) if meta else "")
    return out


def _category(name: str, calls: int, ops: dict) -> str:
    """Which part of the model an XLA op belongs to, from its source metadata."""
    rtype, meta = ops.get(name, ("", ""))
    if any(k in meta for k in ("threefry", "random_bits", "Dropout", "random_wrap")) \
            or rtype.startswith("u32"):
        return "dropout RNG+masks"
    if "/bert/" in meta:  # a backward op here would mean the freezing leaks gradients
        return "encoder bwd" if "transpose(" in meta else "encoder fwd"
    if "/gru/" in meta or "GRU" in meta:
        if "transpose(" not in meta:
            return "GRU fwd"
        w = _WEIGHT_GRAD.match(rtype)
        if calls > 1 and w and int(w.group(1)) == 3 * int(w.group(2)):
            return "GRU bwd: W_hh grad per step"
        return "GRU bwd: other"
    if name.startswith("while"):
        return "GRU scan loop"
    if not meta:
        return "copies, zeros"
    return "head, loss, Adam"


def profile_step(step: Any) -> dict:
    """One call of `step` (a compiled `benchmarks.steps.JaxStep`) under `jax.profiler`, XLA
    ops aggregated (self time summed over XLA's worker threads) by model part, from the ops'
    source metadata in the compiled HLO, and the 12 longest by name. Ops executed more than
    once per step are inside the GRU's scans (nothing else in the step loops)."""
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        try:
            t0 = time.perf_counter()
            step()
            wall = time.perf_counter() - t0
        finally:
            jax.profiler.stop_trace()
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        if not files:
            return {"error": "no trace written"}
        pd = ProfileData.from_file(files[-1])
    totals, counts = _self_times(pd)
    ops = _hlo_ops(step.hlo_text)
    busy = sum(totals.values())
    parts: collections.Counter = collections.Counter()
    for name, ns in totals.items():
        parts[_category(name, counts[name], ops)] += ns
    in_scans = sum(ns for n, ns in totals.items() if counts[n] > 1 or n.startswith("while"))
    return {
        "wall_s": wall,
        "busy_s_all_threads": busy / 1e9,
        "by_part_s": {k: v / 1e9 for k, v in parts.most_common()},
        "by_part_fraction": {k: v / busy for k, v in parts.most_common()} if busy else {},
        "gru_scan_ops_s": in_scans / 1e9,
        "top_ops": [{"name": n, "self_s": totals[n] / 1e9, "calls": counts[n],
                     "type": ops.get(n, ("", ""))[0], "source": ops.get(n, ("", ""))[1]}
                    for n, _ in totals.most_common(12)],
    }


def _self_times(pd: Any) -> tuple[collections.Counter, collections.Counter]:
    """(self time in ns, calls) per XLA op name in a `jax.profiler.ProfileData`: over each
    device plane's "XLA Ops" line (GPU, TPU), or on a CPU over the host plane's XLA worker
    threads."""
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    device = [p for p in pd.planes if p.name.startswith("/device:")]
    for plane in device or [p for p in pd.planes if p.name == "/host:CPU"]:
        for line in plane.lines:
            if not (line.name == "XLA Ops" if device else line.name.startswith("tf_XLA")):
                continue
            evs = sorted(line.events, key=lambda e: (e.start_ns, -e.duration_ns))
            stack: list = []  # (end_ns, name) of the open events, for self time
            for e in evs:
                if e.name.startswith(("ThreadpoolListener", "ThunkExecutor", "end: ",
                                      "SlinkyThreadPool")):
                    continue
                while stack and stack[-1][0] <= e.start_ns:
                    stack.pop()
                if stack:  # the child's time is not its parent's self time
                    totals[stack[-1][1]] -= e.duration_ns
                totals[e.name] += e.duration_ns
                counts[e.name] += 1
                stack.append((e.start_ns + e.duration_ns, e.name))
    return totals, counts
