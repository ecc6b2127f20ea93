"""Q4: sentiment analysis with Transformers, the homework notebook as a program.

    python -m experiments.sentiment                                   # the embedded default
    python -m experiments.sentiment --config configs/sentiment.py:imdb_scratch
    python -m experiments.sentiment --config configs/sentiment.py:notebook --resume
    python -m experiments.sentiment --encoder bert-base-uncased       # the notebook variant
    python -m experiments.sentiment --imdb-archive aclImdb_v1.tar.gz --lr 3e-3
    python -m experiments.sentiment predict --workdir runs/sentiment "Avengers was great!!"
    python -m experiments.sentiment --config configs/sentiment.py:smoke \
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on each host, its id

The configuration is configs/sentiment.py: its docstring lists the variants and what each
gave, its comments what each field does. `--config.SECTION.FIELD=VALUE` sets any field
(`--config.model.readout=concat`), a shortcut flag (`SHORTCUTS`) one of the fields set most
often; without `--config` the flags pick the variant (`implied_variant`). Training is
`experiments.sentiment_train.train_and_evaluate(config, workdir)`; several processes (the
launch flags, `train --help`) train one model data-parallel, --batch-size being the global
batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from experiments import cli
from experiments.cli import UserError
from experiments.sentiment_train import (
    CHOICES,
    NOTEBOOK_SENTENCES,
    RUN_ERRORS,
    data_source,
    train_and_evaluate,
)
from hw3_jax import factory
from hw3_jax.train.sharding import initialize_distributed, peer_failures_reported

__all__ = ["NOTEBOOK_SENTENCES", "SHORTCUTS", "build_config", "command_line", "main"]

CONFIG_FILE = "configs/sentiment.py"
CONFIG_MODULE = "configs.sentiment"  # the same file, found from any directory
DEFAULT_WORKDIR = "runs/sentiment"


def _flag(field: str, help: str, **options: Any) -> cli.Shortcut:
    """The shortcut flag onto `field`; a text field takes the values CHOICES lists."""
    return cli.Shortcut(field, help, choices=CHOICES.get(field), **options)


# The flags README commands, the notebook and scripts use, and how-to-run switches; every
# other field is `--config.SECTION.FIELD=VALUE` (configs/sentiment.py says what each does).
SHORTCUTS = {
    "--data": _flag("data.source", "imdb (downloaded once, or --imdb-archive) or the "
                    "embedded synthetic set; default: picked from --encoder, --imdb-archive "
                    "and --imdb-url by experiments.sentiment_train.data_source"),
    "--imdb-archive": _flag("data.imdb_archive", "read IMDB offline from an aclImdb_v1.tar.gz "
                            "(official layout)", metavar="PATH"),
    "--imdb-url": _flag("data.imdb_url", "download IMDB from this mirror of aclImdb_v1.tar.gz "
                        "instead of Stanford's", metavar="URL"),
    "--imdb-sha256": _flag("data.imdb_sha256", "the mirror's sha256 (default: the official "
                           "archive's)", metavar="HEX"),
    "--data-dir": _flag("data.data_dir", "tensorflow-datasets' data folder: the IMDB download "
                        "goes to DIR/downloads (default: $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets)", metavar="DIR"),
    "--encoder": _flag("model.encoder", "bert-base-uncased (or another hub name), a local "
                       "directory with config.json + model.safetensors, or 'scratch'"),
    "--attention": _flag("model.attention", "the attention core"),
    "--epochs": _flag("train.epochs", "training epochs", type=int),
    "--batch-size": _flag("data.batch_size", "examples per batch", type=int),
    "--max-length": _flag("data.max_length", "tokens per review including [CLS] and [SEP] "
                          "(notebook: 512)", type=int),
    "--lr": _flag("train.learning_rate", "learning rate (of the head when "
                  "train.encoder_learning_rate is set)", type=float),
    "--resume": _flag("train.resume", "continue the run in --workdir", const=True),
    "--overwrite": _flag("train.overwrite", "discard the run in --workdir (checkpoints, "
                         "metrics, curves, tokenizer; the caches stay)", const=True),
    "--seed": _flag("seed", "data order, initialisation and dropout", type=int),
    "--unfreeze": _flag("model.freeze_encoder", "fine-tune a pretrained encoder instead of "
                        "freezing it", const=False),
    "--cache-encoder": _flag("encoder_cache.enabled", "frozen pretrained encoder only: compute "
                             "its outputs once per review (dropout off, unlike the notebook) "
                             "and train the GRU head on them; stored memory-mapped in "
                             "WORKDIR/cache (or $HW3_JAX_CACHE)", const=True),
    "--max-steps": _flag("train.max_steps", "stop after N steps (smoke runs)", type=int),
    "--limit": _flag("data.limit", "use at most N examples of each split", type=int),
    "--no-progress": _flag("train.progress", "no progress bars", const=False),
}
# The end of `train --help`: how to set the fields that have no flag, and where they are told.
TRAIN_EPILOG = (
    "Any config field, the flags above included: --config.SECTION.FIELD=VALUE (SECTION: "
    "data, model, train, encoder_cache; --config.seed=N), e.g. --config.model.readout=concat "
    "--config.data.buckets=64,128,256 --config.train.warmup_steps=100. VALUE is a Python "
    "literal (3, 2e-3, True, None) or else text as written. configs/sentiment.py lists every "
    "field with what it does and the values it takes (train's: TrainConfig in "
    "hw3_jax/train/config.py) and the variants --config picks.")
# Left out of a run's rebuilt command: how to run, not what; train.seed follows seed.
NOT_RECIPE = ("train.resume", "train.overwrite", "train.progress", "train.seed")


# The fields that pick the variant without `--config` (`implied_variant`) and that decide
# whether a mirror URL replaces the variant's archive (`_parse_train`).
VARIANT_FIELDS = ("model.encoder", "data.source", "data.imdb_archive", "data.imdb_url")


def given_fields(args: argparse.Namespace,
                 overrides: Sequence[tuple[str, str]]) -> dict[str, str | None]:
    """{field: the value the command line sets it to, None where it leaves it} for each of
    `VARIANT_FIELDS`: its shortcut flag's, or the last `--config.a.b=VALUE`'s (as in
    `cli.apply_flags`), parsed as `cli.set_field` parses a text field (a shortcut and its
    override give the same run)."""
    last = dict(overrides)
    given = {}
    for dotted in VARIANT_FIELDS:
        value = last.get(dotted, getattr(args, dotted))
        given[dotted] = None if value is None else cli.parse_value(value, str)
    return given


def implied_variant(given: Mapping[str, str | None]) -> str:
    """The variant when `--config` is not given (`given`: `given_fields`' values): the recipe
    follows the encoder, then the data (`data_source`'s rule)."""
    encoder = given["model.encoder"] or factory.SCRATCH  # not given: the scratch variants'
    if factory.is_pretrained({"encoder": encoder}):
        return "notebook"
    source = data_source(source=given["data.source"], encoder=encoder,
                         imdb_archive=given["data.imdb_archive"],
                         imdb_url=given["data.imdb_url"])
    return "imdb_scratch" if source == "imdb" else "synthetic"


# ----------------------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m experiments.sentiment",
        description="Sentiment analysis on IMDB (or the embedded synthetic set) with a BERT "
        "encoder and a bidirectional GRU. Subcommands: train (default), predict.")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train, keep the best checkpoint, evaluate on test",
                       epilog=TRAIN_EPILOG)
    t.add_argument("--config", type=cli.given, metavar="FILE.py[:VARIANT]",
                   help=f"e.g. {CONFIG_FILE}:imdb_scratch (default: the variant the flags "
                   "imply: notebook with --encoder, imdb_scratch with IMDB, else synthetic)")
    t.add_argument("--workdir", default=DEFAULT_WORKDIR)
    cli.add_shortcuts(t, SHORTCUTS)
    cli.add_launch_flags(t)
    pr = sub.add_parser("predict", help="probability that each text is positive")
    pr.add_argument("texts", nargs="*", help="texts to score (none: read lines from stdin)")
    pr.add_argument("--workdir", default=DEFAULT_WORKDIR, help="a workdir written by train")
    pr.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def _parse_train(argv: Sequence[str]) -> tuple[argparse.Namespace, ml_collections.ConfigDict,
                                                str, ml_collections.ConfigDict]:
    """(the flags, the config, its spec, the variant as loaded) of a train command line
    (without "train"): the variant, then the shortcut flags, then the `--config.a.b=VALUE`
    overrides."""
    rest, overrides = cli.split_overrides(argv)
    args = cli.parse_args(_parser(), ["train", *rest],
                          lambda: cli.flatten(cli.load_config(CONFIG_MODULE)),
                          command="python -m experiments.sentiment train")
    given = given_fields(args, overrides)
    spec = args.config or f"{CONFIG_MODULE}:{implied_variant(given)}"
    ours = spec.partition(":")[0] in (CONFIG_FILE, CONFIG_MODULE)
    base = cli.load_config(spec, like=None if ours else cli.load_config(CONFIG_MODULE))
    config = copy.deepcopy(base)
    if given["data.imdb_archive"] is None and (given["data.imdb_url"] is not None
                                               or args.config is None):
        # A mirror URL replaces the variant's archive; IMDB asked for by --data alone is the
        # official download (--data's help), not the imdb_scratch variant's shared copy.
        config.data.imdb_archive = None
    return args, cli.apply_flags(config, args, SHORTCUTS, overrides), spec, base


