"""The one place a sentiment model is built from a config's `model` section.

    bert_cfg = encoder_config(model_cfg, vocab_size, pad_id, max_length)   # scratch encoder
    bert_cfg, bert_params = pretrained_encoder(model_cfg)                  # hub name / dir
    model = sentiment_model(model_cfg, bert_cfg)                           # BertGRUSentiment

`model_cfg` is `configs/sentiment.py`'s `config.model` (a ConfigDict, or the plain dict a
workdir's config.json holds): training, `predict`, the encoder cache and the benchmarks all
build the model here, so one config always gives the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hw3_jax.bert import BertConfig, load_pretrained_bert
from hw3_jax.models import BertGRUSentiment, LinearHead

SCRATCH = "scratch"


def is_pretrained(model_cfg: Mapping[str, Any]) -> bool:
    """Whether the encoder's weights come from a checkpoint (a hub name or a directory)."""
    return model_cfg["encoder"] != SCRATCH


def frozen_encoder(model_cfg: Mapping[str, Any]) -> bool:
    """A scratch encoder is always trained; a pretrained one unless `freeze_encoder` is off."""
    return is_pretrained(model_cfg) and bool(model_cfg["freeze_encoder"])


def compute_dtype(model_cfg: Mapping[str, Any]) -> str:
    """`model_cfg["dtype"]`; None: bfloat16 on TPU/GPU, float32 on CPU (no bfloat16 units)."""
    if model_cfg["dtype"] is not None:
        return str(model_cfg["dtype"])
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def head(model_cfg: Mapping[str, Any]) -> str:
    """`model_cfg["head"]`: "gru" (the notebook) or "linear"."""
    # A config.json without a head field reads as the GRU head (BertGRUSentiment's).
    return str(model_cfg.get("head", BertGRUSentiment.head))


def readout(model_cfg: Mapping[str, Any]) -> str:
    """`model_cfg["readout"]`; None: the head's own, "final" for the GRU head (the
    notebook) and "cls" for the linear head."""
    if model_cfg["readout"] is not None:
        return str(model_cfg["readout"])
    return LinearHead.readout if head(model_cfg) == "linear" else BertGRUSentiment.readout


def _encoder_overrides(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The BertConfig fields a config sets on either kind of encoder (none changes a
    pretrained checkpoint's shapes)."""
    out = dict(attention=model_cfg["attention"], dtype=compute_dtype(model_cfg),
               local_window=model_cfg["local_window"],
               performer_features=model_cfg["performer_features"])
    if model_cfg["encoder_dropout"] is not None:  # None keeps the encoder's own dropout
        out["hidden_dropout_prob"] = model_cfg["encoder_dropout"]
    return out


def encoder_config(model_cfg: Mapping[str, Any], vocab_size: int, pad_id: int,
                   max_length: int) -> BertConfig:
    """The BertConfig of a scratch encoder for a tokenizer of `vocab_size` tokens whose
    padding id is `pad_id`, reading sequences of up to `max_length` tokens. Raises
    ValueError for inconsistent sizes (e.g. hidden_size not divisible by heads)."""
    return BertConfig(
        vocab_size=vocab_size, hidden_size=model_cfg["hidden_size"],
        num_hidden_layers=model_cfg["layers"], num_attention_heads=model_cfg["heads"],
        intermediate_size=model_cfg["intermediate_size"],
        max_position_embeddings=max_length, pad_token_id=pad_id,
        **_encoder_overrides(model_cfg))


def pretrained_encoder(model_cfg: Mapping[str, Any]) -> tuple[BertConfig, dict]:
    """(BertConfig, float32 params) of `model_cfg["encoder"]` (a hub name, downloaded, or a
    local directory with config.json + model.safetensors). Raises ValueError for a checkpoint
    that is not a BERT this encoder computes, OSError for one that cannot be read."""
    return load_pretrained_bert(model_cfg["encoder"], **_encoder_overrides(model_cfg))


def sentiment_model(model_cfg: Mapping[str, Any], bert_cfg: BertConfig) -> BertGRUSentiment:
    """BertGRUSentiment on `bert_cfg` with the head, freezing and dtype of `model_cfg`."""
    parity = bool(model_cfg["notebook_parity"])
    return BertGRUSentiment(
        bert=bert_cfg, hidden_dim=model_cfg["gru_hidden"], n_layers=model_cfg["gru_layers"],
        dropout=model_cfg["dropout"], freeze_encoder=frozen_encoder(model_cfg),
        gru_over_padding=parity, encoder_attention_mask=not parity,
        readout=readout(model_cfg), dtype=jnp.dtype(compute_dtype(model_cfg)),
        head=head(model_cfg))
