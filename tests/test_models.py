"""BertGRUSentiment: counts, shapes, the factory, freezing through optax, dropout, padding,
torch parity."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.sentiment import get_config
from hw3_jax import factory
from hw3_jax.bert import BertConfig, BertEncoder, bert_param_shapes, bert_params_from_torch
from hw3_jax.gru import GRU, from_torch_gru
from hw3_jax.models import (
    BertGRUSentiment,
    GRUHead,
    LinearHead,
    count_params,
    init_params,
    param_shapes,
    trainable_mask,
    with_pretrained_encoder,
)
from hw3_jax.train.steps import make_optimizer

ADAM = {"optimizer": "adam", "weight_decay": 0.0}  # make_optimizer's plain Adam

TINY = BertConfig(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
B, L = 3, 12
LENGTHS = np.array([12, 5, 2])


def _tiny_model(**kw):
    return BertGRUSentiment(bert=TINY, hidden_dim=16, **kw)


def _batch(length=L, lengths=LENGTHS, seed=0, pad_id=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY.vocab_size, (len(lengths), length)).astype(np.int32)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, pad_id).astype(np.int32), mask


def _real_ids(length, seed=0):
    """Token ids whose real part does not depend on the padded length."""
    ids, _ = _batch(L, seed=seed)
    out, mask = _batch(length, seed=seed + 1, pad_id=7)  # non-zero junk in the padding
    out[:, :L] = np.where(np.arange(L)[None, :] < LENGTHS[:, None], ids, out[:, :L])
    return out, mask


# ---------------------------------------------------------------------------------------
# Parameter counts (the notebook's numbers) and the optimizer's state, without allocating
# ---------------------------------------------------------------------------------------


def test_bert_base_parameter_counts_match_notebook():
    shapes = param_shapes(BertGRUSentiment())
    total = count_params(shapes)
    trainable = count_params(shapes, trainable_mask(shapes))
    print(f"The model has {total:,} parameters; {trainable:,} trainable (encoder frozen)")
    assert total == 112_241_409
    assert trainable == 2_759_169
    assert set(shapes) == {"bert", "gru", "out"}
    assert count_params(shapes, trainable_mask(shapes, freeze_encoder=False)) == total
    # The "bert" subtree is exactly BertEncoder's (what load_pretrained_bert returns).
    chex.assert_trees_all_equal_shapes_and_dtypes(shapes["bert"], bert_param_shapes(BertConfig()))


def test_bert_base_adam_state_holds_moments_only_for_trainable_params():
    shapes = param_shapes(BertGRUSentiment())
    frozen = jax.eval_shape(make_optimizer(1e-3, trainable_mask(shapes), **ADAM).init, shapes)
    full = jax.eval_shape(make_optimizer(1e-3, **ADAM).init, shapes)
    scalars = lambda s: sum(1 for x in jax.tree.leaves(s) if x.shape == ())  # Adam's step count
    print(f"Adam state: {count_params(frozen):,} elements frozen, {count_params(full):,} not")
    assert count_params(frozen) - scalars(frozen) == 2 * 2_759_169
    assert count_params(full) - scalars(full) == 2 * 112_241_409
    assert any(
        isinstance(x, optax.MaskedNode)
        for x in jax.tree.leaves(frozen, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    )


def test_count_params_on_arrays_and_structs():
    tree = {
        "a": jnp.zeros((2, 3)),
        "b": [np.zeros(4), jax.ShapeDtypeStruct((5,), jnp.float32)],
        "c": optax.MaskedNode(),
        "d": None,
    }
    assert count_params(tree) == 15


@pytest.mark.parametrize("head", [GRUHead(8, 1, dropout=0.5), LinearHead(dropout=0.5)])
def test_heads_drop_their_inputs_in_training_only(head):
    feats, mask = jax.random.normal(jax.random.key(0), (2, 5, 4)), jnp.ones((2, 5))
    params = head.init(jax.random.key(1), feats, mask)
    train = head.apply(params, feats, mask, deterministic=False,
                       rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train, head.apply(params, feats, mask))


def test_trainable_mask_can_freeze_the_word_embeddings_alone():
    params = {"bert": {"embeddings": {"word_embeddings": {"embedding": 0},
                                      "position_embeddings": {"embedding": 0}}},
              "out": {"kernel": 0}}
    mask = trainable_mask(params, freeze_encoder=False, freeze_word_embeddings=True)
    assert mask == {"bert": {"embeddings": {"word_embeddings": {"embedding": False},
                                            "position_embeddings": {"embedding": True}}},
                    "out": {"kernel": True}}


# ---------------------------------------------------------------------------------------
# The factory: configs/sentiment.py's model section -> BertGRUSentiment
# ---------------------------------------------------------------------------------------


def test_factory_builds_the_notebook_model_from_its_config():
    model_cfg = get_config("notebook").model
    model_cfg.dtype = "float32"
    assert factory.sentiment_model(model_cfg, BertConfig()) == BertGRUSentiment()
    model_cfg.freeze_encoder = False
    assert not factory.sentiment_model(model_cfg, BertConfig()).freeze_encoder


def test_factory_scratch_encoder_follows_the_config():
    model_cfg = get_config("smoke").model
    model_cfg.update(dtype="bfloat16", attention="local", notebook_parity=True,
                     encoder_dropout=0.3, performer_features=24)
    bert = factory.encoder_config(model_cfg, vocab_size=200, pad_id=3, max_length=32)
    assert (bert.vocab_size, bert.pad_token_id, bert.max_position_embeddings) == (200, 3, 32)
    assert (bert.hidden_size, bert.num_hidden_layers, bert.num_attention_heads) == (32, 1, 2)
    assert (bert.attention, bert.dtype, bert.hidden_dropout_prob) == ("local", "bfloat16", 0.3)
    assert bert.local_window == BertConfig().local_window  # the config's default is BERT's
    assert bert.performer_features == 24
    assert factory.compute_dtype({"dtype": None}) == "float32"  # on CPU: no bfloat16 units
    model = factory.sentiment_model(model_cfg, bert)
    assert not model.freeze_encoder  # a scratch encoder is always trained
    assert model.gru_over_padding and not model.encoder_attention_mask
    assert jnp.dtype(model.dtype) == jnp.bfloat16 and model.hidden_dim == 16
    model_cfg.heads = 3
    with pytest.raises(ValueError, match="divisible"):
        factory.encoder_config(model_cfg, vocab_size=200, pad_id=0, max_length=32)


# ---------------------------------------------------------------------------------------
# Tiny model: shapes, dropout, freezing, padding
# ---------------------------------------------------------------------------------------


class TinyModelTest(chex.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _tiny_model()
        cls.params = init_params(cls.model, jax.random.key(0))
        cls.ids, cls.mask = _batch()

    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_tree(self):
        logits = self.variant(lambda p, i, m: self.model.apply({"params": p}, i, m))(
            self.params, self.ids, self.mask
        )
        chex.assert_shape(logits, (B,))
        chex.assert_type(logits, jnp.float32)
        chex.assert_tree_all_finite(logits)
        p = self.params
        assert set(p) == {"bert", "gru", "out"}
        chex.assert_trees_all_equal_shapes(p["bert"], bert_param_shapes(TINY))
        assert set(p["gru"]) == {"l0", "l0_reverse", "l1", "l1_reverse"}
        chex.assert_shape(p["gru"]["l0"]["weight_ih"], (48, 32))
        chex.assert_shape(p["gru"]["l1"]["weight_ih"], (48, 32))
        chex.assert_shape(p["out"]["kernel"], (32, 1))
        # Unidirectional head takes hidden[-1] only.
        uni = _tiny_model(bidirectional=False)
        pu = param_shapes(uni)
        chex.assert_shape(pu["out"]["kernel"], (16, 1))
        assert "l0_reverse" not in pu["gru"]
        chex.assert_shape(jax.eval_shape(uni.apply, {"params": pu}, self.ids, self.mask), (B,))

    @chex.variants(with_jit=True, without_jit=True)
    def test_dropout_on_in_training_off_in_eval(self):
        @self.variant
        def run(p, i, m, key):
            train = self.model.apply(
                {"params": p}, i, m, deterministic=False, rngs={"dropout": key}
            )
            return train, self.model.apply({"params": p}, i, m)

        t1, e1 = run(self.params, self.ids, self.mask, jax.random.key(1))
        t2, e2 = run(self.params, self.ids, self.mask, jax.random.key(2))
        t1b, _ = run(self.params, self.ids, self.mask, jax.random.key(1))
        chex.assert_trees_all_equal(e1, e2)
        chex.assert_trees_all_equal(t1, t1b)
        assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-4
        assert np.abs(np.asarray(t1) - np.asarray(e1)).max() > 1e-4
        # With every dropout rate at zero, training equals evaluation.
        cfg0 = BertConfig(
            **{**TINY.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        )
        m0 = BertGRUSentiment(bert=cfg0, hidden_dim=16, dropout=0.0)
        t0 = m0.apply(
            {"params": self.params},
            self.ids,
            self.mask,
            deterministic=False,
            rngs={"dropout": jax.random.key(1)},
        )
        np.testing.assert_allclose(t0, e1, atol=1e-6)

    @chex.variants(with_jit=True)  # a no-jit grad through BERT + GRU is slow on 2 cores
    def test_adam_step_leaves_frozen_encoder_unchanged(self):
        mask = trainable_mask(self.params)
        assert not any(jax.tree.leaves(mask["bert"]))
        assert all(jax.tree.leaves(mask["gru"])) and all(jax.tree.leaves(mask["out"]))
        labels = jnp.array([1.0, 0.0, 1.0])

        def make_step(model, tx):
            def step(p, opt_state, key):
                def loss(p):
                    logits = model.apply(
                        {"params": p},
                        self.ids,
                        self.mask,
                        deterministic=False,
                        rngs={"dropout": key},
                    )
                    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

                grads = jax.grad(loss)(p)
                updates, opt_state = tx.update(grads, opt_state, p)
                return optax.apply_updates(p, updates), opt_state, grads

            return self.variant(step)

        tx = make_optimizer(1e-2, mask, **ADAM)
        opt_state = tx.init(self.params)
        # No Adam moments for the encoder: only head-sized buffers (+ the step count).
        n_head = count_params(self.params, mask)
        assert count_params(opt_state) - 1 == 2 * n_head < count_params(self.params)
        new, _, grads = make_step(self.model, tx)(self.params, opt_state, jax.random.key(1))
        chex.assert_trees_all_equal(new["bert"], self.params["bert"])
        for a, b in zip(
            jax.tree.leaves(new["gru"]) + jax.tree.leaves(new["out"]),
            jax.tree.leaves(self.params["gru"]) + jax.tree.leaves(self.params["out"]),
            strict=True,
        ):
            assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        # stop_gradient: no gradient even reaches the frozen encoder.
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["bert"]))

        # Unfrozen (training from scratch): the encoder moves too.
        model = _tiny_model(freeze_encoder=False)
        mask_all = trainable_mask(self.params, freeze_encoder=False)
        assert all(jax.tree.leaves(mask_all))
        tx = make_optimizer(1e-2, mask_all, **ADAM)
        new, _, _ = make_step(model, tx)(self.params, tx.init(self.params), jax.random.key(1))
        moved = [
            np.abs(np.asarray(a) - np.asarray(b)).max() > 0
            for a, b in zip(
                jax.tree.leaves(new["bert"]), jax.tree.leaves(self.params["bert"]), strict=True
            )
        ]
        assert sum(moved) > 0.9 * len(moved)  # the pooler gets no gradient: it is unused

    @chex.variants(with_jit=True)
    def test_padding_does_not_change_logits(self):
        apply = self.variant(lambda p, i, m: self.model.apply({"params": p}, i, m))
        short_ids, short_mask = _real_ids(L)
        long_ids, long_mask = _real_ids(20)
        a = apply(self.params, short_ids, short_mask)
        b = apply(self.params, long_ids, long_mask)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        # The notebook's behaviour (GRU over padding) does depend on it.
        nb = _tiny_model(gru_over_padding=True)
        c = nb.apply({"params": self.params}, short_ids, short_mask)
        d = nb.apply({"params": self.params}, long_ids, long_mask)
        assert np.abs(np.asarray(c) - np.asarray(d)).max() > 1e-4

    @chex.variants(with_jit=True, without_jit=True)
    def test_concat_readout(self):
        """[final; max; mean] of the GRU's outputs over real tokens: 3x the head's inputs,
        padding-invariant, and equal to a hand computation from the GRU's outputs."""
        model = _tiny_model(readout="concat")
        params = init_params(model, jax.random.key(1))
        chex.assert_shape(params["out"]["kernel"], (3 * 32, 1))
        apply = self.variant(lambda p, i, m: model.apply({"params": p}, i, m))
        short_ids, short_mask = _real_ids(L)
        long_ids, long_mask = _real_ids(20)
        a = apply(params, short_ids, short_mask)
        chex.assert_shape(a, (B,))
        np.testing.assert_allclose(a, apply(params, long_ids, long_mask), atol=1e-5, rtol=0)
        # By hand: the same encoder and GRU, pooled in NumPy over each row's real tokens.
        feats, _ = BertEncoder(TINY).apply({"params": params["bert"]}, short_ids, short_mask)
        outs, h = GRU(16, num_layers=2, bidirectional=True).apply(
            {"params": params["gru"]}, feats, LENGTHS)
        outs = np.asarray(outs)
        rows = [np.concatenate([np.asarray(h[-2, b]), np.asarray(h[-1, b]),
                                outs[b, :n].max(0), outs[b, :n].mean(0)])
                for b, n in enumerate(LENGTHS)]
        k, bias = np.asarray(params["out"]["kernel"]), np.asarray(params["out"]["bias"])
        np.testing.assert_allclose(a, np.stack(rows) @ k[:, 0] + bias[0], atol=1e-5)
        with pytest.raises(ValueError, match="readout"):
            _tiny_model(readout="sum").apply({"params": params}, short_ids, short_mask)


