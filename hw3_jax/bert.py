"""A Flax (linen) BERT encoder that loads Hugging Face / PyTorch BERT checkpoints.

The network is BERT as `transformers.BertModel` computes it (post-LayerNorm, exact erf GELU,
absolute learned positions, a tanh pooler over [CLS]), so pretrained weights give the same
outputs as PyTorch. Only the attention core is configurable: exact softmax (the pretrained
model), Performer (FAVOR+) or local windowed attention, all from `hw3_jax.attention`.

Parameter tree (`BertEncoder(config).init(...)["params"]`; shapes for bert-base)::

    embeddings/word_embeddings/embedding        [vocab, hidden]
    embeddings/position_embeddings/embedding    [max_positions, hidden]
    embeddings/token_type_embeddings/embedding  [type_vocab, hidden]
    embeddings/LayerNorm/{scale,bias}           [hidden]
    layer_N/attention/{query,key,value,output}/{kernel [hidden, hidden], bias [hidden]}
    layer_N/attention/LayerNorm/{scale,bias}
    layer_N/intermediate/{kernel [hidden, intermediate], bias}
    layer_N/output/{kernel [intermediate, hidden], bias}
    layer_N/LayerNorm/{scale,bias}
    pooler/{kernel [hidden, hidden], bias}

`hw3_jax.bert_weights.load_pretrained_bert` returns exactly this tree from a Hugging Face
checkpoint; `bert_params_to_torch` there is its inverse (transformers-5 names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hw3_jax import attention as attn

ATTENTION_KINDS = ("softmax", "performer", "local")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters; the defaults are bert-base-uncased.

    Beyond the Hugging Face fields: `attention` picks the attention core ("softmax" is the
    pretrained model's; "performer" uses `performer_features` random features drawn from
    `performer_seed`; "local" lets each token see `local_window` neighbours per side, as
    `hw3_jax.attention.local_attention` defines it), and `dtype` is the compute dtype
    (parameters stay float32; LayerNorms run in float32).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    initializer_range: float = 0.02
    attention: str = "softmax"
    performer_features: int = 256
    performer_seed: int = 0
    local_window: int = 128
    dtype: str = "float32"

    def __post_init__(self):
        positive = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size",
            "performer_features", "local_window",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        seed = self.performer_seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"BertConfig.performer_seed must be an integer >= 0, got {seed!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"BertConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not self.initializer_range > 0:
            raise ValueError(
                f"BertConfig.initializer_range must be > 0, got {self.initializer_range!r}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"BertConfig.pad_token_id must be in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id!r}"
            )
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"BertConfig.attention must be one of {ATTENTION_KINDS}, got {self.attention!r}"
            )
        if self.dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"BertConfig.dtype must be one of {COMPUTE_DTYPES}, got {self.dtype!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (`BertConfig.from_dict` reverses it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BertConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown BertConfig fields: {', '.join(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], **overrides: Any) -> BertConfig:
        """From a Hugging Face BERT `config.json` dict (unrelated keys are ignored).

        HF's `dtype` / `torch_dtype` is the storage dtype of the weights, not a compute choice,
        so it is ignored (weights are loaded as float32); pass `dtype=...` in `overrides`.
        Raises ValueError for BERT variants this encoder does not compute (a non-erf GELU,
        relative positions, decoders).
        """
        model_type = d.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"not a BERT config: model_type={model_type!r} (expected 'bert')")
        act = d.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"unsupported hidden_act={act!r}: this encoder uses exact erf 'gelu'")
        pos = d.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"unsupported position_embedding_type={pos!r}: only 'absolute'")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention BERT configs are not supported")
        names = {f.name for f in dataclasses.fields(cls)} - {"dtype"}
        kwargs = {k: v for k, v in d.items() if k in names and v is not None}
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """The Hugging Face BERT `config.json` of this shape (`from_hf_dict` reads it back);
        the fields beyond Hugging Face's (attention core, dtype) are left out."""
        extra = {"attention", "performer_features", "performer_seed", "local_window", "dtype"}
        fields = {k: v for k, v in self.to_dict().items() if k not in extra}
        return {**fields, "model_type": "bert", "hidden_act": "gelu",
                "position_embedding_type": "absolute"}


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------


def _layer_norm(config: BertConfig, x: jax.Array, name: str) -> jax.Array:
    """LayerNorm computed in float32 (as PyTorch does it: exact two-pass variance)."""
    y = nn.LayerNorm(
        epsilon=config.layer_norm_eps, dtype=jnp.float32, use_fast_variance=False, name=name
    )(x.astype(jnp.float32))
    return y.astype(config.compute_dtype)


