"""Q4 (sentiment analysis): docs/templates/q4.md filled from results/sentiment_facts.json and the
collected runs results/sentiment_NAME.json (`python -m experiments.sentiment_answers`)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from experiments import sentiment_answers as sa
from experiments.report.text import fill, pct, reflow, row, template, tex_int

# What the original (PyTorch, Colab GPU) notebook printed, for comparison only.
NOTEBOOK_REFERENCE = {"test_accuracy": 0.9087, "test_loss": 0.228, "epoch_minutes": 14.5}


def _intro_values() -> dict[str, Any]:
    """The notebook recipe's settings, from its variant in configs/sentiment.py."""
    from configs.sentiment import get_config

    c = get_config("notebook")
    return {"epochs": c.train.epochs, "batch": c.data.batch_size, "max_len": c.data.max_length,
            "lr": f"{c.train.learning_rate:g}"}


def _vocab_values(tok: dict[str, Any]) -> dict[str, Any]:
    sid = tok["special_ids"]
    first, last = tok["long_review_first_last"]
    return {
        "vocab_size": f"{tok['vocab_size']:,}", "example": tok["example"],
        "example_tokens": ", ".join(repr(t) for t in tok["example_tokens"]),
        "example_ids": tok["example_ids"], "special_tokens": " ".join(sa.SPECIAL_TOKENS),
        "special_ids": " ".join(str(sid[t]) for t in sa.SPECIAL_TOKENS),
        "example_ids_with_specials": tok["example_ids_with_specials"],
        "long_words": tok["long_review_words"], "long_ids": tok["long_review_ids"],
        "first_id": first, "last_id": last,
    }


def _split_values(sp: dict[str, Any]) -> dict[str, Any]:
    counts = ("imdb_train", "imdb_test", "train", "validation", "test", "test_positive",
              "train_positive")
    return {"archive": sp["archive"], "train_fraction": f"{sp['train_fraction']:g}",
            "val_fraction": f"{1 - sp['train_fraction']:g}",
            **{k: f"{sp[k]:,}" for k in counts}}


def _data_values(facts: dict[str, Any], pieces: dict[str, str]) -> dict[str, Any]:
    tok, sp = facts.get("tokenizer"), facts.get("splits")
    return {
        "facts_cmd": facts["command"], "facts_s": f"{facts['wall_time_s']:.0f}",
        "vocab_clause": (fill(pieces["vocab"], _vocab_values(tok)) if tok
                         else pieces["vocab_missing"]),
        "split_clause": (fill(pieces["splits"], _split_values(sp)) if sp
                         else pieces["splits_missing"]),
    }


def _model_values(p: dict[str, Any], pieces: dict[str, str]) -> dict[str, Any]:
    """The parameter counts, with the GRU's formula checked against the counted total."""
    h, layers, e = p["hidden_dim"], p["n_layers"], p["bert_hidden"]
    per_layer = [(i, 3 * h * (i + h) + 6 * h) for i in [e] + [2 * h] * (layers - 1)]
    gru_total = 2 * sum(n for _, n in per_layer)
    by = p["by_part"]
    if gru_total != by["gru"]:
        raise ValueError(f"GRU formula {gru_total} != counted {by['gru']}")
    formula = ", ".join(
        fill(pieces["gru_layer"], {"k": k + 1, "i": i, "three_h": 3 * h, "i_plus_h": i + h,
                                   "six_h": 6 * h, "n": tex_int(n)})
        for k, (i, n) in enumerate(per_layer))
    formula += fill(pieces["gru_total"], {"terms": " + ".join(tex_int(n) for _, n in per_layer),
                                          "total": tex_int(gru_total)})
    return {
        "hidden": h, "layers": layers, "bert_hidden": e, "head_in": 2 * h,
        "total": f"{p['total']:,}", "trainable": f"{p['trainable_frozen_encoder']:,}",
        "bert_params": f"{by['bert']:,}", "gru_params": f"{by['gru']:,}",
        "out_params": f"{by['out']:,}", "gru_formula": formula,
        "total_tex": tex_int(p["total"]), "bert_tex": tex_int(by["bert"]),
    }


