"""Q3 (linear-time attention): templates/q3.md filled from results/attention_scaling.json,
whose records hold every method, mode and length, measured or skipped."""

from __future__ import annotations

import math
import pathlib
from typing import Any

from experiments.attention_scaling_analysis import LINEAR, find_record, growth_lengths, skip_cause
from experiments.report.text import and_list, read_json, render, row, tex_int

METHODS = {"softmax": "exact softmax", "performer": "Performer", "local": "local"}


def _ms(s: float) -> str:
    """Seconds as milliseconds for the table: 0.0123 -> '12.3', 0.456 -> '456'."""
    ms = 1e3 * s
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _mib(record: dict[str, Any]) -> float:
    return record["temp_bytes"] / 2**20


def _ok(record: dict) -> bool:
    return record["status"] == "ok"


def q3_table(r: dict[str, Any]) -> str:
    """Forward / forward+backward ms and forward temporary MiB per method and length."""
    recs = r["records"]
    rows = [row(["$T$", *(f"{name} ms" for name in METHODS.values()),
                 *(f"{name} MiB" for name in METHODS.values())]),
            "| ---: " + "| ---: " * 6 + "|"]
    for t in r["config"]["lengths"]:
        cells = []
        for m in METHODS:
            f, b = find_record(recs, m, "fwd", t), find_record(recs, m, "fwd_bwd", t)
            if not _ok(f):
                cells.append("skipped")
            else:
                cells.append(f"{_ms(f['median_s'])} / "
                             + (_ms(b["median_s"]) if _ok(b) else "skipped"))
        cells += [f"{_mib(find_record(recs, m, 'fwd', t)):,.0f}" for m in METHODS]
        rows.append(row([f"{t:,}", *cells]))
    return "\n".join(rows)


def _growth(recs: list[dict], method: str, t0: int, t1: int) -> float | None:
    """Forward time at t1 over that at t0, when both were measured."""
    a, b = find_record(recs, method, "fwd", t0), find_record(recs, method, "fwd", t1)
    return b["median_s"] / a["median_s"] if _ok(a) and _ok(b) else None


def _crossover_text(c: dict[str, Any]) -> str:
    if c.get("T") is None:
        return c.get("note", "not measured")
    if c.get("bound") == "at_or_below":
        return f"already at $T = {tex_int(c['T'])}$"
    return f"$T \\approx {tex_int(round(c['T']))}$"


def _paired_growth(r: dict[str, Any]) -> dict[str, Any] | None:
    """The forward's per-doubling growth from the interleaved rounds: the lengths it spans
    and, per O(T) method, the lowest and highest median ratio."""
    interleaved = r.get("interleaved") or {}
    steps = interleaved.get("growth_per_step") or {}
    if not all(f"{m}_fwd" in steps for m in LINEAR):
        return None
    big = growth_lengths(r["config"]["lengths"], r["records"])  # the lengths the rounds timed
    spans = {m: (min(steps[f"{m}_fwd"].values()), max(steps[f"{m}_fwd"].values()))
             for m in LINEAR}
    return {"rounds": interleaved["rounds"], "t_a": big[0], "t_b": big[-1], **spans}


def _skip_why(r: dict[str, Any], skipped: list[int]) -> str | None:
    """Why exact attention's forward was not run at the lengths `skipped`, from its records'
    reasons (memory budget, predicted time or both); None when none was skipped."""
    if not skipped:
        return None
    recs = [find_record(r["records"], "softmax", "fwd", t) for t in skipped]
    causes = {skip_cause(rec) for rec in recs}
    limit = r["config"].get("max_call_s")
    slow = ("one call was predicted to take longer than "
            + (f"{limit:g} s" if limit is not None else "the time limit") + " (`--max-call-s`)")
    if causes == {"memory"}:
        return "its compiled buffers would not fit in memory"
    if causes == {"time"}:
        return slow
    if causes == {"memory", "time"}:
        return f"its compiled buffers would not fit in memory, or {slow}"
    return "; ".join(rec.get("reason", "skipped") for rec in recs)


