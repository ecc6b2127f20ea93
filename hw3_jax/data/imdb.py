"""IMDB reviews: the official archive, its download, and the notebook's split.

Sources give `(text, label)` with label 1 = positive:
  * `read_imdb_archive(path)`: the official `aclImdb_v1.tar.gz` layout, read in one streaming
    pass with `tarfile` (no extraction, no TensorFlow); an extracted `aclImdb/` folder works too.
  * `download_imdb_archive()`: that archive fetched once, with tensorflow-datasets'
    `DownloadManager` (which needs no TensorFlow), from the URL and checked against the size
    and sha256 that tfds records for `imdb_reviews`, or from a mirror with its sha256.
HTML line breaks are removed (`clean_text`). `split_indices` splits the training part at random
by seed into 70% train and 30% validation (17,500 / 7,500 for IMDB), as the notebook does.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import glob
import gzip
import hashlib
import logging
import lzma
import os
import re
import shutil
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hw3_jax.data import net
from hw3_jax.data.errors import DataError, first_line

log = logging.getLogger(__name__)

TRAIN_FRACTION = 0.7  # the notebook: 17,500 train / 7,500 validation of IMDB's 25,000
# The official archive as tensorflow-datasets records it for `imdb_reviews`
# (tensorflow_datasets/datasets/imdb_reviews/checksums.tsv): URL, bytes, sha256, file name.
IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SIZE = 84_125_825
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_FILENAME = "aclImdb_v1.tar.gz"
# Downloads go to DATA_DIR/downloads/imdb_reviews/, where tfds.load("imdb_reviews") puts
# them, so either finds the other's.
TFDS_NAME = "imdb_reviews"
_SUPPLY = ("supply the archive with --imdb-archive PATH (aclImdb_v1.tar.gz, from "
           "https://ai.stanford.edu/~amaas/data/sentiment/) or a mirror with --imdb-url URL")

@dataclasses.dataclass
class TextSplit:
    """Texts and labels (int8 [N], 1 = positive) of one split."""

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int8)
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray) -> TextSplit:
        return TextSplit([self.texts[i] for i in idx], self.labels[idx])


@dataclasses.dataclass
class RawDataset:
    """A source's labelled text: the whole training part (before the validation split)
    and the test part. `source_id` identifies the source for the token cache."""

    name: str
    source_id: str
    train: TextSplit
    test: TextSplit
    invalid_utf8: int = 0  # review files decoded with replacement characters
    invalid_utf8_files: list[str] = dataclasses.field(default_factory=list)


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Remove the HTML line breaks (`<br />`) of IMDB reviews (a space in their place)."""
    return _BR.sub(" ", text)


# Hidden files are skipped: macOS's tar adds `._NAME` metadata files beside the reviews.
_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/([^/.][^/]*\.txt)$")
_FOLDER = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/?$")
_LAYOUT = "the official aclImdb_v1.tar.gz layout: aclImdb/{train,test}/{pos,neg}/*.txt"
_LABELLED = ("train/neg", "train/pos", "test/neg", "test/pos")


