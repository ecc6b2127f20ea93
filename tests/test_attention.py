"""Tests for hw3_jax.attention: exact softmax, Performer (FAVOR+) and local attention."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.extend import core as jex_core

from hw3_jax import attention as att

B, T, N, H = 2, 37, 3, 16  # T prime: no block or chunk size divides it


def _qkv(seed=0, shape=(B, T, N, H), dtype=jnp.float32, scale=1.0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(scale * jax.random.normal(kk, shape, jnp.float32).astype(dtype) for kk in keys)


def _mask(lengths, t=T):
    return jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]


def _np_attention(q, k, v, allowed):
    """float64 NumPy reference: softmax over the allowed keys. allowed: [B, T, S] bool."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed[:, None], logits, -np.inf)
    # Rows with no allowed key (padded queries) come out NaN; callers ignore those rows.
    with np.errstate(invalid="ignore"):
        logits = logits - logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


def _key_allowed(mask, t=T):
    return np.broadcast_to(np.asarray(mask)[:, None, :], (mask.shape[0], t, t))


def _real_rows(x, mask):
    """Zeroes the padded query rows (their outputs are unspecified)."""
    return np.where(np.asarray(mask)[:, :, None, None], np.asarray(x, np.float64), 0.0)


# Four independent [1024, H] draws, shared by the tests below so that the sampler compiles
# once; the first m rows of a block-orthogonal projection are one with m features.
FEATURES = [att.orthogonal_random_features(jax.random.PRNGKey(s), 1024, H) for s in range(4)]
PROJ = FEATURES[0][:64]

METHODS = {
    "softmax": lambda q, k, v, m: att.softmax_attention(q, k, v, m),
    "performer": lambda q, k, v, m: att.performer_attention(q, k, v, PROJ, m, chunk_size=8),
    "local": lambda q, k, v, m: att.local_attention(
        q, k, v, 5, m, block_size=4, queries_per_step=8
    ),
}


