"""The sentiment experiment's run: `train_and_evaluate(config, workdir)`.

    config = configs.sentiment.get_config("smoke")
    result = train_and_evaluate(config, "runs/smoke")

docs/architecture.md follows it stage by stage: data, the factory's model (with PPMI+SVD word
vectors or the encoder cache when configured), the project's one loop, the notebook's two
sentences scored by the best model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import typing
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

import configs.sentiment
from experiments.cli import OVERRIDE_PREFIX, UserError, check_seed, flatten, require
from hw3_jax import factory, models
from hw3_jax.bert import ATTENTION_KINDS
from hw3_jax.data import encoder_cache as ec
from hw3_jax.data.batching import normalise_buckets, split_name
from hw3_jax.data.encoder_cache import CACHE_DTYPES
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import TextSplit, read_imdb_unsup
from hw3_jax.data.pipeline import get_datasets
from hw3_jax.data.sources import SOURCES, imdb_archive_path, source_identity
from hw3_jax.data.token_cache import TRUNCATIONS, load_or_encode
from hw3_jax.data.tokenizer import SPECIAL_TOKENS, tokenizer_fingerprint
from hw3_jax.models import HEAD_READOUTS, HEADS, READOUTS
from hw3_jax.predict import SentimentPredictor
from hw3_jax.train import sharding
from hw3_jax.train.checkpoints import claim_workdir
from hw3_jax.train.config import TrainConfig
from hw3_jax.train.loop import TrainResult, train
from hw3_jax.train.workdir import TrainingError, Workdir

# What a run raises that is the user's to fix, beside the UserError, DataError and
# WorkdirError that `experiments.cli.run_main` reports itself: one line each.
RUN_ERRORS = (TrainingError, OSError)
NOTEBOOK_SENTENCES = (
    "Justice League is terrible. I hated it.",
    "Avengers was great!!",
)
# The values a text field of the data and the model takes (the shortcut flags offer the same;
# the train section's are checked by TrainConfig).
CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": SOURCES,
    "data.truncation": TRUNCATIONS,
    "model.attention": ATTENTION_KINDS,
    "model.head": HEADS,
    "model.readout": READOUTS,
    "model.init_embeddings": ("random", "ppmi-svd"),
    "model.dtype": ("float32", "bfloat16"),
    "encoder_cache.dtype": CACHE_DTYPES,
}


# ----------------------------------------------------------------------------- the config


def _say(*parts: Any) -> None:
    """print, by process 0 alone (every process of a multi-process run runs this code)."""
    if jax.process_index() == 0:
        print(*parts, flush=True)


def data_source(*, source: str | None, encoder: str, imdb_archive: str | None,
                imdb_url: str | None) -> str:
    """The data a run reads: `source` when given; when None, "imdb" with a pretrained encoder,
    an IMDB archive or an IMDB mirror URL, else "synthetic". The one rule for `data.source`'s
    None, which also picks the variant of a command line without `--config`."""
    if source is not None:
        return source
    imdb = (factory.is_pretrained({"encoder": encoder}) or imdb_archive is not None
            or imdb_url is not None)
    return "imdb" if imdb else "synthetic"


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the values that follow from others or from the machine:
    `data.source` (None: `data_source`), `model.readout` (None: the head's own) and
    `model.dtype` (None: bfloat16 on TPU/GPU, float32 on CPU). What a run records."""
    config = config.copy_and_resolve_references()
    data = config.data
    data.source = data_source(source=data.source, encoder=config.model.encoder,
                              imdb_archive=data.imdb_archive, imdb_url=data.imdb_url)
    config.model.readout = factory.readout(config.model)
    config.model.dtype = factory.compute_dtype(config.model)
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Every check that needs no data, on a resolved config: one-line UserErrors."""
    data, model, values = config.data, config.model, flatten(config)
    nullable = _nullable(config.train)
    refused = sorted(k for k, v in values.items() if v is None and k not in nullable)
    if refused:  # else a TypeError in a check or in the model, far from the cause
        raise UserError(f"{OVERRIDE_PREFIX}{refused[0]}=None: this field takes a value "
                        "(configs/sentiment.py gives its default)")
    empty = sorted(k for k, v in values.items() if isinstance(v, str) and not v.strip())
    if empty:  # an unset shell variable: "" would read as the current folder, or be ignored
        raise UserError(f"{OVERRIDE_PREFIX}{empty[0]} is an empty string: give it a value")
    pretrained = factory.is_pretrained(model)
    check_seed(config.seed)
    if data.imdb_sha256 is not None and data.imdb_url is None:  # else it goes unused
        raise UserError("--imdb-sha256 is the checksum of a mirror's archive: give the mirror "
                        "with --imdb-url URL too")
    for flag, value in (("--imdb-archive", data.imdb_archive), ("--imdb-url", data.imdb_url)):
        if value is not None and data.source != "imdb":
            raise UserError(f"{flag} goes with --data imdb (or leave --data out)")
    if not pretrained and data.vocab is not None:
        raise UserError("--config.data.vocab is for a pretrained --encoder: a scratch encoder "
                        "trains its own vocabulary (--config.data.vocab_size)")
    if pretrained and model.init_embeddings == "ppmi-svd":
        raise UserError("--config.model.init_embeddings=ppmi-svd is for --encoder scratch: "
                        "a pretrained encoder brings its own word embeddings")
    for dotted, options in CHOICES.items():
        require(values[dotted] in options, dotted, f"one of {', '.join(options)}", values[dotted])
    require(8 <= data.max_length <= 512, "--max-length", "between 8 and 512", data.max_length)
    require(data.batch_size >= 1, "--batch-size", ">= 1", data.batch_size)
    require(data.limit is None or data.limit >= 1, "--limit",
            ">= 1 (or left out for every example)", data.limit)
    require(model.word_vector_std > 0, "--config.model.word_vector_std", "positive",
            model.word_vector_std)
    for name in ("gru_layers", "gru_hidden"):
        require(model[name] >= 1, f"--config.model.{name}", ">= 1", model[name])
    require(0.0 <= model.dropout < 1.0, "--config.model.dropout", "in [0, 1)", model.dropout)
    if model.readout not in HEAD_READOUTS[model.head]:
        raise UserError(f"--config.model.readout={model.readout} is not one of the "
                        f"{model.head} head's: {', '.join(HEAD_READOUTS[model.head])}")
    _validate_train(config.train)
    try:
        normalise_buckets(data.buckets, data.max_length)  # bad buckets fail before the data
        if not pretrained:  # sizes checked before minutes of tokenizing
            factory.encoder_config(model, data.vocab_size, 0, data.max_length)
    except DataError as e:
        raise UserError(f"--config.data.buckets: {e}") from None
    except ValueError as e:  # e.g. hidden_size not a multiple of heads
        raise UserError(f"invalid configuration: {e}") from None
    if config.encoder_cache.enabled and not factory.frozen_encoder(model):
        raise UserError("--cache-encoder needs a frozen pretrained encoder: pass --encoder "
                        "NAME_OR_PATH and leave out --unfreeze")
    if config.encoder_cache.enabled and model.head != "gru":
        raise UserError("--cache-encoder trains the GRU head only: leave out --cache-encoder "
                        "or use --config.model.head=gru")
    if config.encoder_cache.enabled and model.notebook_parity:
        raise UserError("--cache-encoder cannot go with --config.model.notebook_parity=True: "
                        "without the attention mask each output depends on its batch's "
                        "padding")
    processes = jax.process_count()
    if data.batch_size % processes:
        raise UserError(f"--batch-size {data.batch_size} must be a multiple of the "
                        f"{processes} processes: each builds an equal share of every batch")
    if config.encoder_cache.enabled and processes > 1:
        raise UserError("--cache-encoder runs in a single process: leave it out to train "
                        f"the full model over the {processes} processes")


def _nullable(train: ml_collections.ConfigDict) -> set[str]:
    """The fields that may hold None: the placeholders of configs/sentiment.py (None in its
    default) and TrainConfig's optional fields."""
    hints = typing.get_type_hints(TrainConfig)
    optional = {f"train.{name}" for name in train if type(None) in typing.get_args(hints[name])}
    return optional | {k for k, v in flatten(configs.sentiment.get_config()).items() if v is None}


