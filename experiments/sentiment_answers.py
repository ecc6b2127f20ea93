"""Q4's written answer: the notebook's questions, answered with numbers this project measures.

    python -m experiments.sentiment_answers facts      # -> results/sentiment_facts.json
    python -m experiments.sentiment_answers collect --workdir runs/bert --name bert
                                                       # -> results/sentiment_bert.json

`facts` measures what needs no training: the bert-base-uncased vocabulary and tokenizer
(from its real `vocab.txt`, through the tokenizer the experiment uses), the IMDB split sizes
(the real archive through the experiment's split) and the parameter counts of the notebook's
model (`jax.eval_shape`, nothing allocated). `collect` writes a finished run's
`WORKDIR/metrics.json` (per-epoch losses and accuracies, test result) to `results/` with the
run's `WORKDIR/config.json` under "run_config", the command that repeats it and the model's
predictions on the notebook's two sentences and two more, and copies its `curves.png`.
`experiments.report.q4` fills experiments/report/templates/q4.md from those files
(`python -m experiments.report`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from typing import Any

import ml_collections

from configs.sentiment import VARIANTS, get_config
from experiments import cli
from experiments.sentiment import NOT_RECIPE, SHORTCUTS
from experiments.sentiment_train import NOTEBOOK_SENTENCES, resolve
from hw3_jax import factory, models, timing
from hw3_jax.bert import BertConfig
from hw3_jax.data import imdb
from hw3_jax.data.tokenizer import load_pretrained_tokenizer
from hw3_jax.predict import SentimentPredictor
from hw3_jax.train.workdir import Workdir, atomic_path

FACTS_FILE = "sentiment_facts.json"

# The notebook's Q1a example and its special tokens.
EXAMPLE_TEXT = "Hello WORLD how ARE yoU?"
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")
# For Q4b, two sentences of our own beside the notebook's (Q4a) NOTEBOOK_SENTENCES.
EXTRA_SENTENCES = (
    "One of the most moving films of the decade, with a superb cast and a score I still hum.",
    "Two hours I will never get back: a dull plot, wooden acting and a predictable ending.",
)


# ------------------------------------------------------------------------------------ facts


def tokenizer_facts(vocab: str | pathlib.Path) -> dict[str, Any]:
    """Vocabulary size, the notebook's example and special-token ids, and the 512-token cut,
    measured with `hw3_jax.data.tokenizer.load_pretrained_tokenizer` (the experiment's own
    tokenizer) on `vocab` (a vocab.txt, tokenizer.json, encoder folder or hub name)."""
    tok = load_pretrained_tokenizer(vocab, max_length=512)
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
    """A local path relative to the current folder, the checkout's root (no machine-specific
    prefix); names as given."""
    p = pathlib.Path(path)
    return os.path.relpath(p.resolve()) if p.exists() else str(path)


def split_facts(archive: str | pathlib.Path) -> dict[str, Any]:
    """Review counts of the IMDB archive and the experiment's train/validation split of it."""
    raw = imdb.read_imdb_archive(archive)
    tr, va = imdb.split_indices(len(raw.train), seed=get_config().seed)
    return {
        "archive": pathlib.Path(archive).name,
        "imdb_train": len(raw.train),
        "imdb_test": len(raw.test),
        "train_fraction": imdb.TRAIN_FRACTION,
        "train": len(tr),
        "validation": len(va),
        "test": len(raw.test),
        "test_positive": int(raw.test.labels.sum()),
        "train_positive": int(raw.train.labels[tr].sum()),
    }


