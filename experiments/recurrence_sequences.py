"""Q2's integer sequences and their exact references (NumPy, int64: no rounding anywhere).

Inputs are integers uniform in [LOW, HIGH]. Sequences of several lengths are left-padded with
zeros to one length: one compiled scan serves them all. Leading zeros keep the scalar RNN's h
at 0 for any weights, so every later hidden state, h_T included, is exactly the unpadded
sequence's; an even pad also keeps each position's parity, so `closed_form` is unchanged.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = -9, 9  # integer inputs drawn uniformly from [LOW, HIGH]


def random_ints(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """[n, length] int32, uniform in [LOW, HIGH]."""
    return rng.integers(LOW, HIGH + 1, size=(n, length), dtype=np.int32)


def random_length_ints(rng: np.random.Generator, n: int, pad_to: int):
    """n sequences with lengths uniform over {pad_to, pad_to - 2, ...} (>= 1), left-padded
    with zeros to pad_to: ([n, pad_to] int32, lengths [n])."""
    lengths = rng.choice(np.arange(pad_to, 0, -2), size=n)
    x = random_ints(rng, n, pad_to)
    x[np.arange(pad_to)[None, :] < (pad_to - lengths)[:, None]] = 0
    return x, lengths


def prefix_alternating_sums(x: np.ndarray) -> np.ndarray:
    """x: [n, T] ints -> [n, T] int64: h_t = sum_{s<=t} (-1)^(t-s) x_s, exactly (NumPy)."""
    sign = np.where(np.arange(x.shape[1]) % 2 == 0, 1, -1)  # (-1)^(t-s) = (-1)^t (-1)^s
    return sign * np.cumsum(sign * x.astype(np.int64), axis=1)


def even_minus_odd_np(x: np.ndarray) -> np.ndarray:
    """NumPy int64 reference: sum at even positions - sum at odd positions (from 1)."""
    x = x.astype(np.int64)
    return x[:, 1::2].sum(axis=1) - x[:, 0::2].sum(axis=1)


def labelled_sequences(rng: np.random.Generator, lengths, n_per_length: int, pad_to: int):
    """Random sequences of each length, left-padded to pad_to: (x [N, pad_to] int32,
    length [N], d [N] = sum at even positions - sum at odd positions, exact)."""
    xs, ls, ds = [], [], []
    for length in lengths:
        if (pad_to - length) % 2:
            raise ValueError("pad by an even number of positions to keep parities")
        x = random_ints(rng, n_per_length, length)
        ds.append(even_minus_odd_np(x))
        xs.append(np.pad(x, ((0, 0), (pad_to - length, 0))))
        ls.append(np.full(n_per_length, length))
    return np.concatenate(xs), np.concatenate(ls), np.concatenate(ds)
