"""The CNN and row-GRU image classifiers, the image transforms and the Q1 experiment."""

from __future__ import annotations

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from configs.cnn_vs_rnn import get_config
from experiments import cnn_vs_rnn as exp
from experiments.report.q1 import q1_markdown
from hw3_jax.data import images
from hw3_jax.data.images import ImageData, load_digits_splits, load_mnist_splits
from hw3_jax.models import count_params
from hw3_jax.vision import (
    CNNClassifier,
    RowGRUClassifier,
    multiply_adds,
    pad_images,
    sequential_steps,
    shift_images,
    upsample_images,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = {"cnn": CNNClassifier(), "rnn": RowGRUClassifier(input_width=8)}
EVAL_BATCH = get_config().eval_batch  # the experiment's accuracy batch


_PARAMS: dict = {}


def _params(model, shape=(8, 8), seed=0):
    """Initial parameters, cached per (model, shape, seed); the tests never mutate them.

    jit: one compilation instead of one per initializer op (op-by-op is slow to compile)."""
    key = (repr(model), shape, seed)
    if key not in _PARAMS:
        _PARAMS[key] = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *shape)))["params"]
    return _PARAMS[key]


def _images(n=3, shape=(8, 8), seed=1):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


class ShapesTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("cnn", "rnn")
    def test_logits_shape_and_dtype(self, key):
        model = MODELS[key]
        params = _params(model)
        logits = self.variant(lambda p, x: model.apply({"params": p}, x))(params, _images())
        chex.assert_shape(logits, (3, 10))
        chex.assert_type(logits, jnp.float32)
        chex.assert_tree_all_finite(logits)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("cnn", "rnn")
    def test_bfloat16_compute_keeps_float32_params_and_logits(self, key):
        model = MODELS[key].clone(dtype=jnp.bfloat16)
        params = _params(model)
        chex.assert_trees_all_equal_dtypes(params, jax.tree.map(jnp.float32, params))
        logits = self.variant(lambda p, x: model.apply({"params": p}, x))(params, _images())
        chex.assert_type(logits, jnp.float32)
        ref = jax.jit(MODELS[key].apply)({"params": params}, _images())
        np.testing.assert_allclose(logits, ref, atol=0.1)

    @chex.variants(with_jit=True, without_jit=True)
    def test_cnn_takes_any_height_and_width(self):
        model = MODELS["cnn"]
        params = _params(model)
        apply = self.variant(lambda p, x: model.apply({"params": p}, x))
        for shape in [(8, 8), (13, 5), (1, 1), (28, 28), (8, 8, 1)]:
            logits = apply(params, _images(2, shape))
            chex.assert_shape(logits, (2, 10))
            chex.assert_tree_all_finite(logits)  # a 1-pixel side pools to 1 pixel, not 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_rnn_takes_any_height_but_only_its_width(self):
        model = MODELS["rnn"]
        params = _params(model)
        apply = self.variant(lambda p, x: model.apply({"params": p}, x))
        for height in (1, 5, 8, 30):
            chex.assert_shape(apply(params, _images(2, (height, 8))), (2, 10))
        with pytest.raises(ValueError, match="rows of width 8, got width 12"):
            apply(params, _images(2, (8, 12)))

    def test_comparable_parameter_budgets(self):
        counts = {k: count_params(_params(m)) for k, m in MODELS.items()}
        assert counts == {"cnn": 14_378, "rnn": 14_858}


