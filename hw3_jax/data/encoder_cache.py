"""A frozen encoder's outputs computed once: the data behind `--cache-encoder`.

With the pretrained encoder frozen, BERT's output for a review is the same every epoch once
its dropout is off, so it can be computed in one pass over each split and stored; training
then runs only the head (`models.GRUHead`) on the stored outputs, through the same loop
(`hw3_jax.train.train`, `input_keys=("features", "attention_mask")`). This is not exactly
the notebook's recipe: its frozen BERT kept dropout on in training (`model.train()`), while
cached outputs are deterministic (dropout off), as the notebook's BERT was at evaluation.

Storage: per split, one array `[total real tokens, hidden]` in float16 (or bfloat16 /
float32) holding only the real tokens of every review, back to back (like
`token_cache.TokenizedSplit`); batches are padded with zeros at batch time. The array is
an `.npy` file memory-mapped from the cache directory, so RAM holds only what the OS pages
in, and a second run with the same encoder, tokens and dtype reads it instead of
encoding again. Its name carries a hash of the encoder's weights and config, the split's
token ids and the dtype. The next pass over a split goes on where a stopped one stopped
(`_Partial`; after a kill, from up to `SAVE_EVERY_S` earlier).

Batches of `CachedEncoderData` are those of `SentimentData` (the same bucket lengths,
the same examples in the same order for a given seed and epoch), with the token ids
replaced by the encoder's outputs:
  {"features": [B, L, hidden] float16, "attention_mask": int32 [B, L], "label": float32 [B],
   "weight": float32 [B]}.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hw3_jax.bert import BertConfig, BertEncoder
from hw3_jax.bert_weights import unreadable_safetensors
from hw3_jax.data.batching import SPLITS, BucketedBatches, full_rows, prefetch, split_name
from hw3_jax.data.errors import DataError
from hw3_jax.data.pipeline import SentimentData
from hw3_jax.data.token_cache import TokenizedSplit, keyed_path, starts_of, token_index
from hw3_jax.train.sharding import data_parallel, pad_batch, replicate, shard_batch
from hw3_jax.train.workdir import (
    atomic_path,
    check_free_space,
    process_gone,
    temp_files,
    temp_path,
)

CACHE_DTYPES = ("float16", "bfloat16", "float32")
INPUT_KEYS = ("features", "attention_mask")  # TrainConfig.input_keys of the head
FEATURE_FORMAT = 1  # bump when the stored arrays change meaning
# How often a pass writes down how far it got: a pass killed outright (SIGKILL, a lost
# runtime) redoes at most this much work; writing costs a flush of the pages encoded since.
SAVE_EVERY_S = 30.0


def _np_dtype(name: str) -> np.dtype:
    if name not in CACHE_DTYPES:
        raise DataError(f"unknown cache dtype {name!r}: use one of {', '.join(CACHE_DTYPES)}")
    return np.dtype(jnp.dtype(name))  # bfloat16 is ml_dtypes' NumPy type


# --------------------------------------------------------------------------- encoder params


def params_digest(tree: Any) -> str:
    """A hash of a params tree's paths, shapes, dtypes and values."""
    h = hashlib.blake2b(digest_size=12)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(a.view(np.uint8).ravel())
    return h.hexdigest()


def save_encoder_params(directory: str | os.PathLike, params: Any, digest: str) -> str:
    """Write the frozen encoder's params as `encoder-<digest>.safetensors` in `directory`
    (unless it is there already) and return that file name; `digest` is
    `params_digest(params)`. The digest in the name means a run never overwrites the
    encoder another run in the same workdir refers to."""
    from safetensors.numpy import save_file

    name = f"encoder-{digest}.safetensors"
    path = Path(directory) / name
    if not path.is_file():
        flat = flax.traverse_util.flatten_dict(jax.device_get(params), sep="/")
        with atomic_path(path) as tmp:  # never a half-written file under the final name
            # save_file makes the file 0600: it gets the mode open() gives (the umask's), as the
            # workdir's other files, for others to read (safetensors' bytes API: 2 more copies).
            tmp.touch()
            mode = tmp.stat().st_mode
            save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, str(tmp))
            tmp.chmod(mode)
    return name


