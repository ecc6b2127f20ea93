"""The sentiment experiment's data: `get_datasets(config, workdir)` -> `SentimentData`.

From `config.data` (source, sizes, max_length, truncation, batch_size, buckets, vocab_size,
vocab, limit), `config.model.encoder` and `config.seed`:
  1. the source (`sources`), read only when a tokenizer must be trained or a split's token
     ids are not cached;
  2. the tokenizer: a scratch encoder's WordPiece vocabulary trained on the train split (or
     the one in WORKDIR/tokenizer.json, `_reuse_tokenizer`), else the pretrained encoder's
     own (`config.data.vocab or config.model.encoder`); saved as WORKDIR/tokenizer.json;
  3. token ids of the training and test parts (`token_cache`), the training part split 70/30
     into train and validation by seed, each split cut to `config.data.limit` examples;
  4. `SentimentData`: bucketed batches (`batching`) split over JAX's processes, with the
     interface the training loop needs (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from hw3_jax.data import sources
from hw3_jax.data.batching import SPLITS, BucketedBatches, normalise_buckets, prefetch, split_name
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import TRAIN_FRACTION, RawDataset, split_indices
from hw3_jax.data.token_cache import TokenizedSplit, load_or_encode
from hw3_jax.data.tokenizer import (
    load_pretrained_tokenizer,
    load_tokenizer_file,
    pad_id,
    train_wordpiece_tokenizer,
)
from hw3_jax.factory import SCRATCH
from hw3_jax.train.workdir import Workdir, atomic_path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SentimentData:
    """Tokenized train/validation/test splits and their batches (see the module docstring).

    `buckets`: anything `batching.normalise_buckets` takes; held normalised. Batches are
    built ahead in a background thread (`batching.prefetch`).
    `process_count` > 1: each process gets its block of rows of every global batch."""

    train: TokenizedSplit
    validation: TokenizedSplit
    test: TokenizedSplit
    tokenizer: Any
    batch_size: int
    max_length: int
    seed: int
    buckets: Any = None
    process_index: int = 0
    process_count: int = 1
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.buckets = normalise_buckets(self.buckets, self.max_length)
        self.pad_id = pad_id(self.tokenizer)
        self.vocab_size = self.tokenizer.get_vocab_size()
        common = dict(buckets=self.buckets, pad_id=self.pad_id,
                      process_index=self.process_index, process_count=self.process_count)
        self._train = BucketedBatches(self.train, batch_size=self.batch_size, shuffle=True,
                                      seed=self.seed, **common)
        self._eval = {name: BucketedBatches(getattr(self, name),
                                            batch_size=self.batch_size, **common)
                      for name in SPLITS}

    @property
    def steps_per_epoch(self) -> int:
        return len(self._train)

    def train_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """[(bucket length, example indices)] of every training batch of `epoch`, in order."""
        return self._train.plan(epoch)

    def eval_plan(self, split: str) -> list[tuple[int, np.ndarray]]:
        """[(bucket length, example indices)] of every evaluation batch of `split`."""
        return self._eval[split_name(split)].plan(0)

    def num_examples(self, split: str) -> int:
        return len(getattr(self, split_name(split)))

    def eval_steps(self, split: str) -> int:
        return len(self._eval[split_name(split)])

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled training batches of `epoch` (a function of (seed, epoch) only);
        `start_step` skips the first batches without building them (resume)."""
        return prefetch(self._train(epoch, start_step))

    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """Every example of `split` exactly once (weight 1), in fixed order; the last batch's
        padding rows have weight 0."""
        return prefetch(self._eval[split_name(split)](0))


def limit_examples(split: TokenizedSplit, n: int | None, seed: int) -> TokenizedSplit:
    """At most `n` examples of `split` (None: all), drawn at random by `seed` and kept in
    their order: the first ones would not do, as IMDB's splits list every negative first."""
    if n is None or n >= len(split):
        return split
    return split.subset(np.sort(np.random.default_rng([seed, 11]).permutation(len(split))[:n]))


class _Source:
    """The source of `config.data`, read at most once, and only when its text is needed."""

    def __init__(self, data: Any, seed: int, info: dict):
        self.data, self.seed, self.info = data, seed, info
        self.raw: RawDataset | None = None

    def get(self) -> RawDataset:
        if self.raw is None:
            t0 = time.perf_counter()
            self.raw = sources.load_source(self.data, self.seed)
            self.info["read_s"] = time.perf_counter() - t0
        return self.raw


def _save_tokenizer(wd: Workdir, tok, trained_on: dict | None) -> None:
    """WORKDIR/tokenizer.json (and what it was trained on), written by process 0 alone and
    atomically: the other processes derive the same tokenizer themselves, and one that
    finds the file already written reads it whole."""
    if jax.process_index() != 0:
        return
    try:
        wd.root.mkdir(parents=True, exist_ok=True)
        # What it was trained on is unrecorded while the tokenizer is replaced: a kill in
        # between leaves a tokenizer with no record, which no fresh run reuses.
        wd.tokenizer_source.unlink(missing_ok=True)
        with atomic_path(wd.tokenizer) as tmp:
            tok.save(str(tmp))
        if trained_on is not None:
            wd.write_json(wd.tokenizer_source.name, trained_on)
    except Exception as e:  # noqa: BLE001 - `tokenizers` reports a failed write as Exception
        raise DataError(f"cannot write the tokenizer into workdir {wd.root}: {e}") from None


