"""Q4's written answer: the notebook's questions, answered with numbers this project measures.

    python -m experiments.sentiment_answers facts      # -> results/sentiment_facts.json
    python -m experiments.sentiment_answers collect --workdir runs/bert --name bert
                                                       # -> results/sentiment_bert.json

`facts` measures what needs no training: the bert-base-uncased vocabulary and tokenizer
(from its real `vocab.txt`, through the tokenizer the experiment uses), the IMDB split sizes
(the real archive through the experiment's split) and the parameter counts of the notebook's
model (`jax.eval_shape`, nothing allocated). `collect` copies a finished run's
`WORKDIR/metrics.json` (per-epoch losses and accuracies, test result) into `results/`, adds
the command that made it and the model's predictions on the notebook's two sentences and two
more, and copies its `curves.png`. `q4_from_results` turns those files into the Markdown of
docs/answers.md's Q4 section (`python -m experiments.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any

from experiments.answer_text import fill, pct, reflow, tex_int

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_VOCAB = SHARED / "bert-base-uncased" / "vocab.txt"
DEFAULT_ARCHIVE = SHARED / "aclImdb_v1.tar.gz"
FACTS_FILE = "sentiment_facts.json"
RUN_GLOB = "sentiment_*.json"

# The notebook's Q1a example and its special tokens.
EXAMPLE_TEXT = "Hello WORLD how ARE yoU?"
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
# The notebook's Q4a sentences (as in experiments.sentiment) and, for Q4b, two of our own.
NOTEBOOK_SENTENCES = (
    "Justice League is terrible. I hated it.",
    "Avengers was great!!",
)
EXTRA_SENTENCES = (
    "One of the most moving films of the decade, with a superb cast and a score I still hum.",
    "Two hours I will never get back: a dull plot, wooden acting and a predictable ending.",
)
# What the original (PyTorch, Colab GPU) notebook printed, for comparison only.
NOTEBOOK_REFERENCE = {"test_accuracy": 0.9087, "test_loss": 0.228, "epoch_minutes": 14.5}


# ------------------------------------------------------------------------------------ facts


def tokenizer_facts(vocab: str | pathlib.Path) -> dict[str, Any]:
    """Vocabulary size, the notebook's example and special-token ids, and the 512-token cut,
    measured with `hw3_jax.input_pipeline.load_pretrained_tokenizer` (the experiment's own
    tokenizer) on `vocab` (a vocab.txt, tokenizer.json, encoder folder or hub name)."""
    from hw3_jax import input_pipeline as ip

    tok = ip.load_pretrained_tokenizer(vocab, max_length=512)
    plain = tok.encode(EXAMPLE_TEXT, add_special_tokens=False)
    full = tok.encode(EXAMPLE_TEXT)
    long_text = " ".join(["wonderful"] * 600)
    cut = tok.encode(long_text).ids
    return {
        "vocab": _display_path(vocab),
        "vocab_size": tok.get_vocab_size(),
        "example": EXAMPLE_TEXT,
        "example_tokens": plain.tokens,
        "example_ids": plain.ids,
        "example_ids_with_specials": full.ids,
        "special_ids": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "long_review_words": 600,
        "long_review_ids": len(cut),
        "long_review_first_last": [cut[0], cut[-1]],
    }


def _display_path(path: str | pathlib.Path) -> str:
    """A local path relative to the checkout (no machine-specific prefix); names as given."""
    p = pathlib.Path(path)
    return os.path.relpath(p.resolve(), ROOT) if p.exists() else str(path)


def split_facts(archive: str | pathlib.Path) -> dict[str, Any]:
    """Review counts of the IMDB archive and the experiment's train/validation split of it."""
    from hw3_jax import input_pipeline as ip

    raw = ip.read_imdb_archive(archive)
    tr, va = ip.split_indices(len(raw.train))
    return {
        "archive": pathlib.Path(archive).name,
        "imdb_train": len(raw.train),
        "imdb_test": len(raw.test),
        "train_fraction": ip.TRAIN_FRACTION,
        "train": len(tr),
        "validation": len(va),
        "test": len(raw.test),
        "test_positive": int(raw.test.labels.sum()),
        "train_positive": int(raw.train.labels[tr].sum()),
    }