class AttentionVariantsTest(chex.TestCase):
    """jit and no-jit variants of the core checks."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_matches_float64_numpy(self):
        q, k, v = _qkv()
        mask = _mask([T, 20])
        out = self.variant(att.softmax_attention)(q, k, v, mask)
        chex.assert_shape(out, (B, T, N, H))
        ref = _np_attention(q, k, v, _key_allowed(mask))
        np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_without_mask(self):
        q, k, v = _qkv(1)
        out = self.variant(att.softmax_attention)(q, k, v)
        ref = _np_attention(q, k, v, np.ones((B, T, T), bool))
        np.testing.assert_allclose(np.asarray(out), ref, atol=2e-6, rtol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        dict(window=T - 1, block_size=None),
        dict(window=3 * T, block_size=5),
    )
    def test_local_with_window_ge_t_equals_softmax(self, window, block_size):
        q, k, v = _qkv(2)
        mask = _mask([30, T])
        local = functools.partial(att.local_attention, window=window, block_size=block_size)
        out = self.variant(local)(q, k, v, mask=mask)
        ref = att.softmax_attention(q, k, v, mask)
        np.testing.assert_allclose(_real_rows(out, mask), _real_rows(ref, mask), atol=2e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        dict(window=0, block_size=None, qps=512),
        dict(window=5, block_size=None, qps=512),
        dict(window=7, block_size=3, qps=4),
    )
    def test_local_matches_banded_float64_reference(self, window, block_size, qps):
        q, k, v = _qkv(3)
        mask = _mask([T, 25])
        local = functools.partial(
            att.local_attention, window=window, block_size=block_size, queries_per_step=qps
        )
        out = self.variant(local)(q, k, v, mask=mask)
        pos = np.arange(T)
        band = np.abs(pos[:, None] - pos[None, :]) <= window
        ref = _np_attention(q, k, v, band[None] & _key_allowed(mask))
        # Real queries with at least one real key in reach have a defined output.
        np.testing.assert_allclose(_real_rows(out, mask), _real_rows(ref, mask), atol=3e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(8, 512)
    def test_performer_equals_its_feature_formula(self, chunk_size):
        # The chunked, stabilised implementation must equal the plain formula
        # phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1) computed in float64.
        q, k, v = _qkv(4)
        mask = _mask([T, 11])
        perf = functools.partial(att.performer_attention, chunk_size=chunk_size)
        out = self.variant(perf)(q, k, v, PROJ, mask=mask)
        fq = np.asarray(att.favor_features(q, PROJ), np.float64)
        fk = np.asarray(att.favor_features(k, PROJ), np.float64)
        fk = fk * np.asarray(mask)[:, :, None, None]
        a = np.einsum("btnm,bsnm->bnts", fq, fk)
        ref = np.einsum("bnts,bsnh->btnh", a, np.asarray(v, np.float64))
        ref /= a.sum(-1).transpose(0, 2, 1)[..., None]
        np.testing.assert_allclose(_real_rows(out, mask), _real_rows(ref, mask), atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("softmax", "performer", "local")
    def test_padded_keys_change_nothing(self, method):
        q, k, v = _qkv(5)
        mask = _mask([T, 19])
        f = self.variant(METHODS[method])
        out = f(q, k, v, mask)
        # Replace keys and values at padded positions by large, different garbage.
        k2, v2 = _qkv(6, scale=50.0)[1:]
        pad = ~mask[:, :, None, None]
        out2 = f(q, jnp.where(pad, k2, k), jnp.where(pad, v2, v), mask)
        np.testing.assert_allclose(_real_rows(out2, mask), _real_rows(out, mask), atol=1e-6)
        assert np.isfinite(np.asarray(out2)).all()

    # jit only: the no-jit paths are covered above, and eager autodiff through the scans
    # would only repeat the same checks at several times the cost.
    @chex.variants(with_jit=True)
    @parameterized.parameters("softmax", "performer", "local")
    def test_gradients_finite(self, method):
        q, k, v = _qkv(7)
        # One normal row, one fully padded row (no real key at all).
        mask = _mask([23, 0])

        def loss(q, k, v):
            return jnp.sum(METHODS[method](q, k, v, mask) ** 2)

        grads = self.variant(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
        for g in grads:
            chex.assert_tree_all_finite(g)
        assert float(jnp.abs(grads[0][0]).sum()) > 0.0  # the real row does get a gradient


@pytest.mark.parametrize("method", ["softmax", "performer", "local"])
def test_bfloat16_in_bfloat16_out(method):
    q, k, v = _qkv(8)
    mask = _mask([T, 30])
    f = METHODS[method]
    ref = jax.jit(f)(q, k, v, mask)

    @jax.jit
    def out_and_grad(q, k, v):
        def loss(q):
            out = f(q, k, v, mask)
            return jnp.sum(out.astype(jnp.float32)), out

        return jax.grad(loss, has_aux=True)(q)

    g, out = out_and_grad(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    assert out.dtype == jnp.bfloat16 and g.dtype == jnp.bfloat16
    chex.assert_tree_all_finite((out, g))
    np.testing.assert_allclose(
        _real_rows(out.astype(jnp.float32), mask), _real_rows(ref, mask), atol=0.05
    )


def test_performer_stable_for_large_norms():
    # Unstabilised features overflow/underflow here (|q|^2 / (2 sqrt(d)) ~ 400).
    q, k, v = _qkv(9, scale=10.0)
    out = att.performer_attention(q, k, v, PROJ)
    chex.assert_tree_all_finite(out)
    # A convex combination of values: stays inside their range.
    assert float(jnp.abs(out).max()) <= float(jnp.abs(v).max()) * (1 + 1e-5)


def test_performer_ignores_inf_and_nan_at_padded_keys():
    q, k, v = _qkv(5)
    mask = _mask([T, 19])
    pad = ~mask[:, :, None, None]
    perf = METHODS["performer"]
    out = perf(q, jnp.where(pad, jnp.inf, k), jnp.where(pad, jnp.nan, v), mask)
    np.testing.assert_allclose(_real_rows(out, mask), _real_rows(perf(q, k, v, mask), mask),
                               atol=1e-6)


def test_performer_output_does_not_depend_on_where_the_padding_sits():
    # Whole chunks of padding before the first real key: the key shift must still come
    # from the real keys alone (large norms: their features underflow under any other shift).
    q, k, v = _qkv(10, shape=(1, 16, N, H), scale=10.0)
    real = jnp.arange(16) >= 8  # [16]: 8 padded positions (two chunks of 4), then 8 real
    left = att.performer_attention(q, k, v, PROJ, real[None], chunk_size=4)
    roll = functools.partial(jnp.roll, shift=-8, axis=1)  # the same keys, padding on the right
    right = att.performer_attention(q, roll(k), roll(v), PROJ, roll(real[None]), chunk_size=4)
    assert float(jnp.abs(right).max()) > 0.1
    np.testing.assert_allclose(np.asarray(left), np.asarray(right), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", [att.orthogonal_random_features, att.iid_random_features])
def test_performer_kernel_estimate_is_unbiased(sampler):
    d, m, draws = 8, 8, 3000
    rng = np.random.default_rng(0)
    qv = jnp.asarray(rng.normal(size=d) * 0.7, jnp.float32)
    kv = jnp.asarray(rng.normal(size=d) * 0.7, jnp.float32)
    exact = float(np.exp(np.dot(qv, kv) / np.sqrt(d)))

    def one(key):
        w = sampler(key, m, d)
        return jnp.dot(att.favor_features(qv, w), att.favor_features(kv, w))

    est = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), draws)))
    assert (est > 0).all()  # positive features: the estimate can never be negative
    stderr = est.std() / np.sqrt(draws)
    assert abs(est.mean() - exact) < 4 * stderr + 1e-3 * exact, (est.mean(), exact, stderr)
    # ... and it is not trivially exact: a single draw does vary.
    assert est.std() > 1e-3 * exact


def test_orthogonal_features_are_block_orthogonal():
    d, m = H, 1024
    w = np.asarray(FEATURES[1], np.float64)
    assert w.shape == (m, d)
    # Rows have Gaussian-like norms (chi with d degrees of freedom), not unit norms.
    norms = np.linalg.norm(w, axis=1)
    assert abs(norms.mean() - np.sqrt(d)) < 0.1 * np.sqrt(d) and norms.std() > 0.3
    for start in range(0, m, d):
        blk = w[start : start + d]
        gram = blk @ blk.T
        off = gram - np.diag(np.diag(gram))
        assert np.abs(off).max() < 1e-4 * np.diag(gram).max()
    # New key, new features; and a partial last block when d does not divide m.
    assert not np.allclose(w, np.asarray(FEATURES[2]))
    assert att.orthogonal_random_features(jax.random.PRNGKey(4), 20, 8).shape == (20, 8)


def test_performer_error_falls_as_features_grow():
    # Small logits (|q|, |k| ~ 2): the regime where positive features have low variance.
    q, k, v = _qkv(10, shape=(1, 128, 2, H), scale=0.5)
    exact = np.asarray(att.softmax_attention(q, k, v), np.float64)
    full = jnp.stack(FEATURES)  # 4 independent draws

    def err(m):
        run = jax.jit(jax.vmap(lambda w: att.performer_attention(q, k, v, w)))
        outs = run(full[:, :m])
        diff = np.asarray(outs, np.float64) - exact
        return float(np.mean(np.linalg.norm(diff.reshape(4, -1), axis=1)) / np.linalg.norm(exact))

    e16, e128, e1024 = err(16), err(128), err(1024)
    assert e16 > e128 > e1024, (e16, e128, e1024)
    assert e1024 < 0.5 * e16


def _max_intermediate_dims(fn, *args):
    """Largest number of axes of size >= T_big among all intermediates of fn's jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    big = args[0].shape[1]
    worst = 0

    def walk(jx):
        nonlocal worst
        for eqn in jx.eqns:
            for var in eqn.outvars:
                shape = getattr(var.aval, "shape", ())
                worst = max(worst, sum(s >= big for s in shape))
            for sub in jex_core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return worst


