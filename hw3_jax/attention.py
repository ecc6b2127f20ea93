"""Attention in O(T): exact softmax, Performer (FAVOR+) and sliding-window local attention.

Every function takes `q, k, v` of shape `[batch, length, heads, head_dim]` (the layout of
`jax.nn.dot_product_attention`, so no transposes are needed around it) and an optional key
padding mask `[batch, length]` (True = real token), and returns `[batch, length, heads,
head_dim]` in the dtype of `q`. All scale the logits by `1/sqrt(head_dim)` internally, as BERT
does. Finite keys and values at padded positions never influence an output (BERT's are
projections of LayerNorm outputs, so finite); outputs at padded *query* positions are finite but
otherwise meaningless (callers mask them downstream).

All three are pure, differentiable, `jit`-friendly (static shapes only) and keep the numerically
delicate parts (logits, softmax, exponentials of the random features, normalisers) in float32
when the inputs are bfloat16 or float16.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "softmax_attention",
    "orthogonal_random_features",
    "iid_random_features",
    "favor_features",
    "performer_attention",
    "local_attention",
]


def _key_mask(mask: jax.Array | None, batch: int, length: int) -> jax.Array | None:
    """Validates a `[batch, length]` key padding mask and returns it as bool (or None)."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.shape != (batch, length):
        raise ValueError(
            f"mask has shape {mask.shape}, expected [batch, length] = {(batch, length)}"
        )
    return mask.astype(bool)


def _check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    if q.ndim != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(
            "q, k, v must all have shape [batch, length, heads, head_dim]; got "
            f"{q.shape}, {k.shape}, {v.shape}"
        )


# --------------------------------------------------------------------------------------------
# Exact softmax attention.
# --------------------------------------------------------------------------------------------


def softmax_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None = None,
    *,
    implementation: str | None = None,
) -> jax.Array:
    """Exact scaled dot-product attention, `softmax(q k^T / sqrt(head_dim)) v`.

    Args:
      q, k, v: `[batch, length, heads, head_dim]`.
      mask: optional bool `[batch, length]`, True for real keys.
      implementation: passed to `jax.nn.dot_product_attention` (`None` = XLA; `"cudnn"` asks
        for the fused cuDNN flash-attention kernel on NVIDIA GPUs, bf16/fp16 only).

    Returns:
      `[batch, length, heads, head_dim]`, dtype of `q`. Costs O(T^2) time and memory: the
      `[batch, heads, T, T]` logits are materialised by the XLA implementation.
    """
    _check_qkv(q, k, v)
    b, t = q.shape[:2]
    key_mask = _key_mask(mask, b, t)
    # dot_product_attention wants a mask broadcastable to [B, N, T, S]. Masked logits become a
    # large *finite* negative number, so a query with no real key gets a uniform (finite) row.
    m = None if key_mask is None else key_mask[:, None, None, :]
    if m is not None and implementation == "cudnn":
        # cuDNN accepts only a mask with the full [B, 1, T, S] sequence dims.
        m = jnp.broadcast_to(m, (b, 1, t, t))
    return jax.nn.dot_product_attention(q, k, v, mask=m, implementation=implementation)


# --------------------------------------------------------------------------------------------
# Performer / FAVOR+.
# --------------------------------------------------------------------------------------------


