"""The notebook's model (frozen BERT encoder, 2x256 BiGRU head) at the benchmarks' sizes.

This project's is built by `hw3_jax.factory.sentiment_model` from
`configs/sentiment.py:notebook`'s model section (float32, as PyTorch computes, or bfloat16);
the PyTorch one (`benchmarks.torch_peer`) is the notebook's class with the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from benchmarks.inputs import make_batch
from configs.sentiment import get_config
from hw3_jax import timing
from hw3_jax.bert import BertConfig
from hw3_jax.factory import sentiment_model
from hw3_jax.models import BertGRUSentiment, init_params

SIZES = {
    # sentence-transformers/all-MiniLM-L6-v2's shape
    "small": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                  intermediate_size=1536),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                      intermediate_size=3072),
    # --quick only
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                 intermediate_size=128, vocab_size=1000, max_position_embeddings=128),
}


def notebook_model(bert: BertConfig, dtype: str = "float32") -> BertGRUSentiment:
    """The notebook recipe's model (frozen encoder, BiGRU 2x256 head) on encoder `bert`,
    computing in `dtype` (parameters float32)."""
    model_cfg = get_config("notebook").model
    model_cfg.dtype = dtype
    return sentiment_model(model_cfg, bert)


def random_case(size: str, batch: int, length: int
                ) -> tuple[BertGRUSentiment, Any, dict[str, np.ndarray]]:
    """(encoder `size`'s notebook model in float32 (its config: `model.bert`), random
    parameters (key 0: they cost the same as trained ones), `make_batch(batch, length, ...)`)."""
    model = notebook_model(BertConfig(**SIZES[size]))
    params = init_params(model, jax.random.key(0))
    return model, params, make_batch(batch, length, model.bert.vocab_size)


def gemm_shape(cfg: BertConfig, batch_size: int, length: int) -> tuple[int, int, int]:
    """The encoder's feed-forward GEMM, (B * L, hidden, intermediate)."""
    return batch_size * length, cfg.hidden_size, cfg.intermediate_size


def component_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """{name: median seconds} of the parts timed alone, as both frameworks time them."""
    timed = timing.time_interleaved(fns, warmup=1, repeats=max(2, repeats - 2))
    return {k: v["median_s"] for k, v in timed.items()}


def component_inputs(cfg: BertConfig, batch: dict) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Both frameworks' inputs of the parts timed alone: the GRU's [B, L, hidden] float32
    input (any activations cost the same) and the `gemm_shape`."""
    b, length = batch["input_ids"].shape
    x = np.random.default_rng(3).standard_normal((b, length, cfg.hidden_size))
    return x.astype(np.float32), gemm_shape(cfg, b, length)
