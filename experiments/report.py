"""Rebuild the measured parts of docs/answers.md from results/, so the text never drifts
from the numbers.

    python -m experiments.report            # rewrite the sections between the markers
    python -m experiments.report --check    # exit 1 if docs/answers.md is not up to date
    python -m experiments.report --print q3 # one section to stdout (e.g. from --results DIR)

docs/answers.md keeps its hand-written parts; each question's body sits between
`<!-- BEGIN qN -->` and `<!-- END qN -->` and is the output of one function of results JSON:

- Q1 `experiments.cnn_vs_rnn.q1_from_results` (results/cnn_vs_rnn.json, cnn_vs_rnn_h100/),
- Q2 `experiments.recurrence.q2_from_results` (results/recurrence.json),
- Q3 `q3_from_results` below (results/attention_scaling.json),
- Q4 `experiments.sentiment_answers.q4_from_results` (results/sentiment_facts.json and the
  collected runs results/sentiment_*.json).

A section whose results file does not exist yet says which command produces it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable

from experiments.answer_text import and_list, fill, reflow, tex_int

ROOT = pathlib.Path(__file__).resolve().parents[1]
ANSWERS = ROOT / "docs" / "answers.md"
RESULTS = ROOT / "results"


class ReportError(Exception):
    """A problem with docs/answers.md or results/: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------ Q3

Q3_THEORY = r"""
**Why exact attention is $O(T^2)$.** For one head with $Q, K, V \in \mathbb{R}^{T\times d}$,

$$\mathrm{Att}(Q,K,V) = \mathrm{softmax}\Big(\frac{QK^\top}{\sqrt d}\Big)V = D^{-1}AV,\qquad A =
\exp\Big(\frac{QK^\top}{\sqrt d}\Big),\quad D = \mathrm{diag}(A\,\mathbf 1_T),$$

and the $T\times T$ matrix $A$ costs $O(T^2 d)$ time and $O(T^2)$ memory. Two ways to
$O(T)$, both in `hw3_jax/attention.py` and both usable inside the BERT encoder
(`python -m experiments.sentiment --attention performer|local`):

1. *Approximate the softmax kernel and reassociate (Performer, FAVOR+).* With positive
   random features $\phi(x) = \frac{1}{\sqrt m}\exp\big(\Omega x' - \tfrac12\|x'\|^2\big)$,
   $x' = x/d^{1/4}$, $\Omega \in \mathbb{R}^{m\times d}$ Gaussian with orthogonal rows,
   $\mathbb{E}[\phi(q)^\top\phi(k)] = \exp(q^\top k/\sqrt d)$, so $A \approx \phi(Q)\phi(K)^\top$
   and, multiplying right to left,
   $\widehat{\mathrm{Att}} = \hat D^{-1}\phi(Q)\big(\phi(K)^\top V\big)$ with
   $\hat D = \mathrm{diag}\big(\phi(Q)(\phi(K)^\top \mathbf 1_T)\big)$: $\phi(K)^\top V$ is only
   $m\times d$, so time is $O(Tmd)$ and memory $O(Tm + md)$, linear in $T$. Pros: every
   token still sees every other one; the estimate is unbiased and positive, so pretrained
   softmax weights can run with it. Cons: it is an approximation whose error falls only like
   $1/\sqrt m$ and grows quickly with the size of the logits; its constant ($m$ features and
   their exponentials) makes it slower than exact attention at short lengths; a causal mask
   needs prefix sums instead of one product.
2. *Restrict each query to a window (sliding-window, "local" attention).* Query $i$ attends
   only to the keys with $|i-j| \le w$,
$\mathrm{Att}_i = \sum_{|j-i|\le w} \frac{\exp(q_i^\top k_j/\sqrt d)}{\sum_{|l-i|\le
   w}\exp(q_i^\top k_l/\sqrt d)}\,v_j$,
   computed block by block so that no $T\times T$ array exists: $O(Twd)$ time and $O(Tw)$
   memory. Pros: exact softmax inside the window, no randomness, and locality is a good prior
   for text. Cons: nothing farther than $w$ interacts in one layer (the receptive field grows
   by $w$ per layer), and the attention mass that exact softmax puts outside the window is
   simply lost.
"""

Q3_MISSING = """
**Measured.** *Not measured yet:* `python -m experiments.attention_scaling` (`--quick` for
a smoke run) writes `results/attention_scaling.json` and its plots; then
`python -m experiments.report`.
"""