def test_concat_readout_of_a_row_without_real_tokens_is_finite():
    head = GRUHead(8, 1, dropout=0.0, readout="concat")
    feats = jax.random.normal(jax.random.key(0), (2, 5, 4))
    mask = jnp.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    params = head.init(jax.random.key(1), feats, mask)
    apply = jax.jit(head.apply)  # eagerly, every GRU step would dispatch op by op
    logits = apply(params, feats, mask)
    grads = jax.jit(jax.grad(lambda p: apply(p, feats, mask).sum()))(params)
    chex.assert_tree_all_finite((logits, grads))
    np.testing.assert_allclose(logits[0], apply(params, feats[:1], mask[:1])[0], rtol=1e-6)


def test_with_pretrained_encoder_drops_in_and_checks_shapes():
    model = _tiny_model()
    params = init_params(model, jax.random.key(0))
    bert = jax.tree.map(lambda x: x + 1.0, params["bert"])  # stands in for pretrained weights
    new = with_pretrained_encoder(params, bert)
    chex.assert_trees_all_equal(new["bert"], bert)
    chex.assert_trees_all_equal(new["gru"], params["gru"])
    assert params["bert"] is not bert  # the input tree is not modified
    other = BertConfig(**{**TINY.to_dict(), "hidden_size": 64})
    bad = bert_param_shapes(other)
    with pytest.raises(ValueError, match="do not fit.*word_embeddings"):
        with_pretrained_encoder(params, bad)


