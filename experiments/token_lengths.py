"""How long IMDB reviews are in WordPiece tokens: the numbers behind a config's max_length.

    python -m experiments.token_lengths [--imdb-archive ../shared/data/aclImdb_v1.tar.gz]
        [--vocab ../shared/data/bert-base-uncased/vocab.txt] [--out results/token_lengths.json]

Counts the tokens of every labelled review (train and test, 50,000) without truncation,
[CLS] and [SEP] included, and prints percentiles and the share of reviews longer than
128, 256 and 512 tokens (a review over max_length loses its middle or end to truncation).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from experiments import cli
from hw3_jax.data.imdb import read_imdb_archive
from hw3_jax.data.token_cache import encode_texts
from hw3_jax.data.tokenizer import load_pretrained_tokenizer
from hw3_jax.train.workdir import Workdir

LIMITS = (128, 256, 384, 512)
PERCENTILES = (10, 25, 50, 75, 90, 95, 99)


def length_stats(lengths: np.ndarray) -> dict:
    """Percentiles, mean and the share over each of LIMITS of token counts `lengths` [N]."""
    return {
        "reviews": int(lengths.size),
        "mean": round(float(lengths.mean()), 1),
        "percentiles": {str(p): int(np.percentile(lengths, p)) for p in PERCENTILES},
        "share_over": {str(n): round(float((lengths > n).mean()), 4) for n in LIMITS},
    }


def main(argv: list[str] | None = None) -> int:
    ap = cli.ArgumentParser(prog="python -m experiments.token_lengths",
                            description=__doc__.splitlines()[0])
    cli.add_data_options(ap)
    ap.add_argument("--out", type=cli.given, help="also write the statistics as JSON here")
    args = ap.parse_args(argv)
    folder = None
    if args.out:  # checked up front: a bad path fails before minutes of tokenizing
        if Path(args.out).is_dir() or args.out.endswith(("/", os.sep)):  # a folder, made or not
            raise cli.UserError(f"--out {args.out} names a folder: pass a file name such as "
                                f"{Path(args.out) / 'token_lengths.json'}")
        folder = Workdir(Path(args.out).parent)
        folder.check(flag="--out")
    raw = read_imdb_archive(args.imdb_archive)
    tok = load_pretrained_tokenizer(args.vocab, max_length=100_000)
    lengths = np.concatenate([encode_texts(tok, s.texts, progress=True).lengths
                              for s in (raw.train, raw.test)])
    stats = length_stats(lengths)
    print(f"{stats['reviews']:,} IMDB reviews, WordPiece tokens with [CLS]/[SEP]: "
          f"mean {stats['mean']}, median {stats['percentiles']['50']}, "
          f"90th percentile {stats['percentiles']['90']}")
    for n, share in stats["share_over"].items():
        print(f"  over {n:>3} tokens: {100 * share:5.1f}%")
    if folder is not None:
        folder.write_json(Path(args.out).name, stats)
    return 0


if __name__ == "__main__":
    cli.exit_with(cli.run_main(main))
