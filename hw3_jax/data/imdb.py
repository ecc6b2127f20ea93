"""IMDB reviews: the official archive, tensorflow-datasets, and the notebook's split.

Sources give `(text, label)` with label 1 = positive:
  * `read_imdb_archive(path)`: the official `aclImdb_v1.tar.gz` layout, read in one streaming
    pass with `tarfile` (no extraction, no TensorFlow); an extracted `aclImdb/` folder works too.
  * `load_imdb_tfds()`: tensorflow-datasets `imdb_reviews` (needs the `tf` extra).
HTML line breaks are removed (`clean_text`). `split_indices` splits the training part at random
by seed into 70% train and 30% validation (17,500 / 7,500 for IMDB), as the notebook does.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import logging
import lzma
import os
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np

from hw3_jax.data import net
from hw3_jax.data.errors import DataError

log = logging.getLogger(__name__)

TRAIN_FRACTION = 0.7  # the notebook: 17,500 train / 7,500 validation of IMDB's 25,000
IMDB_URL_HOST = ("ai.stanford.edu", 80)  # where tfds downloads aclImdb_v1.tar.gz from

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
    unsup: list[str] | None = None


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Remove the HTML line breaks (`<br />`) of IMDB reviews (a space in their place)."""
    return _BR.sub(" ", text)


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/([^/]+\.txt)$")
_FOLDER = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/?$")
_LAYOUT = "the official aclImdb_v1.tar.gz layout: aclImdb/{train,test}/{pos,neg}/*.txt"


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


def _iter_archive(path: Path, want: set[str]):
    """Yield (folder "train/pos", file name, bytes) for the wanted folders; also the folders
    seen as directory entries, as ("dir", folder, b"")."""
    if path.is_dir():
        root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
        for folder in sorted({"train/pos", "train/neg", "test/pos", "test/neg", "train/unsup"}):
            d = root / folder
            if d.is_dir():
                yield "dir", folder, b""
                if folder in want:
                    for f in os.scandir(d):
                        if f.is_file() and f.name.endswith(".txt"):
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
                        yield "dir", f"{mf[1]}/{mf[2]}", b""
                    continue
                if not m.isfile():
                    continue
                mm = _MEMBER.search(m.name)
                if not mm:
                    continue
                folder = f"{mm[1]}/{mm[2]}"
                if folder not in want:
                    if folder not in skipped:  # seen (for the layout check), not read
                        skipped.add(folder)
                        yield "dir", folder, b""
                    continue
                f = tar.extractfile(m)
                yield folder, mm[3], f.read() if f is not None else b""
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
        raise DataError(f"IMDB archive {p} does not exist; pass the path of aclImdb_v1.tar.gz")
    return p


def archive_identity(path: str | os.PathLike) -> str:
    """The token cache's name for an archive: its resolved path, size and mtime."""
    p = _check_path(path)
    st = p.stat()
    return f"imdb-archive:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def read_imdb_archive(path: str | os.PathLike, *, include_unsup: bool = False) -> RawDataset:
    """Read the labelled reviews of an archive in the official aclImdb_v1.tar.gz layout.

    One streaming pass over the compressed file (no extraction); `train/unsup` is skipped
    unless `include_unsup`. Files are sorted by name within each folder, so the result does
    not depend on the archive's member order. `<br />` line breaks are removed. Files that are
    not valid UTF-8 are decoded with U+FFFD replacement characters, counted in
    `invalid_utf8` and logged. Raises DataError for a missing, non-gzip, truncated or
    corrupt archive, a missing folder (e.g. test/neg) or an empty split.
    """
    p = _check_path(path)
    want = {"train/pos", "train/neg", "test/pos", "test/neg"}
    if include_unsup:
        want.add("train/unsup")
    files: dict[str, list[tuple[str, bytes]]] = {k: [] for k in want}
    seen: set[str] = set()
    for folder, name, raw in _iter_archive(p, want):
        if folder == "dir":
            seen.add(name)
        else:
            seen.add(folder)
            files[folder].append((name, raw))
    problems = []
    for folder in sorted(want):
        if not files[folder]:
            problems.append(f"{folder} {'is empty' if folder in seen else 'is missing'}")
    if problems:
        empty_splits = [s for s in ("train", "test")
                        if not files[f"{s}/pos"] and not files[f"{s}/neg"]]
        what = f"empty {' and '.join(empty_splits)} split: " if empty_splits else ""
        raise DataError(
            f"IMDB archive {p}: {what}{', '.join(problems)}; expected {_LAYOUT}"
        )
    bad: list[str] = []

    def texts_of(folder: str) -> list[str]:
        out = []
        for name, raw in sorted(files[folder], key=lambda t: _name_key(t[0])):
            text, ok = _decode(raw)
            if not ok:
                bad.append(f"{folder}/{name}")
            out.append(clean_text(text))
        return out

    splits = {}
    for split in ("train", "test"):
        neg, pos = texts_of(f"{split}/neg"), texts_of(f"{split}/pos")
        labels = np.concatenate([np.zeros(len(neg), np.int8), np.ones(len(pos), np.int8)])
        splits[split] = TextSplit(neg + pos, labels)
    unsup = texts_of("train/unsup") if include_unsup else None
    if bad:
        log.warning("%d review file(s) in %s are not valid UTF-8; decoded with replacement "
                    "characters (e.g. %s)", len(bad), p, ", ".join(bad[:3]))
    return RawDataset("imdb", archive_identity(p), splits["train"], splits["test"],
                      invalid_utf8=len(bad), invalid_utf8_files=bad, unsup=unsup)