@pytest.mark.parametrize("method", ["performer", "local"])
def test_no_t_by_t_array(method):
    # Under jit and grad, no intermediate has two axes as long as the sequence. Only traced
    # (make_jaxpr on shapes), never compiled or run.
    t_big = 1000
    q = k = v = jax.ShapeDtypeStruct((1, t_big, 2, H), jnp.float32)
    mask = jnp.ones((1, t_big), bool)
    fns = {
        "performer": lambda q, k, v: att.performer_attention(q, k, v, PROJ, mask),
        "local": lambda q, k, v: att.local_attention(q, k, v, 16, mask),
    }
    f = fns[method]
    grad = jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)), argnums=(0, 1, 2))
    assert _max_intermediate_dims(f, q, k, v) <= 1
    assert _max_intermediate_dims(grad, q, k, v) <= 1
    # Sanity check of the checker itself: softmax does build a [T, T] array.
    assert _max_intermediate_dims(lambda q, k, v: att.softmax_attention(q, k, v), q, k, v) >= 2


def test_bad_inputs_raise_clear_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="mask has shape"):
        att.softmax_attention(q, k, v, jnp.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="projection must be"):
        att.performer_attention(q, k, v, jnp.ones((8, H + 1)))
    with pytest.raises(ValueError, match="window"):
        att.local_attention(q, k, v, -1)
    with pytest.raises(ValueError, match="batch, length, heads, head_dim"):
        att.local_attention(q[0], k[0], v[0], 3)