def load_encoder_params(path: str | os.PathLike) -> dict:
    """The params tree written by `save_encoder_params` (float32 jax arrays)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        flat = load_file(str(path))
    except SafetensorError as e:
        raise DataError(unreadable_safetensors(path, e)) from None
    return jax.tree.map(jnp.asarray, flax.traverse_util.unflatten_dict(flat, sep="/"))


# --------------------------------------------------------------------------- features


class FeatureSplit(TokenizedSplit):
    """Encoder outputs of N examples, laid out as `TokenizedSplit`'s token ids: example i is
    features[starts[i] : starts[i] + lengths[i]] ([length_i, hidden]; [CLS] ... [SEP])."""

    @property
    def features(self) -> np.ndarray:
        """[total tokens, hidden] cache dtype (often a read-only memmap)."""
        return self.ids


def _features_of(split: TokenizedSplit, features: np.ndarray) -> FeatureSplit:
    """`features` [total tokens of `split`, hidden], stored back to back, as a FeatureSplit."""
    return FeatureSplit(features, starts_of(split.lengths), split.lengths, split.labels)


@functools.lru_cache(maxsize=4)
def _encoder_fn(config: BertConfig, use_mask: bool, dtype: str):
    """jit(params, ids [B, L], mask [B, L]) -> sequence output [B, L, hidden] in `dtype`,
    dropout off. Cached per (config, mask, dtype): each bucket length compiles once."""
    encoder = BertEncoder(config)

    def fn(params, ids, mask):
        x, _ = encoder.apply({"params": params}, ids, mask if use_mask else None,
                             deterministic=True)
        return x.astype(jnp.dtype(dtype))

    return jax.jit(fn)


def encode_split(config: BertConfig, params: Any, split: TokenizedSplit, *,
                 buckets: tuple[int, ...], batch_size: int, pad_id: int = 0,
                 dtype: str = "float16", attention_mask: bool = True,
                 out: np.ndarray | None = None, start: int = 0,
                 on_batch: Callable[[int, int], None] | None = None, progress: bool = False,
                 desc: str = "encoding") -> FeatureSplit:
    """One deterministic pass of the encoder over every example of `split`.

    Batches are bucketed by length (a few static shapes) and sharded over all local
    devices; only each example's real tokens are kept, written into `out` ([total tokens,
    hidden], e.g. a memmap) or a new array. `params` may be replicated already. `start`: the
    number of batches (in their fixed order) already in `out`, skipped; `on_batch(k, n)` is
    called once the first k batches (n examples) are in `out`."""
    np_dtype = _np_dtype(dtype)
    total = int(split.lengths.sum())
    if out is None:
        out = np.empty((total, config.hidden_size), np_dtype)
    fs = _features_of(split, out)
    dp = data_parallel()
    params = replicate(params, dp)
    fn = _encoder_fn(config, attention_mask, dtype)
    bb = BucketedBatches(split, batch_size=batch_size, buckets=buckets, pad_id=pad_id)
    plan = bb.plan(0)

    def host_batches() -> Iterator[tuple[np.ndarray, int, dict]]:
        for length, idx in plan[start:]:
            b = bb.batch(length, idx)
            yield idx, length, pad_batch({"input_ids": b["input_ids"],
                                          "attention_mask": b["attention_mask"]},
                                         dp.local_num_devices)

    reviews = sum(len(idx) for _, idx in plan[:start])
    with tqdm(total=len(split), initial=reviews, desc=desc, unit="review", leave=False,
              dynamic_ncols=True, disable=not progress) as bar:
        # The next batch builds meanwhile.
        for k, (idx, length, b) in enumerate(prefetch(host_batches()), start + 1):
            b = shard_batch(b, dp)
            x = np.asarray(fn(params, b["input_ids"], b["attention_mask"]))[:len(idx)]
            lens = fs.lengths[idx]
            real = np.arange(length)[None, :] < lens[:, None]  # row-major: example by example
            out[token_index(fs.starts[idx], lens)] = x[real]  # x: [n, L, hidden]
            reviews += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(k, reviews)
    return fs


def _tokens_digest(split: TokenizedSplit) -> str:
    """A hash of the split's token ids, example by example (not of the shared buffer)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(split.lengths.astype(np.int32).tobytes())
    h.update(split.ids[token_index(split.starts, split.lengths)].astype(np.int32).tobytes())
    h.update(split.labels.astype(np.int8).tobytes())
    return h.hexdigest()


