"""Input pipeline of the sentiment experiment: sources, splits, tokens, token cache, batches.

Sources (all give `(text, label)` with label 1 = positive):
  * `read_imdb_archive(path)`: the official `aclImdb_v1.tar.gz` layout, read in one streaming
    pass with `tarfile` (no extraction, no TensorFlow); an extracted `aclImdb/` folder works too.
  * `load_imdb_tfds()`: tensorflow-datasets `imdb_reviews` (needs the `tf` extra).
  * `make_synthetic(seed)`: the embedded order-dependent review set (`synthetic_reviews`).
Splits as the notebook: the training part split at random by seed into 70% train and 30%
validation (17,500 / 7,500 for IMDB); the test part whole. HTML line breaks are removed.

Tokens: Hugging Face `tokenizers` WordPiece, lower-cased BERT normalizer and pre-tokenizer,
`[CLS] ... [SEP]`, cut to `max_length` (512 = 510 tokens + 2). Either a pretrained encoder's own
vocabulary (`load_pretrained_tokenizer`: a local encoder folder, a `tokenizer.json`, a
`vocab.txt` or a hub name) or one trained on the training split (`train_wordpiece_tokenizer`),
saved as `WORKDIR/tokenizer.json` and reloaded on the next run.

Token ids are cached on disk (`.npz`: a flat id array + offsets + labels), keyed by the
source's identity, the split, the tokenizer's fingerprint and `max_length`; a second run reads
neither the source nor the tokenizer's output again.

Batches (`SentimentData`): dicts of NumPy arrays
  {"input_ids": int32 [B, L], "attention_mask": int32 [B, L], "label": float32 [B],
   "weight": float32 [B]}
with L one of a few bucket lengths (static shapes for jit). Examples go to the smallest bucket
that holds them; a bucket's leftover (fewer than B) moves up into the next bucket, so an epoch
has exactly ceil(N / B) batches and only the very last one is partial: its missing rows repeat
real examples with weight 0, so every example counts exactly once. Training batches are
shuffled by (seed, epoch) only, so a resumed run that skips k batches sees the same batches.

Every problem with the user's data raises `DataError` (a `ValueError`) with one clear line.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import itertools
import json
import logging
import lzma
import math
import os
import queue
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from hw3_jax import synthetic_reviews

__all__ = [
    "DataError",
    "SPECIAL_TOKENS",
    "RawDataset",
    "SentimentData",
    "TextSplit",
    "TokenizedSplit",
    "BucketedBatches",
    "build_sentiment_data",
    "clean_text",
    "default_buckets",
    "encode_texts",
    "load_imdb_tfds",
    "load_or_encode",
    "load_pretrained_tokenizer",
    "load_source",
    "load_tokenizer_file",
    "make_synthetic",
    "predict_batches",
    "prefetch",
    "read_imdb_archive",
    "read_imdb_unsup",
    "split_indices",
    "tokenizer_fingerprint",
    "train_wordpiece_tokenizer",
]

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRAIN_FRACTION = 0.7  # the notebook: 17,500 train / 7,500 validation of IMDB's 25,000
CACHE_FORMAT = 1  # bump when the cached arrays change meaning


class DataError(ValueError):
    """A problem with the user's data or data options, in one line that names the fix."""


# --------------------------------------------------------------------------- text sources


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


