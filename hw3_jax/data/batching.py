"""Batches of token ids: bucket lengths, fixed-size bucketed batches, a prefetch thread.

A batch is a dict of NumPy arrays
  {"input_ids": int32 [B, L], "attention_mask": int32 [B, L], "label": float32 [B],
   "weight": float32 [B]}
with L one of a few bucket lengths (static shapes for jit); `BucketedBatches` says which
examples go together."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import clean_text
from hw3_jax.data.token_cache import TokenizedSplit, encode_texts
from hw3_jax.data.tokenizer import pad_id

SPLITS = ("train", "validation", "test")
_ALIASES = {"val": "validation", "valid": "validation"}


def split_name(split: str) -> str:
    """The name of a split as the data objects hold it: "train", "validation" (also "val",
    "valid") or "test". Raises DataError for any other name."""
    name = _ALIASES.get(split, split)
    if name not in SPLITS:
        raise DataError(f"unknown split {split!r}: use train, validation or test")
    return name


def default_buckets(max_length: int) -> tuple[int, ...]:
    """Powers of two from 32 up to `max_length` (always included): 512 ->
    (32, 64, 128, 256, 512); 200 -> (32, 64, 128, 200)."""
    if max_length < 1:
        raise DataError(f"max_length must be positive, got {max_length}")
    out, b = [], 32
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(out)


def normalise_buckets(value: str | Sequence[int] | None, max_length: int) -> tuple[int, ...]:
    """Bucket lengths from "64,128,256", a sequence of ints, or None (`default_buckets`).

    Lengths from `max_length` up are dropped (nothing is longer, so they would never be used,
    and a configured set still fits a shorter `max_length`); `max_length` is always the last
    bucket. Raises DataError for anything but positive integer lengths."""
    if value is None:
        return default_buckets(max_length)
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        lengths = sorted({int(b) for b in items if str(b).strip()})
    except (TypeError, ValueError):
        raise DataError(f"buckets take comma-separated lengths such as 64,128,256, got "
                        f"{value!r}") from None
    if not lengths or lengths[0] < 1:
        raise DataError(f"buckets take positive lengths such as 64,128,256, got {value!r}")
    return tuple(b for b in lengths if b < max_length) + (max_length,)


def full_rows(idx: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows [batch_size], weight float32 [batch_size]) of a batch of examples `idx`: a
    partial batch repeats its real rows with weight 0 (never an all-padding row, which could
    give NaN attention)."""
    n = len(idx)
    weight = np.zeros(batch_size, np.float32)
    weight[:n] = 1.0
    return (idx if n == batch_size else idx[np.arange(batch_size) % n]), weight