def _run_label(name: str, m: dict[str, Any]) -> str:
    model, bert = m["run_config"]["model"], m["run_config"]["bert"]
    data = m["run_config"]["data"]["source"]
    src = {"imdb": "IMDB", "synthetic": "embedded synthetic reviews"}.get(data, data)
    if sa.is_pretrained(m):
        enc = f"{model['encoder']}, " + ("frozen" if model["freeze_encoder"] else "fine-tuned")
    else:
        n = bert["num_hidden_layers"]
        enc = (f"encoder trained from scratch ({n} layer{'' if n == 1 else 's'}, hidden "
               f"{bert['hidden_size']}, {bert['attention']} attention)")
    return f"`{name}`: {enc}, on {src}"


def _device(m: dict[str, Any]) -> str:
    d = m.get("devices", {})
    kind, backend, n = d.get("kind", "?"), d.get("backend", "?"), d.get("num_devices", 1)
    if backend == "cpu":
        return "CPU"
    return f"{n} x {kind}" if n and n > 1 else f"{kind}"


def _run_facts(m: dict[str, Any]) -> str:
    """What the run used: split sizes (as cut by a limit), parameters, steps."""
    sizes = m["data"]["sizes"]
    hist = m.get("history") or []
    if sizes and hist and m.get("test_examples"):
        used = {"train": hist[0].get("train_examples"),
                "validation": hist[0].get("val_examples"), "test": m["test_examples"]}
        if all(used.values()) and used != sizes:
            sizes = {**used, "limited": True}
    params = dict(m.get("params", {}))
    if params and m["run_config"]["encoder_cache"]["enabled"]:
        # A cached encoder trains the head alone: add the frozen encoder it ran on.
        params["total"] = params.get("total", 0) + sa.encoder_params(m["run_config"]["bert"])
    facts = []
    if sizes:
        facts.append(f"{sizes['train']:,} train / {sizes['validation']:,} validation / "
                     f"{sizes['test']:,} test reviews"
                     + (" (a random part of each split: `--limit`)" if sizes.get("limited")
                        else ""))
    if params:
        facts.append(f"{params.get('total', 0):,} parameters, {params.get('trainable', 0):,} "
                     "trainable")
    if m.get("steps"):
        facts.append(f"{m['steps']:,} steps")
    return "; ".join(facts)


def _epoch_rows(m: dict[str, Any]) -> list[str]:
    best = (m.get("best") or {}).get("epoch")
    rows = []
    for h in m.get("history", []):
        secs = h.get("epoch_time_s")
        t = "n/a" if secs is None else (f"{secs / 60:.1f} min" if secs >= 120 else f"{secs:.1f} s")
        rows.append(row([f"{h['epoch']}{' (best)' if h['epoch'] == best else ''}",
                         f"{h['train_loss']:.3f}", pct(h["train_accuracy"], 2),
                         f"{h['val_loss']:.3f}", pct(h["val_accuracy"], 2), t]))
    return rows


def _test_paragraph(m: dict[str, Any], pieces: dict[str, str]) -> str:
    if m.get("test_accuracy") is None:
        text = pieces["run_no_test"]
    else:
        examples = m.get("test_examples")
        text = fill(pieces["run_test"], {
            "best": (m.get("best") or {}).get("epoch"),
            "test_examples": "n/a" if examples is None else f"{examples:,}",
            "test_loss": f"{m['test_loss']:.3f}", "test_accuracy": pct(m["test_accuracy"], 2)})
    hist = m.get("history", [])
    if len(hist) > 1:
        later = [f"{h['epoch_time_s']:.1f}" for h in hist[1:]]
        span = later[0] if min(later) == max(later) else f"{min(later)}-{max(later)}"
        text += " " + fill(pieces["run_epochs"], {"first": f"{hist[0]['epoch_time_s']:.1f}",
                                                  "span": span})
    elif (m.get("timings") or {}).get("total_s"):
        text += " " + fill(pieces["run_total"], {"total": f"{m['timings']['total_s']:.0f}"})
    return text


