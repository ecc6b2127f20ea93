"""Q2 (the scalar RNN): the named values of templates/q2.md from results/recurrence.json."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from experiments.report.text import and_list, read_json, render


def _range(lo_hi: list[int]) -> dict[str, int]:
    """[lo, hi] -> {'lo': lo, 'hi': hi}, as the template names the ends."""
    return dict(zip(("lo", "hi"), lo_hi, strict=True))


def _big(xs: list[int]) -> str:
    """Integers near 2**24 in LaTeX: [16777216, 16777217] -> '(2^{24},\\ 2^{24}+1)'."""
    return "(" + r",\ ".join("2^{24}" if x == 2**24 else f"2^{{24}}{x - 2**24:+d}"
                             for x in xs) + ")"


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


def q2_values(r: dict[str, Any]) -> dict[str, Any]:
    """The values of templates/q2.md, from `recurrence.json` (`r`)."""
    check, t = r["scan_vs_closed_form"], r["training"]
    even, odd, limit = check["even"], check["odd"], check["float32_limit"]
    inside, beyond = limit["inside_2^24"], limit["beyond_2^24"]
    resc = check["rescaled_w_in_w_out_max_abs_diff_y_all_steps"]
    pairs = ["$({}, {})$".format(*(kv.split("=")[1] for kv in key.split(","))) for key in resc]
    fw, acc = t["final_weights"], t["accuracy"]
    w_in, w_rec, w_out, prod = (np.asarray(fw[k], np.float64)
                                for k in ("w_in", "w_rec", "w_out", "w_in_times_w_out"))
    even_groups = {**acc["seen_lengths"], **acc["unseen_lengths"]}
    figure = [g["figure_weights"] for g in even_groups.values()]
    odd_all = [a for g in acc["odd_lengths"].values()
               for a in g["learned_per_init"] + [g["figure_weights"]]]
    grid = t["train_loss_argmin_w_rec_by_product"]["argmin"]
    argmins = [f"${w:g}$ ({'product ' if i == 0 else ''}{p})"
               for i, (p, w) in enumerate(grid.items())]
    t_long = max(int(k) for k in acc["unseen_lengths"])
    return {
        **r, "even": even, "odd": odd, "inside": inside, "beyond": beyond, "setup": t["setup"],
        "input_range": _range(check["input_range"]), "even_range": _range(even["length_range"]),
        "odd_range": _range(odd["length_range"]),
        "all_y_equal": even["n_y_T_equal_to_closed_form"] == even["n_sequences"],
        "ties_half": even["y_T_on_ties"] == [0.5],
        "x_in": _big(inside["x"]), "x_out": _big(beyond["x"]),
        "inside_correct": inside["scan_y_T"] == inside["closed_form_y"],
        "rescalings": and_list(pairs, "or"),
        "rescaled_worst": max(resc.values()),
        "lr": t["setup"]["learning_rate"],
        "converged": t["max_abs_w_rec_plus_1"] < 0.01, "w_rec_err": t["max_abs_w_rec_plus_1"],
        "w_rec_min": w_rec.min(), "w_rec_max": w_rec.max(),
        "w_in_min": w_in.min(), "w_in_max": w_in.max(),
        "prod_min": prod.min(), "prod_max": prod.max(),
        "all_positive": t["all_products_positive"], "n_positive": int((prod > 0).sum()),
        "w_out_either_sign": bool((w_out > 0).any() and (w_out < 0).any()),
        "same_sign": bool(np.all(np.sign(w_out) == np.sign(w_in))),
        "n_eval": "/".join(f"{x:,}" for x in sorted({g["n_decisive"] + g["n_ties"]
                                                    for g in even_groups.values()})),
        "accuracy_sentence": _accuracy_sentence(acc),
        "figure_perfect": min(figure) == 1.0,
        "figure_lo": 100 * min(figure), "figure_hi": 100 * max(figure),
        "odd_lengths": and_list(acc["odd_lengths"]),
        "odd_acc_lo": 100 * min(odd_all), "odd_acc_hi": 100 * max(odd_all),
        "grid_argmin": and_list(argmins),
        "t_long": t_long,
        "oldest_weight": float(np.abs(w_rec).max()) ** (t_long - 1),
    }


def q2_from_results(results_dir: str | pathlib.Path) -> str:
    """The body of docs/answers.md's Q2 section from `results_dir/recurrence.json`, or the
    command that measures it."""
    r = read_json(pathlib.Path(results_dir) / "recurrence.json")
    return render("q2.md", None if r is None else q2_values(r))