# ---------------------------------------------------------------------------------------
# Parity with the notebook's PyTorch model (tiny random BERT)
# ---------------------------------------------------------------------------------------


def _torch_notebook_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**TINY.to_hf_dict(), attn_implementation="eager")

    class BERTGRUSentiment(torch.nn.Module):  # the notebook's class, verbatim in substance
        def __init__(self, bert, hidden_dim, output_dim, n_layers, bidirectional, dropout):
            super().__init__()
            self.bert = bert
            embedding_dim = bert.config.to_dict()["hidden_size"]
            self.rnn = torch.nn.GRU(
                embedding_dim,
                hidden_dim,
                num_layers=n_layers,
                bidirectional=bidirectional,
                batch_first=True,
                dropout=0 if n_layers < 2 else dropout,
            )
            self.out = torch.nn.Linear(hidden_dim * 2 if bidirectional else hidden_dim, output_dim)
            self.dropout = torch.nn.Dropout(dropout)

        def forward(self, text, attention_mask=None, packed=False):
            with torch.no_grad():
                embedded = self.bert(text, attention_mask=attention_mask)[0]
            if packed:  # what the JAX model does by default
                embedded = torch.nn.utils.rnn.pack_padded_sequence(
                    embedded, attention_mask.sum(-1), batch_first=True, enforce_sorted=False
                )
            _, hidden = self.rnn(embedded)
            hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
            return self.out(hidden)

    return torch, BERTGRUSentiment(transformers.BertModel(cfg), 16, 1, 2, True, 0.25).eval()


