"""Q4: sentiment analysis with Transformers, the homework notebook as a program.

    python -m experiments.sentiment                       # embedded default: synthetic reviews,
                                                          # small encoder trained from scratch
    python -m experiments.sentiment --encoder bert-base-uncased
                                                          # the notebook's recipe on IMDB (tfds)
    python -m experiments.sentiment --imdb-archive ../shared/data/aclImdb_v1.tar.gz \\
        --encoder scratch                                 # real data, offline, from scratch
    python -m experiments.sentiment predict --workdir runs/sentiment "Avengers was great!!"

Training is `hw3_jax.train.train` (the project's one loop); this file only turns the
command line into a configuration: data, tokenizer, model, and the loop's settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The notebook's recipe (pretrained, frozen encoder): 2 epochs, batch 128, 512 tokens.
    "pretrained": dict(epochs=2, batch_size=128, max_length=512, lr=1e-3),
    # The embedded default: synthetic reviews, a small encoder trained from scratch; fits
    # in 3 minutes of a 2-core CPU.
    "scratch-synthetic": dict(
        epochs=2, batch_size=32, max_length=64, lr=1e-3,
        hidden_size=64, layers=2, heads=4, intermediate_size=128, gru_hidden=64,
        vocab_size=4000,
    ),
    # IMDB from scratch (88.11% test in 14 min of a 2-core CPU): a 1-layer encoder whose
    # word embeddings start from PPMI+SVD vectors of the unlabelled text (std 0.5), a
    # 1-layer BiGRU read by concat pooling, more dropout (the 17,500 reviews are memorised
    # otherwise), 3 epochs of Adam 2e-3 with cosine decay. results/sentiment_imdb_scratch.json
    "scratch-imdb": dict(
        epochs=3, batch_size=64, max_length=384, lr=2e-3, lr_schedule="cosine",
        warmup_steps=100, hidden_size=64, layers=1, heads=2, intermediate_size=256,
        gru_hidden=64, gru_layers=1, vocab_size=16000, readout="concat",
        init_embeddings="ppmi-svd", word_vector_std=0.5, encoder_dropout=0.2, dropout=0.4,
        buckets="64,128,192,256,384",
    ),
}

NOTEBOOK_SENTENCES = (
    "Justice League is terrible. I hated it.",
    "Avengers was great!!",
)


class UserError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.sentiment",
        description="Sentiment analysis on IMDB (or the embedded synthetic set) with a BERT "
        "encoder and a bidirectional GRU. Subcommands: train (default), predict.",
    )
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train, keep the best checkpoint, evaluate on test")
    _train_args(t)
    pr = sub.add_parser("predict", help="probability that each text is positive")
    pr.add_argument("texts", nargs="*", help="texts to score (none: read lines from stdin)")
    pr.add_argument("--workdir", default="runs/sentiment", help="a workdir written by train")
    pr.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def _train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("--data", choices=("imdb", "synthetic"), default=None,
                   help="imdb (tensorflow-datasets, or --imdb-archive) or the embedded "
                   "synthetic set; default: imdb with a pretrained encoder or an archive, "
                   "synthetic otherwise")
    t.add_argument("--imdb-archive", default=None, metavar="PATH",
                   help="read IMDB offline from an aclImdb_v1.tar.gz (official layout)")
    t.add_argument("--encoder", default="scratch",
                   help="bert-base-uncased (or another hub name), a local directory with "
                   "config.json + model.safetensors, or 'scratch' (default)")
    t.add_argument("--attention", choices=("softmax", "performer", "local"), default="softmax")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--max-length", type=int, default=None,
                   help="tokens per review including [CLS] and [SEP] (notebook: 512)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                   help="constant (the notebook) or cosine decay to 0 by the last step")
    t.add_argument("--warmup-steps", type=int, default=None,
                   help="linear learning-rate warmup from 0 over N steps (default 0)")
    t.add_argument("--workdir", default="runs/sentiment")
    t.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    t.add_argument("--overwrite", action="store_true", help="discard checkpoints in --workdir")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype (default: bfloat16 on TPU/GPU, float32 on CPU)")
    t.add_argument("--vocab", default=None, metavar="PATH",
                   help="WordPiece vocab.txt or tokenizer.json for a pretrained encoder "
                   "whose directory has none")
    # Sizes of a from-scratch encoder (ignored with a pretrained one).
    t.add_argument("--hidden-size", type=int, default=None)
    t.add_argument("--layers", type=int, default=None)
    t.add_argument("--heads", type=int, default=None)
    t.add_argument("--intermediate-size", type=int, default=None)
    t.add_argument("--vocab-size", type=int, default=None, help="WordPiece vocabulary to train")
    t.add_argument("--gru-hidden", type=int, default=None, help="GRU hidden size (notebook 256)")
    t.add_argument("--gru-layers", type=int, default=None, help="GRU layers (notebook 2)")
    t.add_argument("--encoder-dropout", type=float, default=None,
                   help="the encoder's hidden dropout (BERT's hidden_dropout_prob; default "
                   "0.1): more regularises a small encoder trained from scratch")
    t.add_argument("--init-embeddings", choices=("random", "ppmi-svd"), default=None,
                   help="a scratch encoder's word embeddings: random (BERT's init) or PPMI+SVD "
                   "word vectors counted on the training texts and, with --imdb-archive, the "
                   "50,000 unlabelled reviews (about a minute on a CPU)")
    t.add_argument("--word-vector-std", type=float, default=None,
                   help="standard deviation the PPMI+SVD word vectors are scaled to (default "
                   "0.02, BERT's init): Adam moves every weight by about the learning rate per "
                   "step, so larger vectors keep their learnt structure for longer")
    t.add_argument("--freeze-word-embeddings", action="store_true", default=None,
                   help="keep a scratch encoder's word embeddings fixed (with "
                   "--init-embeddings ppmi-svd: the word vectors are not overfitted)")
    t.add_argument("--readout", choices=("final", "concat"), default=None,
                   help="what the classifier reads of the GRU: its final states (the "
                   "notebook) or [final; max; mean] of its outputs (ULMFiT concat pooling)")
    t.add_argument("--dropout", type=float, default=None,
                   help="dropout between the GRU layers and before the output layer "
                   "(notebook 0.25)")
    t.add_argument("--buckets", default=None, metavar="L1,L2,...",
                   help="batch lengths, comma-separated (default: powers of two from 32 up "
                   "to --max-length); more buckets pad less but compile more often")
    t.add_argument("--local-window", type=int, default=64)
    t.add_argument("--performer-features", type=int, default=128)
    t.add_argument("--unfreeze", action="store_true",
                   help="fine-tune a pretrained encoder instead of freezing it")
    t.add_argument("--cache-encoder", action="store_true",
                   help="frozen pretrained encoder only: compute its outputs once per review "
                   "(dropout off) and train only the GRU head on them, instead of running "
                   "BERT every epoch. Differs from the notebook, whose frozen BERT kept its "
                   "dropout on in training. Outputs are stored memory-mapped in "
                   "WORKDIR/cache (or $HW3_JAX_CACHE) and reused by the next run")
    t.add_argument("--cache-dtype", choices=("float16", "bfloat16", "float32"),
                   default="float16", help="storage dtype of --cache-encoder's outputs")
    t.add_argument("--notebook-parity", action="store_true",
                   help="run BERT without attention mask and the GRU over padding, as the "
                   "notebook did")
    t.add_argument("--synthetic-size", type=int, default=25_000,
                   help="synthetic reviews in the training part (split 70/30 into train and "
                   "validation; the test part has a fifth as many)")
    t.add_argument("--max-steps", type=int, default=None, help="stop after N steps (smoke runs)")
    t.add_argument("--limit", type=int, default=None,
                   help="use at most N examples of each split (quick runs on a CPU)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    # Test option (hidden): the loss of this training step (1-based) is forced to NaN.
    t.add_argument("--debug-nan-at-step", type=int, default=None, help=argparse.SUPPRESS)


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on other flags (the notebook's recipe when pretrained)."""
    pretrained = args.encoder != "scratch"
    if args.data is None:
        args.data = "imdb" if (pretrained or args.imdb_archive) else "synthetic"
    if args.imdb_archive and args.data != "imdb":
        raise UserError("--imdb-archive goes with --data imdb (or leave --data out)")
    preset = "pretrained" if pretrained else f"scratch-{args.data}"
    for key, value in PRESETS[preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.preset = preset
    if pretrained and args.init_embeddings == "ppmi-svd":
        raise UserError("--init-embeddings ppmi-svd is for --encoder scratch: a pretrained "
                        "encoder brings its own word embeddings")
    if args.max_length < 8 or args.max_length > 512:
        raise UserError(f"--max-length must be between 8 and 512, got {args.max_length}")
    if args.batch_size < 1 or args.epochs < 0:
        raise UserError("--batch-size must be >= 1 and --epochs >= 0")
    _parse_buckets(args.buckets, args.max_length)  # a bad --buckets fails before the data
    if args.word_vector_std is not None and not args.word_vector_std > 0:
        raise UserError(f"--word-vector-std must be positive, got {args.word_vector_std}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.gru_layers is not None and args.gru_layers < 1:
        raise UserError(f"--gru-layers must be >= 1, got {args.gru_layers}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.cache_encoder and (not pretrained or args.unfreeze):
        raise UserError("--cache-encoder needs a frozen pretrained encoder: pass --encoder "
                        "NAME_OR_PATH and leave out --unfreeze")
    if args.cache_encoder and args.notebook_parity:
        raise UserError("--cache-encoder cannot go with --notebook-parity: without the "
                        "attention mask each output depends on its batch's padding")
    if not args.lr > 0:  # also NaN
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    return args


def _parse_buckets(value: str | Sequence[int] | None, max_length: int) -> tuple[int, ...] | None:
    """Bucket lengths from `--buckets` ("64,128,256") or a preset (a string or a tuple).

    Lengths from `max_length` up are dropped (a preset's buckets then still fit a shorter
    --max-length), and `max_length` is always a bucket of its own."""
    if value is None:
        return None
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        lengths = sorted({int(b) for b in items if str(b).strip()})
    except ValueError:
        raise UserError(f"--buckets takes comma-separated lengths such as 64,128,256, got "
                        f"{value!r}") from None
    if not lengths or lengths[0] < 1:
        raise UserError(f"--buckets takes positive lengths such as 64,128,256, got {value!r}")
    return tuple(b for b in lengths if b < max_length) + (max_length,)


# ----------------------------------------------------------------------------- train


def _default_dtype() -> str:
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def _limit(data, n: int | None, seed: int = 0):
    """At most `n` examples of each split, drawn at random by `seed` (kept in order): the
    first ones would not do, as IMDB's splits list every negative review first."""
    if n is None:
        return data
    import numpy as np

    def cut(split):
        if n >= len(split):
            return split
        return split.subset(np.sort(np.random.default_rng([seed, 11]).permutation(len(split))[:n]))

    return dataclasses.replace(data, **{s: cut(getattr(data, s))
                                        for s in ("train", "validation", "test")})


def _train_command(args: argparse.Namespace) -> int:
    from hw3_jax.sharding import initialize_distributed

    initialize_distributed()  # before JAX touches a device; a no-op unless launched so
    import jax
    import jax.numpy as jnp

    from hw3_jax import input_pipeline as ip
    from hw3_jax import models
    from hw3_jax.bert import BertConfig, load_pretrained_bert
    from hw3_jax.predict import SentimentPredictor, model_metadata
    from hw3_jax.train import TrainConfig, train

    dtype = args.dtype or _default_dtype()
    pretrained = args.encoder != "scratch"
    overrides = dict(attention=args.attention, dtype=dtype, local_window=args.local_window,
                     performer_features=args.performer_features)
    if args.encoder_dropout is not None:
        overrides["hidden_dropout_prob"] = args.encoder_dropout
    _check_workdir_early(args)
    if pretrained:  # weights first: a bad encoder path fails before minutes of tokenizing
        try:
            bert_cfg, bert_params = load_pretrained_bert(args.encoder, **overrides)
        except ValueError as e:  # not a BERT config, bad JSON, mis-shaped weights
            raise UserError(f"cannot use encoder {args.encoder}: {e}") from None
        if args.max_length > bert_cfg.max_position_embeddings:
            raise UserError(f"--max-length {args.max_length} exceeds the encoder's "
                            f"{bert_cfg.max_position_embeddings} positions")

    def scratch_config(vocab_size: int, pad_id: int) -> BertConfig:
        try:
            return BertConfig(
                vocab_size=vocab_size, hidden_size=args.hidden_size,
                num_hidden_layers=args.layers, num_attention_heads=args.heads,
                intermediate_size=args.intermediate_size,
                max_position_embeddings=args.max_length, pad_token_id=pad_id, **overrides)
        except ValueError as e:  # e.g. --hidden-size not a multiple of --heads
            raise UserError(f"invalid encoder size: {e}") from None

    if not pretrained:  # sizes checked before minutes of tokenizing
        scratch_config(args.vocab_size or 8000, 0)
    data = ip.build_sentiment_data(
        args.data, imdb_archive=args.imdb_archive,
        encoder=(args.vocab or args.encoder) if pretrained else "scratch",
        workdir=args.workdir, max_length=args.max_length, batch_size=args.batch_size,
        buckets=_parse_buckets(args.buckets, args.max_length),
        seed=args.seed, vocab_size=args.vocab_size or 8000,
        synthetic_train=args.synthetic_size,
        synthetic_test=max(args.synthetic_size // 5, 1),
        progress=not args.no_progress,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    data = _limit(data, args.limit, args.seed)
    if not pretrained:
        bert_cfg = scratch_config(data.vocab_size, data.pad_id)
    elif data.vocab_size > bert_cfg.vocab_size:
        raise UserError(f"the tokenizer has {data.vocab_size} tokens but the encoder only "
                        f"{bert_cfg.vocab_size}: pass the encoder's own vocabulary (--vocab)")
    model = models.BertGRUSentiment(
        bert=bert_cfg, hidden_dim=args.gru_hidden or 256, n_layers=args.gru_layers or 2,
        dropout=0.25 if args.dropout is None else args.dropout,
        freeze_encoder=pretrained and not args.unfreeze,
        gru_over_padding=args.notebook_parity, encoder_attention_mask=not args.notebook_parity,
        readout=args.readout or "final",
        dtype=jnp.dtype(dtype))
    params = models.init_params(model, jax.random.key(args.seed))
    if pretrained:
        params = models.with_pretrained_encoder(params, bert_params)
    elif (args.init_embeddings or "random") == "ppmi-svd":
        if args.resume and _has_checkpoint(args.workdir):  # the checkpoint replaces them anyway
            extra_embeddings = {"init": "ppmi-svd", "note": "not recomputed: resumed"}
        else:
            params, extra_embeddings = _pretrained_word_vectors(args, data, bert_cfg, params)
    mask = models.trainable_mask(params, freeze_encoder=model.freeze_encoder,
                                 freeze_word_embeddings=bool(args.freeze_word_embeddings))
    n_all, n_train = models.count_params(params), models.count_trainable(params, mask)
    sizes = {s: data.num_examples(s) for s in ("train", "validation", "test")}
    origin = (args.imdb_archive or "tfds") if args.data == "imdb" else "embedded"
    print(f"data: {args.data} ({origin})"
          f"; train {sizes['train']:,} / validation {sizes['validation']:,} / test "
          f"{sizes['test']:,}; vocabulary {data.vocab_size:,}; buckets {list(data.buckets)}")
    print(f"model: encoder {args.encoder} ({bert_cfg.num_hidden_layers} layers, hidden "
          f"{bert_cfg.hidden_size}, {args.attention} attention), GRU {model.hidden_dim}x"
          f"{model.n_layers} bidirectional ({model.readout} readout); {n_all:,} parameters, "
          f"{n_train:,} trainable; "
          f"{dtype} on {jax.device_count()} {jax.default_backend()} device(s)")
    config = TrainConfig(
        workdir=args.workdir, epochs=args.epochs, learning_rate=args.lr, seed=args.seed,
        lr_schedule=args.lr_schedule or "constant", warmup_steps=args.warmup_steps or 0,
        resume=args.resume, overwrite=args.overwrite, max_steps=args.max_steps,
        progress=not args.no_progress, debug_nan_at_step=args.debug_nan_at_step)
    extra = model_metadata(model, args.max_length)
    extra["run"] = {k: v for k, v in vars(args).items() if k != "command"}
    extra["data"] = data.info
    if not pretrained and (args.init_embeddings or "random") == "ppmi-svd":
        extra["word_vectors"] = extra_embeddings
    if args.cache_encoder:  # the same loop, on the head alone and the stored outputs
        head, head_params, head_data = _cached_encoder_setup(args, model, params, data, extra)
        config = dataclasses.replace(config, input_keys=head_data.input_keys)
        result = train(head, head_params, head_data, config, None, extra_metadata=extra)
        best = {**params, **result.params}  # the full model: frozen encoder + trained head
    else:
        result = train(model, params, data, config, mask, extra_metadata=extra)
        best = result.params

    predictor = SentimentPredictor(model, best, data.tokenizer)
    predictions = {r.text: r.p_positive for r in predictor.score(NOTEBOOK_SENTENCES)}
    for text, p in predictions.items():
        print(f"P(positive) = {p:.4f}  {text}")
    metrics_file = Path(args.workdir) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["predictions"] = predictions
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (loss {result.test_loss:.4f}) on "
          f"{metrics.get('test_examples')} reviews; metrics in {metrics_file}")
    return 0


def _pretrained_word_vectors(args: argparse.Namespace, data, bert_cfg, params):
    """--init-embeddings ppmi-svd: (params with PPMI+SVD word vectors, what was done).

    Counted on the training and validation texts (labels unused; never the test split) and,
    with --imdb-archive, the archive's unlabelled `train/unsup` reviews, tokenized once and
    cached like the splits."""
    import jax.numpy as jnp
    import numpy as np

    from hw3_jax import embeddings
    from hw3_jax import input_pipeline as ip

    t0 = time.perf_counter()
    splits = [data.train, data.validation]
    unsup_n = 0
    if args.data == "imdb" and args.imdb_archive:
        def texts():
            t = ip.read_imdb_unsup(args.imdb_archive)
            return ip.TextSplit(t, np.zeros(len(t), np.int8))

        unsup, _ = ip.load_or_encode(
            data.tokenizer, "unsup", texts,
            source_id=ip.source_identity("imdb", imdb_archive=args.imdb_archive),
            max_length=args.max_length, cache_dir=ip.default_cache_dir(args.workdir),
            progress=not args.no_progress)
        splits.append(unsup)
        unsup_n = len(unsup)
    tok = data.tokenizer
    skip = [i for i in (tok.token_to_id(t) for t in ip.SPECIAL_TOKENS) if i is not None]
    vectors = embeddings.ppmi_svd_embeddings(
        splits, data.vocab_size, bert_cfg.hidden_size, skip_ids=skip,
        std=args.word_vector_std or bert_cfg.initializer_range, seed=args.seed)
    n_tokens = int(sum(int(s.lengths.sum()) for s in splits))
    std = args.word_vector_std or bert_cfg.initializer_range
    info = {"init": "ppmi-svd", "std": float(std),
            "texts": int(sum(len(s) for s in splits)),
            "unsup_texts": unsup_n, "tokens": n_tokens,
            "seconds": round(time.perf_counter() - t0, 1)}
    print(f"word vectors: PPMI+SVD on {info['texts']:,} texts ({unsup_n:,} unlabelled), "
          f"{n_tokens:,} tokens, {info['seconds']:.0f} s")
    vectors = jnp.asarray(vectors)
    return embeddings.with_word_embeddings(params, vectors), info


def _cached_encoder_setup(args: argparse.Namespace, model, params, data, extra: dict):
    """--cache-encoder: (head module, head params, data of stored encoder outputs).

    The frozen encoder's params go into the workdir once (a file named by their hash,
    recorded in `extra`), so that `predict` rebuilds the full BertGRUSentiment from a
    checkpoint that holds only the head."""
    from hw3_jax import encoder_cache as ec
    from hw3_jax import input_pipeline as ip

    bert_params, head_params = ec.split_params(params)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    saved = ec.save_encoder_params(workdir, bert_params)
    cached = ec.build_cached_encoder_data(
        data, model.bert, bert_params, dtype=args.cache_dtype,
        attention_mask=model.encoder_attention_mask, cache_dir=ip.default_cache_dir(workdir),
        progress=not args.no_progress, log=print)
    info = cached.info["encoder_cache"]
    extra["encoder_cache"] = {"encoder_params": saved, "encoder_dropout": False, **info}
    print(f"encoder outputs ready in {info['seconds']:.1f} s; training the head only "
          f"(encoder dropout off, unlike the notebook)")
    return ec.head_of(model), head_params, cached


def _check_workdir_early(args: argparse.Namespace) -> None:
    """Workdir problems found before the data is read and a tokenizer trained (minutes on
    IMDB): not writable, or holding a run that neither --resume nor --overwrite claims."""
    from hw3_jax.checkpointing import check_workdir

    wd = check_workdir(args.workdir, 0)  # free space is checked by the loop, sized by the model
    # Finished orbax steps are folders named by the step number. (Not through orbax: a
    # writable CheckpointManager starts a cleanup thread that close() does not wait for, and
    # a process that exits on an error right after prints that thread's traceback.)
    has_run = any(_has_checkpoint(wd, kind) for kind in ("best", "latest"))
    if has_run and not (args.resume or args.overwrite):
        raise UserError(f"{wd} already holds checkpoints of a run: pass --resume to continue "
                        "it, --overwrite to start over, or use another --workdir")
    tok = wd / "tokenizer.json"
    if has_run and args.overwrite and not args.resume and tok.is_file():
        # Starting over trains a new vocabulary: the old run's may come from other data or
        # another --vocab-size (the pipeline reuses a WORKDIR/tokenizer.json that exists).
        tok.unlink()


def _has_checkpoint(workdir: str | Path, kind: str = "latest") -> bool:
    """Whether WORKDIR/checkpoints/KIND holds a finished orbax step (a folder named by
    the step number)."""
    return any(d.name.isdigit() and d.is_dir()
               for d in _entries(Path(workdir) / "checkpoints" / kind))


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "predict", "-h", "--help"):
        argv = ["train", *argv]
    args = _parser().parse_args(argv)
    try:
        if args.command == "predict":
            return _predict_command(args)
        return _train_command(_resolve(args))
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - user-facing errors become one line
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def _is_user_error(e: Exception) -> bool:
    from hw3_jax.checkpointing import TrainingError
    from hw3_jax.input_pipeline import DataError

    return isinstance(e, UserError | TrainingError | DataError | OSError)


if __name__ == "__main__":
    sys.exit(main())