def read_imdb_unsup(path: str | os.PathLike) -> list[str]:
    """The 50,000 unlabelled reviews of `train/unsup` (for optional pretraining), cleaned."""
    p = _check_path(path)
    found, out, n_bad = False, [], 0
    rows = []
    for folder, name, raw in _iter_archive(p, {"train/unsup"}):
        if folder == "dir":
            found = found or name == "train/unsup"
            continue
        rows.append((name, raw))
    for _, raw in sorted(rows, key=lambda t: _name_key(t[0])):
        text, ok = _decode(raw)
        n_bad += not ok
        out.append(clean_text(text))
    if not out:
        raise DataError(f"IMDB archive {p}: train/unsup is {'empty' if found else 'missing'}")
    if n_bad:
        log.warning("%d unlabelled review(s) in %s are not valid UTF-8; decoded with "
                    "replacement characters", n_bad, p)
    return out


def load_imdb_tfds(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                   check_network: bool = True) -> RawDataset:
    """IMDB through tensorflow-datasets `imdb_reviews` (label 1 = pos, as tfds's ClassLabel).

    Needs tensorflow (the `tf` extra). Any failure (no TensorFlow, no internet, a failed
    download) raises one DataError saying how to use the archive instead. When the dataset
    is not prepared yet, the download host is probed first (`check_network`), since tfds
    retries an unreachable host for minutes before it gives up.
    """
    hint = ("supply the official archive instead with --imdb-archive PATH (aclImdb_v1.tar.gz, "
            "from https://ai.stanford.edu/~amaas/data/sentiment/)")
    try:  # imported here: TensorFlow takes seconds to import and is optional
        import tensorflow  # noqa: F401
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"the tfds path needs TensorFlow and tensorflow-datasets ({e.name} is "
                        f"not installed): install the 'tf' extra (pip install 'hw3-jax[tf]'), "
                        f"or {hint}") from None
    if download and check_network:
        try:
            prepared = tfds.builder("imdb_reviews", data_dir=None if data_dir is None
                                    else str(data_dir)).is_prepared()
        except Exception:  # noqa: BLE001 - let tfds.load report it
            prepared = False
        if not prepared and not net.can_reach(IMDB_URL_HOST):
            raise DataError(f"imdb_reviews is not downloaded yet and {IMDB_URL_HOST[0]} "
                            f"cannot be reached (no internet?): {hint}")
    try:
        train, test = tfds.load("imdb_reviews", split=["train", "test"], as_supervised=True,
                                data_dir=None if data_dir is None else str(data_dir),
                                download=download, shuffle_files=False)
        splits, n_bad = [], 0
        for ds in (train, test):
            texts, labels = [], []
            for raw, label in tfds.as_numpy(ds):
                text, ok = _decode(raw)
                n_bad += not ok
                texts.append(clean_text(text))
                labels.append(int(label))
            splits.append(TextSplit(texts, np.asarray(labels, np.int8)))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - network, checksum, TF errors: all the same advice
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DataError(f"could not load imdb_reviews with tensorflow-datasets "
                        f"({type(e).__name__}: {first}): {hint}") from None
    for name, s in zip(("train", "test"), splits, strict=True):
        if len(s) == 0:
            raise DataError(f"tensorflow-datasets imdb_reviews gave an empty {name} split")
    where = "" if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return RawDataset("imdb", f"tfds:imdb_reviews:{where}:{len(splits[0])}:{len(splits[1])}",
                      splits[0], splits[1], invalid_utf8=n_bad)


def split_indices(n: int, fraction: float = TRAIN_FRACTION,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random split of range(n) by seed: (train indices, validation indices), each sorted.

    25,000 -> 17,500 / 7,500 with the notebook's 0.7."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"train fraction must be in (0, 1), got {fraction}")
    n_train = int(round(fraction * n))
    if n_train < 1 or n - n_train < 1:
        raise DataError(f"cannot split {n} examples into train and validation at {fraction}")
    perm = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