def param_facts() -> dict[str, Any]:
    """Parameter counts of the notebook's model (bert-base-uncased + GRU(256, 2 layers,
    bidirectional) + Linear(512, 1)), from `jax.eval_shape`: nothing is allocated."""
    model = factory.sentiment_model(get_config("notebook").model, BertConfig())
    shapes = models.param_shapes(model)
    mask = models.trainable_mask(shapes, freeze_encoder=True)
    per = {k: models.count_params(v) for k, v in shapes.items()}
    gru = {k: models.count_params(v) for k, v in shapes["gru"].items()}
    return {
        "total": models.count_params(shapes),
        "trainable_frozen_encoder": models.count_params(shapes, mask),
        "by_part": per,
        "gru_by_layer": gru,
        "hidden_dim": model.hidden_dim,
        "n_layers": model.n_layers,
        "bert_hidden": model.bert.hidden_size,
    }


# ---------------------------------------------------------------------------------- collect


# The sections of a run's config.json that say what it computed.
RECIPE_SECTIONS = ("seed", "data", "model", "encoder_cache", "train")


def _recipe(sections: dict[str, Any]) -> dict[str, Any]:
    """{"section.field": value} of a config's recipe sections, as JSON holds them (tuples as
    lists), without the fields that say how a run ran (`experiments.sentiment.NOT_RECIPE`)."""
    plain = json.loads(json.dumps({k: sections[k] for k in RECIPE_SECTIONS}))
    leaves = cli.flatten(ml_collections.ConfigDict(plain))
    return {k: v for k, v in leaves.items() if k not in NOT_RECIPE}


def _unused(recipe: dict[str, Any]) -> set[str]:
    """Fields a run's own settings leave unused: the synthetic set's size on IMDB, and the
    window and feature count of the attentions it does not use."""
    unused = set()
    if recipe["data.source"] != "synthetic":
        unused.add("data.synthetic_size")
    if recipe["model.attention"] != "local":
        unused.add("model.local_window")
    if recipe["model.attention"] != "performer":
        unused.add("model.performer_features")
    return unused


