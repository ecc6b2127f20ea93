r"""Q3: time, memory and accuracy of exact softmax attention against O(T) attention.

    python -m experiments.attention_scaling
    # = --config configs/attention_scaling.py (results/attention_scaling.json; 2-core Intel
    # Xeon with AMX-BF16, 5 min): T = 256 .. 32768: the Performer's forward at T = 8192 takes
    # 0.025x the time of exact softmax's and 0.0023x its compiled temporary memory; both O(T)
    # methods run forward + backward at T = 32768; softmax is skipped from T = 16384 (its
    # compiled buffers, 16.1 GiB forward, exceed the 13.7 GiB memory budget).

    python -m experiments.attention_scaling --quick
    # = --config configs/attention_scaling.py:quick: T = 256 .. 1024, few features and
    # repetitions (a smoke run: it writes to runs/attention_scaling_quick/, which git
    # ignores, so results/ keeps the recorded run).

Shapes: batch 1, 8 heads, head_dim 64, float32 (fixed by the experiment).
"""

from __future__ import annotations

import ml_collections

from configs import apply_variant

# The variants as their differences from the default (dotted field -> value).
VARIANTS = {"quick": {"max_t": 1024, "reps": 2, "growth_rounds": 1, "error.features": (16, 64),
                      "error.length": 128, "error.draws": 2,
                      "out": "runs/attention_scaling_quick"}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The Q3 experiment's settings; `arg`: None or "quick"."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Scaling with T: lengths double from min_t to max_t.
    config.min_t = 256
    config.max_t = 32768
    config.features = 256  # Performer random features (orthogonal) of the timing runs
    config.window = 128  # local attention's one-sided window
    config.reps = 5  # timed calls per point after one warm-up
    config.point_budget_s = 30.0  # timed seconds per point: slow points get fewer reps (>= 1)
    config.max_call_s = 60.0  # skip a point whose one call is predicted to take longer
    # Skip a point whose compiled buffers exceed this; None: memory_fraction of the memory
    # free at start: on a GPU/TPU its allocator's bytes_limit - bytes_in_use, on a CPU the
    # host's MemAvailable (the rest is headroom for the run's other arrays).
    config.max_memory_gib = ml_collections.config_dict.placeholder(float)
    config.memory_fraction = 0.6
    # Interleaved rounds behind the growth-per-doubling and the unchunked-baseline ratios.
    config.growth_rounds = 3

    # The Performer's error against exact attention.
    config.error = ml_collections.ConfigDict()
    config.error.features = (16, 32, 64, 128, 256, 512, 1024)
    config.error.length = 1024
    config.error.sigmas = (0.5, 1.0)  # q, k ~ N(0, sigma^2): two logit scales
    config.error.draws = 3  # random feature draws per point

    config.out = "results"  # attention_scaling.json and three PNG plots go here
    return apply_variant(config, arg, VARIANTS)
