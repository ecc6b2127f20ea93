"""The notebook's sentiment classifier: BERT -> bidirectional GRU -> dropout -> 1 logit.

`BertGRUSentiment` is the original PyTorch model parameter for parameter (bert-base-uncased +
`nn.GRU(768, 256, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25)` +
`nn.Dropout(0.25)` + `nn.Linear(512, 1)`): 112,241,409 parameters, 2,759,169 of them
trainable with the encoder frozen.

Freezing happens in two places, for two reasons:
- in the model (`freeze_encoder=True`): the encoder's output goes through
  `jax.lax.stop_gradient`, as the notebook ran BERT under `torch.no_grad()`, so no backward
  pass through BERT is computed at all (a saving of compute, not an optimizer setting);
- in the optimizer (`hw3_jax.train.steps.make_optimizer(lr, trainable_mask(params), ...)`,
  the one optimizer-side mechanism): frozen leaves go to `optax.set_to_zero()`, so they get no
  update and Adam stores no moments for them.

Params tree: {"bert": BertEncoder params (exactly what `load_pretrained_bert` returns),
"gru": `hw3_jax.gru.GRU` params ("l0", "l0_reverse", "l1", "l1_reverse"),
"out": {"kernel" [D*hidden_dim, 1], "bias" [1]}}.

Beside the notebook's GRU head, `head="linear"` puts `LinearHead` (pooled encoder output ->
dropout -> Dense(1), the usual head for fine-tuning BERT) on the encoder: {"bert", "out"}.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hw3_jax.bert import BertConfig, BertEncoder
from hw3_jax.gru import GRU

ENCODER_KEY = "bert"
HEADS = ("gru", "linear")
# What each head reads: the GRU's final states or concat pooling; the encoder's [CLS]
# vector or its mean over the real tokens.
HEAD_READOUTS = {"gru": ("final", "concat"), "linear": ("cls", "mean")}
READOUTS = tuple(r for rs in HEAD_READOUTS.values() for r in rs)


def _check_readout(head: str, readout: str) -> None:
    if readout not in HEAD_READOUTS[head]:
        raise ValueError(f"the {head} head's readout must be one of {HEAD_READOUTS[head]}, "
                         f"got {readout!r}")


def _masked_mean(x: jax.Array, real: jax.Array) -> jax.Array:
    """Mean of `x` [B, L, F] over the positions where `real` [B, L, 1] is True -> [B, F]
    (a row without any is 0, not NaN)."""
    return jnp.where(real, x, 0.0).sum(axis=1) / jnp.maximum(real.sum(axis=1), 1)


class GRUHead(nn.Module):
    """The classifier on top of the encoder: GRU -> [last layer's fwd; bwd final states] ->
    dropout -> Dense(1).

    `__call__(features [B, L, F] (any float dtype; the GRU computes in `dtype`),
    attention_mask [B, L] (1 = real token), *, deterministic=True) -> logits [B] float32`.
    Params: {"gru": `hw3_jax.gru.GRU` params, "out": {"kernel", "bias"}}, the names
    `BertGRUSentiment` has beside "bert": it runs this module in its own scope, so a head
    trained alone on cached encoder outputs (`experiments.sentiment --cache-encoder`) is
    `BertGRUSentiment`'s params minus "bert", and the same rng gives the same dropout masks.

    `readout`: "final" (the notebook) reads the last layer's final states only; "concat"
    reads [final states; max; mean] of the last layer's outputs over the real tokens
    (ULMFiT's concat pooling, Howard & Ruder 2018), so every position gets a direct
    gradient: easier to train from scratch on long reviews. "out" then takes 3x the inputs.
    """

    hidden_dim: int = 256
    n_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.25
    gru_over_padding: bool = False
    dtype: Any = jnp.float32
    readout: str = "final"

    @nn.compact
    def __call__(self, features, attention_mask, *, deterministic: bool = True) -> jax.Array:
        _check_readout("gru", self.readout)
        attention_mask = jnp.asarray(attention_mask)
        lengths = jnp.sum(attention_mask != 0, axis=-1)  # [B]
        outputs, hidden = GRU(
            self.hidden_dim,
            num_layers=self.n_layers,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            over_padding=self.gru_over_padding,
            dtype=self.dtype,
            name="gru",
        )(features, lengths, deterministic=deterministic)  # [n_layers * D, B, hidden_dim]
        if self.bidirectional:
            hidden = jnp.concatenate([hidden[-2], hidden[-1]], axis=-1)  # [B, 2 * hidden_dim]
        else:
            hidden = hidden[-1]
        if self.readout == "concat":
            real = (attention_mask != 0)[..., None]  # [B, L, 1]
            out32 = outputs.astype(jnp.float32)  # [B, L, D * hidden_dim]
            # GRU outputs lie in [-1, 1]: filling with -1 keeps every max exact and a row
            # without real tokens finite (-1; its mean is 0).
            pooled_max = jnp.max(jnp.where(real, out32, -1.0), axis=1)
            pooled_mean = _masked_mean(out32, real)
            hidden = jnp.concatenate(
                [hidden.astype(jnp.float32), pooled_max, pooled_mean], axis=-1
            ).astype(hidden.dtype)  # [B, 3 * D * hidden_dim]
        hidden = nn.Dropout(self.dropout)(hidden, deterministic=deterministic)
        # nn.Linear's init, U(+-1/sqrt(fan_in)) for kernel and bias, as the notebook's head had.
        bound = 1.0 / np.sqrt(hidden.shape[-1])
        logits = nn.Dense(
            1,
            dtype=self.dtype,
            kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
            bias_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(
                key, shape, dtype, -bound, bound
            ),
            name="out",
        )(hidden)  # [B, 1]
        return logits[:, 0].astype(jnp.float32)


class LinearHead(nn.Module):
    """A light classifier on top of the encoder: pooled features -> dropout -> Dense(1), as
    BERT's fine-tuning for classification (Devlin et al. 2019; Sun et al. 2019).

    `__call__(features [B, L, F], attention_mask [B, L] (1 = real token), *,
    deterministic=True) -> logits [B] float32`. Params: {"out": {"kernel" [F, 1], "bias"
    [1]}}, a sibling of `GRUHead` with the same call.

    `readout`: "cls" reads the first position's vector (the [CLS] token's final hidden
    state, without BERT's pooler, so the head sees only the sequence output); "mean" averages
    the real tokens' vectors (padding never counts), the pooling sentence-transformers
    models such as all-MiniLM-L6-v2 were trained with.
    """

    dropout: float = 0.1  # BERT's classifier dropout
    dtype: Any = jnp.float32
    readout: str = "cls"

    @nn.compact
    def __call__(self, features, attention_mask, *, deterministic: bool = True) -> jax.Array:
        _check_readout("linear", self.readout)
        x = features.astype(jnp.float32)  # [B, L, F]; pooled in float32
        if self.readout == "cls":
            pooled = x[:, 0]  # [B, F]
        else:
            pooled = _masked_mean(x, (jnp.asarray(attention_mask) != 0)[..., None])  # [B, F]
        pooled = nn.Dropout(self.dropout)(pooled, deterministic=deterministic)
        # BERT's classifier init: N(0, 0.02) kernel, zero bias.
        logits = nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.normal(0.02),
                          name="out")(pooled.astype(self.dtype))  # [B, 1]
        return logits[:, 0].astype(jnp.float32)


class BertGRUSentiment(nn.Module):
    """BERT encoder -> GRU -> [last layer's fwd; bwd final states] -> dropout -> Dense(1).

    `__call__(input_ids [B, L] int, attention_mask [B, L] (1 = real token), *,
    deterministic=True) -> logits [B] float32`. Dropout (BERT's, the GRU's between layers,
    the head's) needs an rng named "dropout" when `deterministic=False`; with
    `freeze_encoder=True` BERT's dropout is still active in training, as in the notebook
    (`model.train()` put BERT in training mode although its gradients were off).

    Sequence lengths are `attention_mask.sum(-1)`: the GRU sees only the real tokens of
    each sequence (padding never reaches either direction's final state), so the logits do
    not depend on how much padding a batch carries. Two switches reproduce the notebook
    exactly instead: `gru_over_padding=True` (its GRU ran over the padded tensor) and
    `encoder_attention_mask=False` (it called `self.bert(text)` without an attention mask).
    `readout="concat"` pools the GRU's outputs too (see `GRUHead`).

    `head="linear"` replaces the GRU head by `LinearHead` (`readout` "cls" or "mean",
    `dropout` before its output layer; `hidden_dim`, `n_layers`, `bidirectional` and
    `gru_over_padding` unused): params {"bert", "out"}, the light head for fine-tuning.
    """

    bert: BertConfig = BertConfig()
    hidden_dim: int = 256
    n_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.25
    gru_over_padding: bool = False
    freeze_encoder: bool = True
    encoder_attention_mask: bool = True
    dtype: Any = jnp.float32
    readout: str = "final"
    head: str = "gru"

    @nn.nowrap
    def gru_head(self) -> GRUHead:
        """This model's GRU head, also applied on its own to stored encoder outputs
        (`data.encoder_cache`): `head.apply({"params": split_params(params)[1]}, features
        [B, L, hidden], attention_mask [B, L])`. The one place the head's fields are passed,
        so a head-only checkpoint always fits the full model."""
        return GRUHead(self.hidden_dim, self.n_layers, self.bidirectional, self.dropout,
                       self.gru_over_padding, self.dtype, self.readout)

    @nn.compact
    def __call__(self, input_ids, attention_mask, *, deterministic: bool = True) -> jax.Array:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        attention_mask = jnp.asarray(attention_mask)
        embedded, _ = BertEncoder(self.bert, name=ENCODER_KEY)(
            input_ids,
            attention_mask if self.encoder_attention_mask else None,
            deterministic=deterministic,
        )  # [B, L, bert.hidden_size]
        if self.freeze_encoder:
            # No backward pass through BERT (compute saved); the optimizer's trainable mask
            # (train.steps.make_optimizer) is what keeps frozen weights and their moments out.
            embedded = jax.lax.stop_gradient(embedded)
        # The head lives in this module's own scope, so the tree stays {"bert", "gru", "out"}
        # ({"bert", "out"} for the linear head).
        if self.head == "linear":
            head = LinearHead(self.dropout, self.dtype, self.readout)
        else:
            head = self.gru_head()
        nn.share_scope(self, head)
        return head(embedded, attention_mask, deterministic=deterministic)


def _dummy_batch(batch_shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros(batch_shape, jnp.int32), jnp.ones(batch_shape, jnp.int32)


def init_params(model: nn.Module, rng: jax.Array, batch_shape: Sequence[int] = (1, 8)) -> dict:
    """Freshly initialised params of a model taking (input_ids, attention_mask).

    Jitted: one compiled program instead of hundreds of op-by-op dispatches, compiled once
    per (model, batch_shape) in a process."""
    batch_shape = tuple(batch_shape)
    try:
        fn = _init_fn(model, batch_shape)
    except TypeError:  # an unhashable module: no caching
        fn = _init_fn.__wrapped__(model, batch_shape)
    return fn(rng)


@functools.lru_cache(maxsize=16)
def _init_fn(model: nn.Module, batch_shape: tuple[int, ...]):
    return jax.jit(lambda r: model.init({"params": r}, *_dummy_batch(batch_shape))["params"])


def param_shapes(model: nn.Module, batch_shape: Sequence[int] = (1, 8)) -> dict:
    """The params tree as `jax.ShapeDtypeStruct`s, via `jax.eval_shape` (nothing allocated)."""
    batch_shape = tuple(batch_shape)
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), *_dummy_batch(batch_shape))["params"]
    )


def count_params(tree: Any, mask: Any = None) -> int:
    """Elements over a tree's array leaves (arrays, NumPy arrays or `jax.ShapeDtypeStruct`s
    from `jax.eval_shape`); with `mask` (a pytree of bools shaped like `tree`), only the
    leaves whose entry is True. Leaves without a shape count 0."""
    leaves = jax.tree.leaves(tree)
    keep = [True] * len(leaves) if mask is None else jax.tree.leaves(mask)
    return sum(int(np.prod(leaf.shape)) for leaf, m in zip(leaves, keep, strict=True)
               if m and hasattr(leaf, "shape"))


WORD_EMBEDDINGS = (ENCODER_KEY, "embeddings", "word_embeddings", "embedding")


def trainable_mask(params: Mapping, freeze_encoder: bool = True,
                   freeze_word_embeddings: bool = False) -> Any:
    """A pytree of bools shaped like `params`: True = trained; False for every leaf under
    "bert" when `freeze_encoder`, and for the word embedding table when
    `freeze_word_embeddings` (e.g. word vectors learnt on unlabelled text, kept fixed so
    that a small training set cannot overfit them)."""

    def trained(path, _):
        keys = tuple(getattr(k, "key", None) for k in path)
        if freeze_word_embeddings and keys == WORD_EMBEDDINGS:
            return False
        return not (freeze_encoder and keys[0] == ENCODER_KEY)

    return jax.tree_util.tree_map_with_path(trained, params)


def tree_signature(tree: Any, dtypes: bool = True) -> dict[str, str]:
    """{'a/b/kernel': 'float32[768,256]', ...} ('[768,256]' without `dtypes`): what must match
    for one tree to take another's place. Leaves: arrays, ShapeDtypeStructs or orbax's saved
    array metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dims = ",".join(str(int(d)) for d in leaf.shape)
        dtype = np.dtype(leaf.dtype).name if dtypes else ""
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = f"{dtype}[{dims}]"
    return out


def signature_diff(a: Mapping[str, str], b: Mapping[str, str], names: tuple[str, str],
                   limit: int) -> list[str]:
    """The differences between tree signatures `a` and `b`, called `names` in the text: at
    most `limit`, then a count of the rest."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x == y:
            continue
        if y is None:
            diffs.append(f"{k} is in the {names[0]} only ({x})")
        elif x is None:
            diffs.append(f"{k} is in the {names[1]} only ({y})")
        else:
            diffs.append(f"{k}: {names[0]} {x}, {names[1]} {y}")
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"... and {len(diffs) - limit} more"]
    return diffs


def with_pretrained_encoder(params: Mapping, bert_params: Mapping) -> dict:
    """`params` with its "bert" subtree replaced by `bert_params` (e.g. from
    `load_pretrained_bert`). Raises ValueError listing the leaves whose path or shape differs,
    i.e. when the model's BertConfig does not match the checkpoint's."""
    problems = signature_diff(tree_signature(bert_params, dtypes=False),
                              tree_signature(params[ENCODER_KEY], dtypes=False),
                              ("pretrained encoder", "model"), limit=12)
    if problems:
        raise ValueError(
            "pretrained encoder params do not fit the model's BERT (build the model with the "
            f"config load_pretrained_bert returned): {'; '.join(problems)}"
        )
    out = dict(params)
    out[ENCODER_KEY] = bert_params
    return out


def split_params(params: Mapping) -> tuple[Any, dict]:
    """BertGRUSentiment params -> (encoder params, head params {"gru", "out"})."""
    return params[ENCODER_KEY], {k: v for k, v in params.items() if k != ENCODER_KEY}


def join_params(head_params: Mapping, encoder_params: Any) -> dict:
    """The inverse of `split_params`: a full BertGRUSentiment params tree."""
    return {ENCODER_KEY: encoder_params, **head_params}
