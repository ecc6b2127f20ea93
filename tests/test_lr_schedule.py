"""Learning-rate schedules of the training loop and the sentiment CLI's tuning flags."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import sentiment
from hw3_jax import train as T


def _cfg(**kw):
    return T.TrainConfig(workdir=".", **kw)


def test_constant_without_warmup_is_the_plain_float():
    # The optimizer state then has exactly the structure it had before schedules existed,
    # so old checkpoints still restore.
    assert T.learning_rate_schedule(_cfg(learning_rate=3e-3)) == 3e-3
    plain = jax.eval_shape(optax.adam(1e-3).init, {"w": jnp.zeros(3)})
    ours = jax.eval_shape(T.make_optimizer(T.learning_rate_schedule(_cfg())).init,
                          {"w": jnp.zeros(3)})
    assert jax.tree.structure(plain) == jax.tree.structure(ours)


def test_warmup_then_constant():
    f = T.learning_rate_schedule(_cfg(learning_rate=2e-3, warmup_steps=4))
    np.testing.assert_allclose([f(i) for i in (0, 2, 4, 100)], [0.0, 1e-3, 2e-3, 2e-3], rtol=1e-6)


def test_cosine_warms_up_peaks_and_ends_at_zero():
    f = T.learning_rate_schedule(_cfg(learning_rate=2e-3, lr_schedule="cosine", warmup_steps=10),
                                 total_steps=110)
    np.testing.assert_allclose([f(0), f(5), f(10), f(60), f(110)],
                               [0.0, 1e-3, 2e-3, 1e-3, 0.0], rtol=1e-5, atol=1e-9)


def test_cosine_needs_the_step_count():
    with pytest.raises(ValueError, match="number of training steps"):
        T.learning_rate_schedule(_cfg(lr_schedule="cosine"))


class _Data:
    steps_per_epoch = 7


def test_total_steps_from_data_and_max_steps():
    assert T._total_steps(_cfg(epochs=3), _Data()) == 21
    assert T._total_steps(_cfg(epochs=3, max_steps=5), _Data()) == 5
    assert T._total_steps(_cfg(epochs=3), object()) is None


@pytest.mark.parametrize("kw", [dict(lr_schedule="linear"), dict(warmup_steps=-1)])
def test_bad_schedule_config(kw):
    with pytest.raises(ValueError):
        _cfg(**kw)


def test_parse_buckets():
    p = sentiment._parse_buckets
    assert p(None, 512) is None
    assert p("256,64,128", 512) == (64, 128, 256, 512)
    assert p("64,128,192,256,384,512", 256) == (64, 128, 192, 256)  # a shorter --max-length
    assert p((64, 128), 100) == (64, 100)
    for bad in ("a,b", "0,64", ","):
        with pytest.raises(sentiment.UserError):
            p(bad, 512)


def _resolved(*argv):
    args = sentiment._parser().parse_args(["train", *argv])
    return sentiment._resolve(args)


def test_imdb_preset_fills_the_tuning_flags_and_flags_override_it():
    args = _resolved("--imdb-archive", "a.tar.gz")
    preset = sentiment.PRESETS["scratch-imdb"]
    for key, value in preset.items():
        assert getattr(args, key) == value, key
    args = _resolved("--imdb-archive", "a.tar.gz", "--lr-schedule", "constant",
                     "--warmup-steps", "0", "--gru-layers", "2", "--dropout", "0.25")
    assert (args.lr_schedule, args.warmup_steps, args.gru_layers, args.dropout) == (
        "constant", 0, 2, 0.25)


@pytest.mark.parametrize("argv", [["--gru-layers", "0"], ["--dropout", "1.0"],
                                  ["--warmup-steps", "-5"], ["--buckets", "x"],
                                  ["--word-vector-std", "0"]])
def test_bad_tuning_flags_are_user_errors(argv):
    with pytest.raises(sentiment.UserError):
        _resolved(*argv)