def _name_key(name: str):
    """Sort review files by their numeric id ("123_9.txt"), whatever the archive order."""
    stem = name.rsplit("/", 1)[-1].split("_", 1)[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def _open_stream(path: Path):
    """The archive's bytes, decompressed (gzip, bzip2, xz) or as they are (plain tar)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _folder_root(path: Path) -> Path:
    """The folder holding train/ and test/ of an extracted archive: `path` or its aclImdb/."""
    return path / "aclImdb" if (path / "aclImdb").is_dir() else path


def iter_archive(path: Path, want: set[str]) -> Iterator[tuple[str, str, bytes | None]]:
    """Yield (folder "train/pos", file name, bytes) for the files of the wanted folders,
    and (folder, "", None) for every folder seen, wanted or not (for the layout check; a
    folder may be reported more than once)."""
    if path.is_dir():
        root = _folder_root(path)
        for folder in sorted((*_LABELLED, "train/unsup")):
            d = root / folder
            if d.is_dir():
                yield folder, "", None
                if folder in want:
                    for f in os.scandir(d):
                        if f.is_file() and _MEMBER.search(f"{folder}/{f.name}"):
                            yield folder, f.name, Path(f.path).read_bytes()
        return
    try:
        # "r|": one forward pass over the decompressed stream, nothing extracted to disk; the
        # 100,000 members need no seeking. The decompression is ours, not tarfile's: gzip,
        # bz2 and lzma raise EOFError on a truncated file, where tarfile's own stream reader
        # would end quietly, as if the archive were complete.
        skipped: set[str] = set()
        with _open_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                if m.isdir():
                    mf = _FOLDER.search(m.name)
                    if mf:
                        yield f"{mf[1]}/{mf[2]}", "", None
                    continue
                if not m.isfile():
                    continue
                mm = _MEMBER.search(m.name)
                if not mm:
                    continue
                folder = f"{mm[1]}/{mm[2]}"
                if folder not in want:
                    if folder not in skipped:  # seen, not read
                        skipped.add(folder)
                        yield folder, "", None
                    continue
                yield folder, mm[3], tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise DataError(f"IMDB archive {path} does not exist") from None
        if isinstance(e, IsADirectoryError | PermissionError):
            raise DataError(f"cannot read IMDB archive {path}: {e.strerror}") from None
        raise DataError(
            f"{path} is not a readable .tar.gz archive ({type(e).__name__}: {e}); "
            f"expected {_LAYOUT}"
        ) from None


def _check_path(path) -> Path:
    if path is None or str(path) == "":
        raise DataError("no IMDB archive given: pass --imdb-archive PATH (aclImdb_v1.tar.gz)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"IMDB archive {p} does not exist: pass --imdb-archive PATH "
                        "(aclImdb_v1.tar.gz)")
    return p


def archive_identity(path: str | os.PathLike) -> str:
    """The token cache's name for an archive: its resolved path, size and mtime; for an
    extracted folder, a hash of every review file's name, size and mtime, the unlabelled
    ones too (a folder's own mtime stays when a file in a subfolder changes)."""
    p = _check_path(path)
    if p.is_dir():
        files = hashlib.sha256()
        root = _folder_root(p)
        for folder in (*_LABELLED, "train/unsup"):
            with contextlib.suppress(FileNotFoundError):  # the reader reports a missing one
                for f in sorted(filter(os.DirEntry.is_file, os.scandir(root / folder)),
                                key=lambda f: f.name):  # the files the reader reads
                    fst = f.stat()
                    files.update(f"{folder}/{f.name}:{fst.st_size}:{fst.st_mtime_ns}\n".encode())
        return f"imdb-folder:{p.resolve()}:{files.hexdigest()[:16]}"
    st = p.stat()
    return f"imdb-archive:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _read_folders(p: Path, want: tuple[str, ...]
                  ) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """(the cleaned texts of each folder of `want`, e.g. "train/pos", sorted by file id; the
    folders the archive has; the files that are not valid UTF-8, decoded with U+FFFD
    replacement characters and logged)."""
    files: dict[str, list[tuple[str, bytes]]] = {k: [] for k in want}
    seen: set[str] = set()
    for folder, name, raw in iter_archive(p, set(want)):
        seen.add(folder)
        if raw is not None:
            files[folder].append((name, raw))
    texts: dict[str, list[str]] = {}
    bad: list[str] = []
    for folder in want:
        texts[folder] = []
        for name, raw in sorted(files[folder], key=lambda t: _name_key(t[0])):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                bad.append(f"{folder}/{name}")
            texts[folder].append(clean_text(text))
    if bad:
        log.warning("%d review file(s) in %s are not valid UTF-8; decoded with replacement "
                    "characters (e.g. %s)", len(bad), p, ", ".join(bad[:3]))
    return texts, seen, bad


def read_imdb_archive(path: str | os.PathLike) -> RawDataset:
    """The labelled reviews of an archive in the official aclImdb_v1.tar.gz layout.

    `train/unsup` is skipped (`read_imdb_unsup` reads it). Files are sorted by id within each
    folder, so the result does not depend on the archive's member order. Raises DataError for
    a missing, non-gzip, truncated or corrupt archive, a missing folder (e.g. test/neg) or an
    empty split.
    """
    p = _check_path(path)
    texts, seen, bad = _read_folders(p, _LABELLED)
    problems = [f"{folder} {'is empty' if folder in seen else 'is missing'}"
                for folder in sorted(_LABELLED)
                if not texts[folder]]
    if problems:
        empty_splits = [s for s in ("train", "test")
                        if not texts[f"{s}/pos"] and not texts[f"{s}/neg"]]
        what = f"empty {' and '.join(empty_splits)} split: " if empty_splits else ""
        raise DataError(
            f"IMDB archive {p}: {what}{', '.join(problems)}; expected {_LAYOUT}"
        )
    splits = {}
    for split in ("train", "test"):
        neg, pos = texts[f"{split}/neg"], texts[f"{split}/pos"]
        labels = np.concatenate([np.zeros(len(neg), np.int8), np.ones(len(pos), np.int8)])
        splits[split] = TextSplit(neg + pos, labels)
    return RawDataset("imdb", archive_identity(p), splits["train"], splits["test"],
                      invalid_utf8=len(bad), invalid_utf8_files=bad)


def read_imdb_unsup(path: str | os.PathLike) -> list[str]:
    """The 50,000 unlabelled reviews of `train/unsup` (for optional pretraining), cleaned."""
    p = _check_path(path)
    texts, seen, _ = _read_folders(p, ("train/unsup",))
    if not texts["train/unsup"]:
        raise DataError(f"IMDB archive {p}: train/unsup is "
                        f"{'empty' if 'train/unsup' in seen else 'missing'}")
    return texts["train/unsup"]


def download_target(url: str | None = None, sha256: str | None = None) -> tuple[str, str]:
    """(URL, sha256) of the archive to download: the official one (`IMDB_URL`, `IMDB_SHA256`),
    or the mirror `url` with its `sha256` (None: the official archive's, for a mirror of the
    same file). Raises DataError for a sha256 without a URL, a malformed sha256 or a URL that
    is not http(s)."""
    if sha256 is not None and url is None:
        raise DataError("--imdb-sha256 is the checksum of a mirror's archive: give the mirror "
                        "with --imdb-url URL too")
    want = IMDB_SHA256 if sha256 is None else sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise DataError(f"--imdb-sha256 must be a sha256 (64 hexadecimal digits), got "
                        f"{sha256!r}")
    url = IMDB_URL if url is None else url.strip()
    # tfds copies other schemes with tf.io.gfile, which needs TensorFlow.
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"--imdb-url must be an http:// or https:// URL, got {url!r}")
    return url, want


