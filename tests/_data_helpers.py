"""Shared helpers of the data room's tests: an IMDB-layout archive, a config, a fake split."""

from __future__ import annotations

import io
import tarfile

import ml_collections
import numpy as np

from hw3_jax.data.token_cache import TokenizedSplit

REVIEWS = {
    "train/pos": {"0_9.txt": "A great film.<br /><br />Loved it.",
                  "1_8.txt": "Café naïve — 😀 fine", "10_7.txt": "Good<br/>stuff"},
    "train/neg": {"0_2.txt": "Bad.<br />Really bad.", "1_1.txt": b"broken \xff\xfe bytes",
                  "2_3.txt": "Dull"},
    "test/pos": {"0_10.txt": "Wonderful", "1_7.txt": "Nice one"},
    "test/neg": {"0_1.txt": "Awful", "1_4.txt": "Weak <BR /> ending"},
    "train/unsup": {"0_0.txt": "No label here", "1_0.txt": "Another<br />one"},
}


def make_archive(path, reviews=REVIEWS, *, reverse=False, empty_dirs=(), compression="gz"):
    """A tar archive in the official aclImdb_v1.tar.gz layout."""
    entries = []
    for folder, files in reviews.items():
        entries.append((f"aclImdb/{folder}", None))
        for name, text in files.items():
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            entries.append((f"aclImdb/{folder}/{name}", data))
    for folder in empty_dirs:
        entries.append((f"aclImdb/{folder}", None))
    if reverse:
        entries = entries[::-1]
    with tarfile.open(path, f"w:{compression}") as tar:
        for name, data in [("aclImdb", None), ("aclImdb/README", b"readme")] + entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path



def data_config(encoder: str = "scratch", seed: int = 0, **data) -> ml_collections.ConfigDict:
    """The fields of the sentiment config that `get_datasets` reads, small by default."""
    fields = dict(source="synthetic", imdb_archive=None, imdb_url=None, imdb_sha256=None,
                  data_dir=None, synthetic_size=400, limit=None,
                  max_length=64, truncation="head", batch_size=16, buckets=None,
                  vocab_size=500, vocab=None)
    unknown = set(data) - set(fields)
    assert not unknown, unknown
    return ml_collections.ConfigDict({"seed": seed, "data": fields | data,
                                      "model": {"encoder": encoder}})


def fake_split(n=103, seed=0, max_len=100):
    """Example i's tokens are all 1000 + i, so a batch row tells which example it is."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, size=n).astype(np.int32)
    ids = np.concatenate([np.full(k, 1000 + i, np.int32) for i, k in enumerate(lengths)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return TokenizedSplit(ids, starts, lengths, (np.arange(n) % 2).astype(np.int8))
