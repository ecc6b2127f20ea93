"""Fine-tuning a pretrained encoder: AdamW, a learning rate per parameter group, the linear
schedule, the linear head, and a run through the real loop that is killed mid-epoch and
resumed.

The optimizer tests take one step from zero moments with known gradients: Adam's first
update is -lr * g / (|g| + eps), i.e. -lr * sign(g), so each group's update shows its own
learning rate directly.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from test_sentiment import (
    ROOT,
    assert_same_run,
    config_of,
    inject,
    interrupt,
    metrics_of,
    run_main,
)

from configs.sentiment import get_config
from experiments import sentiment_train
from experiments.cli import UserError
from experiments.sentiment import build_config
from hw3_jax import factory
from hw3_jax.bert import BertConfig
from hw3_jax.models import BertGRUSentiment, count_params, init_params, trainable_mask
from hw3_jax.train import loop as L
from hw3_jax.train import steps as S

TINY = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16)
LENGTHS = np.array([10, 4, 1])


def linear_model(readout: str = "cls", **kw) -> BertGRUSentiment:
    return BertGRUSentiment(bert=TINY, head="linear", readout=readout, **kw)


def batch(length: int = 12, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids [3, length], mask [3, length]): the same real tokens for every padding."""
    ids = np.random.default_rng(0).integers(1, TINY.vocab_size, (len(LENGTHS), 16))
    ids = ids[:, :length].astype(np.int32)
    mask = (np.arange(length)[None, :] < LENGTHS[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, pad_id).astype(np.int32), mask


def tiny_params(model: BertGRUSentiment | None = None) -> dict:
    return init_params(model or linear_model(), jax.random.key(0), (2, 8))


def moment_elements(state) -> int:
    """Elements of an optimizer state's arrays, its scalar step counts left out."""
    return sum(int(np.size(x)) for x in jax.tree.leaves(state) if np.ndim(x) > 0)


# --------------------------------------------------------------------------- the optimizer


def test_each_group_steps_at_its_own_learning_rate():
    params = tiny_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    tx = S.make_optimizer(1e-3, optimizer="adamw", weight_decay=0.0,
                          encoder_learning_rate=1e-5)
    updates, _ = tx.update(grads, tx.init(params), params)
    for leaf in jax.tree.leaves(updates["bert"]):
        np.testing.assert_allclose(leaf, -1e-5, rtol=1e-4)
    for leaf in jax.tree.leaves(updates["out"]):
        np.testing.assert_allclose(leaf, -1e-3, rtol=1e-4)
    groups = S.param_groups(params)
    assert set(jax.tree.leaves(groups["bert"])) == {"encoder"}
    assert set(jax.tree.leaves(groups["out"])) == {"head"}


def test_weight_decay_spares_biases_and_layernorm():
    """Zero gradients: the update is the decay alone, -lr * wd * p, on matrices only."""
    params = tiny_params()
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = S.make_optimizer(0.5, optimizer="adamw", weight_decay=0.1, encoder_learning_rate=0.2)
    updates, _ = tx.update(zeros, tx.init(params), params)
    decayed, spared = 0, 0
    for (path, u), p in zip(jax.tree_util.tree_leaves_with_path(updates),
                            jax.tree.leaves(params), strict=True):
        name = path[-1].key
        lr = 0.2 if path[0].key == "bert" else 0.5
        if name in ("bias", "scale"):  # Dense biases, LayerNorm scales and biases
            np.testing.assert_array_equal(u, 0, err_msg=jax.tree_util.keystr(path))
            spared += 1
        else:  # kernels, embedding tables
            np.testing.assert_allclose(u, -lr * 0.1 * p, rtol=1e-6, atol=1e-9,
                                       err_msg=jax.tree_util.keystr(path))
            decayed += 1
    assert decayed > 0 and spared > 0
    # The "scale" leaves checked are the LayerNorms': they are there.
    assert "scale" in params["bert"]["embeddings"]["LayerNorm"]


def test_frozen_leaves_get_no_update_and_no_moments():
    params = tiny_params()
    mask = trainable_mask(params)  # the encoder frozen
    grads = jax.tree.map(jnp.ones_like, params)
    tx = S.make_optimizer(1e-3, mask, optimizer="adamw", weight_decay=0.0,
                          encoder_learning_rate=1e-5)
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    for leaf in jax.tree.leaves(updates["bert"]):
        np.testing.assert_array_equal(leaf, 0)
    assert all(np.abs(x).min() > 0 for x in jax.tree.leaves(updates["out"]))
    # mu and nu for the head alone: the encoder's group and the frozen one hold none.
    assert moment_elements(state) == 2 * count_params(params, mask)
    assert moment_elements(state.inner_states["encoder"]) == 0
    assert moment_elements(state.inner_states["frozen"]) == 0


def test_default_optimizer_is_the_notebooks_adam():
    """TrainConfig's defaults give plain Adam's state (and, with a mask, the
    trainable/frozen partition): checkpoints of earlier runs keep their layout."""
    params = {"bert": {"w": jnp.ones((2, 2))}, "out": {"kernel": jnp.ones((2, 1))}}
    config = L.TrainConfig()
    plain = jax.eval_shape(optax.adam(1e-3).init, params)
    ours = jax.eval_shape(L.optimizer_of(config, 10).init, params)
    assert jax.tree.structure(plain) == jax.tree.structure(ours)
    mask = {"bert": {"w": False}, "out": {"kernel": True}}
    state = L.optimizer_of(config, 10, mask).init(params)
    assert set(state.inner_states) == {"trainable", "frozen"}


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = S.learning_rate_schedule(2e-3, "linear", 10, 110)
    np.testing.assert_allclose([f(0), f(5), f(10), f(60), f(110), f(200)],
                               [0.0, 1e-3, 2e-3, 1e-3, 0.0, 0.0], rtol=1e-5, atol=1e-12)
    g = S.learning_rate_schedule(2e-3, "linear", 0, 100)
    np.testing.assert_allclose([g(0), g(50), g(100)], [2e-3, 1e-3, 0.0], rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="number of training steps"):
        S.learning_rate_schedule(2e-3, "linear", 10)


def test_schedule_applies_to_both_groups_with_their_own_peaks():
    """Warmup over 4 steps: the first update is 0, the second a quarter of each peak."""
    params = tiny_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, -2.0), params)
    config = L.TrainConfig(optimizer="adamw", weight_decay=0.0, learning_rate=1e-3,
                           encoder_learning_rate=1e-5, lr_schedule="linear", warmup_steps=4)
    tx = L.optimizer_of(config, 20)
    state = tx.init(params)
    first, state = tx.update(grads, state, params)
    for leaf in jax.tree.leaves(first):
        np.testing.assert_array_equal(leaf, 0)
    second, _ = tx.update(grads, state, params)
    for leaf in jax.tree.leaves(second["bert"]):
        np.testing.assert_allclose(leaf, 1e-5 / 4, rtol=1e-4)
    for leaf in jax.tree.leaves(second["out"]):
        np.testing.assert_allclose(leaf, 1e-3 / 4, rtol=1e-4)


