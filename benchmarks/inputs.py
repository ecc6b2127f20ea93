"""What the benchmarks share besides timing: their command line (the options every one
takes, its sizes without and with --quick, one-line errors), what they read (the shared
IMDB archive and vocabulary, a small archive of synthetic reviews for --quick, the first
test reviews of an archive) and random token batches."""

from __future__ import annotations

import argparse
import io
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import cli
from hw3_jax import timing
from hw3_jax.data.imdb import clean_text, iter_archive
from hw3_jax.data.synthetic import generate_reviews
from hw3_jax.train.workdir import Workdir

# The options of every benchmark whose values are the same with --quick and without.
COMMON = {"warmup": 1}


class BenchmarkParser(cli.ArgumentParser):
    """The command line of `python -m benchmarks.NAME`, described by the first paragraph of
    its module docstring `doc`: --quick, --out-dir, --repeats, --warmup and the benchmark's
    own options, a mistake in any of them one line (a `cli.UserError`).

    `full` and `quick`: the benchmark's values without --quick and with it, one dict each
    with the same keys, its options' defaults among them (--repeats' always; --warmup's
    where it is not `COMMON`'s); `parse` puts the right one in place of every option left
    out and every value that is no option, so that `args.KEY` is the value in use."""

    def __init__(self, name: str, doc: str, full: Mapping[str, Any],
                 quick: Mapping[str, Any]):
        super().__init__(prog=timing.benchmark_command(name, quick=False),
                         description=" ".join(doc.split("\n\n")[0].split()))
        self.full, self.quick = {**COMMON, **full}, {**COMMON, **quick}
        self.minimum: dict[str, int] = {}
        self.add_argument("--quick", action="store_true",
                          help="tiny sizes and few repetitions: a smoke run, not a measurement")
        self.add_argument("--out-dir", help=f"where bench_{name}.json goes "
                                            f"(default {timing.RESULTS})")
        self.add_sized("--repeats", "timed repetitions, of which the median is reported")
        # At least one: the first call of each program compiles it, which must not be timed.
        self.add_sized("--warmup", "untimed calls before timing", minimum=1)

    def add_sized(self, flag: str, text: str, *, minimum: int | None = 1,
                  **kwargs: Any) -> None:
        """Option `flag` (an int unless `kwargs` say otherwise), its default `full`'s and
        `quick`'s value of its name, which the help text ends with; each value given must
        be `minimum` or more (None: any)."""
        key = flag.lstrip("-").replace("-", "_")
        full, quick = _words(self.full[key]), _words(self.quick[key])
        default = full if full == quick else f"{full}; --quick {quick}"
        if minimum is not None:
            self.minimum[key] = minimum
        self.add_argument(flag, **{"type": int, **kwargs}, help=f"{text} (default {default})")

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """The options in `argv` (None: the command line), the sizes in use in place of
        those left out; a count below its minimum (a `cli.UserError`) or an --out-dir that
        cannot be written (a `WorkdirError`) is one line, before anything is measured."""
        args = self.parse_args(argv)
        for key, value in (self.quick if args.quick else self.full).items():
            given = getattr(args, key, None)
            if given is None:
                setattr(args, key, value)
            elif key in self.minimum:
                low = min(given) if isinstance(given, list) else given
                if low < self.minimum[key]:
                    raise cli.UserError(f"--{key.replace('_', '-')} must be "
                                        f"{self.minimum[key]} or more, got {low}")
        Workdir(timing.RESULTS if args.out_dir is None else args.out_dir).check(flag="--out-dir")
        return args


def _words(value: Any) -> str:
    """An option's value as written on the command line (a list: its items)."""
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def run(main: Callable[[], Any], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """`main()` of a benchmark run as a command (`cli.run_main`: a user's mistake, or one of
    `user_errors`, is one line and exit status 2, Ctrl-C exit status 130); else status 0."""

    def call() -> int:
        main()
        return 0

    return cli.run_main(call, user_errors)


def existing_file(path: str | Path, what: str, option: str) -> Path:
    """`path` as a Path; a `cli.UserError` when it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise cli.UserError(f"{what} {p} not found: pass {option}")
    return p


def given_or_shared(given: str | None, shared: Path, what: str, option: str) -> str | None:
    """The file the user named (`given`, which must exist: `existing_file`), else the shared
    one where it exists, else None."""
    if given is not None:
        return str(existing_file(given, what, option))
    return timing.shared_file(shared)


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
    by_label = {y: [t for t, label in zip(texts, labels, strict=True) if label == y]
                for y in (0, 1)}
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
    for _, _, raw in iter_archive(archive, {"test/pos", "test/neg"}):
        if raw is not None:  # None: a folder seen
            out.append(clean_text(raw.decode("utf-8", errors="replace")))
            if len(out) == n:
                break
    return out
