"""The training room (docs/architecture.md lists its modules).

`train`, `TrainConfig` and `TrainResult` are importable from here; they load the loop (and
JAX) on first use, so `hw3_jax.train.workdir` stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "TrainResult", "train"):
        from hw3_jax.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'hw3_jax.train' has no attribute {name!r}")