class VariableSizeTest(chex.TestCase):
    def test_rnn_lengths_skip_bottom_padding_exactly(self):
        model = MODELS["rnn"]
        params = _params(model)
        x = _images(4)
        padded = pad_images(x, bottom=5)
        ref = model.apply({"params": params}, x)
        masked = model.apply({"params": params}, padded, jnp.full((4,), 8))
        unmasked = model.apply({"params": params}, padded)
        np.testing.assert_allclose(masked, ref, atol=1e-6)
        assert np.max(np.abs(unmasked - ref)) > 1e-3  # the blank rows do change the state

    def test_rnn_mixed_heights_in_one_batch(self):
        """Images of heights 3, 8 and 6 in one padded batch = each run alone."""
        model = MODELS["rnn"]
        params = _params(model)
        heights = [3, 8, 6]
        images = [_images(1, (h, 8), seed=h) for h in heights]
        batch = np.concatenate([pad_images(im, bottom=8 - im.shape[1]) for im in images])
        logits = model.apply({"params": params}, batch, jnp.array(heights))
        for i, im in enumerate(images):
            np.testing.assert_allclose(logits[i], model.apply({"params": params}, im)[0],
                                       atol=1e-6)

    def test_cnn_bigger_canvas_changes_the_global_average(self):
        model = MODELS["cnn"]
        params = _params(model)
        x = _images(2)
        bigger = model.apply({"params": params}, pad_images(x, 2, 2, 2, 2))
        assert np.max(np.abs(bigger - model.apply({"params": params}, x))) > 1e-4

    def test_experiment_variants_report_refusal_and_exactness(self):
        splits = load_digits_splits(0)
        x, y = splits.test_x[:40], splits.test_y[:40]
        out = {k: exp.variable_size(m, _params(m), x, y, EVAL_BATCH) for k, m in MODELS.items()}
        assert set(out["cnn"]) == {v.key for v in exp.size_variants(8, 8)}
        for key in ("wider", "bigger", "upsampled"):
            assert out["cnn"][key]["runs"] is True
            assert out["rnn"][key]["runs"] is False
            assert "width" in out["rnn"][key]["error"]
        for key in ("taller_bottom", "taller_centred", "stretched"):
            assert out["rnn"][key]["runs"] is True
        lengths = out["rnn"]["taller_bottom_lengths"]
        assert lengths["max_abs_logit_change"] < 1e-5
        assert lengths["accuracy"] == out["rnn"]["original"]["accuracy"]
        assert out["cnn"]["taller_bottom_lengths"]["runs"] is None
        assert out["cnn"]["stretched"]["shape"] == [16, 8]


class DepthAndWorkTest(chex.TestCase):
    def test_sequential_steps(self):
        assert [sequential_steps(MODELS["cnn"], s) for s in (8, 64, 256)] == [6, 6, 6]
        assert [sequential_steps(MODELS["rnn"], s) for s in (8, 64, 256)] == [9, 65, 257]

    def test_multiply_adds_match_the_weights(self):
        # RNN: every weight of the GRU is used once per row, the head once.
        p = _params(MODELS["rnn"])
        per_row = p["gru"]["l0"]["weight_ih"].size + p["gru"]["l0"]["weight_hh"].size
        assert multiply_adds(MODELS["rnn"], 8, 8) == 8 * per_row + p["head"]["kernel"].size
        # CNN: conv kernels at every position (conv2 after the 2x2 pool), the head once.
        p = _params(MODELS["cnn"])
        k = [p[f"conv{i}"]["kernel"].size for i in range(3)]
        expected = 64 * k[0] + 64 * k[1] + 16 * k[2] + p["head"]["kernel"].size
        assert multiply_adds(MODELS["cnn"], 8, 8) == expected
        assert multiply_adds(MODELS["cnn"], 9, 9) == 81 * (k[0] + k[1]) + 25 * k[2] + 320