def _dense(config: BertConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=config.compute_dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(config.initializer_range),
        name=name,
    )


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, *, deterministic: bool) -> jax.Array:
        c = self.config
        init = nn.initializers.normal(c.initializer_range)

        def word_init(key, shape, dtype=jnp.float32):
            # As HF's _init_weights: the padding row starts at zero.
            return init(key, shape, dtype).at[c.pad_token_id].set(0.0)

        def embed(n, name, init_fn):
            # Looked up in float32: the sum goes straight into a float32 LayerNorm.
            return nn.Embed(n, c.hidden_size, dtype=jnp.float32, embedding_init=init_fn, name=name)

        length = input_ids.shape[1]
        words = embed(c.vocab_size, "word_embeddings", word_init)(input_ids)
        types = embed(c.type_vocab_size, "token_type_embeddings", init)(token_type_ids)
        positions = embed(c.max_position_embeddings, "position_embeddings", init)(
            jnp.arange(length)[None, :]
        )
        x = _layer_norm(c, words + types + positions, "LayerNorm")
        return nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention + output projection + residual + LayerNorm.

    (`BertSelfAttention` + `BertSelfOutput` of transformers.)
    """

    config: BertConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool) -> jax.Array:
        c = self.config
        batch, length, _ = x.shape

        def heads(name):  # [batch, length, hidden] -> [batch, length, heads, head_dim]
            y = _dense(c, c.hidden_size, name)(x)
            return y.reshape(batch, length, c.num_attention_heads, c.head_dim)

        q, k, v = heads("query"), heads("key"), heads("value")
        if c.attention == "softmax":
            ctx = attn.softmax_attention(q, k, v, mask)
        elif c.attention == "local":
            ctx = attn.local_attention(q, k, v, c.local_window, mask)
        else:  # performer
            # The random projection is a function of (performer_seed, layer index), not a
            # variable: apply stays deterministic, checkpoints hold only "params", and the
            # same config always rebuilds the same features (one draw per layer, shared by
            # the heads; no redrawing during training). Drawn when tracing, it enters the
            # program as a constant: no QR per step, and no jaxlib CPU QR kernels running side
            # by side, which deadlock its thread pool (a hang from 4 layers on 2 cores).
            with jax.ensure_compile_time_eval():
                key = jax.random.fold_in(jax.random.PRNGKey(c.performer_seed), self.layer_index)
                projection = attn.orthogonal_random_features(key, c.performer_features, c.head_dim)
            ctx = attn.performer_attention(q, k, v, jax.lax.stop_gradient(projection), mask)
        ctx = ctx.reshape(batch, length, c.hidden_size)
        # Deviation from PyTorch BERT: it drops attention *probabilities*; the attention
        # functions never materialise them (Performer and fused kernels cannot), so the same
        # rate is applied to the attention output (the per-head context vectors) instead.
        # Identical in deterministic mode, a comparable regulariser in training.
        ctx = nn.Dropout(c.attention_probs_dropout_prob)(ctx, deterministic=deterministic)
        y = _dense(c, c.hidden_size, "output")(ctx)
        y = nn.Dropout(c.hidden_dropout_prob)(y, deterministic=deterministic)
        return _layer_norm(c, y + x, "LayerNorm")


class BertLayer(nn.Module):
    config: BertConfig
    layer_index: int = 0

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool) -> jax.Array:
        c = self.config
        x = BertSelfAttention(c, self.layer_index, name="attention")(
            x, mask, deterministic=deterministic
        )
        h = nn.gelu(_dense(c, c.intermediate_size, "intermediate")(x), approximate=False)
        y = _dense(c, c.hidden_size, "output")(h)
        y = nn.Dropout(c.hidden_dropout_prob)(y, deterministic=deterministic)
        return _layer_norm(c, y + x, "LayerNorm")


class BertEncoder(nn.Module):
    """BERT: embeddings, `num_hidden_layers` transformer layers, tanh pooler over [CLS].

    __call__(input_ids [batch, length] int, attention_mask [batch, length] (bool or int,
    nonzero = real token; None = all real), token_type_ids [batch, length] | None (zeros),
    *, deterministic=True) -> (sequence_output [batch, length, hidden],
    pooled_output [batch, hidden]), both in `config.dtype`.
    Dropout needs an rng named "dropout" when deterministic=False.
    Outputs at padded positions are computed too (they attend to the real tokens) but never
    influence the real positions.
    """

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
                 deterministic: bool = True):  # fmt: skip
        c = self.config
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
        if input_ids.shape[1] > c.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{c.max_position_embeddings}; truncate the inputs"
            )
        if attention_mask is None:
            mask = jnp.ones(input_ids.shape, dtype=bool)
        else:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {attention_mask.shape} != input_ids shape "
                    f"{input_ids.shape}"
                )
            mask = jnp.asarray(attention_mask) != 0
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)

        x = BertEmbeddings(c, name="embeddings")(
            input_ids, token_type_ids, deterministic=deterministic
        )
        for i in range(c.num_hidden_layers):
            x = BertLayer(c, i, name=f"layer_{i}")(x, mask, deterministic=deterministic)
        pooled = jnp.tanh(_dense(c, c.hidden_size, "pooler")(x[:, 0]))
        return x, pooled


def init_bert_params(config: BertConfig, rng: jax.Array) -> dict:
    """Freshly initialised (BERT-style, N(0, initializer_range)) encoder params."""
    ids = jnp.zeros((1, 1), jnp.int32)
    init = jax.jit(lambda r: BertEncoder(config).init(r, ids, jnp.ones((1, 1), jnp.int32)))
    return init(rng)["params"]


# The checkpoint conversion lives in hw3_jax.bert_weights (which imports this module); its
# public names stay reachable here, resolved on first use so either module can load first.
_WEIGHT_NAMES = frozenset({
    "bert_param_shapes", "bert_params_from_torch", "bert_params_to_torch",
    "load_pretrained_bert", "read_safetensors", "torch_name",
})  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WEIGHT_NAMES:
        from hw3_jax import bert_weights

        return getattr(bert_weights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