def _archive_id(p: Path) -> str:
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
    return RawDataset("imdb", _archive_id(p), splits["train"], splits["test"],
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


IMDB_URL_HOST = ("ai.stanford.edu", 80)  # where tfds downloads aclImdb_v1.tar.gz from


def can_reach(host: tuple[str, int] = IMDB_URL_HOST, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `host` opens within `timeout` (True behind a proxy:
    then only the download itself can tell)."""
    import socket

    if any(os.environ.get(k) for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY",
                                       "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


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
        if not prepared and not can_reach():
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


def make_synthetic(seed: int = 0, num_train: int = 25_000, num_test: int = 5_000,
                   **generator_kwargs) -> RawDataset:
    """The embedded synthetic review set (see `hw3_jax.synthetic_reviews`): `num_train`
    reviews for the training part (split 70/30 into train/validation like IMDB) and
    `num_test` for the test part, deterministic in `seed`."""
    if num_train < 2 or num_test < 1:
        raise DataError(f"synthetic set too small: num_train={num_train}, num_test={num_test}")
    tr = synthetic_reviews.generate_reviews(num_train, [seed, 0], **generator_kwargs)
    te = synthetic_reviews.generate_reviews(num_test, [seed, 1], **generator_kwargs)
    return RawDataset("synthetic", synthetic_source_id(seed, num_train, num_test,
                                                       **generator_kwargs),
                      TextSplit(*tr), TextSplit(*te))


def synthetic_source_id(seed: int, num_train: int, num_test: int, **generator_kwargs) -> str:
    kw = json.dumps(generator_kwargs, sort_keys=True)
    return (f"synthetic:v{synthetic_reviews.VERSION}:seed={seed}:n={num_train},{num_test}:{kw}")


def source_identity(data: str, *, imdb_archive=None, seed: int = 0,
                    synthetic_train: int = 25_000, synthetic_test: int = 5_000,
                    tfds_data_dir=None) -> str | None:
    """The cache identity of a source, computed without reading it (None: unknown)."""
    if data == "synthetic":
        return synthetic_source_id(seed, synthetic_train, synthetic_test)
    if data == "imdb" and imdb_archive is not None:
        return _archive_id(_check_path(imdb_archive))
    return None  # tfds: known only after loading


def load_source(data: str = "synthetic", *, imdb_archive: str | os.PathLike | None = None,
                seed: int = 0, synthetic_train: int = 25_000, synthetic_test: int = 5_000,
                tfds_data_dir: str | os.PathLike | None = None) -> RawDataset:
    """`data` "synthetic" or "imdb" (the archive when `imdb_archive` is given, else tfds)."""
    if data == "synthetic":
        return make_synthetic(seed, synthetic_train, synthetic_test)
    if data == "imdb":
        if imdb_archive is not None:
            return read_imdb_archive(imdb_archive)
        return load_imdb_tfds(tfds_data_dir)
    raise DataError(f"unknown data source {data!r}: use 'imdb' or 'synthetic'")


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


# --------------------------------------------------------------------------- tokenizers


def _bert_pipeline(tok, cls_id: int, sep_id: int) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])


def _configure(tok, max_length: int):
    """No padding (batches pad to their bucket), truncation to `max_length` including the
    [CLS] and [SEP] that the template adds (512 -> 510 text tokens)."""
    if max_length < 3:
        raise DataError(f"max_length must be at least 3 ([CLS] token [SEP]), got {max_length}")
    for t in SPECIAL_TOKENS[:4]:
        if tok.token_to_id(t) is None:
            raise DataError(f"tokenizer has no {t} token: a BERT-style WordPiece vocabulary "
                            f"is needed")
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def _from_vocab(vocab_file: Path, max_length: int):
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    try:
        model = WordPiece.from_file(str(vocab_file), unk_token="[UNK]")
    except Exception as e:  # noqa: BLE001 - a bad file: one line
        raise DataError(f"cannot read WordPiece vocabulary {vocab_file}: {e}") from None
    tok = Tokenizer(model)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise DataError(f"{vocab_file} has no [CLS]/[SEP]: not a BERT WordPiece vocabulary")
    _bert_pipeline(tok, cls_id, sep_id)
    return _configure(tok, max_length)


def load_tokenizer_file(path: str | os.PathLike, max_length: int = 512):
    """A `tokenizer.json` (e.g. `WORKDIR/tokenizer.json`), set to truncate at max_length."""
    from tokenizers import Tokenizer

    p = Path(path).expanduser()
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read tokenizer {p}: {str(e).splitlines()[0][:200]}") from None
    if tok.post_processor is None:
        _bert_pipeline(tok, tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"))
    return _configure(tok, max_length)


def load_pretrained_tokenizer(name_or_path: str | os.PathLike, max_length: int = 512):
    """The WordPiece tokenizer of a pretrained BERT-style encoder.

    `name_or_path`: a local encoder folder (its `tokenizer.json`, else `vocab.txt`), a
    `tokenizer.json` file, a `vocab.txt` file, or a Hugging Face hub name such as
    "bert-base-uncased" (downloads `tokenizer.json`, else `vocab.txt`). Lower-cased BERT
    normalizer and pre-tokenizer, `[CLS] $A [SEP]`, truncation to `max_length`.
    """
    p = Path(str(name_or_path)).expanduser()
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return load_tokenizer_file(p / "tokenizer.json", max_length)
        if (p / "vocab.txt").is_file():
            return _from_vocab(p / "vocab.txt", max_length)
        raise DataError(f"encoder folder {p} has neither tokenizer.json nor vocab.txt")
    if p.is_file():
        if p.suffix == ".json":
            return load_tokenizer_file(p, max_length)
        return _from_vocab(p, max_length)
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DataError(f"tokenizer path {name} does not exist")
    return _hub_tokenizer(name, max_length)


def _hub_tokenizer(name: str, max_length: int):
    """tokenizer.json (else vocab.txt) of hub repo `name`: the local hub cache first, then
    the network after a quick reachability probe (the hub client retries for a minute)."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise DataError("huggingface_hub is not installed; pass a local encoder folder or "
                        "vocab.txt") from None
    advice = ("pass a local encoder folder, tokenizer.json or vocab.txt instead "
              "(e.g. ../shared/data/bert-base-uncased/vocab.txt)")

    def load(filename: str, local: Path):
        if filename == "tokenizer.json":
            return load_tokenizer_file(local, max_length)
        return _from_vocab(local, max_length)

    files = ("tokenizer.json", "vocab.txt")
    for filename in files:
        try:
            return load(filename, Path(hf_hub_download(name, filename, local_files_only=True)))
        except Exception:  # noqa: BLE001 - not cached: try the network below
            pass
    if constants.HF_HUB_OFFLINE:
        raise DataError(f"the tokenizer of {name!r} is not in the local hub cache and "
                        f"HF_HUB_OFFLINE is set: {advice}")
    from urllib.parse import urlparse

    url = urlparse(constants.ENDPOINT)
    host = (url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
    if not can_reach(host):
        raise DataError(f"cannot reach {host[0]} to download the tokenizer of {name!r} "
                        f"(no internet?): {advice}")
    for filename in files:
        try:
            local = Path(hf_hub_download(name, filename))
        except EntryNotFoundError:
            continue  # no tokenizer.json in this repo: try vocab.txt
        except Exception as e:  # noqa: BLE001 - missing repo, network: one line
            raise DataError(f"could not download the tokenizer of {name!r} from the Hugging "
                            f"Face hub ({type(e).__name__}): {advice}") from None
        return load(filename, local)
    raise DataError(f"hub repo {name!r} has neither tokenizer.json nor vocab.txt: {advice}")


def train_wordpiece_tokenizer(texts: Iterable[str], *, vocab_size: int = 8000,
                              max_length: int = 512, min_frequency: int = 2,
                              length: int | None = None):
    """A lower-cased BERT-style WordPiece tokenizer trained on `texts` (the training split
    only). Special tokens first: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    if vocab_size < len(SPECIAL_TOKENS) + 30:
        raise DataError(f"vocab_size {vocab_size} is too small")
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    _bert_pipeline(tok, 2, 3)
    tok.post_processor = None  # set once the ids exist
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                               special_tokens=list(SPECIAL_TOKENS), limit_alphabet=1000,
                               continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    _bert_pipeline(tok, tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"))
    return _configure(tok, max_length)


def tokenizer_fingerprint(tok) -> str:
    """A hash of the tokenizer's vocabulary and pipeline (not of its truncation/padding)."""
    d = json.loads(tok.to_str())
    d.pop("truncation", None)
    d.pop("padding", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def pad_id(tok) -> int:
    i = tok.token_to_id("[PAD]")
    return 0 if i is None else int(i)


# --------------------------------------------------------------------------- token ids


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
        return self.ids[self.starts[i]:self.starts[i] + self.lengths[i]]


def encode_texts(tok, texts: Sequence[str], labels=None, *, chunk: int = 8192,
                 progress: bool = False, desc: str = "tokenizing") -> TokenizedSplit:
    """Tokenize with `encode_batch` (multi-threaded in Rust), in chunks to bound memory."""
    n = len(texts)
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.int32
    lengths = np.zeros(n, np.int32)
    parts = []
    bar = None
    if progress and n > chunk:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="text", leave=False, dynamic_ncols=True)
    for lo in range(0, n, chunk):
        batch = list(texts[lo:lo + chunk])
        enc = tok.encode_batch_fast(batch) if hasattr(tok, "encode_batch_fast") \
            else tok.encode_batch(batch)
        ids = [e.ids for e in enc]
        lens = np.fromiter((len(x) for x in ids), np.int32, count=len(ids))
        lengths[lo:lo + len(ids)] = lens
        parts.append(np.fromiter(itertools.chain.from_iterable(ids), dtype,
                                 count=int(lens.sum())))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype)
    starts = np.zeros(n, np.int64)
    if n:
        starts[1:] = np.cumsum(lengths[:-1], dtype=np.int64)
    lab = np.zeros(n, np.int8) if labels is None else np.asarray(labels, np.int8)
    return TokenizedSplit(flat, starts, lengths, lab)


def default_cache_dir(workdir: str | os.PathLike | None = None) -> Path:
    """$HW3_JAX_CACHE, else WORKDIR/cache, else ~/.cache/hw3_jax."""
    env = os.environ.get("HW3_JAX_CACHE")
    if env:
        return Path(env).expanduser()
    if workdir is not None:
        return Path(workdir).expanduser() / "cache"
    return Path("~/.cache/hw3_jax").expanduser()


def cache_path(cache_dir: str | os.PathLike, source_id: str, split: str, tok_fp: str,
               max_length: int) -> Path:
    key = json.dumps({"v": CACHE_FORMAT, "source": source_id, "split": split, "tok": tok_fp,
                      "max_length": max_length}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    kind = re.sub(r"[^A-Za-z0-9]+", "-", source_id.split(":", 1)[0])
    return Path(cache_dir) / f"tokens-{kind}-{split}-{digest}.npz"


def _save_cache(path: Path, ts: TokenizedSplit, meta: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        offsets = np.zeros(len(ts) + 1, np.int64)
        offsets[1:] = np.cumsum(ts.lengths, dtype=np.int64)
        with open(tmp, "wb") as f:
            np.savez(f, ids=ts.ids, offsets=offsets, labels=ts.labels,
                     meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
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
    lengths = np.diff(offsets).astype(np.int32)
    return TokenizedSplit(ids, offsets[:-1].copy(), lengths, labels.astype(np.int8)), meta


def load_or_encode(tok, split: str, get_texts: Callable[[], TextSplit], *,
                   source_id: str | None, max_length: int,
                   cache_dir: str | os.PathLike | None, progress: bool = False,
                   extra_meta: Callable[[], dict] | None = None
                   ) -> tuple[TokenizedSplit, dict]:
    """Token ids of one split from the cache, else `get_texts()` tokenized and cached.

    Returns (ids, info) with info["cache_hit"] and info["meta"] (what was stored: the
    source id, the number of examples, invalid UTF-8 count...)."""
    fp = tokenizer_fingerprint(tok)
    path = None
    if cache_dir is not None and source_id is not None:
        path = cache_path(cache_dir, source_id, split, fp, max_length)
        t0 = time.perf_counter()
        hit = _load_cache(path)
        if hit is not None:
            ts, meta = hit
            return ts, {"cache_hit": True, "path": str(path), "meta": meta,
                        "seconds": time.perf_counter() - t0}
    text_split = get_texts()
    t0 = time.perf_counter()
    ts = encode_texts(tok, text_split.texts, text_split.labels, progress=progress,
                      desc=f"tokenizing {split}")
    seconds = time.perf_counter() - t0
    meta = {"source": source_id, "split": split, "tokenizer": fp, "max_length": max_length,
            "examples": len(ts), "tokens": int(ts.lengths.sum())}
    if extra_meta is not None:
        meta.update(extra_meta())
    if path is not None:
        _save_cache(path, ts, meta)
    return ts, {"cache_hit": False, "path": None if path is None else str(path), "meta": meta,
                "seconds": seconds}


# --------------------------------------------------------------------------- batches


def default_buckets(max_length: int, min_length: int = 32) -> tuple[int, ...]:
    """Powers of two from `min_length` up to `max_length` (always included): 512 ->
    (32, 64, 128, 256, 512); 200 -> (32, 64, 128, 200)."""
    if max_length < 1:
        raise DataError(f"max_length must be positive, got {max_length}")
    out, b = [], max(1, min_length)
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(out)


class BucketedBatches:
    """Fixed-size batches of one split, bucketed by length.

    Each example goes to the smallest bucket length >= its length. Batches are built
    bucket by bucket, shortest first; a bucket's leftover (< batch_size examples) joins the
    next bucket (padded to that longer length), so there are exactly ceil(N / batch_size)
    batches and only the last one can be partial. Its missing rows repeat real rows of
    that batch with weight 0 (never an all-padding row, which could give NaN attention).

    shuffle=True: the examples within each bucket and the order of the batches are permuted
    by a generator seeded with (seed, epoch) only. shuffle=False: input order within buckets.
    `process_count` > 1: each process gets rows [process_index::...] of every global batch
    (contiguous blocks of batch_size / process_count rows).
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
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        if int(split.lengths.max()) > self.buckets[-1]:
            raise DataError(f"an example of {int(split.lengths.max())} tokens exceeds the "
                            f"largest bucket {self.buckets[-1]}")
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.seed = seed
        self.process_index, self.process_count = process_index, process_count
        self._bucket_of = np.searchsorted(np.asarray(self.buckets), split.lengths)
        self._members = [np.flatnonzero(self._bucket_of == b) for b in range(len(self.buckets))]

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
        B = self.batch_size
        n = len(idx)
        weight = np.zeros(B, np.float32)
        weight[:n] = 1.0
        rows = idx if n == B else idx[np.arange(B) % n]  # repeat real rows, weight 0
        if self.process_count > 1:
            per = B // self.process_count
            sl = slice(self.process_index * per, (self.process_index + 1) * per)
            rows, weight = rows[sl], weight[sl]
        s = self.split
        lens = s.lengths[rows].astype(np.int64)
        pos = np.arange(length, dtype=np.int64)[None, :]
        mask = pos < lens[:, None]
        gather = np.minimum(s.starts[rows][:, None] + pos, max(len(s.ids) - 1, 0))
        ids = np.where(mask, s.ids[gather].astype(np.int32), np.int32(self.pad_id))
        return {"input_ids": ids.astype(np.int32, copy=False),
                "attention_mask": mask.astype(np.int32),
                "label": s.labels[rows].astype(np.float32),
                "weight": weight}

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of `epoch`, skipping the first `start` without building them."""
        for length, idx in self.plan(epoch)[start:]:
            yield self.batch(length, idx)


def prefetch(iterator: Iterable, size: int = 2) -> Iterator:
    """Run `iterator` in a background thread, `size` items ahead. Exceptions are re-raised
    in the consumer; closing the generator early stops the thread."""
    if size <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put((done, e))

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


@dataclasses.dataclass
class SentimentData:
    """Tokenized train/validation/test splits and their batches (see the module docstring).

    The training loop's interface: `train_batches(epoch)`, `steps_per_epoch`,
    `eval_batches(split)`, `eval_steps(split)`.
    """

    train: TokenizedSplit
    validation: TokenizedSplit
    test: TokenizedSplit
    tokenizer: object
    batch_size: int = 128
    eval_batch_size: int | None = None
    buckets: tuple[int, ...] | None = None
    max_length: int = 512
    seed: int = 0
    prefetch_batches: int = 2  # built ahead in a background thread (0: none)
    process_index: int = 0
    process_count: int = 1
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.buckets is None:
            self.buckets = default_buckets(self.max_length)
        # Nothing is longer than max_length, so larger buckets would never be used.
        self.buckets = tuple(sorted({int(b) for b in self.buckets if b < self.max_length}
                                    | {self.max_length}))
        if self.buckets[0] < 1:
            raise DataError(f"bucket lengths must be positive: {self.buckets}")
        if self.eval_batch_size is None:
            self.eval_batch_size = self.batch_size
        self.pad_id = pad_id(self.tokenizer)
        self.vocab_size = self.tokenizer.get_vocab_size()
        common = dict(buckets=self.buckets, pad_id=self.pad_id,
                      process_index=self.process_index, process_count=self.process_count)
        self._train = BucketedBatches(self.train, batch_size=self.batch_size, shuffle=True,
                                      seed=self.seed, **common)
        self._eval = {name: BucketedBatches(getattr(self, name),
                                            batch_size=self.eval_batch_size, **common)
                      for name in ("train", "validation", "test")}

    @property
    def prefetch(self) -> int:
        """Alias of `prefetch_batches`."""
        return self.prefetch_batches

    @property
    def steps_per_epoch(self) -> int:
        return len(self._train)

    def num_examples(self, split: str) -> int:
        return len(self._split(split))

    def num_batches(self, split: str = "train") -> int:
        """Batches in one pass over `split` (training batches for "train")."""
        return len(self._train) if split == "train" else len(self._eval[self._name(split)])

    def eval_steps(self, split: str) -> int:
        return len(self._eval[self._name(split)])

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled training batches of `epoch` (a function of (seed, epoch) only);
        `start_step` skips the first batches without building them (resume)."""
        return prefetch(self._train(epoch, start_step), self.prefetch_batches)

    def eval_batches(self, split: str = "validation") -> Iterator[dict[str, np.ndarray]]:
        """Every example of `split` exactly once (weight 1), in fixed order; the last batch's
        padding rows have weight 0. `split`: "train", "validation"/"val", "test"."""
        return prefetch(self._eval[self._name(split)](0), self.prefetch_batches)

    def encode(self, texts: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        """Batches for free texts (prediction), grouped by length; see `predict_batches`."""
        return predict_batches(self.tokenizer, texts, batch_size=self.eval_batch_size,
                               buckets=self.buckets)

    @staticmethod
    def _name(split: str) -> str:
        s = {"val": "validation", "valid": "validation"}.get(split, split)
        if s not in ("train", "validation", "test"):
            raise DataError(f"unknown split {split!r}: use train, validation or test")
        return s

    def _split(self, split: str) -> TokenizedSplit:
        return getattr(self, self._name(split))


def predict_batches(tok, texts: Sequence[str], *, batch_size: int = 32,
                    buckets: Sequence[int] | None = None,
                    sort_by_length: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Batches of free texts for prediction. Texts are cleaned and cut to the tokenizer's
    max length like the data.

    Each batch is padded to the smallest bucket that holds its longest text and to the
    smallest power of two rows (at most `batch_size`) that holds its texts, so one short
    text is not run as `batch_size` rows of the longest bucket, while the jitted model still
    sees only a handful of shapes. With `sort_by_length` texts are grouped by token count
    (fewer padded tokens per batch). Each batch's "index" [rows] gives the input position
    of every row (-1 for padding rows, which have weight 0)."""
    trunc = tok.truncation or {}
    max_length = int(trunc.get("max_length", 512))
    buckets = tuple(sorted(set(buckets or default_buckets(max_length)) | {max_length}))
    ts = encode_texts(tok, [clean_text(t) for t in texts])
    pid = pad_id(tok)
    order = (np.argsort(ts.lengths, kind="stable") if sort_by_length
             else np.arange(len(ts)))
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


# --------------------------------------------------------------------------- all together


def build_sentiment_data(
    data: str = "synthetic",
    *,
    imdb_archive: str | os.PathLike | None = None,
    encoder: str | os.PathLike = "scratch",
    workdir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_length: int = 512,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    pad_to_multiple: int = 1,
    seed: int = 0,
    train_fraction: float = TRAIN_FRACTION,
    vocab_size: int = 8000,
    buckets: Sequence[int] | None = None,
    synthetic_train: int = 25_000,
    synthetic_test: int = 5_000,
    tfds_data_dir: str | os.PathLike | None = None,
    prefetch_batches: int = 2,
    process_index: int = 0,
    process_count: int = 1,
    progress: bool = True,
) -> SentimentData:
    """Everything the training loop needs, from the source to batches.

    data: "synthetic" or "imdb" (the archive `imdb_archive` when given, else tfds).
    encoder: "scratch" (a WordPiece vocabulary of `vocab_size` trained on the train split,
      saved as WORKDIR/tokenizer.json and reused when it exists), or a pretrained encoder's
      tokenizer (hub name, local folder, tokenizer.json or vocab.txt).
    The tokenizer in use is saved as WORKDIR/tokenizer.json (for `predict`). Token ids are
    cached in `cache_dir` (default: $HW3_JAX_CACHE, WORKDIR/cache, ~/.cache/hw3_jax); when the
    cache holds both splits the source is not read at all. Batch sizes must be multiples of
    `pad_to_multiple` (e.g. the device count). `data.info` holds timings, cache hits, sizes
    and the count of reviews that were not valid UTF-8.
    """
    t_start = time.perf_counter()
    if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
        raise DataError("batch sizes must be positive")
    for b in (batch_size, eval_batch_size):
        if b is not None and b % pad_to_multiple:
            raise DataError(f"batch size {b} is not a multiple of {pad_to_multiple} (the "
                            f"number of devices); use {b + (-b) % pad_to_multiple}")
    if data not in ("synthetic", "imdb"):
        raise DataError(f"unknown data source {data!r}: use 'imdb' or 'synthetic'")
    info: dict = {"data": data, "encoder": str(encoder), "max_length": max_length}
    raw_box: list[RawDataset] = []

    def raw() -> RawDataset:
        if not raw_box:
            t0 = time.perf_counter()
            if data == "synthetic":
                r = make_synthetic(seed, synthetic_train, synthetic_test)
            else:
                r = load_source(data, imdb_archive=imdb_archive, tfds_data_dir=tfds_data_dir)
            info["read_s"] = time.perf_counter() - t0
            raw_box.append(r)
        return raw_box[0]

    source_id = source_identity(data, imdb_archive=imdb_archive, seed=seed,
                                synthetic_train=synthetic_train, synthetic_test=synthetic_test)
    if source_id is None:
        source_id = raw().source_id
    wd = Path(workdir).expanduser() if workdir is not None else None
    if cache_dir is None:
        cache_dir = default_cache_dir(wd)

    # The split is by indices over the training part, so it needs only its size.
    def split_of(n: int):
        return split_indices(n, train_fraction, seed)

    # What the scratch tokenizer was trained on, to warn when a workdir is reused otherwise.
    trained_on = {"source": source_id, "seed": seed, "train_fraction": train_fraction,
                  "vocab_size": vocab_size}
    scratch = str(encoder) == "scratch"
    saved = wd / "tokenizer.json" if wd is not None else None
    if scratch and saved is not None and saved.is_file():
        t0 = time.perf_counter()
        tok = load_tokenizer_file(saved, max_length)
        info["tokenizer"] = f"reused {saved}"
        try:
            before = json.loads((wd / "tokenizer_source.json").read_text())
        except (OSError, ValueError):
            before = None
        if before is not None and before != trained_on:
            log.warning("reusing %s, which was trained on other data or settings (%s); use "
                        "a new workdir to train a new vocabulary", saved, before)
    elif scratch:
        r = raw()
        t0 = time.perf_counter()
        tr_idx, _ = split_of(len(r.train))
        texts = [r.train.texts[i] for i in tr_idx]
        tok = train_wordpiece_tokenizer(texts, vocab_size=vocab_size,
                                        max_length=max_length, length=len(texts))
        info["tokenizer"] = f"trained on {len(texts)} training texts"
    else:
        t0 = time.perf_counter()
        tok = load_pretrained_tokenizer(encoder, max_length)
        info["tokenizer"] = f"pretrained {encoder}"
    info["tokenizer_s"] = time.perf_counter() - t0
    if saved is not None and not info["tokenizer"].startswith("reused"):
        try:
            wd.mkdir(parents=True, exist_ok=True)
            tok.save(str(saved))
            if scratch:
                (wd / "tokenizer_source.json").write_text(json.dumps(trained_on, indent=1))
        except OSError as e:
            raise DataError(f"cannot write the tokenizer into workdir {wd}: {e}") from None

    parts = {}
    for split in ("train", "test"):
        ts, got = load_or_encode(
            tok, split, lambda s=split: getattr(raw(), s), source_id=source_id,
            max_length=max_length, cache_dir=cache_dir, progress=progress,
            extra_meta=lambda: {"invalid_utf8": raw().invalid_utf8})
        parts[split] = ts
        info[f"{split}_cache_hit"] = got["cache_hit"]
        info[f"{split}_encode_s"] = got["seconds"]
        info.setdefault("invalid_utf8", got["meta"].get("invalid_utf8", 0))
    if raw_box:
        info["invalid_utf8"] = raw_box[0].invalid_utf8
    tr_idx, va_idx = split_of(len(parts["train"]))
    out = SentimentData(parts["train"].subset(tr_idx), parts["train"].subset(va_idx),
                        parts["test"], tok, batch_size=batch_size,
                        eval_batch_size=eval_batch_size, buckets=tuple(buckets) if buckets
                        else None, max_length=max_length, seed=seed,
                        prefetch_batches=prefetch_batches, process_index=process_index,
                        process_count=process_count, info=info)
    info.update(sizes={"train": len(out.train), "validation": len(out.validation),
                       "test": len(out.test)}, vocab_size=out.vocab_size,
                buckets=list(out.buckets), total_s=time.perf_counter() - t_start)
    return out