def _reuse_tokenizer(wd: Workdir, max_length: int, trained_on: dict, info: dict):
    """The scratch tokenizer already in the workdir, or None to train one.

    With checkpoints in the workdir (a resumed run), they were trained with it: it is kept,
    with a warning when it was trained on other data or settings. Without, it is the
    leftover of a run that stopped before its first checkpoint, kept only when trained on
    the same data and settings (then it is the one training would give, byte for byte)."""
    if not wd.tokenizer.is_file():
        return None
    try:
        before = wd.read_json(wd.tokenizer_source.name)
    except (OSError, ValueError):
        before = None
    if not wd.has_checkpoint():
        if before != trained_on:
            return None
    elif before is not None and before != trained_on:
        log.warning("reusing %s, which was trained on other data or settings (%s); use "
                    "a new workdir to train a new vocabulary", wd.tokenizer, before)
    info["tokenizer"] = f"reused {wd.tokenizer}"
    return load_tokenizer_file(wd.tokenizer, max_length)


def _tokenizer(config: Any, wd: Workdir, source: _Source, source_id: str,
               info: dict):
    """The run's tokenizer (see the module docstring, step 2), saved into the workdir."""
    data, encoder = config.data, info["encoder"]
    trained_on = None
    t0 = time.perf_counter()
    if encoder != SCRATCH:
        tok = load_pretrained_tokenizer(encoder, data.max_length)
        info["tokenizer"] = f"pretrained {encoder}"
    else:
        trained_on = {"source": source_id, "seed": config.seed,
                      "train_fraction": TRAIN_FRACTION, "vocab_size": data.vocab_size}
        tok = _reuse_tokenizer(wd, data.max_length, trained_on, info)
        if tok is not None:
            info["tokenizer_s"] = time.perf_counter() - t0
            return tok
        raw = source.get()
        t0 = time.perf_counter()  # reading the source is timed apart
        tr_idx, _ = split_indices(len(raw.train), TRAIN_FRACTION, seed=config.seed)
        texts = [raw.train.texts[i] for i in tr_idx]
        tok = train_wordpiece_tokenizer(texts, vocab_size=data.vocab_size,
                                        max_length=data.max_length)
        info["tokenizer"] = f"trained on {len(texts)} training texts"
    info["tokenizer_s"] = time.perf_counter() - t0
    _save_tokenizer(wd, tok, trained_on)
    return tok


def _token_ids(tok, source: _Source, source_id: str, cache_dir, data: Any,
               progress: bool, info: dict) -> dict[str, TokenizedSplit]:
    """Token ids of the training and test parts: from the cache, else tokenized and cached."""
    parts = {}
    for split in ("train", "test"):
        parts[split], got = load_or_encode(
            tok, split, lambda split=split: getattr(source.get(), split),
            source_id=source_id, max_length=data.max_length, cache_dir=cache_dir,
            truncation=data.truncation, progress=progress,
            extra_meta=lambda: {"invalid_utf8": source.get().invalid_utf8})
        info[f"{split}_cache_hit"] = got["cache_hit"]
        info[f"{split}_encode_s"] = got["seconds"]
        info.setdefault("invalid_utf8", got["meta"].get("invalid_utf8", 0))
    if source.raw is not None:
        info["invalid_utf8"] = source.raw.invalid_utf8
    return parts


def get_datasets(config: Any, workdir: str | os.PathLike, *,
                 progress: bool = True) -> SentimentData:
    """Everything the training loop needs, from the source to batches (module docstring).

    `workdir`: where the tokenizer is saved and reused; the token cache is `Workdir.cache`.
    `data.info` holds timings, cache hits, the sizes of the splits before `limit`, and the
    count of reviews not valid UTF-8. Raises DataError for every problem with the data or
    its options."""
    t_start = time.perf_counter()
    data, seed = config.data, config.seed
    encoder = SCRATCH if config.model.encoder == SCRATCH else str(
        data.vocab or config.model.encoder)
    info: dict = {"data": data.source, "encoder": encoder, "max_length": data.max_length,
                  "truncation": data.truncation}
    wd = Workdir(workdir)
    source = _Source(data, seed, info)
    source_id = sources.source_identity(data, seed)
    tok = _tokenizer(config, wd, source, source_id, info)
    parts = _token_ids(tok, source, source_id, wd.cache, data, progress, info)
    tr_idx, va_idx = split_indices(len(parts["train"]), TRAIN_FRACTION, seed=seed)
    splits = {"train": parts["train"].subset(tr_idx),
              "validation": parts["train"].subset(va_idx), "test": parts["test"]}
    info["sizes"] = {name: len(s) for name, s in splits.items()}
    out = SentimentData(*(limit_examples(splits[name], data.limit, seed) for name in SPLITS),
                        tok, batch_size=data.batch_size, buckets=data.buckets,
                        max_length=data.max_length, seed=seed,
                        process_index=jax.process_index(), process_count=jax.process_count(),
                        info=info)
    info.update(vocab_size=out.vocab_size, buckets=list(out.buckets),
                total_s=time.perf_counter() - t_start)
    return out