def test_matches_the_notebooks_torch_model():
    torch, tm = _torch_notebook_model()
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    params = {
        "bert": jax.tree.map(
            jnp.asarray,
            bert_params_from_torch(
                {k[len("bert.") :]: v for k, v in sd.items() if k.startswith("bert.")}, TINY
            ),
        ),
        "gru": from_torch_gru(sd, 2, True, prefix="rnn."),
        "out": {"kernel": jnp.asarray(sd["out.weight"].T), "bias": jnp.asarray(sd["out.bias"])},
    }
    ours = init_params(_tiny_model(), jax.random.key(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(params, ours)
    assert count_params(params) == sum(p.numel() for p in tm.parameters())

    ids, mask = _batch()
    t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
    with torch.no_grad():
        want_notebook = tm(t_ids).numpy()[:, 0]
        want_packed = tm(t_ids, t_mask, packed=True).numpy()[:, 0]
    notebook = _tiny_model(gru_over_padding=True, encoder_attention_mask=False)
    got_notebook = notebook.apply({"params": params}, ids, mask)
    got = _tiny_model().apply({"params": params}, ids, mask)
    diff_notebook = np.abs(got_notebook - want_notebook).max()
    diff_packed = np.abs(got - want_packed).max()
    print(
        f"max |logit diff| vs torch: notebook mode {diff_notebook:.2e}, "
        f"length-aware {diff_packed:.2e}"
    )
    np.testing.assert_allclose(got_notebook, want_notebook, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, want_packed, atol=1e-5, rtol=0)