# jit with static sizes: eagerly, the QR and its helpers would each compile on first use.
@functools.partial(jax.jit, static_argnames=("num_features", "head_dim"))
def orthogonal_random_features(key: jax.Array, num_features: int, head_dim: int) -> jax.Array:
    """Block-orthogonal Gaussian projection for FAVOR+, `[num_features, head_dim]`, float32.

    Rows come in blocks of `head_dim` mutually orthogonal directions (Haar-random orthogonal
    matrices from a sign-corrected QR), each row rescaled by the norm of an independent
    `N(0, I_head_dim)` vector, so every row on its own is distributed exactly as an i.i.d.
    Gaussian row: the kernel estimate stays unbiased while orthogonality lowers its variance.
    Redraw the features by passing a new `key`.
    """
    if num_features < 1 or head_dim < 1:
        raise ValueError(
            f"need num_features >= 1 and head_dim >= 1, got {num_features}, {head_dim}"
        )
    n_blocks = -(-num_features // head_dim)
    k_q, k_norm = jax.random.split(key)
    g = jax.random.normal(k_q, (n_blocks, head_dim, head_dim), jnp.float32)
    qmat, r = jnp.linalg.qr(g)
    # Sign correction makes Q Haar-distributed (plain QR has a sign bias).
    qmat = qmat * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    rows = jnp.swapaxes(qmat, -1, -2).reshape(n_blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(
        jax.random.normal(k_norm, (num_features, head_dim), jnp.float32), axis=-1
    )
    return rows * norms[:, None]


@functools.partial(jax.jit, static_argnames=("num_features", "head_dim"))
def iid_random_features(key: jax.Array, num_features: int, head_dim: int) -> jax.Array:
    """Plain i.i.d. Gaussian projection `[num_features, head_dim]` (the baseline for FAVOR+)."""
    return jax.random.normal(key, (num_features, head_dim), jnp.float32)


def favor_features(x: jax.Array, projection: jax.Array) -> jax.Array:
    """The positive random features of FAVOR+ (unstabilised; for analysis and tests).

    `phi(x) = exp(w x' - |x'|^2 / 2) / sqrt(m)` with `x' = x / head_dim^(1/4)`, so that
    `E[phi(q) . phi(k)] = exp(q . k / sqrt(head_dim))`, the softmax kernel.

    Args:
      x: `[..., head_dim]`.
      projection: `[m, head_dim]`.

    Returns:
      `[..., m]`, float32.
    """
    d = x.shape[-1]
    xs = x.astype(jnp.float32) * d**-0.25
    proj = jnp.einsum("...h,mh->...m", xs, projection.astype(jnp.float32))
    sq = 0.5 * jnp.sum(xs * xs, axis=-1, keepdims=True)
    return jnp.exp(proj - sq) / math.sqrt(projection.shape[0])


def _pad_axis(x: jax.Array, axis: int, before: int, after: int, value=0) -> jax.Array:
    if before == 0 and after == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    return jnp.pad(x, widths, constant_values=value)


def performer_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    projection: jax.Array,
    mask: jax.Array | None = None,
    *,
    chunk_size: int = 512,
) -> jax.Array:
    """FAVOR+ attention (Choromanski et al., ICLR 2021), bidirectional.

    Approximates `softmax(q k^T / sqrt(d)) v` by `phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1)`
    with the positive random features of `favor_features`. Cost O(T m d) time for `m`
    features; no `[T, T]` array is ever formed.

    The sequence is processed in chunks of `chunk_size` positions (a `lax.scan`): one pass over
    key chunks accumulates `phi(K)^T V` `[B, N, m, d]` and `phi(K)^T 1` `[B, N, m]`, a second
    pass over query chunks produces the outputs. Only one chunk's `[B, chunk, N, m]` features
    are alive at a time, so they stay in cache; this halves the time on CPU against
    materialising the `[B, T, N, m]` feature maps, and the forward temporary memory is
    O(chunk m) instead of O(T m).

    Numerical stabilisation (all in float32): every per-query factor cancels between numerator
    and normaliser, so each query's features are shifted by their own maximum (which also
    removes the `|q|^2` term); a per-(batch, head) factor on the keys cancels too, so the key
    features are shifted by the running maximum over the real keys seen so far, and the
    accumulators are rescaled when it grows (as in flash attention's online softmax). The
    shifts are under `stop_gradient`: they cancel exactly, so the gradient is unchanged.

    Padded keys get feature vector 0 (and value 0), so they add nothing to `phi(K)^T V` nor to
    the normaliser, and cannot move the shift.

    Args:
      q, k, v: `[batch, length, heads, head_dim]`.
      projection: `[num_features, head_dim]`, e.g. `orthogonal_random_features(...)`.
      mask: optional bool `[batch, length]`, True for real keys.
      chunk_size: positions per scan step (static); lengths that are not a multiple are
        padded internally.

    Returns:
      `[batch, length, heads, head_dim]`, dtype of `q`.
    """
    _check_qkv(q, k, v)
    b, t, n, d = q.shape
    if projection.ndim != 2 or projection.shape[1] != d:
        raise ValueError(f"projection must be [num_features, head_dim={d}], got {projection.shape}")
    key_mask = _key_mask(mask, b, t)
    if key_mask is None:
        key_mask = jnp.ones((b, t), bool)
    # Fold the 1/sqrt(d) logit scale into the (tiny) projection: w' = w / d^(1/4).
    w = projection.astype(jnp.float32) * d**-0.25

    c = max(1, min(int(chunk_size), t))
    n_chunks = -(-t // c)
    t_pad = n_chunks * c
    qp, kp, vp = (_pad_axis(x, 1, 0, t_pad - t) for x in (q, k, v))
    mp = _pad_axis(key_mask, 1, 0, t_pad - t, value=False)

    kv, k_sum = _performer_key_sums(kp, vp, mp, w, c)
    out = _performer_queries(qp, w, kv, k_sum, c, q.dtype)  # [n_chunks, B, c, N, d]
    return jnp.moveaxis(out, 0, 1).reshape(b, t_pad, n, d)[:, :t]


def _performer_key_sums(
    kp: jax.Array, vp: jax.Array, mp: jax.Array, w: jax.Array, c: int
) -> tuple[jax.Array, jax.Array]:
    """The key pass of `performer_attention`: `phi(K)^T V` `[B, N, m, d]` and `phi(K)^T 1`
    `[B, N, m]`, float32, accumulated over chunks of `c` positions with a running shift.

    `kp, vp`: `[B, T_pad, N, d]`; `mp`: bool `[B, T_pad]`; `w`: the scaled projection
    `[m, d]`; `T_pad` a multiple of `c`."""
    b, t_pad, n, d = kp.shape
    m = w.shape[0]
    f32 = jnp.float32

    def key_step(carry, i):
        kv, k_sum, shift = carry  # [B, N, m, d], [B, N, m], [B, N]
        kc = lax.dynamic_slice_in_dim(kp, i * c, c, axis=1).astype(f32)  # [B, c, N, d]
        vc = lax.dynamic_slice_in_dim(vp, i * c, c, axis=1).astype(f32)
        keep = lax.dynamic_slice_in_dim(mp, i * c, c, axis=1)[:, :, None, None]  # [B, c, 1, 1]
        arg = jnp.einsum("btnh,mh->btnm", kc, w)  # [B, c, N, m]
        arg = arg - (0.5 / math.sqrt(d)) * jnp.sum(kc * kc, axis=-1, keepdims=True)
        # -inf -> feature exactly 0; its gradient is g * exp(-inf) = 0, never NaN.
        arg = jnp.where(keep, arg, -jnp.inf)
        vc = jnp.where(keep, vc, 0.0)  # padded values cannot leak in, even as inf/NaN
        # The carried shift stays -inf until a real key arrives, so chunks of padding
        # before it cannot pin the shift at a value the real keys' features underflow under.
        new = lax.stop_gradient(jnp.maximum(shift, jnp.max(arg, axis=(1, 3))))  # [B, N]
        finite = jnp.where(jnp.isfinite(new), new, 0.0)  # for the exps: no real key seen yet
        rescale = jnp.exp(shift - finite)  # exp(-inf) = 0 on the first real chunk
        phi = jnp.exp(arg - finite[:, None, :, None])  # [B, c, N, m], entries <= 1
        kv = kv * rescale[..., None, None] + jnp.einsum("btnm,btnh->bnmh", phi, vc)
        k_sum = k_sum * rescale[..., None] + jnp.sum(phi, axis=1)
        return (kv, k_sum, new), None

    init = (
        jnp.zeros((b, n, m, d), f32),
        jnp.zeros((b, n, m), f32),
        jnp.full((b, n), -jnp.inf, f32),
    )
    (kv, k_sum, _), _ = lax.scan(key_step, init, jnp.arange(t_pad // c))
    return kv, k_sum


def _performer_queries(
    qp: jax.Array, w: jax.Array, kv: jax.Array, k_sum: jax.Array, c: int, dtype: jnp.dtype
) -> jax.Array:
    """The query pass of `performer_attention`: `[n_chunks, B, c, N, d]` outputs in `dtype`
    from `qp` `[B, T_pad, N, d]` and the key pass's `kv`, `k_sum`."""
    f32 = jnp.float32

    def query_step(_, i):
        qc = lax.dynamic_slice_in_dim(qp, i * c, c, axis=1).astype(f32)  # [B, c, N, d]
        proj = jnp.einsum("btnh,mh->btnm", qc, w)  # [B, c, N, m]
        # exp(w q' - max_j w_j q'): the |q'|^2/2 term is a per-query constant and cancels.
        phi = jnp.exp(proj - lax.stop_gradient(jnp.max(proj, axis=-1, keepdims=True)))
        num = jnp.einsum("btnm,bnmh->btnh", phi, kv)  # [B, c, N, d]
        den = jnp.einsum("btnm,bnm->btn", phi, k_sum)  # [B, c, N]
        # den > 0 whenever the sequence has a real key; with none (or on underflow) num is 0
        # too, and dividing by 1 gives output 0 with finite gradients (a tiny floor would not:
        # g / tiny overflows in the backward pass).
        den = jnp.where(den > 0, den, 1.0)
        return None, (num / den[..., None]).astype(dtype)

    _, out = lax.scan(query_step, None, jnp.arange(qp.shape[1] // c))
    return out


# --------------------------------------------------------------------------------------------
# Sliding-window (local) attention.
# --------------------------------------------------------------------------------------------

QUERIES_PER_STEP = 512  # local_attention's default queries per scan step


def local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    window: int,
    mask: jax.Array | None = None,
    *,
    block_size: int | None = None,
    queries_per_step: int = QUERIES_PER_STEP,
) -> jax.Array:
    """Sliding-window softmax attention: query `i` sees the keys `j` with `|i - j| <= window`.

    Computed blockwise: the sequence is cut into blocks of `block_size` queries (default
    `window`), and each block attends only to the `r = ceil(window / block_size)` neighbouring
    key blocks on each side, with an exact band mask inside that span. Time and memory are
    O(T * (2 r + 1) * block_size) = O(T * window); no `[T, T]` array exists. Blocks are
    processed `queries_per_step // block_size` at a time in a `lax.scan`, so the logits of
    one step stay in cache and the forward temporary memory does not grow with T. Lengths
    that are not a multiple of the block are padded internally (the padding is masked). With
    `window >= T - 1` this is exact softmax attention.

    Args:
      q, k, v: `[batch, length, heads, head_dim]`.
      window: one-sided window radius, >= 0 (each query sees up to `2 window + 1` keys).
      mask: optional bool `[batch, length]`, True for real keys.
      block_size: queries per block (a static int); default `min(max(window, 1), length)`.
      queries_per_step: queries handled per scan step (rounded to whole blocks).

    Returns:
      `[batch, length, heads, head_dim]`, dtype of `q`.
    """
    _check_qkv(q, k, v)
    if int(window) != window or window < 0:
        raise ValueError(f"window must be a non-negative int, got {window!r}")
    window = int(window)
    b, t, n, d = q.shape
    key_mask = _key_mask(mask, b, t)
    if key_mask is None:
        key_mask = jnp.ones((b, t), bool)
    blocks = local_blocks(t, window, block_size, queries_per_step)
    bs, r, t_pad = blocks.size, blocks.radius, blocks.padded_length

    # Head-major [B, N, T, d]: every contraction below then has its batch dims leading and
    # needs no transposes; the three copies are O(T d), small next to the O(T window) work.
    qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    qh = _pad_axis(qh, 2, 0, t_pad - t)
    # Keys/values padded by r blocks on both sides: block c then needs padded blocks c..c+2r.
    extra = t_pad - t + r * bs
    kh, vh = _pad_axis(kh, 2, r * bs, extra), _pad_axis(vh, 2, r * bs, extra)
    mp = _pad_axis(key_mask, 1, r * bs, extra, value=False)

    out = _local_scan(qh, kh, vh, mp, _local_band(blocks, window), blocks)
    # [n_steps, B, N, g, bs, d] -> [B, T_pad, N, d]
    out = jnp.transpose(out, (1, 0, 3, 4, 2, 5)).reshape(b, t_pad, n, d)
    return out[:, :t]


class LocalBlocks(NamedTuple):
    """How `local_attention` cuts a sequence: blocks of `size` queries, `radius` key blocks
    on each side, `per_step` blocks per scan step, `steps` scan steps."""

    size: int
    radius: int
    per_step: int
    steps: int

    @property
    def span(self) -> int:
        """Keys seen by one query block."""
        return (2 * self.radius + 1) * self.size

    @property
    def padded_length(self) -> int:
        return self.steps * self.per_step * self.size


def local_blocks(t: int, window: int, block_size: int | None, queries_per_step: int) -> LocalBlocks:
    bs = min(max(window, 1), t) if block_size is None else int(block_size)
    if bs < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size!r}")
    n_blocks = -(-t // bs)
    r = min(-(-window // bs), n_blocks - 1)  # neighbouring blocks needed on each side
    g = max(1, min(n_blocks, queries_per_step // bs))  # blocks per scan step
    return LocalBlocks(size=bs, radius=r, per_step=g, steps=-(-n_blocks // g))


def _local_band(blocks: LocalBlocks, window: int) -> jax.Array:
    """The `[size, span]` bool band: which keys of its span a query of a block may see."""
    bs, r, span = blocks.size, blocks.radius, blocks.span
    # Query a of block c sits at c*bs + a; key s of its span at (c - r)*bs + s. The offset
    # j - i = s - r*bs - a does not depend on c, so one [bs, span] band serves every block.
    a = lax.broadcasted_iota(jnp.int32, (bs, span), 0)
    s = lax.broadcasted_iota(jnp.int32, (bs, span), 1)
    return jnp.abs(s - r * bs - a) <= window


def _neighbours(x: jax.Array, axis: int, blocks: LocalBlocks) -> jax.Array:
    """`[..., (g + 2r) * bs, ...]` -> `[..., g, span, ...]`: each block's key span."""
    bs, r, g = blocks.size, blocks.radius, blocks.per_step
    parts = [
        lax.slice_in_dim(x, i * bs, (i + g) * bs, axis=axis).reshape(
            x.shape[:axis] + (g, bs) + x.shape[axis + 1 :]
        )
        for i in range(2 * r + 1)
    ]
    return jnp.concatenate(parts, axis=axis + 1)


def _local_scan(
    qh: jax.Array, kh: jax.Array, vh: jax.Array, mp: jax.Array, band: jax.Array,
    blocks: LocalBlocks,
) -> jax.Array:
    """Banded softmax attention, `blocks.per_step` query blocks per scan step.

    `qh` `[B, N, T_pad, d]`; `kh, vh` `[B, N, T_pad + 2 r bs, d]` and `mp` `[B, T_pad + 2 r
    bs]` padded by r blocks on each side. Returns `[steps, B, N, g, bs, d]` in `qh`'s dtype."""
    b, n, _, d = qh.shape
    bs, r, g = blocks.size, blocks.radius, blocks.per_step
    big_neg = -0.7 * jnp.finfo(jnp.float32).max  # finite: a row with no real key stays finite

    def step(_, i):
        q0 = i * g * bs
        qb = lax.dynamic_slice_in_dim(qh, q0, g * bs, axis=2).reshape(b, n, g, bs, d)
        kb = _neighbours(lax.dynamic_slice_in_dim(kh, q0, (g + 2 * r) * bs, axis=2), 2, blocks)
        vb = _neighbours(lax.dynamic_slice_in_dim(vh, q0, (g + 2 * r) * bs, axis=2), 2, blocks)
        mb = _neighbours(lax.dynamic_slice_in_dim(mp, q0, (g + 2 * r) * bs, axis=1), 1, blocks)
        logits = jnp.einsum("bncqh,bnckh->bncqk", qb, kb, preferred_element_type=jnp.float32) * (
            1.0 / math.sqrt(d)
        )  # [B, N, g, bs, span]
        allowed = band & mb[:, None, :, None, :]  # [B, 1, g, bs, span]
        logits = jnp.where(allowed, logits, big_neg)
        probs = jax.nn.softmax(logits, axis=-1).astype(vh.dtype)
        out = jnp.einsum("bncqk,bnckh->bncqh", probs, vb, preferred_element_type=jnp.float32)
        return None, out.astype(qh.dtype)  # [B, N, g, bs, d]

    _, out = lax.scan(step, None, jnp.arange(blocks.steps))
    return out