def _time_values(r: dict[str, Any]) -> dict[str, Any]:
    """Growth over the whole range, skipped lengths, doubling and crossovers."""
    recs, lengths = r["records"], r["config"]["lengths"]
    t_lo, t_hi = lengths[0], lengths[-1]
    growths = []
    for m, name in (("softmax", "exact attention"), ("performer", "Performer"),
                    ("local", "local attention")):
        g = _growth(recs, m, t_lo, t_hi)
        if g is not None:
            growths.append(f"{name} x{g:,.0f}" if g >= 10 else f"{name} x{g:.1f}")
    sm_ok = [t for t in lengths if _ok(find_record(recs, "softmax", "fwd", t))]
    skipped = [t for t in lengths if t not in sm_ok]
    doubling = None
    if len(sm_ok) >= 2:
        g = {m: _growth(recs, m, sm_ok[-2], sm_ok[-1]) for m in METHODS}
        doubling = {**g, "t_a": sm_ok[-2], "t_b": sm_ok[-1]} if all(g.values()) else None
    return {
        "paired": _paired_growth(r),
        "t_lo": t_lo, "t_hi": t_hi, "span": t_hi // t_lo, "growths": and_list(growths),
        "t_skip": skipped[0] if skipped else None, "skip_why": _skip_why(r, skipped),
        "doubling": doubling,
        "crossover": {k: _crossover_text(c) for k, c in (r.get("crossover") or {}).items()},
    }


def _error_values(err: dict[str, Any]) -> dict[str, Any]:
    """The Performer's and local attention's error per logit regime, and its slope in m."""
    feats = err["features"]
    errors = [{(x["sampler"], x["features"]): x["rel_error_mean"] for x in reg["rows"]}
              for reg in err["regimes"]]
    regimes = [{**reg, "orth": ", ".join(f"{e[('orthogonal', f)]:.3f}" for f in feats),
                "iid": ", ".join(f"{e[('iid', f)]:.3f}" for f in feats)}
               for reg, e in zip(err["regimes"], errors, strict=True)]
    covers = [reg["local_window"] for reg in err["regimes"] if reg["local_window"] >= err["T"] - 1]
    f0, f1 = feats[0], feats[-1]
    e0, e1 = errors[0][("orthogonal", f0)], errors[0][("orthogonal", f1)]
    return {
        "regimes": regimes, "window_covers": covers[0] if covers else None,
        "f0": f0, "f1": f1,
        "slope": math.log(e1 / e0) / math.log(f1 / f0) if e0 > 0 and e1 > 0 and f1 > f0 else None,
    }


def q3_values(r: dict[str, Any]) -> dict[str, Any]:
    """The values of templates/q3.md."""
    recs, lengths, targets = r["records"], r["config"]["lengths"], r.get("targets", {})
    favor = targets.get("favor_fwd_over_softmax_fwd_at_8192", {})
    memory = targets.get("performer_temp_over_softmax_temp_at_8192", {})
    softmax_hi = find_record(recs, "softmax", "fwd", lengths[-1])
    return {
        **r,
        "long_run": r["wall_s"] >= 120, "wall_min": r["wall_s"] / 60,
        "table": q3_table(r),
        **_time_values(r),
        "favor": favor if favor.get("value") is not None else None,
        "softmax_ok": _ok(softmax_hi),
        "mib_lo": {m: _mib(find_record(recs, m, "fwd", lengths[0])) for m in METHODS},
        "mib_hi": {m: _mib(find_record(recs, m, "fwd", lengths[-1])) for m in METHODS},
        "memory": memory if memory.get("value") is not None else None,
        "backward_32768": targets.get("fwd_bwd_runs_at_32768", {}).get("met"),
        **_error_values(r["error"]),
    }


def q3_markdown(r: dict[str, Any] | None) -> str:
    """The body of docs/answers.md's Q3 section from `attention_scaling.json` (`r`); with no
    results, the theory and the command that measures it."""
    return render("q3.md", None if r is None else q3_values(r))


def q3_from_results(results_dir: str | pathlib.Path) -> str:
    """`q3_markdown` of `results_dir/attention_scaling.json` (None when it does not exist)."""
    return q3_markdown(read_json(pathlib.Path(results_dir) / "attention_scaling.json"))