def load_or_encode_features(config: BertConfig, params: Any, split: TokenizedSplit,
                            name: str, *, cache_dir: str | os.PathLike | None,
                            encoder_digest: str, buckets: tuple[int, ...], batch_size: int,
                            pad_id: int = 0, dtype: str = "float16",
                            attention_mask: bool = True,
                            progress: bool = False) -> tuple[FeatureSplit, dict]:
    """The encoder's outputs for `split` from `cache_dir`, else computed and stored there
    (memory-mapped; a stopped pass goes on where it stopped, `_Partial`). `cache_dir=None`:
    computed into memory. Returns (features, info)."""
    np_dtype = _np_dtype(dtype)
    shape = (int(split.lengths.sum()), config.hidden_size)
    nbytes = shape[0] * shape[1] * np_dtype.itemsize
    info: dict[str, Any] = {"examples": len(split), "tokens": shape[0], "bytes": nbytes,
                            "dtype": dtype, "cache_hit": False, "path": None}
    t0 = time.perf_counter()
    encode = functools.partial(encode_split, config, params, split, buckets=buckets,
                               batch_size=batch_size, pad_id=pad_id, dtype=dtype,
                               attention_mask=attention_mask, progress=progress,
                               desc=f"encoding {name}")
    if cache_dir is None:
        fs, reviews = encode(), 0
    else:
        key = {"v": FEATURE_FORMAT, "encoder": encoder_digest, "config": config.to_dict(),
               "mask": attention_mask, "dtype": dtype, "tokens": _tokens_digest(split)}
        path = keyed_path(cache_dir, f"features-{name}-{dtype}", key, "npy")
        info["path"] = str(path)
        hit = _open_features(path, shape, np_dtype)
        if hit is not None:
            info.update(cache_hit=True, seconds=time.perf_counter() - t0)
            return _features_of(split, hit), info
        # .npy has no bfloat16: bfloat16 is stored as its uint16 bit pattern.
        disk_dtype = np.uint16 if dtype == "bfloat16" else np_dtype
        partial = _Partial(path, shape, disk_dtype, {"batch_size": batch_size,
                                                     "buckets": list(buckets)})
        need = nbytes - partial.bytes_on_disk() + (256 << 20)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            check_free_space(path.parent, need, "the encoder outputs", "lower --max-length or "
                             "--limit, or set HW3_JAX_CACHE to a folder on a larger disk")
        except OSError as e:
            raise DataError(f"cannot use {path.parent} for the encoder outputs: {e}") from None
        reviews = partial.reviews
        with partial.writing(f"encoding {name}", len(split)) as out:
            encode(out=out.view(np_dtype), start=partial.batches, on_batch=partial.done)
        fs = _features_of(split, _open_features(path, shape, np_dtype))
    seconds = time.perf_counter() - t0
    info.update(seconds=seconds,
                reviews_per_s=(len(split) - reviews) / seconds if seconds > 0 else None)
    if reviews:
        info["resumed_after_reviews"] = reviews
    return fs, info


class _Partial:
    """The `.npy` of `path` while a pass writes it: a memmap at this process's `temp_path`,
    renamed onto `path` when the pass ends.

    A pass that stops (Ctrl-C, an error) keeps its file with a note of how many batches it
    holds, written every `SAVE_EVERY_S` as well. A new pass over `path` in the same `order`
    (the batch size and buckets, which fix the batches) takes over the furthest file that no
    pass is writing any more and starts after its batches; it deletes the other such files
    (they can be gigabytes) and leaves those of live processes alone."""

    def __init__(self, path: Path, shape: tuple[int, int], disk_dtype: np.dtype, order: dict):
        self.path, self.shape, self.disk_dtype, self.order = path, shape, disk_dtype, order
        self.tmp = temp_path(path, os.getpid())
        self.batches = self.reviews = 0
        self.kept_at = time.monotonic()
        # No pass writes these: their process is gone, or it is this one (a notebook's cell
        # stopped, then run again).
        gone = {tmp: self._note_of(tmp) for tmp, pid in temp_files(path)
                if pid == os.getpid() or process_gone(pid)}
        usable = [tmp for tmp, note in gone.items() if note]
        best = max(usable, key=lambda tmp: gone[tmp]["reviews"], default=None)
        for tmp in gone:
            if tmp != best:
                _drop(tmp)
        if best is not None:
            os.replace(best, self.tmp)
            os.replace(_note(best), _note(self.tmp))
            self.batches, self.reviews = gone[best]["batches"], gone[best]["reviews"]

    def _note_of(self, tmp: Path) -> dict | None:
        """`tmp`'s note if it is a usable partial pass in this order, else None."""
        try:
            note = json.loads(_note(tmp).read_text())
        except (OSError, ValueError):
            return None
        ok = (isinstance(note, dict) and note.get("order") == self.order
              and isinstance(note.get("batches"), int) and isinstance(note.get("reviews"), int)
              and _open_features(tmp, self.shape, self.disk_dtype) is not None)
        return note if ok else None

    def bytes_on_disk(self) -> int:
        """What the taken-over file already holds on disk (a new memmap is sparse)."""
        return self.tmp.stat().st_blocks * 512 if self.batches else 0

    def done(self, batches: int, reviews: int) -> None:
        """The first `batches` batches (`reviews` examples) are in the file."""
        self.batches, self.reviews = batches, reviews
        if time.monotonic() - self.kept_at >= SAVE_EVERY_S:
            self._keep()

    def _keep(self) -> None:
        self.out.flush()  # first: the note never claims a batch that the file lacks
        with atomic_path(_note(self.tmp)) as t:
            t.write_text(json.dumps({"order": self.order, "batches": self.batches,
                                     "reviews": self.reviews}))
        self.kept_at = time.monotonic()

    @contextlib.contextmanager
    def writing(self, what: str, total: int) -> Iterator[np.ndarray]:
        """The memmap to fill; on Ctrl-C a KeyboardInterrupt that says what was kept."""
        self.out = np.lib.format.open_memmap(self.tmp, mode="r+" if self.batches else "w+",
                                             dtype=self.disk_dtype, shape=self.shape)
        try:
            yield self.out
            self.out.flush()
        except BaseException as e:
            if not self.batches:  # nothing worth keeping
                _drop(self.tmp)
                raise
            self._keep()  # flushes
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(f"stopped {what} after {self.reviews:,} of {total:,} "
                                        f"reviews, kept in {self.tmp.parent}") from None
            raise
        finally:
            del self.out
        os.replace(self.tmp, self.path)
        _note(self.tmp).unlink(missing_ok=True)