def _prediction_blocks(name: str, preds: dict[str, Any], pieces: dict[str, str]) -> list[str]:
    rows = []
    for text, p in preds.items():
        tag = ("Q4a" if text in sa.NOTEBOOK_SENTENCES else
               "Q4b" if text in sa.EXTRA_SENTENCES else "")
        rows.append(row([tag, text, "error" if p is None else f"{p:.4f}"]))
    blocks = [fill(pieces["run_predictions"], {"rows": "\n".join(rows)})]
    if not any(t in preds for t in sa.EXTRA_SENTENCES):
        blocks.append(fill(pieces["run_extra_sentences"], {"name": name}))
    return blocks


def run_section(name: str, m: dict[str, Any], folder: str = "results") -> str:
    """One run's training table, test result and predictions (`m`: its collected JSON,
    `folder/sentiment_NAME.json`: metrics.json with config.json as "run_config")."""
    pieces = template("q4.md")
    facts = _run_facts(m)
    curves = f", curves `{folder}/sentiment_{name}_curves.png`." if m.get("_curves") else "."
    head = fill(pieces["run_head"], {
        "label": _run_label(name, m), "command": sa.run_command(m), "device": _device(m),
        "folder": folder, "name": name, "curves": curves,
        "facts": " " + facts[0].upper() + facts[1:] + "." if facts else ""})
    blocks = [head, fill(pieces["run_epoch_table"], {"rows": "\n".join(_epoch_rows(m))}),
              _test_paragraph(m, pieces)]
    if m.get("predictions"):
        blocks += _prediction_blocks(name, m["predictions"], pieces)
    return "\n\n".join(blocks)


def _runs_text(runs: dict[str, dict[str, Any]], pieces: dict[str, str]) -> str:
    if not runs:
        return pieces["runs_missing"]
    parts = [run_section(name, m) for name, m in runs.items()]
    if not any(sa.is_pretrained(m) for m in runs.values()):
        parts.append(pieces["no_pretrained_run"])
    return "\n\n".join(parts)


def q4_markdown(facts: dict[str, Any] | None, runs: dict[str, dict[str, Any]]) -> str:
    """The body of docs/answers.md's Q4 section from the facts and the collected runs; parts
    whose files do not exist say which command produces them."""
    pieces = template("q4.md")
    ref = NOTEBOOK_REFERENCE
    if facts is None:
        data_and_model = pieces["facts_missing"]
    else:
        data_and_model = (fill(pieces["data"], _data_values(facts, pieces)) + "\n\n"
                          + fill(pieces["model"], _model_values(facts["params"], pieces)))
    values = {
        "intro": fill(pieces["intro"], _intro_values()),
        "data_and_model": data_and_model,
        "training": fill(pieces["training"], {"ref_acc": pct(ref["test_accuracy"], 2),
                                              "ref_loss": f"{ref['test_loss']:.3f}",
                                              "ref_min": f"{ref['epoch_minutes']:g}"}),
        "inference": fill(pieces["inference"], {"per_run": "Per run below, " if runs else ""}),
        "runs": _runs_text(runs, pieces),
    }
    return reflow(fill(pieces[""], values, "Q4 template"))


def q4_from_results(results_dir: str | pathlib.Path) -> str:
    """`q4_markdown` of `results_dir/sentiment_facts.json` and `results_dir/sentiment_*.json`
    (either may be missing)."""
    results_dir = pathlib.Path(results_dir)
    facts_path = results_dir / sa.FACTS_FILE
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else None
    return q4_markdown(facts, sa.load_runs(results_dir))