def _validate_train(train: ml_collections.ConfigDict) -> None:
    """`validate`'s checks of the train section."""
    try:
        TrainConfig(**train.to_dict())  # the train section's checks
        sharding.data_parallel(train.num_devices)  # at most the devices there are
    except ValueError as e:  # the messages start with the field's name
        raise UserError(f"{OVERRIDE_PREFIX}train.{e}") from None
    for name in ("val_split", "test_split"):
        if train[name] is not None:
            try:
                split_name(train[name])
            except DataError as e:
                raise UserError(f"{OVERRIDE_PREFIX}train.{name}: {e}") from None
    # The model reads input_ids and attention_mask, and gives one logit per review.
    if (train.loss, tuple(train.input_keys)) != (TrainConfig.loss, TrainConfig.input_keys):
        raise UserError(f"{OVERRIDE_PREFIX}train.loss and input_keys are the sentiment model's: "
                        f"leave them at {TrainConfig.loss!r} and {TrainConfig.input_keys}")
    if train.resume and train.overwrite:
        raise UserError("--resume keeps the run in --workdir, --overwrite discards it: pass one")


# ----------------------------------------------------------------------------- the run


def _open_workdir(config: ml_collections.ConfigDict, workdir: str) -> Workdir:
    """The workdir, checked before the data is read and a tokenizer trained (minutes on
    IMDB): writable, and holding no run that neither resume nor overwrite claims."""
    wd = Workdir(workdir)
    wd.check(0)  # free space is checked by the loop, sized by the model
    # Starting over trains a new vocabulary: the old run's may come from other data.
    claim_workdir(wd, resume=config.train.resume, overwrite=config.train.overwrite,
                  also=(wd.tokenizer, wd.tokenizer_source))
    return wd


