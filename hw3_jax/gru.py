"""A GRU with PyTorch's exact parameterisation, in Flax linen.

flax's `linen.GRUCell` merges two of PyTorch's biases and nnx's drops `b_hn`, so neither
counts nor loads like `torch.nn.GRU`. Here every layer and direction holds exactly the four
tensors PyTorch has, in PyTorch's own orientation (so a state dict copies over without
transposes):

    weight_ih [3H, in]   weight_hh [3H, H]   bias_ih [3H]   bias_hh [3H]

with the gates stacked in PyTorch's order r, z, n:

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))     # b_hn inside the product
    h' = (1 - z) * n + z * h

Params tree of `GRU`: {"l0": {weight_ih, weight_hh, bias_ih, bias_hh}, "l0_reverse": {...},
"l1": ..., ...}: PyTorch's state-dict name `weight_ih_l1_reverse` is `params["l1_reverse"]
["weight_ih"]`.

Efficiency: the input projection of a layer is one matmul over all time steps and both
directions before the scan; only the `[batch, H] x [H, 3H]` hidden projection is inside
`lax.scan`, and the two directions share one scan (the backward one runs over the time-reversed
inputs), so a bidirectional layer costs `length` sequential steps, not `2 * length`.

Mixed precision: matmuls take their inputs in `dtype` (e.g. bfloat16 on TPU) but accumulate in
float32, and the recurrent state and gates stay float32, because the state is carried through
hundreds of steps where bfloat16 rounding would accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _torch_uniform(hidden_size: int):
    """PyTorch's GRU init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _declare_params(module: nn.Module, in_features: int, hidden_size: int, param_dtype) -> dict:
    init = _torch_uniform(hidden_size)
    g = 3 * hidden_size
    return {
        "weight_ih": module.param("weight_ih", init, (g, in_features), param_dtype),
        "weight_hh": module.param("weight_hh", init, (g, hidden_size), param_dtype),
        "bias_ih": module.param("bias_ih", init, (g,), param_dtype),
        "bias_hh": module.param("bias_hh", init, (g,), param_dtype),
    }


class GRUParams(nn.Module):
    """The four PyTorch tensors of one layer and direction; returns them as a dict."""

    hidden_size: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, in_features: int) -> dict:
        return _declare_params(self, in_features, self.hidden_size, self.param_dtype)


def _gates(xp: Array, hp: Array, h: Array, b_hn: Array) -> Array:
    """One GRU update from precomputed projections.

    xp: [..., 3H] = W_ih x + b_ih + [b_hr, b_hz, 0];  hp: [..., 3H] = W_hh h (no bias);
    h: [..., H]; b_hn: broadcastable to [..., H]. All float32.
    """
    xr, xz, xn = jnp.split(xp, 3, axis=-1)
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * (hn + b_hn))
    return (1.0 - z) * n + z * h


def _folded_input_bias(bias_ih: Array, bias_hh: Array) -> tuple[Array, Array]:
    """b_hr and b_hz can be added once to the input projection; b_hn must stay inside r*(.)."""
    h = bias_hh.shape[-1] // 3
    folded = bias_ih + jnp.concatenate(
        [bias_hh[..., : 2 * h], jnp.zeros_like(bias_hh[..., 2 * h :])], axis=-1
    )
    return folded.astype(jnp.float32), bias_hh[..., 2 * h :].astype(jnp.float32)


class GRUCell(nn.Module):
    """One step of a GRU with `torch.nn.GRUCell`'s parameters (weight_ih, weight_hh, bias_ih,
    bias_hh). `__call__(h [B, H], x [B, F]) -> (h_new, h_new)` (flax's cell convention)."""

    hidden_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array, x: Array) -> tuple[Array, Array]:
        w = _declare_params(self, x.shape[-1], self.hidden_size, self.param_dtype)
        bias_x, b_hn = _folded_input_bias(w["bias_ih"], w["bias_hh"])
        xp = _matmul_t(x, w["weight_ih"], self.dtype) + bias_x
        hp = _matmul_t(h, w["weight_hh"], self.dtype)
        h_new = _gates(xp, hp, h.astype(jnp.float32), b_hn).astype(self.dtype)
        return h_new, h_new


def _matmul_t(x: Array, w: Array, dtype) -> Array:
    """x [..., F] @ w[G, F].T -> [..., G] in `dtype`, accumulated in float32."""
    return jnp.einsum(
        "...f,gf->...g", x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32
    )


