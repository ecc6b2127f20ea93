"""The PyTorch-exact GRU against torch.nn.GRU (outputs, final states, packing, counts)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from hw3_jax.gru import GRU, GRUCell, from_torch_gru

torch = pytest.importorskip("torch")

B, L, F, H = 4, 9, 6, 8
LENGTHS = np.array([9, 4, 1, 6])  # unsorted, one full, one of length 1


def _torch_gru(num_layers=2, bidirectional=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.GRU(
        F, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    ).eval()


def _inputs(seed=1):
    return np.random.default_rng(seed).standard_normal((B, L, F)).astype(np.float32)


def _torch_packed(gru, x, lengths):
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        out, h_n = gru(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=L)
    return out.numpy(), h_n.numpy()


class GRUTorchParityTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((2, True), (1, False), (3, False))
    def test_unpadded_matches_torch(self, num_layers, bidirectional):
        tg = _torch_gru(num_layers, bidirectional)
        x = _inputs()
        with torch.no_grad():
            want_out, want_h = (t.numpy() for t in tg(torch.from_numpy(x)))
        model = GRU(H, num_layers=num_layers, bidirectional=bidirectional)
        params = from_torch_gru(tg.state_dict(), num_layers, bidirectional)
        out, h = self.variant(lambda p, x: model.apply({"params": p}, x))(params, x)
        d = 2 if bidirectional else 1
        chex.assert_shape(out, (B, L, d * H))
        chex.assert_shape(h, (num_layers * d, B, H))
        np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=0)
        np.testing.assert_allclose(h, want_h, atol=1e-5, rtol=0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((2, True), (1, False))
    def test_lengths_match_pack_padded_sequence(self, num_layers, bidirectional):
        tg = _torch_gru(num_layers, bidirectional)
        x = _inputs()
        want_out, want_h = _torch_packed(tg, x, LENGTHS)
        model = GRU(H, num_layers=num_layers, bidirectional=bidirectional)
        params = from_torch_gru(tg.state_dict(), num_layers, bidirectional)
        out, h = self.variant(lambda p, x, n: model.apply({"params": p}, x, n))(params, x, LENGTHS)
        np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=0)
        np.testing.assert_allclose(h, want_h, atol=1e-5, rtol=0)
        # Padded positions are exactly zero, as pad_packed_sequence leaves them.
        pad = np.arange(L)[None, :] >= LENGTHS[:, None]
        assert np.all(np.asarray(out)[pad] == 0.0)

    def test_padding_content_never_reaches_results(self):
        tg = _torch_gru()
        params = from_torch_gru(tg.state_dict(), 2, True)
        x = _inputs()
        pad = np.arange(L)[None, :, None] >= LENGTHS[:, None, None]
        x_garbage = np.where(pad, 1e3, x).astype(np.float32)
        model = GRU(H, num_layers=2, bidirectional=True)
        a = model.apply({"params": params}, x, LENGTHS)
        b = model.apply({"params": params}, x_garbage, LENGTHS)
        chex.assert_trees_all_equal(a, b)

    @chex.variants(with_jit=True, without_jit=True)
    def test_over_padding_matches_torch_on_padded_tensor(self):
        tg = _torch_gru()
        x = _inputs()
        x[np.arange(L)[None, :] >= LENGTHS[:, None]] = 0.0  # zero padding, as the notebook's
        with torch.no_grad():
            want_out, want_h = (t.numpy() for t in tg(torch.from_numpy(x)))
        model = GRU(H, num_layers=2, bidirectional=True, over_padding=True)
        params = from_torch_gru(tg.state_dict(), 2, True)
        out, h = self.variant(lambda p, x, n: model.apply({"params": p}, x, n))(params, x, LENGTHS)
        np.testing.assert_allclose(out, want_out, atol=1e-5, rtol=0)
        np.testing.assert_allclose(h, want_h, atol=1e-5, rtol=0)
        # ... and it differs from the length-aware result, so the switch matters.
        _, h_packed = _torch_packed(tg, x, LENGTHS)
        assert np.abs(h_packed - want_h).max() > 1e-3


@pytest.mark.parametrize("num_layers,bidirectional", [(2, True), (1, False), (3, True)])
def test_parameter_count_and_tree_match_torch(num_layers, bidirectional):
    tg = _torch_gru(num_layers, bidirectional)
    model = GRU(H, num_layers=num_layers, bidirectional=bidirectional)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((B, L, F)))["params"]
    ours = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert ours == sum(p.numel() for p in tg.parameters())
    converted = from_torch_gru(tg.state_dict(), num_layers, bidirectional)
    chex.assert_trees_all_equal_shapes_and_dtypes(converted, shapes)


def test_init_matches_torch_distribution():
    params = GRU(H, num_layers=2, bidirectional=True).init(jax.random.key(0), jnp.zeros((B, L, F)))[
        "params"
    ]
    leaves = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    bound = 1 / np.sqrt(H)
    assert np.abs(leaves).max() <= bound and np.abs(leaves).max() > 0.9 * bound


def test_from_torch_gru_accepts_numpy_and_prefix_and_rejects_mismatch():
    tg = _torch_gru()
    sd = {f"rnn.{k}": v.numpy() for k, v in tg.state_dict().items()}
    sd["out.weight"] = np.zeros((1, 2 * H), np.float32)
    params = from_torch_gru(sd, 2, True, prefix="rnn.")
    np.testing.assert_array_equal(
        params["l1_reverse"]["weight_hh"], tg.weight_hh_l1_reverse.detach().numpy()
    )
    with pytest.raises(ValueError, match="missing.*weight_ih_l0_reverse"):
        from_torch_gru(_torch_gru(2, False).state_dict(), 2, True)
    with pytest.raises(ValueError, match="unexpected.*weight_ih_l1"):
        from_torch_gru(tg.state_dict(), 1, True)
    sd["rnn.weight_hh_l1"] = sd["rnn.weight_hh_l1"][:, :-1]
    with pytest.raises(ValueError, match="inconsistent.*weight_hh_l1"):
        from_torch_gru(sd, 2, True, prefix="rnn.")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_from_torch_gru_takes_half_precision_tensors_as_float32(dtype):
    sd = {k: v.to(getattr(torch, dtype)) for k, v in _torch_gru().state_dict().items()}
    params = from_torch_gru(sd, 2, True)
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda _: jnp.float32(0), params))
    np.testing.assert_array_equal(params["l1"]["weight_ih"], sd["weight_ih_l1"].float().numpy())


def test_cell_matches_torch_gru_cell():
    torch.manual_seed(0)
    cell = torch.nn.GRUCell(F, H)
    x = _inputs()[:, 0]
    h = np.random.default_rng(2).standard_normal((B, H)).astype(np.float32)
    with torch.no_grad():
        want = cell(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    params = {k: jnp.asarray(v.numpy()) for k, v in cell.state_dict().items()}
    shapes = GRUCell(H).init(jax.random.key(0), jnp.asarray(h), jnp.asarray(x))["params"]
    chex.assert_trees_all_equal_shapes(params, shapes)
    got, _ = GRUCell(H).apply({"params": params}, h, x)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


class GRUDropoutAndGradTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_dropout_between_layers_only_in_training(self):
        model = GRU(H, num_layers=2, bidirectional=True, dropout=0.5)
        x = jnp.asarray(_inputs())
        params = model.init(jax.random.key(0), x)["params"]

        @self.variant
        def run(p, x, key):
            train = model.apply({"params": p}, x, deterministic=False, rngs={"dropout": key})
            return train, model.apply({"params": p}, x)

        (o1, h1), (e1, eh1) = run(params, x, jax.random.key(1))
        (o2, _), (e2, eh2) = run(params, x, jax.random.key(2))
        chex.assert_trees_all_equal((e1, eh1), (e2, eh2))  # eval: deterministic
        # Eval equals a dropout-free GRU with the same params.
        ref = GRU(H, num_layers=2, bidirectional=True).apply({"params": params}, x)
        chex.assert_trees_all_close((e1, eh1), ref, atol=0, rtol=0)
        # Training: layer 1 sees dropped inputs, so results move with the rng ...
        assert np.abs(np.asarray(o1) - np.asarray(o2)).max() > 1e-3
        assert np.abs(np.asarray(o1) - np.asarray(e1)).max() > 1e-3
        # ... layer 0's final states do not (dropout is between layers, not on the input) ...
        np.testing.assert_allclose(h1[:2], eh1[:2], atol=1e-6)
        # ... and the last layer's outputs are not dropped (no exact zeros).
        assert not np.any(np.asarray(o1) == 0.0)

    def test_single_layer_has_no_dropout(self):
        model = GRU(H, num_layers=1, dropout=0.5)
        x = jnp.asarray(_inputs())
        params = model.init(jax.random.key(0), x)["params"]
        train = model.apply(
            {"params": params}, x, deterministic=False, rngs={"dropout": jax.random.key(1)}
        )
        chex.assert_trees_all_equal(train, model.apply({"params": params}, x))

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_finite_and_nonzero(self):
        model = GRU(H, num_layers=2, bidirectional=True, dropout=0.25)
        x = jnp.asarray(_inputs())
        params = model.init(jax.random.key(0), x)["params"]

        @self.variant
        def grads(p, x):
            def loss(p, x):
                out, h = model.apply(
                    {"params": p},
                    x,
                    LENGTHS,
                    deterministic=False,
                    rngs={"dropout": jax.random.key(3)},
                )
                return jnp.sum(out**2) + jnp.sum(h[-2:] ** 2)

            return jax.grad(loss, argnums=(0, 1))(p, x)

        gp, gx = grads(params, x)
        chex.assert_tree_all_finite((gp, gx))
        for leaf in jax.tree.leaves(gp):
            assert np.abs(np.asarray(leaf)).max() > 0
        # No gradient flows from padding positions of the input.
        pad = np.arange(L)[None, :] >= LENGTHS[:, None]
        assert np.all(np.asarray(gx)[pad] == 0.0)


def test_bfloat16_compute_close_to_float32():
    model32 = GRU(H, num_layers=2, bidirectional=True)
    model16 = GRU(H, num_layers=2, bidirectional=True, dtype=jnp.bfloat16)
    x = jnp.asarray(_inputs())
    params = model32.init(jax.random.key(0), x)["params"]
    o32, h32 = model32.apply({"params": params}, x, LENGTHS)
    o16, h16 = model16.apply({"params": params}, x, LENGTHS)
    assert o16.dtype == jnp.bfloat16 and h16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(h16, np.float32), h32, atol=5e-2)