def _data_digest(data) -> dict[str, str]:
    """What every process must derive alike from the seed: the tokenizer and the order
    and lengths of the first epoch's training batches (text, for
    `sharding.check_same_across_processes`)."""
    plan = hashlib.sha256()
    for length, idx in data.train_plan(0):
        plan.update(np.int64(length).tobytes() + np.asarray(idx, np.int64).tobytes())
    sizes = ",".join(str(data.num_examples(s)) for s in ("train", "validation", "test"))
    return {"the tokenizer": tokenizer_fingerprint(data.tokenizer),
            "the training batches": f"{plan.hexdigest()} {data.steps_per_epoch} {sizes}"}


def _pretrained(model_cfg: ml_collections.ConfigDict, max_length: int):
    """(BertConfig, params) of a pretrained encoder, loaded before the data so that a bad
    path fails before minutes of tokenizing."""
    try:
        bert_cfg, bert_params = factory.pretrained_encoder(model_cfg)
    except (ValueError, OSError) as e:  # not a BERT; bad JSON or weights; missing, unreachable
        raise UserError(f"cannot use --encoder {model_cfg.encoder}: {e}") from None
    if max_length > bert_cfg.max_position_embeddings:
        raise UserError(f"--max-length {max_length} exceeds the encoder's "
                        f"{bert_cfg.max_position_embeddings} positions")
    return bert_cfg, bert_params