def build_config(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str, str]:
    """(config, config spec, workdir) of a train command line (without "train")."""
    args, config, spec, _ = _parse_train(argv)
    return config, spec, args.workdir


def command_line(spec: str, config: ml_collections.ConfigDict, workdir: str,
                 base: ml_collections.ConfigDict | None = None) -> str:
    """The `python -m experiments.sentiment` command that builds `config` from the variant
    `spec` names (a shortcut flag where one takes a value), for results and reports; `base`:
    that variant's config when already loaded."""
    target, _, variant = spec.partition(":")
    values = cli.flatten(config)
    prefix = "python -m experiments.sentiment"
    if target not in (CONFIG_FILE, CONFIG_MODULE):
        prefix += f" --config {shlex.quote(spec)}"
    elif variant not in ("", "synthetic") or implied_variant(
            {f: values[f] for f in VARIANT_FIELDS}) != "synthetic":
        # Without --config the command's flags would pick another variant.
        prefix += f" --config {CONFIG_FILE}:{variant or 'synthetic'}"
    base = cli.load_config(spec) if base is None else base
    return cli.command_line(f"{prefix} --workdir {shlex.quote(str(workdir))}", config, base,
                            SHORTCUTS, skip=NOT_RECIPE)


# ----------------------------------------------------------------------------- predict