def download_identity(url: str | None = None, sha256: str | None = None) -> str:
    """The token cache's name for a downloaded archive: its sha256, which the download is
    checked against, so it is known before (and without) downloading."""
    return f"imdb-sha256:{download_target(url, sha256)[1]}"


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_imdb_archive(url: str | None = None, sha256: str | None = None,
                          data_dir: str | os.PathLike | None = None) -> Path:
    """The local path of the IMDB archive, downloaded once (module docstring).

    `url`, `sha256`: see `download_target`. `data_dir`: tensorflow-datasets' data folder
    (None: its default, $TFDS_DATA_DIR or ~/tensorflow_datasets). A downloaded archive is
    reused without any network request. Raises DataError, with nothing left behind that a
    later call would trust, when the host cannot be reached, the download fails or is cut
    off, or the file has another sha256.
    """
    url, want = download_target(url, sha256)
    try:  # here, not at the top: only this path needs tensorflow-datasets
        import requests
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core import constants
        from tensorflow_datasets.core.download import checksums, resource
        from tensorflow_datasets.core.download.download_manager import (
            NonMatchingChecksumError,
        )
    except ImportError as e:
        raise DataError(f"downloading IMDB needs tensorflow-datasets ({e.name} is not "
                        f"installed): pip install tensorflow-datasets, or {_SUPPLY}") from None
    root = Path(data_dir if data_dir is not None else constants.get_default_data_dir())
    download_dir = root.expanduser() / "downloads"
    # The official sha256 fixes the size too; a mirror's own sha256 does not, and tfds
    # compares (size, sha256) together, so that file is hashed here instead, on every call.
    url_infos = ({url: checksums.UrlInfo(size=IMDB_SIZE, checksum=want, filename=IMDB_FILENAME)}
                 if want == IMDB_SHA256 else None)
    # Where DownloadManager keeps a finished download (by dataset, or directly in downloads/).
    fname = resource.get_dl_fname(url, want if url_infos else None)
    cached = any(resource.is_locally_cached(d / fname)
                 for d in (download_dir / TFDS_NAME, download_dir))
    if not cached:
        host = net.url_host(url)
        if not net.can_reach(host):
            raise DataError(f"IMDB is not downloaded yet (into {download_dir}) and {host[0]} "
                            f"cannot be reached (no internet?): {_SUPPLY}")
    # DownloadManager leaves a failed or rejected download in downloads/imdb_reviews/
    # <url name>.tmp.<uuid>/ (a name no later call trusts); removed below all the same.
    partial = glob.escape(str(download_dir / TFDS_NAME / resource.get_dl_fname(url))) + ".tmp.*"

    def discard_partial() -> str | None:
        """Remove the unfinished downloads; the sha256 and size of the file one held."""
        got = None
        for d in glob.glob(partial):
            files = [f for f in Path(d).iterdir() if f.is_file()]
            if got is None and len(files) == 1:
                got = f"{_sha256_of(files[0])} ({files[0].stat().st_size:,} bytes)"
            shutil.rmtree(d, ignore_errors=True)
        return got

    def mismatch(got: str | None) -> DataError:
        return DataError(f"the archive downloaded from {url} has sha256 {got or 'unknown'}, "
                         f"expected {want}; it was deleted: check the URL and --imdb-sha256, "
                         f"or supply the archive with --imdb-archive PATH")

    try:
        dm = tfds.download.DownloadManager(download_dir=download_dir, dataset_name=TFDS_NAME,
                                           url_infos=url_infos)
        path = Path(dm.download(url))
    except NonMatchingChecksumError:
        raise mismatch(discard_partial()) from None
    except (tfds.download.DownloadError, requests.RequestException, OSError) as e:
        # requests raises ChunkedEncodingError for a body shorter than its Content-Length.
        discard_partial()
        raise DataError(f"could not download IMDB from {url} ({first_line(e)}): "
                        f"{_SUPPLY}") from None
    if url_infos is None:
        got = _sha256_of(path)
        if got != want:
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            resource.get_info_path(path).unlink(missing_ok=True)
            raise mismatch(f"{got} ({size:,} bytes)")
    return path


def split_indices(n: int, fraction: float = TRAIN_FRACTION, *,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of range(n) by seed: (train indices, validation indices), each sorted.

    25,000 -> 17,500 / 7,500 with the notebook's 0.7."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"train fraction must be in (0, 1), got {fraction}")
    n_train = int(round(fraction * n))
    if n_train < 1 or n - n_train < 1:
        raise DataError(f"cannot split {n} examples into train and validation at {fraction}")
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
