"""Q2 (the scalar RNN): the named values of docs/templates/q2.md from results/recurrence.json.

The algebra is fixed text in the template; every measured number, and every phrase whose
truth depends on one (all runs near -1, all accurate, ...), is a value computed here."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import numpy as np

from experiments.report.text import and_list, fill, num, reflow, sci, template


def _int_range(text: str) -> tuple[int, int]:
    """'uniform over even 2..128 (...)' -> (2, 128)."""
    lo, hi = re.search(r"(\d+)\.\.(\d+)", text).groups()
    return int(lo), int(hi)


def _big(x: int) -> str:
    """An integer near 2**24 in LaTeX: 16777217 -> '2^{24}+1'."""
    d = x - 2**24
    return "2^{24}" if d == 0 else f"2^{{24}}{d:+d}"


def _even_values(e: dict[str, Any]) -> dict[str, Any]:
    """Part (a), even lengths: the scan against the exact references."""
    even_lo, even_hi = _int_range(e["lengths"])
    dh, dy = e["max_abs_diff_h_all_steps_vs_exact"], e["max_abs_diff_y_T_vs_closed_form"]
    n_eq, ties = e["n_y_T_equal_to_closed_form"], e["y_T_on_ties"]
    d64 = e["max_abs_diff_y_all_steps_vs_float64"]
    return {
        "n_even": f"{e['n_sequences']:,}", "even_range": f"{even_lo}..{even_hi}",
        "pad_even": even_hi,
        "h_vs_exact": ("equals the alternating sum at every step exactly (max abs difference 0)"
                       if dh == 0 else
                       f"differs from the alternating sum by up to {num(dh)} (max abs difference)"),
        "y_vs_cf": (f"equals `closed_form` bit for bit on all {n_eq:,}"
                    if n_eq == e["n_sequences"] else
                    f"equals `closed_form` bit for bit on {n_eq:,} of {e['n_sequences']:,}"),
        "y_vs_cf_detail": f"max abs difference {num(dy)}",
        "y_vs_f64": ("also equal a float64 reference exactly" if d64 == 0 else
                     f"are within {num(d64)} of a float64 reference"),
        "n_saturated": f"{e['n_saturated']:,}", "n_ties": f"{e['n_ties']:,}",
        "n_other": f"{e['n_other_outputs']:,}",
        "ties_value": ("every one of them exactly 0.5" if ties == [0.5] else
                       "with outputs " + ", ".join(num(x) for x in ties)),
    }


def _odd_values(o: dict[str, Any]) -> dict[str, Any]:
    """Part (a), odd lengths: the answer flips."""
    odd_lo, odd_hi = _int_range(o["lengths"])
    dho, dyo = o["max_abs_diff_h_T_vs_odd_minus_even"], o["max_abs_diff_y_T_vs_1_minus_closed_form"]
    agree = o["n_decisive_agreeing_with_closed_form"]
    return {
        "n_odd": f"{o['n_sequences']:,}", "odd_range": f"{odd_lo}..{odd_hi}",
        "odd_h": "exactly" if dho == 0 else "approximately",
        "odd_h_detail": f"max abs difference {num(dho)}",
        "odd_h_off": num(o["max_abs_diff_h_T_vs_even_minus_odd"]),
        "odd_y": "exactly" if dyo == 0 else f"to within {num(dyo)}",
        "n_decisive": f"{o['n_decisive']:,}", "n_agree": f"{agree:,}",
        "flip_clause": ": the sign flips every time" if agree == 0 else "",
    }


def _limit_values(check: dict[str, Any]) -> dict[str, Any]:
    """Part (a): the float32 limit at 2**24 and the w_in/w_out rescaling."""
    lim_in, lim_out = check["float32_limit"]["inside_2^24"], check["float32_limit"]["beyond_2^24"]
    resc = check["rescaled_w_in_w_out_max_abs_diff_y_all_steps"]
    pairs = []
    for key in resc:
        w_in, w_out = (kv.split("=")[1] for kv in key.split(","))
        pairs.append(f"$({w_in}, {w_out})$")
    worst = max(resc.values())
    return {
        "x_in": "(" + r",\ ".join(_big(x) for x in lim_in["x"]) + ")",
        "x_out": "(" + r",\ ".join(_big(x) for x in lim_out["x"]) + ")",
        "h_in": num(lim_in["scan_h_T"]), "y_in": num(lim_in["scan_y_T"]),
        "h_out": num(lim_out["scan_h_T"]), "y_out": num(lim_out["scan_y_T"]),
        "y_out_true": num(lim_out["closed_form_y"]),
        "in_verdict": ("correct" if lim_in["scan_y_T"] == lim_in["closed_form_y"]
                       else f"`closed_form`: {num(lim_in['closed_form_y'])}"),
        "rescalings": (", ".join(pairs[:-1]) + " or " + pairs[-1]) if len(pairs) > 1
        else pairs[0],
        "rescaled_effect": ("changes no output at any step (max abs difference 0)" if worst == 0
                            else f"changes the outputs by at most {num(worst)}"),
    }


def _weight_values(t: dict[str, Any]) -> dict[str, Any]:
    """Part (b): the training setup and the weights the runs found."""
    s, fw = t["setup"], t["final_weights"]
    w_in, w_rec, w_out = (np.asarray(fw[k], np.float64) for k in ("w_in", "w_rec", "w_out"))
    prod = np.asarray(fw["w_in_times_w_out"], np.float64)
    n, err = s["n_inits"], t["max_abs_w_rec_plus_1"]
    same_sign = bool(np.all(np.sign(w_out) == np.sign(w_in)))
    both = bool((w_out > 0).any() and (w_out < 0).any())
    return {
        "n_inits": n, "lr": s["optimizer"].split("lr=")[1].split()[0],
        "steps": f"{s['steps']:,}", "batch": s["batch_size"], "n_train": f"{s['n_train']:,}",
        "train_lengths": ", ".join(map(str, s["train_lengths"])),
        "n_train_ties": f"{s['n_train_ties_dropped']:,}",
        "w_rec_min": f"{w_rec.min():.5f}", "w_rec_max": f"{w_rec.max():.5f}",
        "w_rec_err": sci(err),
        "prod_min": f"{prod.min():.1f}", "prod_max": f"{prod.max():.1f}",
        "w_in_min": f"{w_in.min():.2f}", "w_in_max": f"{w_in.max():.2f}",
        "runs_find": f"All {n} runs find" if err < 0.01 else f"The {n} runs end with",
        "prod_sign": ("positive in every run" if t["all_products_positive"] else
                      f"positive in {(prod > 0).sum()} of {n} runs"),
        "w_out_sign": (("takes either sign" if both else "keeps one sign")
                       + (" (the same as $w_{in}$'s)" if same_sign else "")),
        "prod_round": f"{prod.min():.0f}-{prod.max():.0f}",
    }


def _p(a: float) -> str:
    """An accuracy in percent without trailing zeros: 0.9995 -> '99.95', 1.0 -> '100'."""
    return f"{100 * a:.2f}".rstrip("0").rstrip(".")


def _accuracy_sentence(acc: dict[str, Any]) -> str:
    """Which even lengths every run gets right, and how far the others fall."""
    even_groups = {**acc["seen_lengths"], **acc["unseen_lengths"]}
    perfect_seen = all(min(g["learned_per_init"]) == 1.0 for g in acc["seen_lengths"].values())
    unseen_perfect = [k for k, g in acc["unseen_lengths"].items()
                      if min(g["learned_per_init"]) == 1.0]
    parts = ["at the training lengths"] if perfect_seen else []
    if unseen_perfect:
        parts.append(f"at the unseen lengths {and_list(unseen_perfect)}")
    imperfect = {k: g for k, g in even_groups.items() if min(g["learned_per_init"]) < 1.0}
    clauses = [f"every run is 100% accurate {' and '.join(parts)}"] if parts else []
    if len(imperfect) <= 2:
        for k, g in imperfect.items():
            lo_acc, hi_acc = min(g["learned_per_init"]), max(g["learned_per_init"])
            errors = round((1.0 - lo_acc) * g["n_decisive"])
            clauses.append(f"{_p(lo_acc)}-{_p(hi_acc)}% at length {k} (at most {errors:,} "
                           f"errors of {g['n_decisive']:,})")
    else:
        accs = [a for g in imperfect.values() for a in g["learned_per_init"]]
        clauses.append(f"at lengths {and_list(list(imperfect))} the runs range from "
                       f"{_p(min(accs))}% to {_p(max(accs))}%")
    return ", and ".join(clauses)


def _accuracy_values(t: dict[str, Any]) -> dict[str, Any]:
    """Part (b): held-out accuracy, odd lengths and the loss grid."""
    acc = t["accuracy"]
    even_groups = {**acc["seen_lengths"], **acc["unseen_lengths"]}
    n_eval = {g["n_decisive"] + g["n_ties"] for g in even_groups.values()}
    fig = [g["figure_weights"] for g in even_groups.values()]
    odd = acc["odd_lengths"]
    odd_all = [a for g in odd.values() for a in g["learned_per_init"] + [g["figure_weights"]]]
    grid = t["train_loss_argmin_w_rec_by_product"]["argmin"]
    items = [f"${num(w)}$ ({'product ' if i == 0 else ''}{p})"
             for i, (p, w) in enumerate(grid.items())]
    t_long = max(int(k) for k in acc["unseen_lengths"])
    w_rec_abs_max = float(np.abs(np.asarray(t["final_weights"]["w_rec"], np.float64)).max())
    return {
        "n_eval": "/".join(f"{x:,}" for x in sorted(n_eval)),
        "accuracy_sentence": _accuracy_sentence(acc),
        "figure_acc": ("100% everywhere" if min(fig) == 1.0 else
                       f"{100 * min(fig):.2f}-{100 * max(fig):.2f}% accurate"),
        "odd_lengths": and_list(list(odd)),
        "odd_acc": ("0%" if max(odd_all) == 0
                    else f"{100 * min(odd_all):.1f}-{100 * max(odd_all):.1f}%"),
        "odd_clause": (": they\ngive the opposite answer on every non-tie sequence, as the "
                       "algebra above says" if max(odd_all) == 0 else ""),
        "grid_argmin": (", ".join(items[:-1]) + " and " + items[-1]) if len(items) > 1
        else items[0],
        "t_long": t_long,
        "oldest_weight": f"{w_rec_abs_max ** (t_long - 1):.2f}",
    }


def q2_values(r: dict[str, Any]) -> dict[str, Any]:
    """Every named value of docs/templates/q2.md, from `recurrence.json` (`r`)."""
    check, t = r["scan_vs_closed_form"], r["training"]
    lo, hi = (int(s) for s in check["inputs"].split("[")[1].rstrip("]").split(","))
    v: dict[str, Any] = {"command": r["command"], "seed": r["seed"],
                         "cpu_s": f"{r['cpu_time_s']:.0f}", "low": lo, "high": hi}
    v.update(_even_values(check["even"]))
    v.update(_odd_values(check["odd"]))
    v.update(_limit_values(check))
    v.update(_weight_values(t))
    v.update(_accuracy_values(t))
    return v


def q2_markdown(r: dict[str, Any]) -> str:
    """The body of docs/answers.md's Q2 section, every number from `recurrence.json` (`r`)."""
    return reflow(fill(template("q2.md")[""], q2_values(r), "Q2 template"))


def q2_from_results(results_dir: str | pathlib.Path) -> str:
    """`q2_markdown` of `results_dir/recurrence.json`, or the command that measures it."""
    path = pathlib.Path(results_dir) / "recurrence.json"
    if not path.is_file():
        return template("q2.md")["missing"] + "\n"
    return q2_markdown(json.loads(path.read_text()))