class BucketedBatches:
    """Fixed-size batches of one split, bucketed by length.

    Each example goes to the smallest bucket length >= its length. Batches are built
    bucket by bucket, shortest first; a bucket's leftover (< batch_size examples) joins the
    next bucket (padded to that longer length), so there are exactly ceil(N / batch_size)
    batches and only the last one can be partial (`full_rows`): every example counts once.

    shuffle=True: the examples within each bucket and the order of the batches are permuted
    by a generator seeded with (seed, epoch) only, so a resumed run that skips k batches
    sees the same batches. shuffle=False: input order within buckets.
    `process_count` > 1: each process gets its block of every global batch, rows
    [process_index * per, (process_index + 1) * per) with per = batch_size / process_count.
    """

    def __init__(self, split: TokenizedSplit, *, batch_size: int, buckets: Sequence[int],
                 pad_id: int = 0, shuffle: bool = False, seed: int = 0,
                 process_index: int = 0, process_count: int = 1):
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if batch_size % process_count:
            raise DataError(f"batch size {batch_size} is not a multiple of the "
                            f"{process_count} processes")
        if len(split) == 0:
            raise DataError("cannot batch an empty split")
        self.split = split
        self.batch_size = batch_size
        self.buckets = tuple(buckets)
        if list(self.buckets) != sorted(set(self.buckets)):
            raise DataError(f"buckets {self.buckets} are not increasing: pass them through "
                            "normalise_buckets")
        if int(split.lengths.max()) > self.buckets[-1]:
            raise DataError(f"an example of {int(split.lengths.max())} tokens exceeds the "
                            f"largest bucket {self.buckets[-1]}")
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.seed = seed
        self.process_index, self.process_count = process_index, process_count
        bucket_of = np.searchsorted(np.asarray(self.buckets), split.lengths)
        self._members = [np.flatnonzero(bucket_of == b) for b in range(len(self.buckets))]

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def plan(self, epoch: int = 0) -> list[tuple[int, np.ndarray]]:
        """[(bucket length, example indices)] of every batch of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        out: list[tuple[int, np.ndarray]] = []
        carry = np.zeros(0, np.int64)
        B = self.batch_size
        for length, members in zip(self.buckets, self._members, strict=True):
            if rng is not None:
                members = rng.permutation(members)
            pool = np.concatenate([carry, members])
            n_full = len(pool) // B
            for k in range(n_full):
                out.append((length, pool[k * B:(k + 1) * B]))
            carry = pool[n_full * B:]
        if len(carry):
            out.append((self.buckets[-1], carry))
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def batch(self, length: int, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The batch dict of examples `idx` padded to `length` tokens (this process's rows)."""
        rows, weight = full_rows(idx, self.batch_size)
        if self.process_count > 1:
            per = self.batch_size // self.process_count
            sl = slice(self.process_index * per, (self.process_index + 1) * per)
            rows, weight = rows[sl], weight[sl]
        ids, mask = self.split.padded(rows, length, self.pad_id)
        return {"input_ids": ids.astype(np.int32, copy=False), "attention_mask": mask,
                "label": self.split.labels[rows].astype(np.float32), "weight": weight}

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of `epoch`, skipping the first `start` without building them."""
        for length, idx in self.plan(epoch)[start:]:
            yield self.batch(length, idx)


def prefetch(iterator: Iterable) -> Iterator:
    """Run `iterator` in a background thread, two items ahead. Exceptions are re-raised in
    the consumer; closing the generator early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    done = object()

    def put(entry: tuple) -> bool:
        """Queue `entry` once there is room; False if the consumer stopped first."""
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((done, e))

    t = threading.Thread(target=worker, daemon=True, name="hw3-prefetch")
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()


def predict_batches(tok, texts: Sequence[str], *, truncation: str,
                    batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of free texts for prediction. Texts are cleaned and cut to the tokenizer's
    max length by `truncation` (`token_cache.TRUNCATIONS`), as the run's data was.

    Each batch is padded to the smallest bucket (`default_buckets`) that holds its longest
    text and to the smallest power of two rows (at most `batch_size`) that holds its texts,
    so one short text is not run as `batch_size` rows of the longest bucket, while the
    jitted model still sees only a handful of shapes. Texts are grouped by token count,
    shortest first (fewer padded tokens per batch); each batch's "index" [rows] gives the
    input position of every row (-1 for padding rows, which have weight 0)."""
    trunc = tok.truncation or {}
    max_length = int(trunc.get("max_length", 512))
    buckets = default_buckets(max_length)
    ts = encode_texts(tok, [clean_text(t) for t in texts], truncation=truncation)
    pid = pad_id(tok)
    order = np.argsort(ts.lengths, kind="stable")
    for lo in range(0, len(ts), batch_size):
        idx = order[lo:lo + batch_size]
        rows = min(batch_size, 1 << max(len(idx) - 1, 0).bit_length())
        longest = int(ts.lengths[idx].max())
        length = next(b for b in buckets if b >= longest)
        bb = BucketedBatches(ts.subset(idx), batch_size=rows, buckets=buckets, pad_id=pid)
        batch = bb.batch(length, np.arange(len(idx)))
        batch["index"] = np.full(rows, -1, np.int64)
        batch["index"][:len(idx)] = idx
        yield batch