Q3_MEASURED = r"""
**Measured** by `<<command>>` (<<machine>>; batch <<batch>>, <<heads>> heads, head dimension
<<head_dim>>, <<dtype>>; Performer with $m = <<m>>$ orthogonal features, local window
$w = <<w>>$; compiled, warmed up, median of up to <<reps>> runs; <<wall>>). Plots:
`results/attention_scaling_time.png`, `_memory.png`, `_error.png`. Forward / forward+backward
time in ms, and the forward pass's compiled temporary memory in MiB:

<<table>>

- *Time.* <<time_sentence>>
- *Memory.* <<memory_sentence>>
- *Accuracy* (one draw of $q, k, v$ with $T = <<err_t>>$, <<draws>> draws of the features; relative
  error $\|\widehat{\mathrm{Att}} - \mathrm{Att}\|_F / \|\mathrm{Att}\|_F$). <<error_sentence>>
"""


def _ms(s: float) -> str:
    ms = 1e3 * s
    return f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def _rec(records: list[dict], method: str, mode: str, t: int) -> dict | None:
    for r in records:
        if (r["method"], r["mode"], r["T"]) == (method, mode, t):
            return r
    return None


def _q3_table(r: dict) -> str:
    recs, lengths = r["records"], r["config"]["lengths"]
    names = {"softmax": "exact softmax", "performer": "Performer", "local": "local"}
    head = ("| $T$ | " + " | ".join(f"{names[m]} ms" for m in names) + " | "
            + " | ".join(f"{names[m]} MiB" for m in names) + " |")
    rows = [head, "| ---: " + "| ---: " * 6 + "|"]
    for t in lengths:
        cells = []
        for m in names:
            f, b = _rec(recs, m, "fwd", t), _rec(recs, m, "fwd_bwd", t)
            if f is None or f["status"] != "ok":
                cells.append("skipped" if f else "-")
            else:
                cells.append(_ms(f["median_s"]) + " / "
                             + (_ms(b["median_s"]) if b and b["status"] == "ok" else "skipped"))
        for m in names:
            f = _rec(recs, m, "fwd", t)
            cells.append("-" if f is None else f"{f['temp_bytes'] / 2**20:,.0f}")
        rows.append(f"| {t:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _growth(recs: list[dict], method: str, mode: str, t0: int, t1: int) -> float | None:
    a, b = _rec(recs, method, mode, t0), _rec(recs, method, mode, t1)
    if a and b and a["status"] == b["status"] == "ok":
        return b["median_s"] / a["median_s"]
    return None


def _crossover_text(c: dict) -> str:
    if c.get("T") is None:
        return c.get("note", "not measured")
    if c.get("bound") == "at_or_below":
        return f"already at $T = {tex_int(c['T'])}$"
    return f"$T \\approx {tex_int(round(c['T']))}$"


def q3_markdown(r: dict) -> str:
    """The body of docs/answers.md's Q3 section from `attention_scaling.json` (`r`)."""
    cfg, recs, mach = r["config"], r["records"], r["machine"]
    lengths = cfg["lengths"]
    t_lo, t_hi = lengths[0], lengths[-1]
    backend = mach.get("backend", "?")
    machine = (f"CPU, {mach.get('cpu_count')} cores" if backend == "cpu"
               else ", ".join(mach.get("devices", [])) or backend)
    v = {"command": r["command"], "machine": machine, "batch": cfg["batch"],
         "heads": cfg["heads"], "head_dim": cfg["head_dim"], "dtype": cfg["dtype"],
         "m": cfg["performer_features"], "w": cfg["local_window"], "reps": cfg["reps"],
         "wall": f"{r['wall_s'] / 60:.0f} min in all" if r["wall_s"] >= 120
         else f"{r['wall_s']:.0f} s in all", "table": _q3_table(r)}

    # Time: growth over the whole range, crossovers, the 8192 target.
    parts = []
    span = t_hi // t_lo
    for m, name in (("softmax", "exact attention"), ("performer", "Performer"),
                    ("local", "local attention")):
        g = _growth(recs, m, "fwd", t_lo, t_hi)
        if g is not None:
            parts.append(f"{name} x{g:,.0f}" if g >= 10 else f"{name} x{g:.1f}")
    sentence = (f"From $T = {tex_int(t_lo)}$ to ${tex_int(t_hi)}$ ({span:,}x longer) the "
                f"forward time grew: {and_list(parts)} (in proportion to $T$ would be "
                f"x{span:,}).") if parts else ""
    sm_ok = [t for t in lengths if (x := _rec(recs, "softmax", "fwd", t)) and x["status"] == "ok"]
    skipped = [t for t in lengths if t not in sm_ok]
    if skipped:
        sentence += (f" Exact attention was not run from $T = {tex_int(skipped[0])}$ on: its "
                     "compiled buffers would not fit in memory.")
    if len(sm_ok) >= 2:
        a, b = sm_ok[-2], sm_ok[-1]
        ga = _growth(recs, "softmax", "fwd", a, b)
        gp = _growth(recs, "performer", "fwd", a, b)
        gl = _growth(recs, "local", "fwd", a, b)
        if ga and gp and gl:
            sentence += (f" Doubling $T$ from {a:,} to {b:,} multiplied the time by {ga:.1f} "
                         f"(exact; $O(T^2)$ predicts 4), {gp:.1f} (Performer) and {gl:.1f} "
                         "(local; $O(T)$ predicts 2).")
    cx = r.get("crossover", {})
    if cx:
        sentence += (" The $O(T)$ methods overtake exact attention (forward / forward+backward): "
                     f"Performer from {_crossover_text(cx['performer_fwd'])} / "
                     f"{_crossover_text(cx['performer_fwd_bwd'])}, local from "
                     f"{_crossover_text(cx['local_fwd'])} / "
                     f"{_crossover_text(cx['local_fwd_bwd'])}: below that, their constant "
                     "factor costs more than the $T^2$ saves.")
    tgt = r.get("targets", {})
    fav = tgt.get("favor_fwd_over_softmax_fwd_at_8192", {})
    if fav.get("value") is not None:
        sentence += (f" At $T = 8{{,}}192$ the Performer's forward pass takes "
                     f"{fav['performer_ms']:,.0f} ms against {fav['softmax_ms']:,.0f} ms, "
                     f"{fav['value']:.3f} of exact attention's time.")
    v["time_sentence"] = sentence

    # Memory.
    f_lo = {m: _rec(recs, m, "fwd", t_lo) for m in ("softmax", "performer", "local")}
    f_hi = {m: _rec(recs, m, "fwd", t_hi) for m in ("softmax", "performer", "local")}
    mem = []
    if f_hi["softmax"]:
        needs = "needs" if f_hi["softmax"]["status"] == "ok" else "would need (not run)"
        mem.append(f"exact attention's forward {needs} "
                   f"{f_hi['softmax']['temp_bytes'] / 2**20:,.0f} MiB of temporary memory at "
                   f"$T = {tex_int(t_hi)}$")
    msg = ""
    for m, name in (("performer", "the Performer's"), ("local", "local attention's")):
        if f_lo[m] and f_hi[m]:
            msg_part = (f"{name} {f_lo[m]['temp_bytes'] / 2**20:,.0f} MiB at $T = {tex_int(t_lo)}$ "
                        f"and {f_hi[m]['temp_bytes'] / 2**20:,.0f} MiB at ${tex_int(t_hi)}$")
            mem.append(msg_part)
    if mem:
        msg = mem[0][0].upper() + "; ".join(mem)[1:] + "."
    ratio = tgt.get("performer_temp_over_softmax_temp_at_8192", {})
    if ratio.get("value") is not None:
        msg += (f" At $T = 8{{,}}192$ the Performer needs {ratio['value']:.3f} of exact "
                f"attention's temporary memory ({ratio['performer_mib']:,.0f} against "
                f"{ratio['softmax_mib']:,.0f} MiB).")
    runs = tgt.get("fwd_bwd_runs_at_32768", {})
    if runs.get("met"):
        msg += " Forward+backward of both $O(T)$ methods runs at $T = 32{,}768$."
    v["memory_sentence"] = msg

    # Error.
    err = r["error"]
    v.update(err_t=tex_int(err["T"]), draws=err["draws"])
    sents = []
    for reg in err["regimes"]:
        rows = {(x["sampler"], x["features"]): x for x in reg["rows"]}
        feats = err["features"]
        orth = ", ".join(f"{rows[('orthogonal', f)]['rel_error_mean']:.3f}" for f in feats)
        iid = ", ".join(f"{rows[('iid', f)]['rel_error_mean']:.3f}" for f in feats)
        sents.append(
            f"With $q, k \\sim \\mathcal N(0, {reg['sigma']:g}^2)$ (logit standard deviation "
            f"{reg['logit_std']:g}) the Performer's error for $m = {', '.join(map(str, feats))}$ "
            f"is {orth} (orthogonal features; i.i.d.: {iid}); local attention with $w = "
            f"{reg['local_window']}$ has error {reg['local_rel_error']:.3f} (the softmax mass "
            f"outside its window is {reg['local_tv']:.3f} per row).")
    big = [reg for reg in err["regimes"] if reg["local_window"] >= err["T"] - 1]
    if big:
        sents.append(f"At $T = {tex_int(err['T'])}$ the window ($w = {big[0]['local_window']}$) "
                     "covers the whole sequence, so local attention is exact there: measure "
                     "with a longer $T$ to see what it loses.")
    first = err["regimes"][0]
    rows = {(x["sampler"], x["features"]): x for x in first["rows"]}
    f0, f1 = err["features"][0], err["features"][-1]
    e0, e1 = rows[("orthogonal", f0)]["rel_error_mean"], rows[("orthogonal", f1)]["rel_error_mean"]
    if e0 > 0 and e1 > 0 and f1 > f0:
        slope = math.log(e1 / e0) / math.log(f1 / f0)
        sents.append(f"From $m = {f0}$ to ${f1}$ (the first regime) the error scales like "
                     f"$m^{{{slope:.2f}}}$ ($1/\\sqrt m$ would be $m^{{-0.5}}$).")
    v["error_sentence"] = " ".join(sents)
    return reflow(Q3_THEORY + "\n" + fill(Q3_MEASURED, v, "Q3 template"))


def q3_from_results(results_dir: str | pathlib.Path = RESULTS) -> str:
    """`q3_markdown` of `results_dir/attention_scaling.json`, or the theory and the command
    that measures it when the file does not exist yet."""
    path = pathlib.Path(results_dir) / "attention_scaling.json"
    if not path.is_file():
        return reflow(Q3_THEORY + "\n" + Q3_MISSING)
    return q3_markdown(json.loads(path.read_text()))


# ------------------------------------------------------------------------------ sections


def _q1(results_dir: pathlib.Path) -> str:
    from experiments.cnn_vs_rnn import q1_from_results

    if not (results_dir / "cnn_vs_rnn.json").is_file():
        return ("*Not measured yet:* `python -m experiments.cnn_vs_rnn` writes "
                "`results/cnn_vs_rnn.json`; then `python -m experiments.report`.\n")
    return q1_from_results(results_dir)


def _q2(results_dir: pathlib.Path) -> str:
    from experiments.recurrence import q2_from_results

    if not (results_dir / "recurrence.json").is_file():
        return ("*Not measured yet:* `python -m experiments.recurrence` writes "
                "`results/recurrence.json`; then `python -m experiments.report`.\n")
    return q2_from_results(results_dir)


def _q4(results_dir: pathlib.Path) -> str:
    from experiments.sentiment_answers import q4_from_results

    return q4_from_results(results_dir)


SECTIONS: dict[str, Callable[[pathlib.Path], str]] = {
    "q1": _q1, "q2": _q2, "q3": q3_from_results, "q4": _q4,
}
_BLOCK = re.compile(r"(<!-- BEGIN (q\d) -->\n)(.*?)(<!-- END \2 -->)", re.DOTALL)


def render(text: str, results_dir: pathlib.Path, only: list[str] | None = None) -> str:
    """`text` (docs/answers.md) with each marked section's body regenerated."""
    found = [m.group(2) for m in _BLOCK.finditer(text)]
    unknown = sorted(set(found) - set(SECTIONS))
    if unknown:
        raise ReportError(f"answers.md has markers for unknown sections {unknown}; "
                          f"known: {sorted(SECTIONS)}")
    missing = [s for s in (only or SECTIONS) if s not in found]
    if missing:
        raise ReportError(f"answers.md has no <!-- BEGIN {missing[0]} --> ... <!-- END "
                          f"{missing[0]} --> markers; add them around that section's body")

    def body(m: re.Match) -> str:
        name = m.group(2)
        if only and name not in only:
            return m.group(0)
        new = SECTIONS[name](results_dir).strip("\n")
        return f"{m.group(1)}\n{new}\n\n{m.group(4)}"

    return _BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.report",
                                description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 (with a diff) if the file is not up to date")
    p.add_argument("--answers", type=pathlib.Path, default=ANSWERS,
                   help="the answers file (default: docs/answers.md)")
    p.add_argument("--results", type=pathlib.Path, default=RESULTS,
                   help="the results folder (default: results/)")
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS),
                   help="regenerate only these sections")
    p.add_argument("--print", dest="print_section", choices=sorted(SECTIONS),
                   help="print one section's Markdown to stdout and change nothing")
    args = p.parse_args(argv)
    try:
        if not args.results.is_dir():
            raise ReportError(f"results folder {args.results} does not exist; pass --results")
        if args.print_section:
            sys.stdout.write(SECTIONS[args.print_section](args.results))
            return 0
        if not args.answers.is_file():
            raise ReportError(f"{args.answers} does not exist; pass --answers")
        old = args.answers.read_text()
        new = render(old, args.results, args.only)
    except (ReportError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new == old:
            print(f"{args.answers} is up to date with {args.results}")
            return 0
        diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                    str(args.answers), "regenerated")
        sys.stdout.writelines(diff)
        print(f"{args.answers} is out of date: run python -m experiments.report",
              file=sys.stderr)
        return 1
    if new != old:
        args.answers.write_text(new)
        print(f"updated {args.answers}")
    else:
        print(f"{args.answers} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