@pytest.mark.parametrize("kw,needle", [
    (dict(optimizer="sgd"), "optimizer must be one of"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(encoder_learning_rate=0.0), "encoder_learning_rate"),
    (dict(lr_schedule="step"), "lr_schedule must be one of"),
])
def test_bad_optimizer_settings(kw, needle):
    with pytest.raises(ValueError, match=needle):
        L.TrainConfig(**kw)


# --------------------------------------------------------------------------- the linear head


@pytest.mark.parametrize("readout", ["cls", "mean"])
def test_linear_head_shape_and_padding(readout):
    model = linear_model(readout=readout, dropout=0.0)
    params = tiny_params(model)
    assert set(params) == {"bert", "out"}
    assert params["out"]["kernel"].shape == (TINY.hidden_size, 1)
    ids, mask = batch()
    logits = model.apply({"params": params}, ids, mask)
    chex.assert_shape(logits, (len(LENGTHS),))
    assert logits.dtype == jnp.float32
    # Other tokens in the padding, and more of it: the same logits.
    junk, _ = batch(pad_id=7)
    longer, longer_mask = batch(16, pad_id=5)
    np.testing.assert_allclose(model.apply({"params": params}, junk, mask), logits, atol=1e-6)
    np.testing.assert_allclose(model.apply({"params": params}, longer, longer_mask), logits,
                               atol=1e-5)


def test_mean_pooling_averages_the_real_tokens_only():
    """The head alone on chosen features: the logit is Dense(mean of the real rows)."""
    from hw3_jax.models import LinearHead

    head = LinearHead(dropout=0.0, readout="mean")
    feats = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.int32)
    params = head.init(jax.random.key(0), feats, mask)["params"]
    got = head.apply({"params": params}, feats, mask)
    k, b = params["out"]["kernel"][:, 0], params["out"]["bias"][0]
    want = [feats[0, :3].mean(0) @ k + b, feats[1, 0] @ k + b]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    feats[:, 3:] = 1e3  # padding rows
    np.testing.assert_allclose(head.apply({"params": params}, feats, mask), got, rtol=1e-6)


def test_trainable_encoder_gets_gradients_and_its_dropout_in_training():
    model = linear_model(freeze_encoder=False, dropout=0.0)  # dropout: the encoder's only
    params = tiny_params(model)
    ids, mask = batch()

    def logits(p, key):
        return model.apply({"params": p}, ids, mask, deterministic=False,
                           rngs={"dropout": key})

    a, b = logits(params, jax.random.key(1)), logits(params, jax.random.key(2))
    assert not np.allclose(a, b)  # BERT's dropout is on in training
    grads = jax.grad(lambda p: logits(p, jax.random.key(1)).sum())(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["bert"])) > 0
    frozen = linear_model(freeze_encoder=True, dropout=0.0)
    grads = jax.grad(lambda p: frozen.apply({"params": p}, ids, mask).sum())(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["bert"])) == 0