def _drop(tmp: Path) -> None:
    tmp.unlink(missing_ok=True)
    _note(tmp).unlink(missing_ok=True)


def _note(tmp: Path) -> Path:
    """Where the partial pass written to `tmp` notes how far it got."""
    return tmp.with_name(tmp.name + ".json")


def _open_features(path: Path, shape: tuple[int, int], np_dtype: np.dtype) -> np.ndarray | None:
    """The stored array at `path` viewed as `np_dtype`; None when it is missing, damaged
    (recomputed, never fatal) or of another shape."""
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if mm.shape != shape or mm.dtype.itemsize != np_dtype.itemsize:
        return None
    return mm.view(np_dtype)


# --------------------------------------------------------------------------- batches


class CachedEncoderData:
    """`SentimentData`'s batches, with the frozen encoder's stored outputs in place of the
    token ids (see the module docstring). Same training-loop interface: `train_batches`,
    `eval_batches`, `steps_per_epoch`, `eval_steps`; single process only."""

    input_keys = INPUT_KEYS

    def __init__(self, data: SentimentData, features: Mapping[str, FeatureSplit], info: dict):
        self.data, self.features = data, dict(features)
        self.info = dict(data.info, encoder_cache=info)

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch

    def eval_steps(self, split: str) -> int:
        return self.data.eval_steps(split)

    def _batches(self, name: str,
                 plan: list[tuple[int, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        fs = self.features[name]
        for length, idx in plan:
            rows, weight = full_rows(idx, self.data.batch_size)
            features, mask = fs.padded(rows, length)
            yield {"features": features, "attention_mask": mask,
                   "label": fs.labels[rows].astype(np.float32), "weight": weight}

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled training batches of `epoch`, as `SentimentData.train_batches`."""
        plan = self.data.train_plan(epoch)[start_step:]
        return prefetch(self._batches("train", plan))

    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """Every example of `split` once, in fixed order (padding rows weight 0)."""
        name = split_name(split)
        return prefetch(self._batches(name, self.data.eval_plan(name)))


def build_cached_encoder_data(data: SentimentData, config: BertConfig, params: Any, *,
                              encoder_digest: str, dtype: str = "float16",
                              attention_mask: bool = True,
                              cache_dir: str | os.PathLike | None = None,
                              progress: bool = False,
                              log: Any = None) -> CachedEncoderData:
    """Encode every split of `data` once (or read the stored outputs) and wrap them.

    `encoder_digest`: `params_digest(params)`; `log`: a callable taking one line per split
    (e.g. `print`), or None."""
    if data.process_count != 1:
        raise DataError("cached encoder outputs work in a single process only; "
                        "run without --cache-encoder on several hosts")
    features, info = {}, {"dtype": dtype, "encoder_digest": encoder_digest, "splits": {}}
    t0 = time.perf_counter()
    for name in SPLITS:
        fs, got = load_or_encode_features(
            config, params, getattr(data, name), name, cache_dir=cache_dir,
            encoder_digest=encoder_digest, buckets=data.buckets,
            batch_size=data.batch_size, pad_id=data.pad_id, dtype=dtype,
            attention_mask=attention_mask, progress=progress)
        features[name] = fs
        info["splits"][name] = got
        if log is not None:
            how = ("read from cache" if got["cache_hit"] else
                   f"encoded in {got['seconds']:.1f} s ({got['reviews_per_s']:.1f} reviews/s)")
            if got.get("resumed_after_reviews"):
                how += f" after the {got['resumed_after_reviews']:,} of a stopped pass"
            where = f" at {got['path']}" if got["path"] else " in memory"
            log(f"encoder outputs, {name}: {got['examples']:,} reviews, {got['tokens']:,} "
                f"tokens, {got['bytes'] / 2**20:,.1f} MiB {dtype}, {how}{where}")
    info["seconds"] = time.perf_counter() - t0
    return CachedEncoderData(data, features, info)
