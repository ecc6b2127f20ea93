"""Learning-rate schedules of the training loop and the sentiment CLI's tuning flags."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import sentiment
from hw3_jax.data.batching import default_buckets, normalise_buckets
from hw3_jax.data.errors import DataError
from hw3_jax.train import loop as L
from hw3_jax.train import steps as S


def _cfg(**kw):
    return L.TrainConfig(**kw)


def _schedule(config, total_steps=None):
    return S.learning_rate_schedule(config.learning_rate, config.lr_schedule,
                                    config.warmup_steps, total_steps)


def test_constant_without_warmup_is_the_plain_float():
    # The optimizer state then has plain Adam's structure.
    assert _schedule(_cfg(learning_rate=3e-3)) == 3e-3
    plain = jax.eval_shape(optax.adam(1e-3).init, {"w": jnp.zeros(3)})
    ours = jax.eval_shape(S.make_optimizer(_schedule(_cfg()), optimizer="adam",
                                           weight_decay=0.0).init, {"w": jnp.zeros(3)})
    assert jax.tree.structure(plain) == jax.tree.structure(ours)


def test_warmup_then_constant():
    f = _schedule(_cfg(learning_rate=2e-3, warmup_steps=4))
    np.testing.assert_allclose([f(i) for i in (0, 2, 4, 100)], [0.0, 1e-3, 2e-3, 2e-3], rtol=1e-6)


def test_cosine_warms_up_peaks_and_ends_at_zero():
    f = _schedule(_cfg(learning_rate=2e-3, lr_schedule="cosine", warmup_steps=10),
                  total_steps=110)
    np.testing.assert_allclose([f(0), f(5), f(10), f(60), f(110)],
                               [0.0, 1e-3, 2e-3, 1e-3, 0.0], rtol=1e-5, atol=1e-9)


def test_cosine_needs_the_step_count():
    with pytest.raises(ValueError, match="number of training steps"):
        _schedule(_cfg(lr_schedule="cosine"))


def test_total_steps_from_data_and_max_steps():
    assert L.total_steps(_cfg(epochs=3), 7) == 21
    assert L.total_steps(_cfg(epochs=3, max_steps=5), 7) == 5
    assert L.total_steps(_cfg(epochs=3, max_steps=50), 7) == 21


@pytest.mark.parametrize("kw", [dict(lr_schedule="step"), dict(warmup_steps=-1)])
def test_bad_schedule_config(kw):
    with pytest.raises(ValueError):
        _cfg(**kw)


def test_parse_buckets():
    p = normalise_buckets
    assert p(None, 512) == default_buckets(512)
    assert p("256,64,128", 512) == (64, 128, 256, 512)
    assert p("64,128,192,256,384,512", 256) == (64, 128, 192, 256)  # a shorter --max-length
    assert p((64, 128), 100) == (64, 100)
    for bad in ("a,b", "0,64", ","):
        with pytest.raises(DataError):
            p(bad, 512)


def test_imdb_preset_fills_the_tuning_flags_and_flags_override_it():
    from experiments import cli

    config, spec, _ = sentiment.build_config(["--imdb-archive", "a.tar.gz"])
    preset = cli.load_config("configs/sentiment.py:imdb_scratch")
    assert spec.endswith(":imdb_scratch")
    for section in ("model", "train"):
        assert config[section].to_dict() == preset[section].to_dict(), section
    config, _, _ = sentiment.build_config(
        ["--imdb-archive", "a.tar.gz", "--config.train.lr_schedule=constant",
         "--config.train.warmup_steps=0", "--config.model.gru_layers=2",
         "--config.model.dropout=0.25"])
    assert (config.train.lr_schedule, config.train.warmup_steps, config.model.gru_layers,
            config.model.dropout) == ("constant", 0, 2, 0.25)


@pytest.mark.parametrize("argv", [["--config.model.gru_layers=0"],
                                  ["--config.model.dropout=1.0"],
                                  ["--config.train.warmup_steps=-5"],
                                  ["--config.data.buckets=x"],
                                  ["--config.model.word_vector_std=0"],
                                  ["--lr", "inf"], ["--lr", "nan"],
                                  ["--config.train.encoder_learning_rate=1e999"],
                                  ["--config.train.weight_decay=1e999"]])
def test_bad_tuning_flags_are_user_errors(argv):
    from experiments import sentiment_train

    with pytest.raises(sentiment.UserError):
        sentiment_train.validate(sentiment_train.resolve(sentiment.build_config(argv)[0]))
