"""What the benchmarks read: the shared IMDB archive and vocabulary (their command-line
options), a small archive of synthetic reviews for --quick, the first test reviews of an
archive, and random token batches."""

from __future__ import annotations

import argparse
import io
import re
import tarfile
from pathlib import Path

import numpy as np

from hw3_jax import timing
from hw3_jax.data.imdb import clean_text
from hw3_jax.data.synthetic import generate_reviews

_TEST_REVIEW = re.compile(r"(?:^|/)test/(pos|neg)/[^/]+\.txt$")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--archive (an aclImdb_v1.tar.gz) and --vocab (a WordPiece vocab.txt), both defaulting
    to the shared data folder."""
    p.add_argument("--archive", default=str(timing.SHARED_ARCHIVE))
    p.add_argument("--vocab", default=str(timing.SHARED_VOCAB))


def existing_file(path: str, what: str, option: str) -> Path:
    """`path` as a Path; a one-line error and exit status 2 when it is not a file."""
    p = Path(path)
    if not p.is_file():
        timing.fail(f"{what} {p} not found: pass {option}")
    return p


def make_batch(batch: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    """[batch, length] random token ids (all real), labels 0/1, weights 1."""
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1000 % vocab, vocab, (batch, length)).astype(np.int32),
        "attention_mask": np.ones((batch, length), np.int32),
        "label": rng.integers(0, 2, batch).astype(np.float32),
        "weight": np.ones(batch, np.float32),
    }


def write_small_archive(path: Path, per_folder: int = 100) -> Path:
    """A tar.gz in the official layout (aclImdb/{train,test}/{pos,neg}/ID_RATING.txt) of
    synthetic reviews, `per_folder` in each of the four folders."""
    texts, labels = generate_reviews(8 * per_folder, 0)
    by_label = {1: [t for t, y in zip(texts, labels, strict=True) if y == 1],
                0: [t for t, y in zip(texts, labels, strict=True) if y == 0]}
    with tarfile.open(path, "w:gz") as tar:
        for si, split in enumerate(("train", "test")):
            for label, folder in ((1, "pos"), (0, "neg")):
                pool = by_label[label][si * per_folder:(si + 1) * per_folder]
                for i, text in enumerate(pool):
                    data = text.encode()
                    info = tarfile.TarInfo(f"aclImdb/{split}/{folder}/{i}_{8 if label else 2}.txt")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def sample_reviews(archive: Path, n: int) -> list[str]:
    """The first `n` test reviews in archive order, cleaned (a streaming read that stops
    early)."""
    out = []
    with tarfile.open(archive, "r|gz") as tar:
        for m in tar:
            if m.isfile() and _TEST_REVIEW.search(m.name):
                f = tar.extractfile(m)
                out.append(clean_text(f.read().decode("utf-8", errors="replace")))
                if len(out) == n:
                    break
    return out
