"""Which labelled text a run reads: `config.data.source` -> `RawDataset`.

  "synthetic": the embedded order-dependent review set (`hw3_jax.data.synthetic`),
    `config.data.synthetic_size` reviews for the training part and a fifth of that for test.
  "imdb": the official archive at `config.data.imdb_archive`, else its download
    (`imdb.download_imdb_archive`) from the official URL or the mirror `config.data.imdb_url`
    checked against `config.data.imdb_sha256`, into `config.data.data_dir`/downloads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hw3_jax.data import imdb, synthetic
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import RawDataset

SOURCES = ("synthetic", "imdb")


def synthetic_sizes(data: Any) -> tuple[int, int]:
    """(training part, test part) of the generated set: `data.synthetic_size` and a fifth."""
    return data.synthetic_size, max(data.synthetic_size // 5, 1)


def _archive(data: Any) -> str | None:
    """`data.imdb_archive`, after checking that no mirror is named besides it."""
    if data.imdb_archive is not None and (data.imdb_url is not None
                                          or data.imdb_sha256 is not None):
        raise DataError(f"both an IMDB archive ({data.imdb_archive}) and --imdb-url/"
                        f"--imdb-sha256 are given: keep one (--config.data.imdb_archive=None "
                        f"drops a variant's archive)")
    return data.imdb_archive


def source_identity(data: Any, seed: int) -> str:
    """The token cache's name for the source of `data` (config.data), computed without
    reading it: the archive's path, size and mtime, or the sha256 a download is checked
    against. Raises DataError for an unknown source."""
    if data.source not in SOURCES:
        raise DataError(f"unknown data source {data.source!r}: use 'imdb' or 'synthetic'")
    if data.source == "synthetic":
        return synthetic.synthetic_source_id(seed, *synthetic_sizes(data))
    if _archive(data) is not None:
        return imdb.archive_identity(data.imdb_archive)
    return imdb.download_identity(data.imdb_url, data.imdb_sha256)


def imdb_archive_path(data: Any) -> Path:
    """The local IMDB archive `data` names: `data.imdb_archive`, else the download (made
    once; later calls need no network)."""
    if _archive(data) is not None:
        return Path(data.imdb_archive).expanduser()
    return imdb.download_imdb_archive(data.imdb_url, data.imdb_sha256, data.data_dir)


def load_source(data: Any, seed: int) -> RawDataset:
    """The labelled text that `data` (config.data: source, imdb_archive, imdb_url,
    imdb_sha256, data_dir, synthetic_size) names; `seed` draws the synthetic set."""
    source_id = source_identity(data, seed)  # checks the source too
    if data.source == "synthetic":
        raw = synthetic.make_synthetic(seed, *synthetic_sizes(data))
    else:
        raw = imdb.read_imdb_archive(imdb_archive_path(data))
    return dataclasses.replace(raw, source_id=source_id)
