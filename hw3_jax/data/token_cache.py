"""Token ids of a split, and their cache on disk.

A `TokenizedSplit` holds N examples back to back: one flat id array, per-example starts and
lengths, and labels. The cache (`.npz`: the flat ids, offsets [N + 1], labels, a JSON meta
string) is keyed by the source's identity, the split, the tokenizer's fingerprint,
`max_length` and the truncation; a second run with the same key reads neither the source nor
the tokenizer.

Truncation (a review longer than max_length, [CLS] and [SEP] included, loses tokens):
  * "head": its first max_length - 2 tokens (the tokenizer's own right truncation; the
    homework notebook's).
  * "tail": its last max_length - 2 tokens (a review's verdict is often at its end).
  * "head+tail": the first and the last tokens, in Sun et al.'s proportion (2019, "How to
    Fine-Tune BERT for Text Classification": 128 + 382 of 510 was best on IMDB), i.e. about
    a quarter from the head.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import TextSplit
from hw3_jax.data.tokenizer import tokenizer_fingerprint
from hw3_jax.train.workdir import atomic_path

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached arrays change meaning
TRUNCATIONS = ("head", "tail", "head+tail")
HEAD_SHARE = 128 / 510  # head+tail: Sun et al.'s head 128 of 510 text tokens


def head_tokens(max_length: int) -> int:
    """Text tokens that head+tail keeps from the head (128 of max_length 512)."""
    return round((max_length - 2) * HEAD_SHARE)


def _cut(ids: list[int], max_length: int, truncation: str) -> list[int]:
    """`ids` ([CLS] text [SEP], untruncated) cut to at most `max_length` by `truncation`."""
    if len(ids) <= max_length:
        return ids
    head = head_tokens(max_length) if truncation == "head+tail" else 0
    tail = max_length - 2 - head
    return ids[:1 + head] + ids[len(ids) - 1 - tail:]


def starts_of(lengths: np.ndarray) -> np.ndarray:
    """int64 [N]: where each of N examples of `lengths` starts when stored back to back."""
    starts = np.zeros(len(lengths), np.int64)
    starts[1:] = np.cumsum(lengths[:-1], dtype=np.int64)
    return starts


def token_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """int64 [sum(lengths)]: the position in a flat array of every token of the examples
    (`starts`, `lengths`), example by example."""
    lengths = np.asarray(lengths, np.int64)
    first = np.asarray(starts, np.int64) - starts_of(lengths)
    return np.repeat(first, lengths) + np.arange(int(lengths.sum()))


@dataclasses.dataclass
class TokenizedSplit:
    """Token ids of N examples: example i is ids[starts[i] : starts[i] + lengths[i]]
    (already with [CLS]/[SEP], at most max_length long). `subset` shares `ids`."""

    ids: np.ndarray  # [total] uint16 or int32
    starts: np.ndarray  # int64 [N]
    lengths: np.ndarray  # int32 [N]
    labels: np.ndarray  # int8 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> TokenizedSplit:
        return TokenizedSplit(self.ids, self.starts[idx], self.lengths[idx], self.labels[idx])

    def example(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.starts[i]:self.starts[i] + self.lengths[i]])

    def padded(self, rows: np.ndarray, length: int,
               fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(ids [len(rows), length, ...] in the stored dtype, a copy even of a memmap;
        attention_mask int32 [len(rows), length]) of examples `rows`, padded with `fill`."""
        pos = np.arange(length, dtype=np.int64)[None, :]
        mask = pos < self.lengths[rows].astype(np.int64)[:, None]
        gather = np.minimum(self.starts[rows][:, None] + pos, max(len(self.ids) - 1, 0))
        x = np.asarray(self.ids[gather])
        x[~mask] = fill
        return x, mask.astype(np.int32)


def encode_texts(tok, texts: Sequence[str], labels=None, *, truncation: str = "head",
                 chunk: int = 8192, progress: bool = False, desc: str = "tokenizing"
                 ) -> TokenizedSplit:
    """Tokenize with `encode_batch_fast` (multi-threaded in Rust), in chunks to bound memory,
    each text cut to the tokenizer's truncation length by `truncation` (module docstring)."""
    n = len(texts)
    if truncation not in TRUNCATIONS:
        raise DataError(f"unknown truncation {truncation!r}: use one of "
                        f"{', '.join(TRUNCATIONS)}")
    max_length = (tok.truncation or {}).get("max_length")
    cut = truncation != "head" and max_length is not None
    if cut:
        tok = type(tok).from_str(tok.to_str())  # a copy without truncation; cut below
        tok.no_truncation()
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.int32
    lengths = np.zeros(n, np.int32)
    parts = []
    with tqdm(total=n, desc=desc, unit="text", leave=False, dynamic_ncols=True,
              disable=not (progress and n > chunk)) as bar:
        for lo in range(0, n, chunk):
            ids = [e.ids for e in tok.encode_batch_fast(list(texts[lo:lo + chunk]))]
            if cut:
                ids = [_cut(x, max_length, truncation) for x in ids]
            lens = np.fromiter((len(x) for x in ids), np.int32, count=len(ids))
            lengths[lo:lo + len(ids)] = lens
            parts.append(np.fromiter(itertools.chain.from_iterable(ids), dtype,
                                     count=int(lens.sum())))
            bar.update(len(ids))
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype)
    lab = np.zeros(n, np.int8) if labels is None else np.asarray(labels, np.int8)
    return TokenizedSplit(flat, starts_of(lengths), lengths, lab)