def param_facts() -> dict[str, Any]:
    """Parameter counts of the notebook's model (bert-base-uncased + GRU(256, 2 layers,
    bidirectional) + Linear(512, 1)), from `jax.eval_shape`: nothing is allocated."""
    from hw3_jax import models

    model = models.BertGRUSentiment()
    shapes = models.param_shapes(model)
    mask = models.trainable_mask(shapes, freeze_encoder=True)
    per = {k: models.count_params(v) for k, v in shapes.items()}
    gru = {k: models.count_params(v) for k, v in shapes["gru"].items()}
    return {
        "total": models.count_params(shapes),
        "trainable_frozen_encoder": models.count_trainable(shapes, mask),
        "by_part": per,
        "gru_by_layer": gru,
        "hidden_dim": model.hidden_dim,
        "n_layers": model.n_layers,
        "bert_hidden": model.bert.hidden_size,
    }


def collect_facts(vocab: str | pathlib.Path | None, archive: str | pathlib.Path | None
                  ) -> dict[str, Any]:
    t0 = time.perf_counter()
    facts: dict[str, Any] = {"command": "python -m experiments.sentiment_answers facts"}
    facts["tokenizer"] = tokenizer_facts(vocab) if vocab else None
    facts["splits"] = split_facts(archive) if archive else None
    facts["params"] = param_facts()
    facts["wall_time_s"] = round(time.perf_counter() - t0, 1)
    return facts


# ---------------------------------------------------------------------------------- collect


def run_command(run: dict[str, Any]) -> str:
    """The `python -m experiments.sentiment` command of a run, from metrics.json's
    `extra.run` (the options that differ from the defaults, and the workdir)."""
    from experiments.sentiment import _train_args

    p = argparse.ArgumentParser()
    _train_args(p)
    defaults = vars(p.parse_args([]))
    skip = {"no_progress", "resume", "overwrite", "debug_nan_at_step", "workdir"}
    parts = ["python -m experiments.sentiment"]
    for key, default in defaults.items():
        if key in skip or key not in run:
            continue
        if key == "synthetic_size" and run.get("data") != "synthetic":
            continue
        val = run[key]
        if run.get("preset") and key == "data" and val in ("imdb", "synthetic"):
            # --data is implied by the encoder/archive unless it was given otherwise.
            implied = "imdb" if (run.get("encoder") != "scratch" or run.get("imdb_archive")) \
                else "synthetic"
            if val == implied:
                continue
        if isinstance(default, bool):
            if val:
                parts.append(f"--{key.replace('_', '-')}")
        elif val is not None and val != default and not _is_preset_value(run, key, val):
            parts.append(f"--{key.replace('_', '-')} {val}")
    parts.append(f"--workdir {run.get('workdir', 'runs/sentiment')}")
    return " ".join(parts)


def _is_preset_value(run: dict[str, Any], key: str, val: Any) -> bool:
    """True when `val` is what the run's preset fills in anyway (so the flag is not needed)."""
    from experiments.sentiment import PRESETS

    return PRESETS.get(run.get("preset", ""), {}).get(key) == val


def collect(workdir: str | pathlib.Path, name: str, out: str | pathlib.Path,
            predict: bool = True) -> list[pathlib.Path]:
    """results/sentiment_NAME.json (+ _curves.png) from a finished run's workdir."""
    workdir, out = pathlib.Path(workdir), pathlib.Path(out)
    metrics_file = workdir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} does not exist: train into {workdir} first "
                                "(python -m experiments.sentiment --workdir ...)")
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("status") != "completed":
        raise ValueError(f"the run in {workdir} is {metrics.get('status')!r}, not completed: "
                         "finish it (--resume) before collecting")
    metrics["command"] = run_command(metrics.get("extra", {}).get("run", {}))
    if predict:
        from hw3_jax.predict import SentimentPredictor

        predictor = SentimentPredictor.load(workdir)
        scored = predictor.score(list(NOTEBOOK_SENTENCES + EXTRA_SENTENCES))
        metrics["predictions"] = {r.text: r.p_positive for r in scored}
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"sentiment_{name}.json"]
    paths[0].write_text(json.dumps(metrics, indent=2) + "\n")
    if (workdir / "curves.png").is_file():
        paths.append(out / f"sentiment_{name}_curves.png")
        shutil.copyfile(workdir / "curves.png", paths[-1])
    return paths


