"""Q4: sentiment analysis with Transformers, the homework notebook as a program.

    python -m experiments.sentiment                                   # the embedded default
    python -m experiments.sentiment --config configs/sentiment.py:imdb_scratch
    python -m experiments.sentiment --config configs/sentiment.py:notebook --resume
    python -m experiments.sentiment --encoder bert-base-uncased       # the notebook variant
    python -m experiments.sentiment --imdb-archive aclImdb_v1.tar.gz --lr 3e-3
    python -m experiments.sentiment predict --workdir runs/sentiment "Avengers was great!!"
    python -m experiments.sentiment --config configs/sentiment.py:smoke \
        --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on each host, its id

The configuration is configs/sentiment.py (its docstring lists the variants and what each
gave). Each shortcut flag below sets one config field, `--config.a.b=VALUE` any field; without
`--config` the flags pick the variant (`implied_variant`). Training is
`experiments.sentiment_train.train_and_evaluate(config, workdir)`.

Several processes (`--coordinator`, `--num-processes`, `--process-id`, or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID) train one model data-parallel over all their devices: the
same command on each, with its own id and one shared --workdir; the global batch is
--batch-size, each process building its share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from experiments import cli
from experiments.cli import UserError
from experiments.sentiment_train import CHOICES, NOTEBOOK_SENTENCES, train_and_evaluate
from hw3_jax.data.errors import DataError
from hw3_jax.train.sharding import initialize_distributed, peer_failures_reported
from hw3_jax.train.workdir import TrainingError

__all__ = ["NOTEBOOK_SENTENCES", "SHORTCUTS", "build_config", "command_line", "main"]

CONFIG_FILE = "configs/sentiment.py"
CONFIG_MODULE = "configs.sentiment"  # the same file, found from any directory
DEFAULT_WORKDIR = "runs/sentiment"
USER_ERRORS = (TrainingError, DataError, OSError)
SET = dict(action="store_const", const=True)  # a switch that sets its field to True

# flag -> (config field, argparse options, help); a text field takes the values CHOICES
# lists. Every flag's default is None, "not given".
SHORTCUTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "--data": ("data.source", {},
               "imdb (downloaded once, or --imdb-archive) or the embedded synthetic set; "
               "default: imdb with a pretrained encoder or an archive, synthetic otherwise"),
    "--imdb-archive": ("data.imdb_archive", dict(metavar="PATH"),
                       "read IMDB offline from an aclImdb_v1.tar.gz (official layout)"),
    "--imdb-url": ("data.imdb_url", dict(metavar="URL"),
                   "download IMDB from this mirror of aclImdb_v1.tar.gz instead of Stanford's"),
    "--imdb-sha256": ("data.imdb_sha256", dict(metavar="HEX"),
                      "the mirror's sha256 (default: the official archive's)"),
    "--data-dir": ("data.data_dir", dict(metavar="DIR"),
                   "tensorflow-datasets' data folder: the IMDB download goes to DIR/downloads "
                   "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"),
    "--encoder": ("model.encoder", {}, "bert-base-uncased (or another hub name), a local "
                  "directory with config.json + model.safetensors, or 'scratch'"),
    "--attention": ("model.attention", {}, "the attention core"),
    "--epochs": ("train.epochs", dict(type=int), "training epochs"),
    "--batch-size": ("data.batch_size", dict(type=int), "examples per batch"),
    "--max-length": ("data.max_length", dict(type=int),
                     "tokens per review including [CLS] and [SEP] (notebook: 512)"),
    "--truncation": ("data.truncation", {},
                     "what a longer review keeps: its head (the notebook), its tail, or both "
                     "(a quarter head, as Sun et al. 2019)"),
    "--lr": ("train.learning_rate", dict(type=float), "learning rate (of the head, with "
             "--encoder-lr)"),
    "--encoder-lr": ("train.encoder_learning_rate", dict(type=float),
                     "the encoder's own learning rate (default: --lr), e.g. 3e-5 to fine-tune "
                     "a pretrained one"),
    "--optimizer": ("train.optimizer", {},
                    "adam (the notebook) or adamw (weight decay, not on biases and LayerNorm)"),
    "--weight-decay": ("train.weight_decay", dict(type=float), "adamw's weight decay"),
    "--lr-schedule": ("train.lr_schedule", {},
                      "constant (the notebook), or cosine or linear decay to 0 by the last "
                      "step"),
    "--warmup-steps": ("train.warmup_steps", dict(type=int),
                       "linear learning-rate warmup from 0 over N steps"),
    "--resume": ("train.resume", SET, "continue the run in --workdir"),
    "--overwrite": ("train.overwrite", SET, "discard the checkpoints in --workdir"),
    "--seed": ("seed", dict(type=int), "data order, initialisation and dropout"),
    "--dtype": ("model.dtype", {},
                "compute dtype (default: bfloat16 on TPU/GPU, float32 on CPU)"),
    "--vocab": ("data.vocab", dict(metavar="PATH"), "WordPiece vocab.txt or tokenizer.json "
                "for a pretrained encoder whose directory has none"),
    "--hidden-size": ("model.hidden_size", dict(type=int), "scratch encoder: hidden size"),
    "--layers": ("model.layers", dict(type=int), "scratch encoder: layers"),
    "--heads": ("model.heads", dict(type=int), "scratch encoder: attention heads"),
    "--intermediate-size": ("model.intermediate_size", dict(type=int),
                            "scratch encoder: feed-forward size"),
    "--vocab-size": ("data.vocab_size", dict(type=int), "WordPiece vocabulary to train"),
    "--gru-hidden": ("model.gru_hidden", dict(type=int), "GRU hidden size (notebook 256)"),
    "--gru-layers": ("model.gru_layers", dict(type=int), "GRU layers (notebook 2)"),
    "--encoder-dropout": ("model.encoder_dropout", dict(type=float),
                          "the encoder's hidden dropout (BERT's hidden_dropout_prob): more "
                          "regularises a small encoder trained from scratch"),
    "--init-embeddings": ("model.init_embeddings", {},
                          "a scratch encoder's word embeddings: random (BERT's init) or "
                          "PPMI+SVD word vectors of the training texts and, with an archive, "
                          "its 50,000 unlabelled reviews"),
    "--word-vector-std": ("model.word_vector_std", dict(type=float),
                          "standard deviation the PPMI+SVD word vectors are scaled to"),
    "--freeze-word-embeddings": ("model.freeze_word_embeddings", SET,
                                 "keep a scratch encoder's word embeddings fixed"),
    "--head": ("model.head", {},
               "the classifier on the encoder: a bidirectional GRU (the notebook) or linear "
               "(pooled encoder output -> dropout -> one logit, for fine-tuning)"),
    "--readout": ("model.readout", {},
                  "what the classifier reads: of the GRU, its final states (the notebook) or "
                  "[final; max; mean] of its outputs (ULMFiT concat pooling); of the encoder "
                  "(linear head), its [CLS] vector (default) or its mean over the tokens"),
    "--dropout": ("model.dropout", dict(type=float),
                  "dropout between the GRU layers and before the output layer"),
    "--buckets": ("data.buckets", dict(metavar="L1,L2,..."),
                  "batch lengths (default: powers of two from 32 up to --max-length); more "
                  "buckets pad less but compile more often"),
    "--local-window": ("model.local_window", dict(type=int), "local attention: neighbours "
                       "per side"),
    "--performer-features": ("model.performer_features", dict(type=int),
                             "performer attention: random features"),
    "--unfreeze": ("model.freeze_encoder", dict(action="store_const", const=False),
                   "fine-tune a pretrained encoder instead of freezing it"),
    "--cache-encoder": ("encoder_cache.enabled", SET,
                        "frozen pretrained encoder only: compute its outputs once per review "
                        "(dropout off, unlike the notebook) and train the GRU head on them; "
                        "stored memory-mapped in WORKDIR/cache (or $HW3_JAX_CACHE)"),
    "--cache-dtype": ("encoder_cache.dtype", {},
                      "storage dtype of --cache-encoder's outputs"),
    "--notebook-parity": ("model.notebook_parity", SET, "run BERT without attention mask and "
                          "the GRU over padding, as the notebook did"),
    "--synthetic-size": ("data.synthetic_size", dict(type=int), "synthetic reviews in the "
                         "training part (split 70/30; the test part has a fifth as many)"),
    "--max-steps": ("train.max_steps", dict(type=int), "stop after N steps (smoke runs)"),
    "--limit": ("data.limit", dict(type=int), "use at most N examples of each split"),
    "--no-progress": ("train.progress", dict(action="store_const", const=False),
                      "no progress bars"),
}
# Left out of a run's rebuilt command: how to run, not what; train.seed follows seed.
NOT_RECIPE = ("train.resume", "train.overwrite", "train.progress", "train.seed")


def implied_variant(args: argparse.Namespace) -> str:
    """The variant when `--config` is not given: the recipe follows the data and encoder."""
    if args.__dict__["model.encoder"] not in (None, "scratch"):
        return "notebook"
    if args.__dict__["data.imdb_archive"] is not None or args.__dict__["data.source"] == "imdb":
        return "imdb_scratch"
    return "synthetic"


# ----------------------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.sentiment",
        description="Sentiment analysis on IMDB (or the embedded synthetic set) with a BERT "
        "encoder and a bidirectional GRU. Subcommands: train (default), predict.")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train, keep the best checkpoint, evaluate on test",
                       epilog="Any config field: --config.SECTION.FIELD=VALUE")
    t.add_argument("--config", default=None, metavar="FILE.py[:VARIANT]",
                   help=f"e.g. {CONFIG_FILE}:imdb_scratch (default: the variant the flags "
                   "imply: notebook with --encoder, imdb_scratch with IMDB, else synthetic)")
    t.add_argument("--workdir", default=DEFAULT_WORKDIR)
    for flag, (field, options, text) in SHORTCUTS.items():
        choices = {"choices": CHOICES[field]} if field in CHOICES else {}
        t.add_argument(flag, dest=field, default=None, help=text, **options, **choices)
    cli.add_launch_flags(t)
    pr = sub.add_parser("predict", help="probability that each text is positive")
    pr.add_argument("texts", nargs="*", help="texts to score (none: read lines from stdin)")
    pr.add_argument("--workdir", default=DEFAULT_WORKDIR, help="a workdir written by train")
    pr.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def _train_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    rest, overrides = cli.split_overrides(argv)
    return _parser().parse_args(["train", *rest]), overrides


def build_config(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str, str]:
    """(config, config spec, workdir) of a train command line (without "train"): the variant,
    then the shortcut flags, then the `--config.a.b=VALUE` overrides."""
    return _config_of(*_train_args(argv))


def _config_of(args: argparse.Namespace, overrides: list[tuple[str, str]]
               ) -> tuple[ml_collections.ConfigDict, str, str]:
    spec = args.config or f"{CONFIG_MODULE}:{implied_variant(args)}"
    given = {field: args.__dict__[field] for field, _, _ in SHORTCUTS.values()}
    return cli.apply_flags(cli.load_config(spec), given, overrides), spec, args.workdir


def command_line(spec: str, config: ml_collections.ConfigDict, workdir: str) -> str:
    """The `python -m experiments.sentiment` command that builds `config` from the variant
    `spec` names (a shortcut flag where one takes a value), for results and reports."""
    target, _, variant = spec.partition(":")
    prefix = "python -m experiments.sentiment"
    if target not in (CONFIG_FILE, CONFIG_MODULE):
        prefix += f" --config {spec}"
    elif variant not in ("", "synthetic"):
        prefix += f" --config {CONFIG_FILE}:{variant}"
    flags = {flag: field for flag, (field, opts, _) in SHORTCUTS.items() if "const" not in opts}
    return cli.command_line(f"{prefix} --workdir {workdir}", config, cli.load_config(spec),
                            flags, skip=NOT_RECIPE)


# ----------------------------------------------------------------------------- predict


def _one_line(text: str) -> str:
    """`text` for a plain-output line: as is, or escaped when it holds line breaks, control
    or other non-printable characters (which would break or garble the line)."""
    return text if text.isprintable() else repr(text)[1:-1]


def _predict_command(args: argparse.Namespace) -> int:
    from hw3_jax.predict import SentimentPredictor

    if not args.texts and sys.stdin.isatty():  # do not wait for typing that never comes
        raise UserError("no text to score: pass texts as arguments or pipe lines on stdin")
    texts = args.texts or _stdin_lines()
    if not texts:
        raise UserError("no text to score: pass texts as arguments or pipe lines on stdin")
    if not Path(args.workdir).is_dir():
        raise UserError(f"workdir {args.workdir} does not exist: train first "
                        "(python -m experiments.sentiment --workdir DIR) or pass --workdir")
    predictor = SentimentPredictor.load(args.workdir)
    t0 = time.perf_counter()
    results = predictor.score(texts)
    failed = 0
    for r in results:
        failed += r.error is not None
        if args.json:
            line = json.dumps(r.as_dict(), ensure_ascii=False)
        elif r.error is None:
            line = f"{r.p_positive:.4f}\t{_one_line(r.text)}"
        else:
            line = f"error\t{r.text!r}: {r.error}"
        if not _encodable(line):  # undecodable input bytes, or a terminal that cannot show it
            line = json.dumps(r.as_dict()) if args.json else ascii(line)[1:-1]
        print(line)
    print(f"{len(results) - failed} scored, {failed} rejected in "
          f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def _stdin_lines() -> list[str]:
    buf = getattr(sys.stdin, "buffer", None)
    if buf is None:  # a text stream (e.g. replaced in tests)
        return [line.rstrip("\n") for line in sys.stdin]
    # Bytes, so that a line that is not UTF-8 gets its own error instead of ending the call.
    return [line.rstrip(b"\r\n").decode("utf-8", "surrogateescape") for line in buf]


def _encodable(line: str) -> bool:
    try:
        line.encode(sys.stdout.encoding or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


# ----------------------------------------------------------------------------- main


def _train_command(argv: Sequence[str]) -> int:
    args, overrides = _train_args(argv)
    launch = cli.launch_from_flags(args)
    config, spec, workdir = _config_of(args, overrides)
    # Before anything touches a device (train_and_evaluate's own call is then a no-op).
    initialize_distributed(launch, heartbeat_timeout_s=args.heartbeat_timeout)
    with peer_failures_reported():
        train_and_evaluate(config, workdir, extra={
            "config_spec": spec, "command": command_line(spec, config, workdir)})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"] or argv[:1] in (["-h"], ["--help"]):
        return cli.run_main(lambda: _predict_command(_parser().parse_args(argv)), USER_ERRORS)
    train_argv = argv[1:] if argv[:1] == ["train"] else argv
    return cli.run_main(lambda: _train_command(train_argv), USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