def keyed_path(cache_dir: str | os.PathLike, stem: str, key: dict, ext: str) -> Path:
    """CACHE_DIR/STEM-DIGEST.EXT, DIGEST the first 20 hex digits of the sha256 of `key` as
    JSON with sorted keys: a cache file's name changes whenever its key does."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{stem}-{digest}.{ext}"


def cache_path(cache_dir: str | os.PathLike, source_id: str, split: str, tok_fp: str,
               max_length: int, truncation: str) -> Path:
    """Where the token ids of one split are cached: a digest of the source, split,
    tokenizer fingerprint, max_length and truncation (a "head" key has no truncation
    entry)."""
    key = {"v": CACHE_FORMAT, "source": source_id, "split": split, "tok": tok_fp,
           "max_length": max_length}
    if truncation != "head":
        key["truncation"] = truncation
    kind = re.sub(r"[^A-Za-z0-9]+", "-", source_id.split(":", 1)[0])
    return keyed_path(cache_dir, f"tokens-{kind}-{split}", key, "npz")


def _save_cache(path: Path, ts: TokenizedSplit, meta: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.append(starts_of(ts.lengths), np.int64(ts.lengths.sum(dtype=np.int64)))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # never a half-written cache
            np.savez(f, ids=ts.ids, offsets=offsets, labels=ts.labels,
                     meta=np.array(json.dumps(meta)))
    except OSError as e:
        log.warning("could not write the token cache %s (%s); continuing without it", path, e)


def _load_cache(path: Path) -> tuple[TokenizedSplit, dict] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, offsets, labels = z["ids"], z["offsets"], z["labels"]
            meta = json.loads(str(z["meta"]))
        if len(offsets) != len(labels) + 1 or offsets[-1] != len(ids):
            raise ValueError("inconsistent arrays")
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - a corrupt cache is rebuilt, never fatal
        log.warning("ignoring unreadable token cache %s (%s)", path, e)
        return None
    return TokenizedSplit(ids, offsets[:-1].copy(), np.diff(offsets).astype(np.int32),
                          labels.astype(np.int8)), meta


def load_or_encode(tok, split: str, get_texts: Callable[[], TextSplit], *,
                   source_id: str | None, max_length: int, cache_dir: str | os.PathLike,
                   truncation: str, progress: bool = False,
                   extra_meta: Callable[[], dict] | None = None) -> tuple[TokenizedSplit, dict]:
    """Token ids of one split from the cache, else `get_texts()` tokenized and cached
    (`get_texts` and `extra_meta`, what else to store, are called only on a miss).

    Returns (ids, info {"cache_hit", "path" (None without a `source_id`: no key), "meta"
    (what was stored: source id, examples, invalid UTF-8 count...), "seconds" (reading the
    cache, or tokenizing)})."""
    fingerprint = tokenizer_fingerprint(tok)
    path = None
    if source_id is not None:
        path = cache_path(cache_dir, source_id, split, fingerprint, max_length, truncation)
        t0 = time.perf_counter()
        hit = _load_cache(path)
        if hit is not None:
            return hit[0], {"cache_hit": True, "path": str(path), "meta": hit[1],
                            "seconds": time.perf_counter() - t0}
    texts = get_texts()
    t0 = time.perf_counter()
    ts = encode_texts(tok, texts.texts, texts.labels, truncation=truncation,
                      progress=progress, desc=f"tokenizing {split}")
    seconds = time.perf_counter() - t0
    meta = {"source": source_id, "split": split, "tokenizer": fingerprint,
            "max_length": max_length, "truncation": truncation, "examples": len(ts),
            "tokens": int(ts.lengths.sum()), **(extra_meta() if extra_meta else {})}
    if path is not None:
        _save_cache(path, ts, meta)
    return ts, {"cache_hit": False, "path": None if path is None else str(path), "meta": meta,
                "seconds": seconds}
