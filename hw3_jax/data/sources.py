"""Which labelled text a run reads: `config.data.source` -> `RawDataset`.

  "synthetic": the embedded order-dependent review set (`hw3_jax.data.synthetic`),
    `config.data.synthetic_size` reviews for the training part and a fifth of that for test.
  "imdb": the official archive at `config.data.imdb_archive`, else tensorflow-datasets.
"""

from __future__ import annotations

from typing import Any

from hw3_jax.data import imdb, synthetic
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import RawDataset

SOURCES = ("synthetic", "imdb")


def _check_source(data: Any) -> str:
    if data.source not in SOURCES:
        raise DataError(f"unknown data source {data.source!r}: use 'imdb' or 'synthetic'")
    return data.source


def synthetic_sizes(data: Any) -> tuple[int, int]:
    """(training part, test part) of the generated set: `data.synthetic_size` and a fifth."""
    return data.synthetic_size, max(data.synthetic_size // 5, 1)


def source_identity(data: Any, seed: int) -> str | None:
    """The token cache's name for the source of `data` (config.data), computed without
    reading it; None for tfds, whose identity is known only once loaded."""
    if _check_source(data) == "synthetic":
        return synthetic.synthetic_source_id(seed, *synthetic_sizes(data))
    if data.imdb_archive is not None:
        return imdb.archive_identity(data.imdb_archive)
    return None


def load_source(data: Any, seed: int) -> RawDataset:
    """The labelled text that `data` (config.data: source, imdb_archive, synthetic_size)
    names; `seed` draws the synthetic set."""
    if _check_source(data) == "synthetic":
        return synthetic.make_synthetic(seed, *synthetic_sizes(data))
    if data.imdb_archive is not None:
        return imdb.read_imdb_archive(data.imdb_archive)
    return imdb.load_imdb_tfds()
