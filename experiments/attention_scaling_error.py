"""Q3's second experiment: the Performer's error against exact softmax attention.

For each sampler (orthogonal, i.i.d.) and number of random features, at two logit scales
(q, k ~ N(0, sigma^2)), the relative error of the output and the mean total-variation distance
of the attention rows the Performer implies, beside local attention's at the same window.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.attention_scaling_analysis import HEAD_DIM, HEADS, random_inputs
from hw3_jax import attention as att


def _softmax_rows(q, k):
    """Exact attention rows [N, T, T] of q, k: [T, N, d] (on purpose: analysis only, small T)."""
    return jax.nn.softmax(jnp.einsum("tnh,snh->nts", q, k) / math.sqrt(q.shape[-1]), -1)


def _tv_performer(q, k, w):
    """Mean total-variation distance between Performer's implicit attention rows and softmax's;
    q, k: [T, N, d], w: [m, d]."""
    fq, fk = att.favor_features(q, w), att.favor_features(k, w)  # [T, N, m]
    a_hat = jnp.einsum("tnm,snm->nts", fq, fk)
    a_hat = a_hat / jnp.sum(a_hat, -1, keepdims=True)
    return 0.5 * jnp.mean(jnp.sum(jnp.abs(a_hat - _softmax_rows(q, k)), -1))


def _tv_local(q, k, window):
    """Total-variation distance of local attention's rows: the softmax mass outside the band."""
    pos = jnp.arange(q.shape[0])
    band = jnp.abs(pos[:, None] - pos[None, :]) <= window
    return jnp.mean(jnp.sum(jnp.where(band, 0.0, _softmax_rows(q, k)), -1))


def error_vs_features(config: ml_collections.ConfigDict, bar) -> dict:
    """The measurements of this module's docstring, with the settings of `config.error`."""
    cfg = config.error
    rng = np.random.default_rng(config.seed + 1)
    samplers = {"orthogonal": att.orthogonal_random_features, "iid": att.iid_random_features}
    out = {
        "T": cfg.length,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "draws": cfg.draws,
        "features": list(cfg.features),
        "regimes": [],
    }

    @jax.jit
    def perf_err(q, k, v, w, exact):
        y = att.performer_attention(q, k, v, w)
        return jnp.linalg.norm(y - exact) / jnp.linalg.norm(exact), _tv_performer(q[0], k[0], w)

    for sigma in cfg.sigmas:
        q, k, v = random_inputs(rng, cfg.length, 3)
        q, k = sigma * q, sigma * k
        exact = att.softmax_attention(q, k, v)
        loc = att.local_attention(q, k, v, config.window)
        regime = {
            "sigma": sigma,
            "logit_std": sigma**2,  # q.k / sqrt(d) has variance d sigma^4 / d
            "local_window": config.window,
            "local_rel_error": float(jnp.linalg.norm(loc - exact) / jnp.linalg.norm(exact)),
            "local_tv": float(_tv_local(q[0], k[0], config.window)),
            "rows": [],
        }
        for name, sampler in samplers.items():
            for m in cfg.features:
                bar.set_postfix_str(f"error sigma={sigma} {name} m={m}")
                errs, tvs = [], []
                for i in range(cfg.draws):
                    key = jax.random.PRNGKey(10_000 * (i + 1) + m)
                    e, tv = perf_err(q, k, v, sampler(key, m, HEAD_DIM), exact)
                    errs.append(float(e))
                    tvs.append(float(tv))
                regime["rows"].append(
                    {
                        "sampler": name,
                        "features": m,
                        "rel_error_mean": float(np.mean(errs)),
                        "rel_error_std": float(np.std(errs)),
                        "tv_mean": float(np.mean(tvs)),
                        "tv_std": float(np.std(tvs)),
                    }
                )
                bar.update(1)
        out["regimes"].append(regime)
    return out