def _nearest_variant(m: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The configs/sentiment.py variant nearest to what the run computed (`m["run_config"]`,
    its config.json) and {field: the run's value} where the run differs from it. Fields the
    run's settings leave unused are not compared, nor the dtype where the variant leaves it
    to the machine."""
    # A field the run's config.json lacks takes the default config's value.
    run = _recipe(resolve(get_config()).to_dict()) | _recipe(m["run_config"])
    nearest = None
    for variant in VARIANTS:
        config = get_config(variant)
        skip = _unused(run) | ({"model.dtype"} if config.model.dtype is None else set())
        want = _recipe(resolve(config).to_dict())
        diff = {k: run[k] for k, v in want.items() if k not in skip and run[k] != v}
        if nearest is None or len(diff) < len(nearest[1]):
            nearest = (variant, diff)
    return nearest


def run_command(m: dict[str, Any]) -> str:
    """The command that repeats a run (`m`: its collected JSON) with today's configs: its
    nearest variant, then each field where the run differs, written as the run's own
    command writes it (a shortcut flag where one takes a value, else `--config.FIELD=VALUE`)."""
    variant, diff = _nearest_variant(m)
    return cli.format_command(
        f"python -m experiments.sentiment --config configs/sentiment.py:{variant}", diff,
        SHORTCUTS)


def collect(workdir: str | pathlib.Path, name: str, out: str | pathlib.Path,
            predict: bool = True) -> list[pathlib.Path]:
    """results/sentiment_NAME.json (+ _curves.png) from a finished run's workdir."""
    wd, out = Workdir(workdir), Workdir(out)
    for path in (wd.metrics, wd.config):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: train into {workdir} first "
                                    "(python -m experiments.sentiment --workdir ...)")
    metrics = cli.read_json(wd.metrics)
    if metrics.get("status") != "completed":
        raise ValueError(f"the run in {workdir} is {metrics.get('status')!r}, not completed: "
                         "finish it (--resume) before collecting")
    metrics["run_config"] = cli.read_json(wd.config)
    metrics["command"] = run_command(metrics)
    if predict:
        predictor = SentimentPredictor.load(workdir)
        scored = predictor.score(list(NOTEBOOK_SENTENCES + EXTRA_SENTENCES))
        metrics["predictions"] = {r.text: r.p_positive for r in scored}
    paths = [out.write_json(f"sentiment_{name}.json", metrics)]
    if wd.curves.is_file():
        paths.append(out.root / f"sentiment_{name}_curves.png")
        with atomic_path(paths[-1]) as tmp:  # a copy cut short leaves the old plot whole
            shutil.copyfile(wd.curves, tmp)
    return paths


def load_runs(results_dir: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """results/sentiment_NAME.json files (completed runs' metrics and "run_config"),
    pretrained ones first, then those on IMDB."""
    results_dir = pathlib.Path(results_dir)
    runs = {}
    for path in sorted(results_dir.glob("sentiment_*.json")):
        if path.name == FACTS_FILE:  # read by the report itself
            continue
        m = cli.read_json(path)
        if "history" not in m:  # not a metrics.json
            continue
        name = path.stem.removeprefix("sentiment_")
        m["_curves"] = (results_dir / f"sentiment_{name}_curves.png").is_file()
        runs[name] = m

    def order(item):
        rc = item[1]["run_config"]
        return (not factory.is_pretrained(rc["model"]), rc["data"]["source"] != "imdb", item[0])

    return dict(sorted(runs.items(), key=order))


# ------------------------------------------------------------------------------------- main


def _shared_help(path: pathlib.Path) -> str:
    return f"(default: {path} if present, else skipped)"


def _main(argv: list[str] | None) -> int:
    p = cli.ArgumentParser(prog="python -m experiments.sentiment_answers",
                           description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("facts", help="tokenizer, split and parameter facts -> "
                       "results/sentiment_facts.json")
    cli.add_data_options(f, timing.shared_file(timing.SHARED_ARCHIVE),
                         timing.shared_file(timing.SHARED_VOCAB),
                         archive_help=_shared_help(timing.SHARED_ARCHIVE),
                         vocab_help="or tokenizer.json or hub name "
                                    + _shared_help(timing.SHARED_VOCAB))
    f.add_argument("--out", type=cli.given, default=timing.RESULTS)
    c = sub.add_parser("collect", help="a finished run's metrics -> results/sentiment_NAME.json")
    c.add_argument("--workdir", required=True, help="the run's --workdir")
    c.add_argument("--name", required=True, help="NAME in results/sentiment_NAME.json")
    c.add_argument("--out", type=cli.given, default=timing.RESULTS)
    c.add_argument("--no-predict", action="store_true",
                   help="keep the run's own predictions (do not load the model)")
    args = p.parse_args(argv)
    Workdir(args.out).check(flag="--out")  # before minutes of measuring
    if args.command == "facts":
        t0 = time.perf_counter()
        facts = {"command": "python -m experiments.sentiment_answers facts",
                 "tokenizer": tokenizer_facts(args.vocab) if args.vocab else None,
                 "splits": split_facts(args.imdb_archive) if args.imdb_archive else None,
                 "params": param_facts()}
        facts["wall_time_s"] = round(time.perf_counter() - t0, 1)
        path = Workdir(args.out).write_json(FACTS_FILE, facts)
        print(f"wrote {path} in {facts['wall_time_s']:.0f} s")
    else:
        if not args.name.replace("_", "").replace("-", "").isalnum() or args.name == "facts":
            raise cli.UserError(f"--name {args.name!r}: use letters, digits, - and _ only, "
                                f"and not 'facts' (results/{FACTS_FILE} holds the facts)")
        paths = collect(args.workdir, args.name, args.out, predict=not args.no_predict)
        print("wrote " + ", ".join(str(x) for x in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    # Missing files, bad names and unfinished runs are one line each.
    return cli.run_main(lambda: _main(argv), (OSError, ValueError, RuntimeError))


if __name__ == "__main__":
    cli.exit_with(main())
