"""Q2: the scalar RNN of the homework's Figure 1, and its closed form.

The network has integer inputs, zero biases, a scalar hidden state and a sigmoid output:

    h_0 = 0,    h_t = w_in * x_t + w_rec * h_{t-1},    y_t = sigmoid(w_out * h_t),

with the figure's weights w_in = 1, w_rec = -1, w_out = 1000. Unrolled,
h_t = w_in * sum_{s<=t} w_rec^(t-s) x_s, so with the figure's weights

    h_T = sum_{t=1..T} (-1)^(T-t) x_t
        = (sum of x at even positions) - (sum at odd positions)   for even T,
        = (sum of x at odd positions) - (sum at even positions)   for odd T,

positions counted from 1. `w_out = 1000` turns the sigmoid into a hard step on integer
inputs: |h_T| >= 1 gives |logit| >= 1000, and sigmoid(+-1000) is exactly 1.0 / 0.0 in
float32; a tie h_T = 0 gives exactly 0.5.

Exactness: with weights +-1 every product is exact and every sum of integers is exact in
float32 while all |x_t| and |h_t| stay below 2**24, so the scan's hidden state equals the
alternating sum bit for bit. Beyond 2**24 float32 cannot hold every integer (2**24 + 1 rounds
to 2**24) and the scan can miss a difference of 1; `closed_form` sums integer inputs in
integer arithmetic and stays exact there (up to int32 overflow).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

WEIGHT_NAMES = ("w_in", "w_rec", "w_out")


def _float_dtype(x: jax.Array) -> jnp.dtype:
    """The dtype the recurrence runs in: float32 for integer/bool inputs, at least float32."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.promote_types(x.dtype, jnp.float32)
    return jnp.dtype(jnp.float32)


def _as_signed(x: jax.Array) -> jax.Array:
    """Integer/bool inputs as signed integers, so that differences of sums cannot wrap."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.int64 if x.dtype.itemsize == 8 else jnp.int32)


class ScalarRNN(nn.Module):
    """The homework's scalar RNN, run over time with `jax.lax.scan`.

    Attributes:
      w_in, w_rec, w_out: the input->hidden, hidden->hidden and hidden->output weights
        (the figure's 1, -1, 1000). Used as constants when `learnable` is False.
      learnable: when True the three weights are parameters named "w_in", "w_rec", "w_out"
        (scalars, drawn uniformly from [-1, 1) at `init`) and the attributes above are
        ignored, so the same module can be trained from random weights. The range keeps the
        untrained recurrence stable: with |w_rec| > 1, h_t grows like |w_rec|^t, the sigmoid
        saturates on every sequence and training can stall at the all-0.5 output.
    """

    w_in: float = 1.0
    w_rec: float = -1.0
    w_out: float = 1000.0
    learnable: bool = False

    def setup(self):
        if self.learnable:

            def init(key, shape):
                return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)

            self.weights = tuple(self.param(name, init, ()) for name in WEIGHT_NAMES)
        else:
            self.weights = (self.w_in, self.w_rec, self.w_out)

    def hidden_and_logits(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, T] ints or floats -> (h [batch, T], logits w_out * h [batch, T]).

        The logits are what a loss should see (`optax.sigmoid_binary_cross_entropy`): the
        sigmoid of w_out * h saturates to exactly 0 or 1, where log(y) would be -inf.
        """
        x = jnp.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"ScalarRNN expects x of shape [batch, T], got shape {x.shape}; "
                "add a batch axis (x[None]) or use jax.vmap for more leading axes"
            )
        dtype = _float_dtype(x)
        w_in, w_rec, w_out = (jnp.asarray(w).astype(dtype) for w in self.weights)

        def step(h_prev, x_t):  # h_prev, x_t: [batch]
            h_t = w_in * x_t + w_rec * h_prev
            return h_t, h_t

        h0 = jnp.zeros(x.shape[:1], dtype)
        # scan runs over the leading axis, so time goes first: [T, batch].
        _, hs = jax.lax.scan(step, h0, jnp.swapaxes(x.astype(dtype), 0, 1))
        h = jnp.swapaxes(hs, 0, 1)
        return h, w_out * h

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, T] ints or floats -> (h, y), both [batch, T]: hidden states and
        sigmoid outputs y_t = sigmoid(w_out * h_t) at every step."""
        h, logits = self.hidden_and_logits(x)
        # jax.nn.sigmoid is lax.logistic: stable at +-1000 (exact 1.0 / 0.0, no overflow).
        return h, jax.nn.sigmoid(logits)


def even_minus_odd(x: jax.Array) -> jax.Array:
    """x: [..., T] -> [...]: sum of x at even positions minus the sum at odd positions,
    positions counted from 1 (so x[..., 1::2] are the even positions). Integer inputs are
    summed in integer arithmetic (exact)."""
    x = _as_signed(jnp.asarray(x))
    return x[..., 1::2].sum(axis=-1) - x[..., 0::2].sum(axis=-1)


def alternating_sum(x: jax.Array) -> jax.Array:
    """x: [..., T] -> [...]: sum_t (-1)^(T-t) x_t, the final hidden state h_T of the
    figure's RNN for any T: `even_minus_odd(x)` for even T, its negation for odd T."""
    x = jnp.asarray(x)
    d = even_minus_odd(x)
    return d if x.shape[-1] % 2 == 0 else -d


def closed_form(x: jax.Array, w_out: float | jax.Array = 1000.0) -> jax.Array:
    """x: [..., T] -> [...]: sigmoid(w_out * (sum at even positions - sum at odd positions)).

    For even T this is the RNN's final output y_T with w_in = 1, w_rec = -1: "do the even
    positions outweigh the odd ones?" (1.0 yes, 0.0 no, exactly 0.5 on a tie). For odd T
    the RNN's final output is 1 - closed_form(x) instead (h_T changes sign).
    """
    x = jnp.asarray(x)
    return jax.nn.sigmoid(w_out * even_minus_odd(x).astype(_float_dtype(x)))
