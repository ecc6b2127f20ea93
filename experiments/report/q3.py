"""Q3 (linear-time attention): docs/templates/q3.md filled from results/attention_scaling.json.

The template holds the theory, the measured paragraph and each sentence that depends on what
was measured; the functions here pick the sentences and compute their values."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from experiments.attention_scaling_analysis import find_record
from experiments.report.text import and_list, fill, reflow, row, template, tex_int

METHODS = {"softmax": "exact softmax", "performer": "Performer", "local": "local"}


def _ms(s: float) -> str:
    """Seconds as milliseconds for the table: 0.0123 -> '12.3', 0.456 -> '456'."""
    ms = 1e3 * s
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _mib(record: dict[str, Any]) -> str:
    return f"{record['temp_bytes'] / 2**20:,.0f}"


def _ok(record: dict | None) -> bool:
    return bool(record) and record["status"] == "ok"


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
                cells.append("skipped" if f else "-")
            else:
                cells.append(_ms(f["median_s"]) + " / "
                             + (_ms(b["median_s"]) if _ok(b) else "skipped"))
        for m in METHODS:
            f = find_record(recs, m, "fwd", t)
            cells.append("-" if f is None else _mib(f))
        rows.append(row([f"{t:,}", *cells]))
    return "\n".join(rows)


def _growth(recs: list[dict], method: str, mode: str, t0: int, t1: int) -> float | None:
    a, b = find_record(recs, method, mode, t0), find_record(recs, method, mode, t1)
    return b["median_s"] / a["median_s"] if _ok(a) and _ok(b) else None


def _crossover_text(c: dict[str, Any]) -> str:
    if c.get("T") is None:
        return c.get("note", "not measured")
    if c.get("bound") == "at_or_below":
        return f"already at $T = {tex_int(c['T'])}$"
    return f"$T \\approx {tex_int(round(c['T']))}$"


def _time_sentences(r: dict[str, Any], pieces: dict[str, str]) -> list[str]:
    """Growth over the whole range, skipped lengths, doubling, crossovers, the 8192 target."""
    recs, lengths = r["records"], r["config"]["lengths"]
    t_lo, t_hi = lengths[0], lengths[-1]
    out = []
    growths = []
    for m, name in (("softmax", "exact attention"), ("performer", "Performer"),
                    ("local", "local attention")):
        g = _growth(recs, m, "fwd", t_lo, t_hi)
        if g is not None:
            growths.append(f"{name} x{g:,.0f}" if g >= 10 else f"{name} x{g:.1f}")
    if growths:
        out.append(fill(pieces["time_growth"], {
            "t_lo": tex_int(t_lo), "t_hi": tex_int(t_hi), "span": f"{t_hi // t_lo:,}",
            "growths": and_list(growths)}))
    sm_ok = [t for t in lengths if _ok(find_record(recs, "softmax", "fwd", t))]
    skipped = [t for t in lengths if t not in sm_ok]
    if skipped:
        out.append(fill(pieces["softmax_skipped"], {"t_skip": tex_int(skipped[0])}))
    if len(sm_ok) >= 2:
        a, b = sm_ok[-2], sm_ok[-1]
        g = {m: _growth(recs, m, "fwd", a, b) for m in METHODS}
        if all(g.values()):
            out.append(fill(pieces["doubling"], {
                "t_a": f"{a:,}", "t_b": f"{b:,}",
                **{f"g_{m}": f"{x:.1f}" for m, x in g.items()}}))
    if r.get("crossover"):
        out.append(fill(pieces["crossover"],
                        {k: _crossover_text(c) for k, c in r["crossover"].items()}))
    fav = r.get("targets", {}).get("favor_fwd_over_softmax_fwd_at_8192", {})
    if fav.get("value") is not None:
        out.append(fill(pieces["favor_8192"], {
            "performer_ms": f"{fav['performer_ms']:,.0f}",
            "softmax_ms": f"{fav['softmax_ms']:,.0f}", "ratio": f"{fav['value']:.3f}"}))
    return out


def _memory_sentences(r: dict[str, Any], pieces: dict[str, str]) -> list[str]:
    """Temporary memory at the shortest and longest length, and the targets."""
    recs, lengths, tgt = r["records"], r["config"]["lengths"], r.get("targets", {})
    t_lo, t_hi = lengths[0], lengths[-1]
    lo = {m: find_record(recs, m, "fwd", t_lo) for m in METHODS}
    hi = {m: find_record(recs, m, "fwd", t_hi) for m in METHODS}
    parts = []
    if hi["softmax"]:
        parts.append(fill(pieces["memory_softmax"], {
            "needs": "needs" if _ok(hi["softmax"]) else "would need (not run)",
            "mib": _mib(hi["softmax"]), "t_hi": tex_int(t_hi)}))
    for m, name in (("performer", "the Performer's"), ("local", "local attention's")):
        if lo[m] and hi[m]:
            parts.append(fill(pieces["memory_linear"], {
                "name": name, "mib_lo": _mib(lo[m]), "t_lo": tex_int(t_lo),
                "mib_hi": _mib(hi[m]), "t_hi": tex_int(t_hi)}))
    out = [parts[0][0].upper() + "; ".join(parts)[1:] + "."] if parts else []
    ratio = tgt.get("performer_temp_over_softmax_temp_at_8192", {})
    if ratio.get("value") is not None:
        out.append(fill(pieces["memory_8192"], {
            "ratio": f"{ratio['value']:.3f}", "performer_mib": f"{ratio['performer_mib']:,.0f}",
            "softmax_mib": f"{ratio['softmax_mib']:,.0f}"}))
    if tgt.get("fwd_bwd_runs_at_32768", {}).get("met"):
        out.append(pieces["backward_32768"])
    return out


def _error_sentences(err: dict[str, Any], pieces: dict[str, str]) -> list[str]:
    """The Performer's and local attention's error per logit regime, and its slope in m."""
    feats = err["features"]
    out = []
    for reg in err["regimes"]:
        rows = {(x["sampler"], x["features"]): x for x in reg["rows"]}
        out.append(fill(pieces["error_regime"], {
            "sigma": f"{reg['sigma']:g}", "logit_std": f"{reg['logit_std']:g}",
            "features": ", ".join(map(str, feats)),
            "orth": ", ".join(f"{rows[('orthogonal', f)]['rel_error_mean']:.3f}" for f in feats),
            "iid": ", ".join(f"{rows[('iid', f)]['rel_error_mean']:.3f}" for f in feats),
            "window": reg["local_window"], "local_error": f"{reg['local_rel_error']:.3f}",
            "local_tv": f"{reg['local_tv']:.3f}"}))
    big = [reg for reg in err["regimes"] if reg["local_window"] >= err["T"] - 1]
    if big:
        out.append(fill(pieces["window_covers"], {"err_t": tex_int(err["T"]),
                                                  "window": big[0]["local_window"]}))
    rows = {(x["sampler"], x["features"]): x for x in err["regimes"][0]["rows"]}
    f0, f1 = feats[0], feats[-1]
    e0, e1 = rows[("orthogonal", f0)]["rel_error_mean"], rows[("orthogonal", f1)]["rel_error_mean"]
    if e0 > 0 and e1 > 0 and f1 > f0:
        slope = math.log(e1 / e0) / math.log(f1 / f0)
        out.append(fill(pieces["error_slope"], {"f0": f0, "f1": f1, "slope": f"{slope:.2f}"}))
    return out


def q3_values(r: dict[str, Any], pieces: dict[str, str]) -> dict[str, Any]:
    """Every named value of the `measured` piece of docs/templates/q3.md."""
    cfg, mach = r["config"], r["machine"]
    backend = mach.get("backend", "?")
    return {
        "command": r["command"],
        "machine": (f"CPU, {mach.get('cpu_count')} cores" if backend == "cpu"
                    else ", ".join(mach.get("devices", [])) or backend),
        "batch": cfg["batch"], "heads": cfg["heads"], "head_dim": cfg["head_dim"],
        "dtype": cfg["dtype"], "m": cfg["performer_features"], "w": cfg["local_window"],
        "reps": cfg["reps"],
        "wall": (f"{r['wall_s'] / 60:.0f} min in all" if r["wall_s"] >= 120
                 else f"{r['wall_s']:.0f} s in all"),
        "table": q3_table(r),
        "time_sentence": " ".join(_time_sentences(r, pieces)),
        "memory_sentence": " ".join(_memory_sentences(r, pieces)),
        "err_t": tex_int(r["error"]["T"]), "draws": r["error"]["draws"],
        "error_sentence": " ".join(_error_sentences(r["error"], pieces)),
    }


def q3_markdown(r: dict[str, Any] | None) -> str:
    """The body of docs/answers.md's Q3 section from `attention_scaling.json` (`r`); with no
    results, the theory and the command that measures it."""
    pieces = template("q3.md")
    measured = (pieces["missing"] if r is None
                else fill(pieces["measured"], q3_values(r, pieces), "Q3 template"))
    return reflow(fill(pieces[""], {"measured": measured}, "Q3 template"))


def q3_from_results(results_dir: str | pathlib.Path) -> str:
    """`q3_markdown` of `results_dir/attention_scaling.json` (None when it does not exist)."""
    path = pathlib.Path(results_dir) / "attention_scaling.json"
    return q3_markdown(json.loads(path.read_text()) if path.is_file() else None)