# --------------------------------------------------------------------------------- markdown

Q4_INTRO = r"""
Code: `hw3_jax/bert.py` (BERT in Flax, pretrained weights), `hw3_jax/gru.py`,
`hw3_jax/models.py` (`BertGRUSentiment`), `hw3_jax/input_pipeline.py` (IMDB, WordPiece,
the split), `hw3_jax/train.py` (the training loop), `hw3_jax/predict.py`
(`SentimentPredictor.predict_sentiment`). The notebook's recipe is
`python -m experiments.sentiment --encoder bert-base-uncased` (frozen pretrained
bert-base-uncased on IMDB from tensorflow-datasets, <<epochs>> epochs, batch <<batch>>, at most
<<max_len>> tokens, Adam with learning rate <<lr>>). The answers follow the notebook's own
questions.
"""

FACTS_MISSING = """
*Not measured yet:* run `python -m experiments.sentiment_answers facts` (reads
`../shared/data/bert-base-uncased/vocab.txt` and `../shared/data/aclImdb_v1.tar.gz`; pass
`--vocab`/`--imdb-archive` elsewhere), then `python -m experiments.report`.
"""

Q4_DATA = r"""
**Data preparation (notebook Q1).** Measured by `<<facts_cmd>>` (<<facts_s>> s; written to
`results/sentiment_facts.json`), through the experiment's own tokenizer and split code.

- *Q1a, the vocabulary:* <<vocab_clause>>
- *Q1b, the split sizes:* <<split_clause>>
"""

Q4_MODEL = r"""
**The model (notebook Q2).** *Q2a:* `BertGRUSentiment()` is the notebook's `BERTGRUSentiment` with
`HIDDEN_DIM = <<hidden>>`, `OUTPUT_DIM = 1`, `N_LAYERS = <<layers>>`, `BIDIRECTIONAL = True`,
`DROPOUT = 0.25`: BERT's last hidden states $E \in \mathbb{R}^{L\times <<bert_hidden>>}$ go through
a
<<layers>>-layer bidirectional GRU, the last layer's final forward and backward states are
concatenated,
$h = [\overrightarrow{h}_L; \overleftarrow{h}_1] \in \mathbb{R}^{<<head_in>>}$, and after dropout a
linear
layer gives one logit $z = w^\top h + b$, $P(\text{positive}) = \sigma(z)$. Counted with
`jax.eval_shape` (nothing allocated):

- *Q2b, all parameters:* **<<total>>** = BERT <<bert_params>> + GRU <<gru_params>> + linear
  <<out_params>>. A GRU layer and direction with input size $I$ and hidden size $H$ has
  $3H(I + H) + 6H$ parameters (three gates, two bias vectors each): <<gru_formula>>; the
  linear layer $<<head_in>> + 1 = <<out_params>>$.
- *Q2c, trainable with BERT frozen:* **<<trainable>>** ($= <<total_tex>> - <<bert_tex>>$). In JAX
  freezing is not a flag on the weights: the encoder's output passes through
  `jax.lax.stop_gradient` (so, like the notebook's `torch.no_grad()`, no backward pass runs
  through BERT), and `optax.multi_transform` gives the frozen leaves zero updates and no Adam
  state.
"""

Q4_TRAIN_HEAD = r"""
**Training (notebook Q3).** Loss: binary cross-entropy on the logit,
$\ell(z, y) = -\big(y\log\sigma(z) + (1-y)\log(1-\sigma(z))\big)$ (`nn.BCEWithLogitsLoss`,
here `optax.sigmoid_binary_cross_entropy`); accuracy (Q3a): the fraction of reviews with
$\mathbb{1}[z > 0] = y$, i.e. $\sigma(z) > 0.5$. Both are averaged over reviews (the notebook
averaged per-batch means, which weights the last, smaller batch more). Q3b-Q3d are
`hw3_jax.train.train`: one jitted step per batch, evaluation on the validation split after
every epoch, the parameters with the lowest validation loss kept as the best checkpoint and
evaluated on the test split. For comparison, the original notebook (PyTorch, a Colab GPU)
printed a test accuracy of <<ref_acc>> (loss <<ref_loss>>) at about <<ref_min>> minutes per epoch.
"""

