"""Q2: the scalar RNN (`hw3_jax.recurrence`) and its experiment."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from experiments.recurrence_sequences import labelled_sequences
from hw3_jax.recurrence import ScalarRNN, alternating_sum, closed_form, even_minus_odd


def prefix_alternating_sums(x: np.ndarray) -> np.ndarray:
    """[n, T] ints -> [n, T] int64: h_t = sum_{s<=t} (-1)^(t-s) x_s, by a Python loop."""
    h = np.zeros(x.shape, np.int64)
    prev = np.zeros(x.shape[0], np.int64)
    for t in range(x.shape[1]):
        prev = x[:, t].astype(np.int64) - prev
        h[:, t] = prev
    return h


def random_ints(seed: int, n: int, length: int, low: int = -9, high: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high + 1, (n, length), dtype=np.int32)


def test_hidden_state_unrolled_by_hand():
    x = np.array([[3, 1, 4, 1]])
    h, y = ScalarRNN().apply({}, x)
    # h1 = 3; h2 = 1 - 3 = -2; h3 = 4 - (-2) = 6; h4 = 1 - 6 = -5.
    np.testing.assert_array_equal(h, [[3.0, -2.0, 6.0, -5.0]])
    np.testing.assert_array_equal(y, [[1.0, 0.0, 1.0, 0.0]])
    # Even positions 1 + 1 = 2 against odd 3 + 4 = 7: the odd ones win, y_4 = 0.
    np.testing.assert_array_equal(closed_form(x), [0.0])
    np.testing.assert_array_equal(alternating_sum(x), [-5])


def test_other_weights_unrolled_by_hand():
    x = np.array([[1.0, 2.0, -1.0]])
    h, y = ScalarRNN(w_in=2.0, w_rec=0.5, w_out=0.1).apply({}, x)
    # h1 = 2; h2 = 4 + 0.5 * 2 = 5; h3 = -2 + 0.5 * 5 = 0.5.
    np.testing.assert_allclose(h, [[2.0, 5.0, 0.5]], rtol=0, atol=0)
    np.testing.assert_allclose(
        y, 1.0 / (1.0 + np.exp(-0.1 * np.array([[2.0, 5.0, 0.5]]))), rtol=1e-6
    )


def test_closed_form_positions_count_from_one():
    # x_2 (an even position) alone outweighs: 1; x_1 (odd) alone: 0.
    np.testing.assert_array_equal(closed_form(np.array([[0, 1], [1, 0], [4, 4]])), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(even_minus_odd(np.array([[1, 2, 3, 4, 5, 6]])), [3])


def test_closed_form_integer_arithmetic_does_not_wrap():
    # Unsigned inputs: the difference of sums is taken in signed integers.
    np.testing.assert_array_equal(even_minus_odd(np.array([[5, 2]], np.uint8)), [-3])
    np.testing.assert_array_equal(closed_form(np.array([[5, 2]], np.uint8)), [0.0])


def test_float32_limit_of_the_scan():
    """Below 2**24 the scan is exact; beyond, float32 drops the 1 that decides the answer,
    while the closed form, summing integers, still gets it."""
    big = 2**24
    h, y = ScalarRNN().apply({}, np.array([[big - 1, big - 2]], np.int32))
    assert float(h[0, -1]) == -1.0 and float(y[0, -1]) == 0.0
    h, y = ScalarRNN().apply({}, np.array([[big + 1, big]], np.int32))
    assert float(h[0, -1]) == 0.0 and float(y[0, -1]) == 0.5
    assert float(closed_form(np.array([[big + 1, big]], np.int32))[0]) == 0.0


def test_bad_shape_is_one_clear_error():
    with pytest.raises(ValueError, match=r"\[batch, T\]"):
        ScalarRNN().apply({}, np.array([1, 2, 3]))


def test_fixed_module_has_no_params_learnable_has_three_scalars():
    x = np.zeros((2, 4), np.int32)
    assert ScalarRNN().init(jax.random.key(0), x) == {}
    params = ScalarRNN(learnable=True).init(jax.random.key(0), x)["params"]
    assert set(params) == {"w_in", "w_rec", "w_out"}
    chex.assert_shape(list(params.values()), ())
    values = np.array([float(v) for v in params.values()])
    assert np.all(np.abs(values) <= 1.0) and len(set(values)) == 3  # U[-1, 1), distinct
    draws = [ScalarRNN(learnable=True).init(jax.random.key(k), x)["params"] for k in range(4)]
    assert min(float(v) for d in draws for v in d.values()) < 0  # both signs
    # float16 inputs run in float32, as integers do
    assert ScalarRNN().apply({}, np.ones((1, 3), np.float16))[0].dtype == np.float32


class ScalarRNNVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(2, 4, 10, 64, 128)
    def test_scan_equals_closed_form_even_lengths(self, length):
        x = random_ints(length, 500, length)
        run = self.variant(lambda x: ScalarRNN().apply({}, x))
        h, y = run(x)
        chex.assert_shape((h, y), (500, length))
        chex.assert_type((h, y), jnp.float32)
        # The hidden state is exact: integers in float32 with weights +-1.
        np.testing.assert_array_equal(np.asarray(h), prefix_alternating_sums(x))
        np.testing.assert_array_equal(np.asarray(h[:, -1]), np.asarray(even_minus_odd(x)))
        chex.assert_trees_all_close(y[:, -1], closed_form(x), atol=1e-6, rtol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_saturation_and_ties(self):
        # Ties (h_T = 0, exactly 0.5), margins of 1 (already saturated: sigmoid(+-1000)),
        # and large sums.
        rows = [
            np.array([r])
            for r in ([5, 5], [7, 7, 3, 3], [0, 1], [1, 0], [0, 0, 9, 10], [-1000, 1000])
        ]
        run = self.variant(lambda x: ScalarRNN().apply({}, x))
        expected = [0.5, 0.5, 1.0, 0.0, 1.0, 1.0]
        for row, want in zip(rows, expected, strict=True):
            h, y = run(row)
            assert float(y[0, -1]) == want, (row, float(y[0, -1]))
            chex.assert_trees_all_close(y[:, -1], closed_form(row), atol=1e-6, rtol=0)
            assert np.all(np.isfinite(np.asarray(y)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_scan_equals_closed_form_unsaturated_floats(self):
        # A small w_out keeps the sigmoid off its rails, so the tolerance check has teeth.
        x = np.random.default_rng(0).normal(size=(64, 12)).astype(np.float32)
        run = self.variant(lambda x: ScalarRNN(w_out=0.3).apply({}, x))
        h, y = run(x)
        want = closed_form(x, w_out=0.3)
        assert np.all((np.asarray(want) > 1e-3) & (np.asarray(want) < 1 - 1e-3))
        chex.assert_trees_all_close(y[:, -1], want, atol=1e-5, rtol=1e-5)
        chex.assert_trees_all_close(h[:, -1], alternating_sum(x), atol=1e-5, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 3, 11, 65)
    def test_odd_lengths_flip_the_answer(self, length):
        x = random_ints(100 + length, 500, length)
        h, y = self.variant(lambda x: ScalarRNN().apply({}, x))(x)
        d = np.asarray(even_minus_odd(x))
        np.testing.assert_array_equal(np.asarray(h[:, -1]), -d)  # sum odd - sum even
        np.testing.assert_array_equal(np.asarray(alternating_sum(x)), -d)
        chex.assert_trees_all_close(y[:, -1], 1.0 - closed_form(x), atol=1e-6, rtol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_finite_for_learnable(self):
        model = ScalarRNN(learnable=True)
        x = random_ints(1, 32, 10)
        labels = (np.asarray(even_minus_odd(x)) > 0).astype(np.float32)
        params = model.init(jax.random.key(0), x)["params"]

        def loss(p):
            _, logits = model.apply({"params": p}, x, method=ScalarRNN.hidden_and_logits)
            return optax.sigmoid_binary_cross_entropy(logits[:, -1], labels).mean()

        grad = self.variant(jax.grad(loss))
        g = grad(params)
        chex.assert_tree_all_finite(g)
        assert any(float(jnp.abs(v)) > 0 for v in jax.tree.leaves(g))
        # Also at the figure's saturating weights, where y is exactly 0 or 1.
        figure = {"w_in": jnp.float32(1.0), "w_rec": jnp.float32(-1.0), "w_out": jnp.float32(1e3)}
        chex.assert_tree_all_finite(grad(figure))
        # And through the sigmoid output itself.
        g_y = self.variant(jax.grad(lambda p: model.apply({"params": p}, x)[1].sum()))(figure)
        chex.assert_tree_all_finite(g_y)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_batches_and_weights(self):
        xs = random_ints(7, 3 * 16, 8).reshape(3, 16, 8)
        h, y = self.variant(jax.vmap(lambda x: ScalarRNN().apply({}, x)))(xs)
        chex.assert_shape((h, y), (3, 16, 8))
        for i in range(3):
            h_i, y_i = ScalarRNN().apply({}, xs[i])
            chex.assert_trees_all_equal((h[i], y[i]), (h_i, y_i))
        # vmap over learnable weights: each row uses its own w_rec.
        model = ScalarRNN(learnable=True)
        w_rec = jnp.array([-1.0, 0.5, 1.0])
        params = {"w_in": jnp.ones(3), "w_rec": w_rec, "w_out": jnp.full(3, 2.0)}
        h, _ = self.variant(jax.vmap(lambda p: model.apply({"params": p}, xs[0])))(params)
        for i in range(3):
            h_i, _ = ScalarRNN(w_rec=float(w_rec[i]), w_out=2.0).apply({}, xs[0])
            chex.assert_trees_all_close(h[i], h_i, atol=1e-5, rtol=1e-6)

    def test_only_the_product_w_in_w_out_reaches_the_output(self):
        x = random_ints(3, 200, 16)
        _, y = ScalarRNN().apply({}, x)
        for w_in, w_out in ((4.0, 250.0), (-1.0, -1000.0)):
            _, y2 = ScalarRNN(w_in=w_in, w_out=w_out).apply({}, x)
            chex.assert_trees_all_equal(y, y2)


def test_experiment_writes_json_and_plot(tmp_path):
    from experiments import recurrence

    config, command = recurrence.parse_args(["--out", str(tmp_path), "--quick", "--steps", "100"])
    assert command == "python -m experiments.recurrence --quick --steps 100"
    result = recurrence.run(config, command)
    written = json.loads((tmp_path / "recurrence.json").read_text())
    assert written["scan_vs_closed_form"] == json.loads(json.dumps(result["scan_vs_closed_form"]))
    assert (tmp_path / "recurrence.png").stat().st_size > 0
    even, odd = written["scan_vs_closed_form"]["even"], written["scan_vs_closed_form"]["odd"]
    assert even["max_abs_diff_h_all_steps_vs_exact"] == 0.0
    assert even["max_abs_diff_y_T_vs_closed_form"] == 0.0
    assert even["n_saturated"] + even["n_ties"] == even["n_sequences"]
    assert even["y_T_on_ties"] in ([0.5], [])
    assert odd["max_abs_diff_h_T_vs_odd_minus_even"] == 0.0
    assert odd["n_decisive_agreeing_with_closed_form"] == 0
    training = written["training"]
    assert len(training["final_weights"]["w_rec"]) == training["setup"]["n_inits"]
    assert all(np.isfinite(training["final_loss_per_init"]))


def test_experiment_bad_steps_is_one_line_error(tmp_path, capsys):
    from experiments import recurrence

    assert recurrence.main(["--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_a_flag_naming_a_config_field_points_at_its_override(tmp_path, capsys):
    from experiments import recurrence

    assert recurrence.main(["--out", str(tmp_path), "--n-inits", "3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: unrecognized arguments: --n-inits 3; --n-inits is the config field "
        "train.n_inits: --config.train.n_inits=VALUE (see python -m experiments.recurrence --help)"]


@pytest.mark.parametrize("override,needle", [
    ("--config.train.lengths=(2,3)", "--config.train.lengths must be even lengths"),
    ("--config.eval.odd_lengths=(4,)", "--config.eval.odd_lengths must be odd lengths"),
    ("--config.train.lengths=(2,200)", "--config.eval.unseen_lengths must reach the longest"),
])
def test_experiment_bad_lengths_are_one_line_errors(override, needle, tmp_path, capsys):
    from experiments import recurrence

    assert recurrence.main(["--quick", "--out", str(tmp_path / "out"), override]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("argv,needle", [
    (["--seed", "-1"], "--seed must be a whole number in 0..2**32-1, got -1"),
    (["--seed", str(2**32)], "--seed must be a whole number in 0..2**32-1"),
    (["--config.check.n_sequences=0"], "--config.check.n_sequences must be at least 1"),
    (["--config.train.n_inits=0"], "--config.train.n_inits must be at least 1"),
    (["--config.train.batch_size=0"], "--config.train.batch_size must be at least 1"),
    (["--config.train.n_per_length=0"], "--config.train.n_per_length must be at least 1"),
    (["--config.eval.n_per_length=0"], "--config.eval.n_per_length must be at least 1"),
    (["--config.train.learning_rate=0"], "--config.train.learning_rate must be positive"),
    (["--config.train.learning_rate=1e999"], "--config.train.learning_rate must be positive "
                                             "and finite, got inf"),
    # Any field can be set to None: refused by name, not a TypeError later.
    (["--out", "None"], "--out must be a folder, got None"),
    (["--config", ""], "argument --config: an empty string"),  # an unset variable: not the default
    (["--config.train.steps=None"], "--steps must be at least 1 (a whole number), got None"),
    (["--config.train.learning_rate=None"], "--config.train.learning_rate must be positive"),
    (["--config.check.max_length=None"], "--config.check.max_length must be even lengths"),
    (["--config.train.lengths=(2,4.0)"], "--config.train.lengths must be even lengths"),
])
def test_experiment_bad_values_are_one_line_errors(argv, needle, tmp_path, capsys):
    from experiments import recurrence

    assert recurrence.main(["--quick", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_out_with_tilde_and_the_json_before_the_plot(tmp_path, monkeypatch):
    """`--out ~/q2` is $HOME/q2 for every file; the JSON is written before the plot, so a
    plot that fails loses no results."""
    from experiments import recurrence

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(recurrence, "check_scan", lambda rng, cfg: {"even": {}})
    monkeypatch.setattr(recurrence, "train", lambda config: ({"w_rec": [-1.0]}, {}))
    plotted = []

    def plot(history, path):
        plotted.append(path)
        raise RuntimeError("no display")

    monkeypatch.setattr(recurrence, "plot", plot)
    config, command = recurrence.parse_args(["--quick", "--out", "~/q2"])
    with pytest.raises(RuntimeError, match="no display"):
        recurrence.run(config, command)
    assert plotted == [home / "q2" / "recurrence.png"]
    written = json.loads((home / "q2" / "recurrence.json").read_text())
    assert written["training"] == {"w_rec": [-1.0]}
    assert not list(cwd.iterdir())


def test_quick_variant_writes_outside_results():
    """The smoke run must not overwrite the committed results/recurrence.json."""
    from configs.recurrence import get_config
    from experiments import recurrence

    assert get_config().out == "results"
    assert recurrence.parse_args(["--quick"])[0].out == "runs/recurrence_quick"


def test_labelled_sequences_pad_by_even_counts_only():
    """An odd pad would flip every position's parity, so the closed form would be wrong."""
    rng = np.random.default_rng(0)
    x, lengths, d = labelled_sequences(rng, (2, 4), 3, 4)
    assert x.shape == (6, 4) and list(lengths) == [2, 2, 2, 4, 4, 4]
    with pytest.raises(ValueError, match="even number"):
        labelled_sequences(rng, (3, 4), 3, 4)