def _layer(x: Array, weights: list[dict], mask: Array | None, dtype) -> tuple[Array, Array]:
    """One GRU layer, one or two directions sharing one scan.

    x: [B, L, F]; weights: per direction (fwd, then bwd) the four tensors;
    mask: bool [B, L] (True = real token) or None (no padding).
    Returns outputs [B, L, D*H] (zeros where mask is False) and final states [D, B, H].
    """
    d = len(weights)
    w_ih = jnp.stack([w["weight_ih"] for w in weights])  # [D, 3H, F]
    w_hh = jnp.stack([w["weight_hh"] for w in weights]).astype(dtype)  # [D, 3H, H]
    bias_x, b_hn = _folded_input_bias(
        jnp.stack([w["bias_ih"] for w in weights]), jnp.stack([w["bias_hh"] for w in weights])
    )  # [D, 3H], [D, H]
    b_, l_, _ = x.shape
    hidden = w_hh.shape[-1]

    # All time steps and both directions in one matmul, time-major: [L, D, B, 3H].
    xp = jnp.einsum(
        "blf,dgf->ldbg", x.astype(dtype), w_ih.astype(dtype), preferred_element_type=jnp.float32
    )
    xp = xp + bias_x[None, :, None, :]
    if d == 2:  # the backward direction reads time reversed
        xp = jnp.stack([xp[:, 0], xp[::-1, 1]], axis=1)

    if mask is None:

        def step(h, xp_t):
            hp = jnp.einsum(
                "dbh,dgh->dbg", h.astype(dtype), w_hh, preferred_element_type=jnp.float32
            )
            h = _gates(xp_t, hp, h, b_hn[:, None, :])
            return h, h

        xs = xp
    else:
        m = mask.T  # [L, B]
        m = jnp.stack([m, m[::-1]], axis=1) if d == 2 else m[:, None]  # [L, D, B]

        def step(h, inp):
            xp_t, m_t = inp
            hp = jnp.einsum(
                "dbh,dgh->dbg", h.astype(dtype), w_hh, preferred_element_type=jnp.float32
            )
            cand = _gates(xp_t, hp, h, b_hn[:, None, :])
            m_t = m_t[..., None]
            # Forward: padding comes after the valid part, the state stays at position
            # length-1. Backward: padding comes first in reversed time, the state stays at
            # its zero init until position length-1. Both as pack_padded_sequence.
            h = jnp.where(m_t, cand, h)
            return h, jnp.where(m_t, h, 0.0)

        xs = (xp, m)

    h0 = jnp.zeros((d, b_, hidden), jnp.float32)
    h_final, ys = jax.lax.scan(step, h0, xs)  # ys [L, D, B, H]
    if d == 2:
        ys = jnp.stack([ys[:, 0], ys[::-1, 1]], axis=1)
    out = jnp.transpose(ys, (2, 0, 1, 3)).reshape(b_, l_, d * hidden)
    return out, h_final


class GRU(nn.Module):
    """Multi-layer, optionally bidirectional GRU, batch first, PyTorch parameters and order.

    `__call__(x [B, L, F], lengths [B] | None = None, *, deterministic=True)` returns
    `(outputs [B, L, D*H], final_hidden [num_layers*D, B, H])`, final_hidden ordered
    layer0 fwd, layer0 bwd, layer1 fwd, ... as `torch.nn.GRU`'s h_n.

    With `lengths`, it behaves as `pack_padded_sequence` + `pad_packed_sequence`: padding never
    reaches either direction's final state (forward ends at position length-1, backward starts
    there) and outputs at padded positions are zero. `over_padding=True` ignores `lengths` and
    runs over the whole padded sequence, as the original notebook did.
    Dropout (rng stream "dropout") is applied to each layer's outputs except the last one's, and
    only when `deterministic=False`, as PyTorch in training mode.
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    over_padding: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, lengths: Array | None = None, *, deterministic: bool = True
    ) -> tuple[Array, Array]:
        if x.ndim != 3:
            raise ValueError(f"GRU expects x of shape [batch, length, features], got {x.shape}")
        mask = None
        if lengths is not None and not self.over_padding:
            mask = jnp.arange(x.shape[1])[None, :] < jnp.asarray(lengths)[:, None]  # [B, L]
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        finals = []
        h = x
        for layer in range(self.num_layers):
            weights = [
                GRUParams(self.hidden_size, self.param_dtype, name=f"l{layer}{s}")(h.shape[-1])
                for s in suffixes
            ]
            h, h_final = _layer(h, weights, mask, self.dtype)
            finals.append(h_final)
            if layer < self.num_layers - 1 and self.dropout > 0.0:
                h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        final_hidden = jnp.concatenate(finals, axis=0).astype(self.dtype)
        return h.astype(self.dtype), final_hidden


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor, without importing torch
        t = t.detach().cpu().float().numpy()  # NumPy has no bfloat16 of torch's
    return np.asarray(t)


def from_torch_gru(
    state_dict: Mapping[str, Any], num_layers: int, bidirectional: bool, prefix: str = ""
) -> dict:
    """float32 params for `GRU` from a `torch.nn.GRU` state dict (torch or NumPy, any dtype).

    `prefix` selects the GRU inside a bigger model's state dict (e.g. "rnn."); other keys
    are then ignored. Raises ValueError listing missing or unexpected tensors.
    """
    suffixes = ("", "_reverse") if bidirectional else ("",)
    expected = {
        f"{prefix}{name}_l{layer}{s}": (f"l{layer}{s}", name)
        for layer in range(num_layers)
        for s in suffixes
        for name in PARAM_NAMES
    }
    keys = [k for k in state_dict if k.startswith(prefix)]
    missing = sorted(set(expected) - set(keys))
    unexpected = sorted(set(keys) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"GRU state dict does not match num_layers={num_layers}, "
            f"bidirectional={bidirectional}: missing {missing}, unexpected {unexpected}"
        )
    params: dict = {}
    for key, (module, name) in expected.items():
        params.setdefault(module, {})[name] = jnp.asarray(_to_numpy(state_dict[key]), jnp.float32)
    g, hidden = params["l0"]["weight_hh"].shape
    bad = [
        f"{prefix}{name}_{module}: {tuple(w.shape)}"
        for module, ws in params.items()
        for name, w in ws.items()
        if w.shape[0] != g
        or (name == "weight_hh" and w.shape != (g, hidden))
        or (name.startswith("bias") and w.ndim != 1)
        or (name == "weight_ih" and w.ndim != 2)
    ]
    if g != 3 * hidden or bad:
        raise ValueError(
            f"GRU state dict shapes are inconsistent with hidden size {hidden} "
            f"(weight_hh_l0 {(g, hidden)}): {bad}"
        )
    return params