def test_the_gru_head_is_the_default_everywhere():
    assert BertGRUSentiment().head == "gru"
    model_cfg = get_config("notebook").model
    model_cfg.dtype = "float32"
    assert factory.sentiment_model(model_cfg, BertConfig()) == BertGRUSentiment()
    # A workdir's config.json written before the head field still builds its GRU model.
    old = {k: v for k, v in model_cfg.to_dict().items() if k != "head"}
    old["readout"] = "final"
    assert factory.sentiment_model(old, BertConfig()) == BertGRUSentiment()
    model_cfg.head = "linear"
    model = factory.sentiment_model(model_cfg, BertConfig())
    assert (model.head, model.readout) == ("linear", "cls")  # the linear head's own


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("argv,needle", [
    (["--unfreeze", "--cache-encoder"], "--cache-encoder needs a frozen pretrained encoder"),
    (["--config.model.head=linear", "--cache-encoder"],
     "--cache-encoder trains the GRU head only"),
    (["--config.model.head=linear", "--config.model.readout=final"],
     "not one of the linear head's"),
    (["--config.model.readout=mean"], "not one of the gru head's"),
    (["--config.train.encoder_learning_rate=-1"], "encoder_learning_rate"),
    (["--config.train.weight_decay=-1"], "weight_decay"),
])
def test_fine_tuning_config_errors(argv, needle):
    config, _, _ = build_config(["--encoder", "../shared/data/all-MiniLM-L6-v2", *argv])
    with pytest.raises(UserError, match=needle):
        sentiment_train.validate(sentiment_train.resolve(config))


def test_minilm_finetune_variant():
    config = sentiment_train.resolve(get_config("minilm_finetune"))
    sentiment_train.validate(config)
    assert not factory.frozen_encoder(config.model) and not config.encoder_cache.enabled
    assert (config.model.head, config.model.readout) == ("linear", "mean")
    assert config.data.limit is None and config.data.max_length == 256
    t = L.TrainConfig(**config.train.to_dict())
    assert (t.optimizer, t.lr_schedule, t.epochs) == ("adamw", "linear", 2)
    assert 2e-5 <= t.encoder_learning_rate <= 5e-5 < t.learning_rate
    steps_per_epoch = -(-17_500 // config.data.batch_size)
    assert 0.05 <= t.warmup_steps / steps_per_epoch <= 0.15
    assert t.checkpoint_every_steps < steps_per_epoch  # a killed run resumes mid-epoch


# --------------------------------------------------------------------------- the real loop


FINETUNE = ["--config", f"{ROOT / 'configs' / 'sentiment.py'}:smoke", "--no-progress",
            "--seed", "0", "--config.train.optimizer=adamw", "--config.model.head=linear",
            "--config.train.encoder_learning_rate=3e-3", "--config.train.lr_schedule=linear",
            "--config.train.warmup_steps=3", "--config.train.checkpoint_every_steps=3"]


@pytest.mark.slow  # three runs (about 40 s on 2 cores)
def test_finetune_run_killed_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    """The smoke variant (a scratch encoder, always trained) with AdamW, two learning rates,
    the linear schedule and the linear head: interrupted at step 5 of epoch 1 (the latest
    checkpoint is step 3's), resumed, it ends as the uninterrupted run, bit for bit."""
    ref, wd = tmp_path / "ref", tmp_path / "run"
    rc, out, err = run_main(["--workdir", str(ref), *FINETUNE])
    assert rc == 0, err
    m = metrics_of(ref)
    assert m["status"] == "completed" and m["steps"] == 2 * m["history"][0]["step"]
    assert "linear head (cls readout)" in out
    assert config_of(ref)["train"]["optimizer"] == "adamw"
    assert config_of(ref)["model"]["readout"] == "cls"  # resolved

    with monkeypatch.context() as patch:
        inject(patch, 5, interrupt)
        rc, _, err = run_main(["--workdir", str(wd), *FINETUNE])
    assert rc == 130, err
    # The checkpoint holds AdamW's state of both groups with their schedules' step counts.
    with ocp.StandardCheckpointer() as ckptr:
        opt = ckptr.restore(wd / "checkpoints" / "latest" / "3" / "opt_state")
    counts = [int(x) for x in jax.tree.leaves(opt) if np.ndim(x) == 0]
    assert counts and set(counts) == {3}
    assert moment_elements(opt) == 2 * m["params"]["trainable"]

    rc, out, err = run_main(["--workdir", str(wd), *FINETUNE, "--resume"])
    assert rc == 0, err
    assert "resumed from" in out and "(step 3, batch 3 of epoch 1)" in out
    assert_same_run(ref, wd)
