"""The training room.

steps.py        the optimizer (Adam, freezing by a trainable mask), the learning-rate
                schedule, the train state, and the jitted-in-the-loop train/eval steps
config.py       TrainConfig (the loop's defaults), the run's length and its optimizer
loop.py         train(): a flat loop over global steps
checkpoints.py  orbax best/latest checkpoints, load_best for inference, the loop's errors
workdir.py      Workdir: every path of a run's directory, atomic JSON writes
sharding.py     the data-parallel mesh and batch placement
plots.py        the loss/accuracy curves

`train`, `TrainConfig` and `TrainResult` are importable from here; they load the loop (and
JAX) on first use, so `hw3_jax.train.workdir` stays light.
"""

from __future__ import annotations

from typing import Any

_LOOP_NAMES = ("TrainConfig", "TrainResult", "train")


def __getattr__(name: str) -> Any:
    if name in _LOOP_NAMES:
        from hw3_jax.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'hw3_jax.train' has no attribute {name!r}")
