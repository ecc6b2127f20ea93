"""Q4 (sentiment analysis): templates/q4.md filled from results/sentiment_facts.json and the
collected runs results/sentiment_NAME.json (`python -m experiments.sentiment_answers`)."""

from __future__ import annotations

import pathlib
from typing import Any

from configs.sentiment import get_config
from experiments.report.text import fill, pct, read_json, reflow, row
from experiments.sentiment_answers import EXTRA_SENTENCES, FACTS_FILE, load_runs
from experiments.sentiment_train import NOTEBOOK_SENTENCES
from hw3_jax import factory
from hw3_jax.bert import BertConfig, bert_param_shapes
from hw3_jax.models import count_params

SOURCES = {"imdb": "IMDB", "synthetic": "embedded synthetic reviews"}


def _facts_values(facts: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer, split and parameter facts, with the GRU's parameter formula checked
    against the counted total."""
    tok, p = facts["tokenizer"], facts["params"]
    h = p["hidden_dim"]
    per_layer = [(i, 3 * h * (i + h) + 6 * h)
                 for i in [p["bert_hidden"]] + [2 * h] * (p["n_layers"] - 1)]
    gru_total = 2 * sum(n for _, n in per_layer)
    if gru_total != p["by_part"]["gru"]:
        raise ValueError(f"GRU formula {gru_total} != counted {p['by_part']['gru']}")
    return {
        "tok": tok, "splits": facts["splits"], "params": p, "head_in": 2 * h,
        "example_tokens": tok and ", ".join(repr(t) for t in tok["example_tokens"]),
        "gru_layers": [{"i": i, "n": n} for i, n in per_layer],
    }


def _epoch_row(h: dict[str, Any], best: int | None) -> str:
    secs = h.get("epoch_time_s")
    t = "n/a" if secs is None else (f"{secs / 60:.1f} min" if secs >= 120 else f"{secs:.1f} s")
    return row([f"{h['epoch']}{' (best)' if h['epoch'] == best else ''}",
                f"{h['train_loss']:.3f}", pct(h["train_accuracy"], 2),
                f"{h['val_loss']:.3f}", pct(h["val_accuracy"], 2), t])


def run_section(name: str, m: dict[str, Any], folder: str = "results") -> str:
    """One run's training table, test result and predictions (`m`: its collected JSON,
    `folder/sentiment_NAME.json`: metrics.json with config.json as "run_config")."""
    rc, hist = m["run_config"], m.get("history") or []
    best = (m.get("best") or {}).get("epoch")
    # The split sizes a run used, when a --limit cut them.
    sizes = m["data"]["sizes"]
    used = {"train": hist[0].get("train_examples"), "validation": hist[0].get("val_examples"),
            "test": m.get("test_examples")} if hist else {}
    limited = bool(used) and all(used.values()) and used != sizes
    total = m["params"]["total"]
    if rc["encoder_cache"]["enabled"]:
        # A cached encoder trains the head alone: add the frozen encoder it ran on (its
        # shapes from the run's saved config, nothing allocated).
        total += count_params(bert_param_shapes(BertConfig.from_dict(rc["bert"])))
    later = sorted({f"{h['epoch_time_s']:.1f}" for h in hist[1:]}, key=float)  # epoch 2 on
    predictions = m.get("predictions") or {}
    values = {
        **m, "name": name, "folder": folder, "model": rc["model"], "bert": rc["bert"],
        "pretrained": factory.is_pretrained(rc["model"]),
        "several_layers": rc["bert"]["num_hidden_layers"] != 1,
        "source": SOURCES.get(rc["data"]["source"], rc["data"]["source"]),
        "command": m["command"], "on_cpu": m["devices"].get("backend") == "cpu",
        "several_devices": m["devices"].get("num_devices", 1) > 1,
        "sizes": used if limited else sizes, "limited": limited, "total_params": total,
        "epoch_rows": [_epoch_row(h, best) for h in hist],
        "tested": m.get("test_accuracy") is not None,
        "later": f"{later[0]}-{later[-1]}" if len(later) > 1 else "".join(later),
        "total_s": (m.get("timings") or {}).get("total_s"),
        "prediction_rows": [
            row(["Q4a" if text in NOTEBOOK_SENTENCES else "Q4b" if text in EXTRA_SENTENCES
                 else "", text, "error" if p is None else f"{p:.4f}"])
            for text, p in predictions.items()],
        "predictions": predictions,
        "extra_scored": any(t in predictions for t in EXTRA_SENTENCES),
    }
    return fill("q4_run.md", values)


def q4_from_results(results_dir: str | pathlib.Path) -> str:
    """The body of docs/answers.md's Q4 section from `results_dir/sentiment_facts.json` and
    `results_dir/sentiment_*.json`; parts whose files do not exist say which command produces
    them."""
    results_dir = pathlib.Path(results_dir)
    facts = read_json(results_dir / FACTS_FILE)
    runs = load_runs(results_dir)
    values = {
        "notebook": get_config("notebook"), "facts": facts,
        **(_facts_values(facts) if facts else {}),
        "runs": "\n\n".join(run_section(name, m) for name, m in runs.items()),
        "pretrained_run": any(factory.is_pretrained(m["run_config"]["model"])
                              for m in runs.values()),
    }
    return reflow(fill("q4.md", values))
