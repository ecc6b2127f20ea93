"""TrainConfig: every setting of the training loop, its defaults defined here once, and
what follows from it alone: the run's length in steps and its optimizer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optax

from hw3_jax.train.steps import LOSSES, learning_rate_schedule, make_optimizer
from hw3_jax.train.workdir import json_safe


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything the loop needs besides the model, its parameters, the data and the workdir."""

    epochs: int = 1
    learning_rate: float = 1e-3  # PyTorch's Adam default, as the notebook
    # The encoder's ("bert" subtree's) own rate, e.g. 2e-5..5e-5 to fine-tune a pretrained
    # BERT (Sun et al. 2019); None: learning_rate, one group for every parameter.
    encoder_learning_rate: float | None = None
    optimizer: str = "adam"  # "adam" (the notebook) | "adamw" (decoupled weight decay)
    weight_decay: float = 0.01  # adamw only; never on biases and LayerNorm parameters
    # "constant" (the notebook); "cosine" and "linear" (BERT's fine-tuning) decay to 0 by
    # the run's last step. All start with a linear warmup from 0 over `warmup_steps` (0:
    # none); with encoder_learning_rate each group follows the schedule to its own peak.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    seed: int = 0  # dropout keys; the data object has its own seed for the order
    resume: bool = False  # continue from WORKDIR/checkpoints/latest if present
    overwrite: bool = False  # delete existing checkpoints instead of refusing to start
    loss: str = "binary"  # "binary": logits [B], sigmoid BCE; "multiclass": [B, C], CE
    input_keys: tuple[str, ...] = ("input_ids", "attention_mask")
    val_split: str | None = "validation"  # None: every epoch counts as the best so far
    test_split: str | None = "test"  # None: no test evaluation
    checkpoint_every_steps: int | None = 500  # latest also saved at epoch ends, last step
    keep_latest: int = 2
    max_steps: int | None = None  # total training steps (smoke runs); may end mid-epoch
    log_every_steps: int = 50  # progress-bar loss update and non-finite check
    progress: bool = True  # tqdm bars (stderr)
    verbose: bool = True  # one summary line per epoch (stdout)
    fail_on_nonfinite: bool = True  # else non-finite steps are skipped and counted
    num_devices: int | None = None  # None: all devices
    plot: bool = True  # write WORKDIR/curves.png

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        # Written so that NaN fails too; an infinite rate makes the first step's loss NaN.
        if not 0 < self.learning_rate < math.inf:
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if self.encoder_learning_rate is not None and not 0 < self.encoder_learning_rate < math.inf:
            raise ValueError("encoder_learning_rate must be finite and > 0 (or None: "
                             f"learning_rate), got {self.encoder_learning_rate}")
        # Checks the optimizer name (the optimizer's own check).
        make_optimizer(self.learning_rate, optimizer=self.optimizer, weight_decay=0.0)
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        # Counts; 0 means none (every_steps: never). keep_latest 0 would keep no checkpoint.
        for name, least in (("warmup_steps", 0), ("max_steps", 0), ("log_every_steps", 0),
                            ("checkpoint_every_steps", 0), ("keep_latest", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        # Checks the schedule name (a cosine schedule's length is known only with the data).
        learning_rate_schedule(self.learning_rate, self.lr_schedule, self.warmup_steps, 1)

    def to_dict(self) -> dict:
        return json_safe(dataclasses.asdict(self))


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run's training steps: epochs * steps_per_epoch, or max_steps if smaller."""
    total = steps_per_epoch * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def optimizer_of(config: TrainConfig, num_steps: int, trainable_mask: Any = None
                 ) -> optax.GradientTransformation:
    """`steps.make_optimizer` as `config` describes it, for a run of `num_steps` steps: each
    group's learning rate follows `config.lr_schedule` to its own peak."""

    def schedule(peak: float):
        return learning_rate_schedule(peak, config.lr_schedule, config.warmup_steps,
                                      num_steps)

    encoder_lr = config.encoder_learning_rate
    return make_optimizer(
        schedule(config.learning_rate), trainable_mask, optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        encoder_learning_rate=None if encoder_lr is None else schedule(encoder_lr))