def _word_vectors(config: ml_collections.ConfigDict, data, bert_cfg, params, wd: Workdir):
    """(params with PPMI+SVD word vectors, what was done): counted on the training and
    validation texts (labels unused; never the test split) and, with IMDB, its archive's
    unlabelled `train/unsup` reviews, tokenized once and cached like the splits."""
    # Here, not at the top: scipy and scikit-learn add about 1 s to every command's start.
    from hw3_jax.data.word_vectors import ppmi_svd_embeddings, with_word_embeddings

    t0 = time.perf_counter()
    splits = [data.train, data.validation]
    if config.data.source == "imdb":
        def texts():
            unsup = read_imdb_unsup(imdb_archive_path(config.data))
            return TextSplit(unsup, np.zeros(len(unsup), np.int8))

        unsup, _ = load_or_encode(
            data.tokenizer, "unsup", texts,
            source_id=source_identity(config.data, config.seed),
            max_length=config.data.max_length, cache_dir=wd.cache,
            truncation=config.data.truncation, progress=config.train.progress)
        splits.append(unsup)
    tok, std = data.tokenizer, config.model.word_vector_std
    skip = [i for i in (tok.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None]
    vectors = ppmi_svd_embeddings(splits, data.vocab_size, bert_cfg.hidden_size,
                                  skip_ids=skip, std=std, seed=config.seed)
    info = {"init": "ppmi-svd", "std": float(std), "texts": int(sum(len(s) for s in splits)),
            "unsup_texts": int(sum(len(s) for s in splits[2:])),
            "tokens": int(sum(int(s.lengths.sum()) for s in splits)),
            "seconds": round(time.perf_counter() - t0, 1)}
    _say(f"word vectors: PPMI+SVD on {info['texts']:,} texts ({info['unsup_texts']:,} "
         f"unlabelled), {info['tokens']:,} tokens, {info['seconds']:.0f} s")
    return with_word_embeddings(params, vectors), info


def _initial_params(config, model, data, bert_params, wd: Workdir) -> tuple[dict, dict]:
    """(the model's starting params, metadata about them): fresh ones from `config.seed`,
    with the pretrained encoder's weights or the PPMI+SVD word vectors when configured."""
    params = models.init_params(model, jax.random.key(config.seed))
    if bert_params is not None:
        return models.with_pretrained_encoder(params, bert_params), {}
    if config.model.init_embeddings != "ppmi-svd":
        return params, {}
    if config.train.resume and wd.has_checkpoint("latest"):  # the checkpoint replaces them
        return params, {"word_vectors": {"init": "ppmi-svd", "note": "not recomputed: resumed"}}
    params, info = _word_vectors(config, data, model.bert, params, wd)
    return params, {"word_vectors": info}


def _summary(config, data, model, params, mask) -> None:
    sizes = {s: data.num_examples(s) for s in ("train", "validation", "test")}
    origin = (config.data.imdb_archive or "tfds") if config.data.source == "imdb" else \
        "embedded"
    _say(f"data: {config.data.source} ({origin}); train {sizes['train']:,} / validation "
         f"{sizes['validation']:,} / test {sizes['test']:,}; vocabulary "
         f"{data.vocab_size:,}; buckets {list(data.buckets)}")
    bert = model.bert
    head = (f"GRU {model.hidden_dim}x{model.n_layers} bidirectional" if model.head == "gru"
            else "linear head")
    _say(f"model: encoder {config.model.encoder} ({bert.num_hidden_layers} layers, hidden "
         f"{bert.hidden_size}, {bert.attention} attention), {head} ({model.readout} "
         f"readout); {models.count_params(params):,} parameters, "
         f"{models.count_params(params, mask):,} trainable; {config.model.dtype} on "
         f"{jax.device_count()} {jax.default_backend()} device(s)")


def _cached_outputs(config, model, bert_params, data, wd: Workdir, metadata: dict,
                    facts: dict):
    """The encoder cache: the data of the frozen encoder's stored outputs.

    The encoder's params go into the workdir once (a file named by their hash, recorded in
    `metadata`), so that `predict` rebuilds the full model from a checkpoint that holds
    only the head."""
    digest = ec.params_digest(bert_params)  # one pass over the weights, for both uses
    metadata["encoder_params"] = ec.save_encoder_params(wd.root, bert_params, digest)
    cached = ec.build_cached_encoder_data(
        data, model.bert, bert_params, encoder_digest=digest, dtype=config.encoder_cache.dtype,
        attention_mask=model.encoder_attention_mask, cache_dir=wd.cache,
        progress=config.train.progress, log=_say)
    info = cached.info["encoder_cache"]
    facts["encoder_cache"] = {"encoder_params": metadata["encoder_params"],
                              "encoder_dropout": False, **info}
    _say(f"encoder outputs ready in {info['seconds']:.1f} s; training the head only "
         f"(encoder dropout off, unlike the notebook)")
    return cached


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       extra: Mapping[str, Any] | None = None) -> TrainResult:
    """Train the model `config` describes into `workdir`, evaluate the best checkpoint on
    the test split and score the notebook's sentences. WORKDIR/config.json gets the resolved
    config's sections, the encoder's BertConfig ("bert") and `extra` (e.g. the command);
    metrics.json the data's facts ("data"), the word vectors' or the encoder cache's, the
    notebook sentences' "predictions" and `extra`.
    Raises UserError, DataError, TrainingError or OSError, each a one-line message."""
    sharding.initialize_distributed()  # before JAX touches a device; a no-op unless launched
    config = resolve(config)
    validate(config)
    wd = _open_workdir(config, workdir)
    bert_cfg, bert_params = (_pretrained(config.model, config.data.max_length)
                             if factory.is_pretrained(config.model) else (None, None))
    bars = config.train.progress and jax.process_index() == 0
    data = get_datasets(config, wd, progress=bars)
    sharding.check_same_across_processes(_data_digest(data))
    if bert_cfg is None:
        bert_cfg = factory.encoder_config(config.model, data.vocab_size, data.pad_id,
                                          config.data.max_length)
    elif data.vocab_size > bert_cfg.vocab_size:
        raise UserError(f"the tokenizer has {data.vocab_size} tokens but the encoder only "
                        f"{bert_cfg.vocab_size}: pass the encoder's own vocabulary "
                        "(--config.data.vocab=PATH)")
    model = factory.sentiment_model(config.model, bert_cfg)
    params, notes = _initial_params(config, model, data, bert_params, wd)
    mask = models.trainable_mask(params, freeze_encoder=model.freeze_encoder,
                                 freeze_word_embeddings=config.model.freeze_word_embeddings)
    _summary(config, data, model, params, mask)
    # config.json: what rebuilds the model (`hw3_jax.predict`) and the command that ran.
    metadata = {**config.to_dict(), "bert": bert_cfg.to_dict(), **(extra or {})}
    facts = {"data": data.info, **notes, **(extra or {})}  # metrics.json's, beside the loop's
    train_cfg = TrainConfig(**config.train.to_dict())
    encoder = None  # with the encoder cache: the frozen encoder's params, apart

    def report(best) -> dict[str, Any]:
        """What metrics.json gets besides the loop's numbers: `facts`, and the best model's
        P(positive) of the notebook's sentences (a cached run's best head joins the encoder)."""
        if encoder is not None:
            best = models.join_params(best, encoder)
        scored = SentimentPredictor(model, best, data.tokenizer,
                                    truncation=config.data.truncation).score(NOTEBOOK_SENTENCES)
        predictions = {r.text: r.p_positive for r in scored}
        for text, p in predictions.items():
            _say(f"P(positive) = {p:.4f}  {text}")
        return {**facts, "predictions": predictions}

    if config.encoder_cache.enabled:  # the same loop, on the head and the stored outputs
        encoder, head_params = models.split_params(params)
        cached = _cached_outputs(config, model, encoder, data, wd, metadata, facts)
        result = train(model.gru_head(), head_params, cached,
                       dataclasses.replace(train_cfg, input_keys=cached.input_keys), wd,
                       metadata=metadata, report=report)
    else:
        result = train(model, params, data, train_cfg, wd, trainable_mask=mask,
                       metadata=metadata, report=report)
    if result.test_accuracy is None:  # train.test_split=None: no test evaluation
        _say(f"trained without a test evaluation; metrics in {wd.metrics}")
    else:
        _say(f"test accuracy {100 * result.test_accuracy:.2f}% (loss {result.test_loss:.4f}) "
             f"on {data.num_examples('test')} reviews; metrics in {wd.metrics}")
    return result