class TransformsTest(chex.TestCase):
    X = np.arange(1, 13, dtype=np.float32).reshape(3, 4)

    def test_shift_down_right_up_left(self):
        np.testing.assert_array_equal(
            shift_images(self.X, 1, 0), [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]])
        np.testing.assert_array_equal(
            shift_images(self.X, 0, 2), [[0, 0, 1, 2], [0, 0, 5, 6], [0, 0, 9, 10]])
        np.testing.assert_array_equal(
            shift_images(self.X, -1, -1), [[6, 7, 8, 0], [10, 11, 12, 0], [0, 0, 0, 0]])
        np.testing.assert_array_equal(
            shift_images(self.X, -2, 1), [[0, 9, 10, 11], [0, 0, 0, 0], [0, 0, 0, 0]])

    def test_shift_edge_cases(self):
        np.testing.assert_array_equal(shift_images(self.X, 0, 0), self.X)
        np.testing.assert_array_equal(shift_images(self.X, 3, 0), np.zeros((3, 4)))
        np.testing.assert_array_equal(shift_images(self.X, 0, -4), np.zeros((3, 4)))
        batch = np.stack([self.X, 2 * self.X])
        out = shift_images(batch, 1, 1)
        np.testing.assert_array_equal(out[1], 2 * shift_images(self.X, 1, 1))
        assert out.dtype == np.float32 and batch[0, 0, 0] == 1  # input untouched

    def test_pad_and_upsample(self):
        x = np.array([[1, 2], [3, 4]], np.float32)
        np.testing.assert_array_equal(
            pad_images(x, top=1, right=1), [[0, 0, 0], [1, 2, 0], [3, 4, 0]])
        np.testing.assert_array_equal(
            upsample_images(x, 2), [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
        np.testing.assert_array_equal(upsample_images(x, 2, 1), [[1, 2], [1, 2], [3, 4], [3, 4]])


class DataTest(chex.TestCase):
    def test_digits_split_is_deterministic_and_disjoint(self):
        a, b, c = load_digits_splits(0), load_digits_splits(0), load_digits_splits(1)
        assert a.sizes() == {"train": 1257, "val": 180, "test": 360}
        np.testing.assert_array_equal(a.test_x, b.test_x)
        assert not np.array_equal(a.test_x, c.test_x)
        flat = {s: {x.tobytes() for x in getattr(a, f"{s}_x")} for s in ("train", "val", "test")}
        # (a few digits images are exact duplicates of one another, so compare by majority)
        assert len(flat["test"] & flat["train"]) < 5
        assert a.train_x.dtype == np.float32 and 0 <= a.train_x.min() and a.train_x.max() <= 1

    def test_batches_static_shapes_weights_and_order(self):
        splits = load_digits_splits(0)
        data = ImageData(splits, batch_size=100, seed=3)
        assert data.steps_per_epoch == 13
        batches = list(data.train_batches(0))
        assert len(batches) == 13
        for b in batches:
            assert b["image"].shape == (100, 8, 8) and b["label"].dtype == np.int32
        weights = np.concatenate([b["weight"] for b in batches])
        assert weights.sum() == 1257 and weights[-43:].sum() == 0
        seen = np.concatenate([b["label"] for b in batches])[:1257]
        np.testing.assert_array_equal(np.bincount(seen), np.bincount(splits.train_y))
        again = list(data.train_batches(0))
        np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])
        resumed = list(data.train_batches(0, 5))  # a resumed epoch skips its first 5 batches
        assert len(resumed) == 8
        np.testing.assert_array_equal(resumed[0]["image"], batches[5]["image"])
        other = next(data.train_batches(1))
        assert not np.array_equal(batches[0]["label"], other["label"])
        val = list(data.eval_batches("validation"))
        assert sum(b["weight"].sum() for b in val) == 180
        with pytest.raises(ValueError, match="unknown split"):
            data.eval_batches("nope")


@pytest.mark.parametrize("key", ["cnn", "rnn"])
def test_short_training_run_beats_chance(key, tmp_path):
    """Three epochs through the project's training loop (hw3_jax.train)."""
    splits = load_digits_splits(0)
    data = ImageData(splits, batch_size=64, seed=0)
    model = exp.build_models(splits.image_shape)[key]
    params = exp.init_params(model, splits.image_shape, 0)
    res = exp.train_model(model, params, data, epochs=3, learning_rate=3e-3, seed=0,
                          workdir=str(tmp_path))
    assert len(res.history) == 3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    acc = exp.accuracy(exp.make_predict(model), res.params, splits.test_x, splits.test_y,
                       EVAL_BATCH)
    assert acc > 0.4  # chance is 0.1
    assert acc == pytest.approx(res.test_accuracy, abs=1e-6)  # the loop's evaluation agrees


def test_shift_accuracies_zero_shift_is_plain_accuracy():
    splits = load_digits_splits(0)
    model = MODELS["cnn"]
    params = _params(model)
    predict = exp.make_predict(model)
    x, y = splits.test_x[:50], splits.test_y[:50]
    out = exp.shift_accuracies(predict, params, x, y, (0, 1), EVAL_BATCH)
    assert out["0"]["mean"] == exp.accuracy(predict, params, x, y, EVAL_BATCH)
    assert set(out["1"]) == {"mean", "up", "down", "left", "right"}
    assert out["1"]["down"] == exp.accuracy(predict, params, shift_images(x, 1, 0), y,
                                            EVAL_BATCH)


