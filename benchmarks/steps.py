"""The timed callables of this project: a training step of the notebook recipe and its parts
alone (the encoder's forward, the GRU's forward + backward). Each call returns once its work
is done. PyTorch's are in `benchmarks.torch_peer`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hw3_jax import timing
from hw3_jax.bert import BertConfig, BertEncoder
from hw3_jax.data import encoder_cache
from hw3_jax.gru import GRU
from hw3_jax.models import BertGRUSentiment, split_params, trainable_mask
from hw3_jax.train.config import TrainConfig, optimizer_of
from hw3_jax.train.sharding import data_parallel, prepare_batch
from hw3_jax.train.steps import create_train_state, init_metrics, jit_train_step


class JaxStep:
    """The training loop's own step (`hw3_jax.train.steps`) on a fixed device batch;
    `__call__` runs one step.

    `mask`: the trainable mask (None: all trainable); `input_keys`: the batch entries
    passed to the model (TrainConfig.input_keys)."""

    def __init__(self, model: Any, params: Any, batch: dict, *, mask: Any = None,
                 input_keys: tuple[str, ...] = TrainConfig.input_keys):
        self.hlo_text = ""
        dp = data_parallel()
        config = TrainConfig()
        # The loop's default optimizer (the notebook's Adam, constant rate); a run's length
        # matters only to decaying schedules, so one step stands for any.
        tx = optimizer_of(config, 1, mask)
        step = jit_train_step(dp, model=model, tx=tx, loss=config.loss,
                              input_keys=input_keys, seed=config.seed)
        # Jitted once more so that it can be compiled ahead of time for XLA's cost analysis
        # and HLO; the inner jit is inlined, so the program is the loop's own.
        self.step = jax.jit(step, donate_argnums=(0, 1))
        self._run = self.step
        self.state = create_train_state(params, tx, dp)
        self.acc = init_metrics(dp)
        # The loop transfers each batch one step ahead: the step itself sees device arrays.
        self.batch = prepare_batch(batch, dp, input_keys)

    def compile(self) -> dict:
        """Compile; return the compile time and XLA's cost analysis of the step."""
        compiled, info = timing.compile_timed(self.step, self.state, self.acc, self.batch)
        # Run this executable from now on (calling the jit function would compile again).
        self._run = compiled
        self.hlo_text = compiled.as_text()
        return info

    def __call__(self) -> None:
        self.state, self.acc = self._run(self.state, self.acc, self.batch)
        jax.block_until_ready(self.acc)


def notebook_step(model: BertGRUSentiment, params: Any, batch: dict) -> JaxStep:
    """The notebook recipe's step: encoder frozen (no gradient, no Adam state)."""
    return JaxStep(model, params, batch, mask=trainable_mask(params, freeze_encoder=True))


def cached_head_step(model: BertGRUSentiment, params: Any, batch: dict) -> JaxStep:
    """The encoder-cache recipe's step: the GRU head alone on stored float16 encoder
    outputs (random here: they cost the same)."""
    _, head_params = split_params(params)
    b, length = batch["input_ids"].shape
    features = np.random.default_rng(4).standard_normal(
        (b, length, model.bert.hidden_size)).astype(np.float16)
    hb = {"features": features, **{k: batch[k] for k in ("attention_mask", "label", "weight")}}
    return JaxStep(model.gru_head(), head_params, hb,
                   input_keys=tuple(encoder_cache.INPUT_KEYS))


def jax_encoder_forward(cfg: BertConfig, bert_params: Any, batch: dict, *,
                        deterministic: bool = False):
    """The frozen encoder's forward alone (train mode, dropout on, unless
    `deterministic`), jitted."""
    enc = BertEncoder(cfg)
    f = jax.jit(lambda p, ids, m, key: enc.apply(
        {"params": p}, ids, m, deterministic=deterministic, rngs={"dropout": key})[0])
    ids, m = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    key = jax.random.key(1)
    return timing.blocking(f, bert_params, ids, m, key)


def jax_gru_forward_backward(model: BertGRUSentiment, gru_params: Any, x: np.ndarray,
                             lengths: np.ndarray):
    """The GRU of `model`'s head (the notebook's 2x256 BiGRU) alone, forward + backward
    (gradient of the final states' sum)."""
    gru = GRU(model.hidden_dim, num_layers=model.n_layers, bidirectional=model.bidirectional,
              dropout=model.dropout)

    def loss(p, x, lengths, key):
        _, h = gru.apply({"params": p}, x, lengths, deterministic=False, rngs={"dropout": key})
        return h.sum()

    g = jax.jit(jax.grad(loss))
    x, lengths = jnp.asarray(x), jnp.asarray(lengths)
    key = jax.random.key(2)
    return timing.blocking(g, gru_params, x, lengths, key)