RUNS_MISSING = """
*No sentiment run collected yet.* The notebook's recipe needs a TPU or GPU and internet
(bert-base-uncased from the Hugging Face hub, IMDB from tensorflow-datasets):
`python -m experiments.sentiment --encoder bert-base-uncased --workdir runs/bert`, then
`python -m experiments.sentiment_answers collect --workdir runs/bert --name bert` (writes
`results/sentiment_bert.json`) and `python -m experiments.report`. Offline on a CPU, the same
code trains a small encoder from scratch: `python -m experiments.sentiment` (embedded
synthetic reviews) or `python -m experiments.sentiment --imdb-archive
../shared/data/aclImdb_v1.tar.gz` (real IMDB).
"""

Q4_INFER_HEAD = r"""
**Inference (notebook Q4).** `SentimentPredictor.load(workdir).predict_sentiment(text)`
tokenizes like training ([CLS], at most 510 WordPiece tokens, [SEP]) and returns
$\sigma(z)$, the probability that the review is positive. The original notebook's printed
numbers read the other way round (0.83 for "terrible", 0.07 for "great"): its label vocabulary
mapped `pos` to 0, so its sigmoid was $P(\text{negative})$. Q4a is the notebook's two sentences,
Q4b two more of ours.
"""


def _fmt_int(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def _run_label(name: str, m: dict[str, Any]) -> str:
    run = m.get("extra", {}).get("run", {})
    bert = m.get("extra", {}).get("bert", {})
    data = run.get("data", "?")
    src = {"imdb": "IMDB", "synthetic": "embedded synthetic reviews"}.get(data, data)
    if run.get("encoder", "scratch") != "scratch":
        enc = f"{run['encoder']}, " + ("fine-tuned" if run.get("unfreeze") else "frozen")
    else:
        n = bert.get("num_hidden_layers")
        enc = (f"encoder trained from scratch ({n} layer{'' if n == 1 else 's'}, hidden "
               f"{bert.get('hidden_size')}, {bert.get('attention', 'softmax')} attention)")
    return f"`{name}`: {enc}, on {src}"


def _device(m: dict[str, Any]) -> str:
    d = m.get("devices", {})
    kind, backend, n = d.get("kind", "?"), d.get("backend", "?"), d.get("num_devices", 1)
    if backend == "cpu":
        return "CPU"
    return f"{n} x {kind}" if n and n > 1 else f"{kind}"


def _encoder_params(bert: dict[str, Any]) -> int:
    """Parameters of the BERT encoder described by a run's saved config (nothing
    allocated)."""
    from hw3_jax.bert import BertConfig, bert_param_shapes
    from hw3_jax.models import count_params

    return count_params(bert_param_shapes(BertConfig.from_dict(bert)))


def run_section(name: str, m: dict[str, Any], folder: str = "results") -> str:
    """One run's training table, test result and predictions (`m`: its collected JSON,
    `folder/sentiment_NAME.json`)."""
    cmd = m.get("command") or run_command(m.get("extra", {}).get("run", {}))
    lines = [f"*Run {_run_label(name, m)}.* Made by `{cmd}`"
             f" on {_device(m)}; `{folder}/sentiment_{name}.json`"
             + (f", curves `{folder}/sentiment_{name}_curves.png`." if m.get("_curves")
                else ".")]
    sizes = m.get("extra", {}).get("data", {}).get("sizes")
    hist = m.get("history") or []
    if sizes and hist and m.get("test_examples"):  # what the run used (--limit cuts splits)
        used = {"train": hist[0].get("train_examples"),
                "validation": hist[0].get("val_examples"), "test": m["test_examples"]}
        if all(used.values()) and used != sizes:
            sizes = {**used, "limited": True}
    params = dict(m.get("params", {}))
    if params and "encoder_cache" in m.get("extra", {}) and "bert" in m.get("extra", {}):
        # --cache-encoder trains the head alone: add the frozen encoder it ran on.
        params["total"] = params.get("total", 0) + _encoder_params(m["extra"]["bert"])
    facts = []
    if sizes:
        facts.append(f"{sizes['train']:,} train / {sizes['validation']:,} validation / "
                     f"{sizes['test']:,} test reviews"
                     + (" (a random part of each split: `--limit`)" if sizes.get("limited")
                        else ""))
    if params:
        facts.append(f"{params.get('total', 0):,} parameters, {params.get('trainable', 0):,} "
                     "trainable")
    steps = m.get("steps")
    if steps:
        facts.append(f"{steps:,} steps")
    if facts:
        text = "; ".join(facts)
        lines[0] += " " + text[0].upper() + text[1:] + "."
    lines.append("")
    lines.append("| epoch | train loss | train acc | val. loss | val. acc | epoch time |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
    best = (m.get("best") or {}).get("epoch")
    for h in m.get("history", []):
        mark = " (best)" if h["epoch"] == best else ""
        secs = h.get("epoch_time_s")
        t = "n/a" if secs is None else (f"{secs / 60:.1f} min" if secs >= 120 else f"{secs:.1f} s")
        lines.append(f"| {h['epoch']}{mark} | {h['train_loss']:.3f} | {pct(h['train_accuracy'], 2)}"
                     f" | {h['val_loss']:.3f} | {pct(h['val_accuracy'], 2)} | {t} |")
    lines.append("")
    if m.get("test_accuracy") is not None:
        lines.append(f"Test (best epoch {best}, {_fmt_int(m.get('test_examples'))} reviews): "
                     f"loss **{m['test_loss']:.3f}**, accuracy **{pct(m['test_accuracy'], 2)}**.")
    else:
        lines.append("Test: not evaluated in this run.")
    timings = m.get("timings") or {}
    if len(m.get("history", [])) > 1:
        later = [f"{h['epoch_time_s']:.1f}" for h in m["history"][1:]]
        span = later[0] if min(later) == max(later) else f"{min(later)}-{max(later)}"
        lines[-1] += (f" The first epoch took {m['history'][0]['epoch_time_s']:.1f} s (it "
                      f"includes compilation), later ones {span} s.")
    elif timings.get("total_s"):
        lines[-1] += f" Total {timings['total_s']:.0f} s."
    preds = m.get("predictions") or {}
    if preds:
        lines.append("")
        lines.append("| | review | $P(\\text{positive})$ |")
        lines.append("| --- | --- | ---: |")
        for text, p in preds.items():
            tag = ("Q4a" if text in NOTEBOOK_SENTENCES else
                   "Q4b" if text in EXTRA_SENTENCES else "")
            val = "error" if p is None else f"{p:.4f}"
            lines.append(f"| {tag} | {text} | {val} |")
        if not any(t in preds for t in EXTRA_SENTENCES):
            lines.append("")
            lines.append(f"(Q4b's sentences: `python -m experiments.sentiment_answers collect "
                         f"--workdir WORKDIR --name {name}` scores them with this run's model.)")
    return "\n".join(lines)


def _data_values(facts: dict[str, Any]) -> dict[str, str]:
    tok, sp = facts.get("tokenizer"), facts.get("splits")
    v = {"facts_cmd": facts["command"], "facts_s": f"{facts['wall_time_s']:.0f}"}
    if tok:
        sid = tok["special_ids"]
        first, last = tok["long_review_first_last"]
        v["vocab_clause"] = (
            f"**{tok['vocab_size']:,}** WordPiece tokens (bert-base-uncased's `vocab.txt`). "
            f"\"{tok['example']}\" is lower-cased and split into "
            + "`[" + ", ".join(repr(t) for t in tok["example_tokens"]) + "]`"
            + f", ids `{tok['example_ids']}`; the special tokens "
            + " ".join(SPECIAL_TOKENS) + " are "
            + " ".join(str(sid[t]) for t in SPECIAL_TOKENS)
            + f", so the example enters the model as `{tok['example_ids_with_specials']}`. "
            "BERT has 512 positions, so a review keeps at most $512 - 2 = 510$ WordPiece "
            f"tokens between [CLS] and [SEP]: a {tok['long_review_words']}-word review encodes "
            f"to {tok['long_review_ids']} ids, the first {first} and the last {last}.")
    else:
        v["vocab_clause"] = ("not measured (no vocabulary given to "
                             "`python -m experiments.sentiment_answers facts --vocab PATH`).")
    if sp:
        v["split_clause"] = (
            f"IMDB ({sp['archive']}) has {sp['imdb_train']:,} labelled training and "
            f"{sp['imdb_test']:,} test reviews. The training reviews are split at random "
            f"(seeded) in the notebook's proportion {sp['train_fraction']:g} / "
            f"{1 - sp['train_fraction']:g}: **{sp['train']:,}** train / "
            f"**{sp['validation']:,}** validation, and the **{sp['test']:,}** test reviews are "
            f"kept whole ({sp['test_positive']:,} positive; {sp['train_positive']:,} of the "
            "train split are positive).")
    else:
        v["split_clause"] = ("not measured (no archive given to "
                             "`python -m experiments.sentiment_answers facts --imdb-archive "
                             "PATH`).")
    return v


def _model_values(p: dict[str, Any]) -> dict[str, str]:
    h, layers, e = p["hidden_dim"], p["n_layers"], p["bert_hidden"]
    per_layer = []
    for layer in range(layers):
        i = e if layer == 0 else 2 * h
        per_layer.append((i, 3 * h * (i + h) + 6 * h))
    gru_formula = ", ".join(f"layer {k + 1} ($I = {i}$): ${3 * h} \\cdot {i + h} + {6 * h} = "
                            f"{tex_int(n)}$" for k, (i, n) in enumerate(per_layer))
    terms = " + ".join(tex_int(n) for _, n in per_layer)
    gru_formula += (f", times 2 directions: $2 \\cdot ({terms}) = "
                    f"{tex_int(2 * sum(n for _, n in per_layer))}$")
    by = p["by_part"]
    if 2 * sum(n for _, n in per_layer) != by["gru"]:
        raise ValueError(f"GRU formula {2 * sum(n for _, n in per_layer)} != counted {by['gru']}")
    return {
        "hidden": h, "layers": layers, "bert_hidden": e, "head_in": 2 * h,
        "total": f"{p['total']:,}", "trainable": f"{p['trainable_frozen_encoder']:,}",
        "bert_params": f"{by['bert']:,}", "gru_params": f"{by['gru']:,}",
        "out_params": f"{by['out']:,}", "gru_formula": gru_formula,
        "total_tex": tex_int(p["total"]), "bert_tex": tex_int(by["bert"]),
    }


def load_runs(results_dir: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """results/sentiment_NAME.json files (completed runs' metrics), pretrained ones first."""
    results_dir = pathlib.Path(results_dir)
    runs = {}
    for path in sorted(results_dir.glob(RUN_GLOB)):
        if path.name == FACTS_FILE:
            continue
        m = json.loads(path.read_text())
        if "history" not in m:  # not a metrics.json
            continue
        name = path.stem.removeprefix("sentiment_")
        m["_curves"] = (results_dir / f"sentiment_{name}_curves.png").is_file()
        runs[name] = m

    def order(item):
        run = item[1].get("extra", {}).get("run", {})
        return (run.get("encoder", "scratch") == "scratch", run.get("data") != "imdb", item[0])

    return dict(sorted(runs.items(), key=order))


def q4_markdown(facts: dict[str, Any] | None, runs: dict[str, dict[str, Any]]) -> str:
    """The body of docs/answers.md's Q4 section from the facts and the collected runs; parts
    whose files do not exist say which command produces them."""
    from experiments.sentiment import PRESETS

    pre = PRESETS["pretrained"]
    parts = [fill(Q4_INTRO, {"epochs": pre["epochs"], "batch": pre["batch_size"],
                             "max_len": pre["max_length"], "lr": f"{pre['lr']:g}"},
                  "Q4 intro")]
    if facts is None:
        parts.append("**Data preparation and the model (notebook Q1, Q2).**\n" + FACTS_MISSING)
    else:
        parts.append(fill(Q4_DATA, _data_values(facts), "Q4 data template"))
        parts.append(fill(Q4_MODEL, _model_values(facts["params"]), "Q4 model template"))
    ref = NOTEBOOK_REFERENCE
    parts.append(fill(Q4_TRAIN_HEAD, {"ref_acc": pct(ref["test_accuracy"], 2),
                                      "ref_loss": f"{ref['test_loss']:.3f}",
                                      "ref_min": f"{ref['epoch_minutes']:g}"}, "Q4 template"))
    if runs:
        parts.append(Q4_INFER_HEAD.replace("Q4a is", "Per run below, Q4a is", 1))
        parts.extend(run_section(name, m) for name, m in runs.items())
        if not any(m.get("extra", {}).get("run", {}).get("encoder", "scratch") != "scratch"
                   for m in runs.values()):
            parts.append("*The notebook's recipe itself (frozen pretrained bert-base-uncased on "
                         "IMDB) has no collected run yet:* "
                         "`python -m experiments.sentiment --encoder bert-base-uncased "
                         "--workdir runs/bert` on a TPU or GPU, then "
                         "`python -m experiments.sentiment_answers collect --workdir runs/bert "
                         "--name bert`.")
    else:
        parts.append(Q4_INFER_HEAD)
        parts.append(RUNS_MISSING)
    return reflow("\n\n".join(p.strip("\n") for p in parts))


def q4_from_results(results_dir: str | pathlib.Path = ROOT / "results") -> str:
    """`q4_markdown` of `results_dir/sentiment_facts.json` and `results_dir/sentiment_*.json`
    (either may be missing)."""
    results_dir = pathlib.Path(results_dir)
    facts_path = results_dir / FACTS_FILE
    facts = json.loads(facts_path.read_text()) if facts_path.is_file() else None
    return q4_markdown(facts, load_runs(results_dir))


# ------------------------------------------------------------------------------------- main


def _existing(path: pathlib.Path) -> str | None:
    return str(path) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.sentiment_answers",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("facts", help="tokenizer, split and parameter facts -> "
                       "results/sentiment_facts.json")
    f.add_argument("--vocab", default=_existing(DEFAULT_VOCAB),
                   help="bert-base-uncased vocab.txt, tokenizer.json or hub name "
                   "(default: ../shared/data/bert-base-uncased/vocab.txt)")
    f.add_argument("--imdb-archive", default=_existing(DEFAULT_ARCHIVE),
                   help="aclImdb_v1.tar.gz (default: ../shared/data/aclImdb_v1.tar.gz)")
    f.add_argument("--out", type=pathlib.Path, default=ROOT / "results")
    c = sub.add_parser("collect", help="a finished run's metrics -> results/sentiment_NAME.json")
    c.add_argument("--workdir", required=True, help="the run's --workdir")
    c.add_argument("--name", required=True, help="NAME in results/sentiment_NAME.json")
    c.add_argument("--out", type=pathlib.Path, default=ROOT / "results")
    c.add_argument("--no-predict", action="store_true",
                   help="keep the run's own predictions (do not load the model)")
    args = p.parse_args(argv)
    try:
        if args.command == "facts":
            facts = collect_facts(args.vocab, args.imdb_archive)
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / FACTS_FILE
            path.write_text(json.dumps(facts, indent=2) + "\n")
            prm = facts["params"]
            print(f"parameters {prm['total']:,} ({prm['trainable_frozen_encoder']:,} trainable "
                  "with BERT frozen)")
            if facts["tokenizer"]:
                print(f"vocabulary {facts['tokenizer']['vocab_size']:,}; "
                      f"{facts['tokenizer']['example']!r} -> {facts['tokenizer']['example_ids']}")
            if facts["splits"]:
                s = facts["splits"]
                print(f"splits {s['train']:,} / {s['validation']:,} / {s['test']:,}")
            print(f"wrote {path} in {facts['wall_time_s']:.0f} s")
        else:
            if not args.name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"--name {args.name!r}: use letters, digits, - and _ only")
            paths = collect(args.workdir, args.name, args.out, predict=not args.no_predict)
            print("wrote " + ", ".join(str(x) for x in paths))
    except (OSError, ValueError, RuntimeError) as e:  # missing files, bad names, unfinished run
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
