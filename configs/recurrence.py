r"""Q2: the scalar RNN against its closed form, and learning its weights back.

    python -m experiments.recurrence
    # = --config configs/recurrence.py --seed 0 (results/recurrence.json; 9 s of CPU on the
    # 2-core Intel Xeon with AMX-BF16)
    # the scan equals the closed form exactly on 8,192 even-length sequences; Adam from 8
    # random starts recovers w_rec in [-1.00041, -1.00029], with at least 99.85% held-out
    # accuracy at every even length up to 100.

    python -m experiments.recurrence --quick
    # = --config configs/recurrence.py:quick: the same measurements at small sizes, in seconds
    # (a smoke run), written to runs/recurrence_quick/ so results/ keeps the full run's.
"""

from __future__ import annotations

import ml_collections

from configs import apply_variant

# The variants as their differences from the default (dotted field -> value).
VARIANTS = {"quick": {"check.n_sequences": 512, "train.steps": 200, "train.n_inits": 4,
                      "train.n_per_length": 256, "out": "runs/recurrence_quick"}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The Q2 experiment's settings; `arg`: None or "quick"."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    # (a) the figure's RNN against exact integer references.
    config.check = ml_collections.ConfigDict()
    config.check.n_sequences = 8192  # per parity (even and odd lengths)
    config.check.max_length = 128  # even lengths uniform in 2..max_length, odd in 1..max_length-1

    # (b) Adam on the BCE of the final logit, several random initialisations vmapped.
    config.train = ml_collections.ConfigDict()
    config.train.lengths = (2, 4, 6, 8, 10)  # even lengths, n_per_length sequences each
    config.train.steps = 2000
    config.train.n_inits = 8
    config.train.n_per_length = 4096  # training sequences per length
    config.train.batch_size = 256
    config.train.learning_rate = 0.05  # cosine decay from here to 0 over the steps

    # Held-out accuracy on new sequences: the training lengths, longer even lengths never seen
    # in training, and odd lengths (where the answer flips).
    config.eval = ml_collections.ConfigDict()
    config.eval.unseen_lengths = (12, 16, 20, 32, 64, 100)
    config.eval.odd_lengths = (3, 11, 33)
    config.eval.n_per_length = 2000

    config.out = "results"  # recurrence.json and recurrence.png go here
    return apply_variant(config, arg, VARIANTS)