def test_bad_arguments_exit_2(capsys):
    assert exp.main(["--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    # The report reads the 1 and 2 px shifts: refused before any training, not after.
    (["--config.shift_distances=(0,1)"],
     "--config.shift_distances must include 1 and 2 (the report compares those shifts)"),
    (["--config.shift_distances=(-1,1,2)"], "--config.shift_distances must be pixel counts"),
    # A field without a shortcut flag is named by its override.
    (["--config.latency_batch=0"], "--config.latency_batch must be at least 1"),
    (["--config.eval_batch=0"], "--config.eval_batch must be at least 1"),
    # Whole pixels only: a fractional shift would fail after training.
    (["--config.shift_distances=(0,1,2,1.5)"],
     "--config.shift_distances must be pixel counts >= 0 (whole numbers)"),
    # scikit-learn's and NumPy's seeds are unsigned 32-bit.
    (["--seed", "-1"], "--seed must be a whole number in 0..2**32-1, got -1"),
    (["--seed", str(2**32)], "--seed must be a whole number in 0..2**32-1"),
    (["--learning-rate", "inf"], "--learning-rate must be positive and finite, got inf"),
    (["--learning-rate", "0"], "--learning-rate must be positive and finite"),
    # Any field can be set to None: refused by name, not a TypeError later.
    (["--out", "None"], "--out must be a folder, got None"),
    (["--config.eval_batch=None"], "--config.eval_batch must be at least 1"),
    (["--config.epochs=None"], "--epochs must be at least 1"),
    (["--config.seed=None"], "--seed must be a whole number"),
    (["--config.learning_rate=None"], "--learning-rate must be positive and finite"),
    (["--config.shift_distances=None"], "--config.shift_distances must be pixel counts"),
    (["--config.sides=(8,None)"], "--sides must be positive whole numbers"),
])
def test_config_checks_name_the_field(argv, needle):
    with pytest.raises(exp.cli.UserError) as e:
        exp.parse_args(argv)
    assert needle in str(e.value) and "\n" not in str(e.value)
    exp.check(get_config())  # the default passes
    assert exp.parse_args(["--config.shift_distances=(2,1)"])[0].shift_distances == (2, 1)


def test_config_variant_overrides_and_command():
    config, command = exp.parse_args(["--config", "configs/cnn_vs_rnn.py:gpu",
                                      "--config.epochs=3", "--batch-size", "32"])
    assert config.sides == (8, 16, 32, 64, 128, 256) and config.epochs == 3
    assert command == ("python -m experiments.cnn_vs_rnn --config configs/cnn_vs_rnn.py:gpu "
                       "--epochs 3 --seed 0 --batch-size 32")
    # Each variant writes its own folder: none overwrites the default run's results/.
    assert config.out == "results/cnn_vs_rnn_h100"
    assert get_config().out == "results" and get_config("mnist").out.startswith("runs/")
    config, command = exp.parse_args(["--config.latency_batch=8", "--out", "elsewhere"])
    assert config.latency_batch == 8 and config.out == "elsewhere"
    assert command == ("python -m experiments.cnn_vs_rnn --epochs 30 --seed 0 "
                       "--config.latency_batch=8")