def _predict_command(args: argparse.Namespace) -> int:
    from hw3_jax.predict import SentimentPredictor

    # No texts and a terminal on stdin: do not wait for typing that never comes. Stdin as
    # bytes, so that a line that is not UTF-8 gets its own error instead of ending the call.
    texts = args.texts or ([] if sys.stdin.isatty() else [
        line.rstrip(b"\r\n").decode("utf-8", "surrogateescape") for line in sys.stdin.buffer])
    if not texts:
        raise UserError("no text to score: pass texts as arguments or pipe lines on stdin")
    if problem := cli.path_problem(args.workdir, "folder"):
        raise UserError(f"workdir {args.workdir} {problem}: train first "
                        "(python -m experiments.sentiment --workdir DIR) or pass --workdir")
    predictor = SentimentPredictor.load(args.workdir)
    t0 = time.perf_counter()
    results = predictor.score(texts)
    failed = sum(r.error is not None for r in results)
    try:
        for r in results:
            print(_predict_line(r, args.json))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader has stopped (`| head`): stop quietly too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 0
    print(f"{len(results) - failed} scored, {failed} rejected in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def _predict_line(r, as_json: bool) -> str:
    """One output line of predict: a JSON object, or "P<tab>text" / "error<tab>why"; escaped
    to ASCII where stdout cannot take the text (undecodable input bytes, or a terminal)."""
    if as_json:
        line = json.dumps(r.as_dict(), ensure_ascii=False)
        return line if _encodable(line) else json.dumps(r.as_dict())
    if r.error is None:  # a text with line breaks or control characters escaped
        head, text = f"{r.p_positive:.4f}", r.text if r.text.isprintable() else repr(r.text)[1:-1]
    else:
        head, text = "error", f"{r.text!r}: {r.error}"
    return f"{head}\t{text if _encodable(text) else ascii(text)[1:-1]}"


def _encodable(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# ----------------------------------------------------------------------------- main


def _train_command(argv: Sequence[str]) -> int:
    args, config, spec, base = _parse_train(argv)
    # Before anything touches a device (train_and_evaluate's own call is then a no-op).
    initialize_distributed(cli.launch_from_flags(args), heartbeat_timeout_s=args.heartbeat_timeout)
    with peer_failures_reported():
        train_and_evaluate(config, args.workdir, extra={
            "config_spec": spec, "command": command_line(spec, config, args.workdir, base)})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["predict"], ["-h"], ["--help"]):
        return cli.run_main(lambda: _predict_command(_parser().parse_args(argv)), RUN_ERRORS)
    train_argv = argv[1:] if argv[:1] == ["train"] else argv
    return cli.run_main(lambda: _train_command(train_argv), RUN_ERRORS, resumable=True,
                        memory_fix="pass a smaller --batch-size or --max-length")


if __name__ == "__main__":
    cli.exit_with(main())