def test_unknown_config_field_exit_2(capsys):
    assert exp.main(["--config.nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err


def test_mnist_without_internet_is_one_line(tmp_path, tfds_temp, monkeypatch, capsys):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(images, "can_reach", lambda host, timeout=5.0: False)
    assert exp.main(["--data", "mnist", "--tfds-data-dir", str(tmp_path), "--epochs", "1",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data mnist:") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    monkeypatch.setattr(exp, "train_and_measure", lambda *a: pytest.fail("trained"))
    assert exp.main(["--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not writable" in err and "\n" not in err
    assert out.read_text() == "not a folder"


def test_training_error_is_one_line(tmp_path, monkeypatch, capsys):
    """A run that cannot go on (a non-finite loss) ends in one line, not a traceback."""
    from hw3_jax.train.workdir import TrainingError

    def fail(*args):
        raise TrainingError("non-finite training loss at step 3 (epoch 1)")

    monkeypatch.setattr(exp, "run", fail)
    assert exp.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == "error: non-finite training loss at step 3 (epoch 1)\n"


def test_out_with_tilde_writes_every_file_under_home(tmp_path, monkeypatch):
    """`--out ~/q1`: the JSON, the tables and the plots all land in $HOME/q1."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    results = json.loads((ROOT / "results" / "cnn_vs_rnn.json").read_text())
    monkeypatch.setattr(exp, "run", lambda config, command, folder: results)
    assert exp.main(["--out", "~/q1"]) == 0
    assert sorted(p.name for p in (home / "q1").iterdir()) == [
        "cnn_vs_rnn.json", "cnn_vs_rnn.md", "cnn_vs_rnn_accuracy.png", "cnn_vs_rnn_shift.png",
        "cnn_vs_rnn_speed.png"]
    assert not list(cwd.iterdir())


def test_latency_cases_run_on_one_device(monkeypatch):
    """The training loop returns parameters replicated over every device's mesh; each timed
    program gets them on one device (a SingleDeviceSharding), as the freshly initialised RNNs
    of the side rows are, whatever the number of devices."""
    models = exp.build_models((8, 8))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    trained = {k: jax.device_put(exp.init_params(m, (8, 8), 0), replicated)
               for k, m in models.items()}
    timed = []
    monkeypatch.setattr(exp, "blocking", lambda fn, *args: timed.append(args))
    monkeypatch.setattr(exp, "time_interleaved",
                        lambda cases, **kw: {name: {"median_s": 1e-3} for name in cases})
    exp.measure_latency(models, trained, np.zeros((4, 8, 8), np.float32), 4, [8, 16], 1, 0)
    # 4 cases of test images, 2 at side 16 (side 8 is the test images' own).
    assert len(timed) == 6
    for a in jax.tree.leaves(timed):
        assert isinstance(a.sharding, jax.sharding.SingleDeviceSharding), a.sharding
        assert a.sharding.device_set == {jax.devices()[0]}


@pytest.mark.slow
def test_experiment_end_to_end(tmp_path):
    out = tmp_path / "out"
    assert exp.main(["--epochs", "2", "--latency-reps", "2", "--sides", "8", "16",
                     "--out", str(out)]) == 0
    r = json.loads((out / "cnn_vs_rnn.json").read_text())
    assert r["command"] == ("python -m experiments.cnn_vs_rnn --epochs 2 --seed 0 "
                            "--latency-reps 2 --sides 8 16")
    assert [row["side"] for row in r["latency_vs_side"]] == [8, 16]
    for key in ("cnn", "rnn"):
        m = r["models"][key]
        assert m["test_accuracy"] > 0.2 and len(m["history"]) == 2
        assert m["latency_ms_1"] > 0 and m["epoch_time_s"] > 0
        assert set(m["shift_accuracy"]) == {"0", "1", "2"}
    assert r["latency_vs_side"][1]["rnn_sequential_steps"] == 17
    md = (out / "cnn_vs_rnn.md").read_text()
    assert "| parameters | 14,378 | 14,858 |" in md
    for name in ("accuracy", "speed", "shift"):
        assert (out / f"cnn_vs_rnn_{name}.png").stat().st_size > 10_000
    body = q1_markdown(r)
    assert "14,378" in body and r["command"] in body


@pytest.mark.slow
def test_mnist_path_offline_with_tfds_mock_data(tmp_path, tfds_temp, monkeypatch):
    """The --data mnist code path on tensorflow-datasets' mock data (no download)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")
    monkeypatch.setattr(images, "can_reach", lambda host, timeout=5.0: True)
    with tfds.testing.mock_data(num_examples=96):
        splits = load_mnist_splits(0, data_dir=str(tmp_path / "tfds"))
        assert splits.image_shape == (28, 28)
        assert splits.sizes() == {"train": 88, "val": 8, "test": 96}
        assert splits.train_x.dtype == np.float32 and 0 <= splits.train_x.min()
        assert splits.train_x.max() <= 1 and splits.train_y.dtype == np.int32
        out = tmp_path / "out"
        assert exp.main(["--data", "mnist", "--tfds-data-dir", str(tmp_path / "tfds"),
                         "--epochs", "1", "--latency-reps", "1", "--sides", "28",
                         "--out", str(out)]) == 0
    r = json.loads((out / "cnn_vs_rnn.json").read_text())
    assert r["config"]["image_shape"] == [28, 28] and r["command"].startswith(
        "python -m experiments.cnn_vs_rnn --data mnist")
    # The RNN's input projection grows with the row width (28), the CNN's parameters do not.
    assert r["models"]["cnn"]["params"] == 14_378 and r["models"]["rnn"]["params"] == 18_698
