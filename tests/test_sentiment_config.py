"""configs/sentiment.py and the command line that builds a config from it.

Every variant resolves and validates; `--config.a.b=VALUE` overrides and the shortcut flags
each land on one field; without `--config` the flags pick the variant; a bad config is one
error line before anything is read or written.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import shlex
import signal
import time

import jax.numpy as jnp
import pytest

from configs.sentiment import VARIANTS, get_config
from experiments import cli, sentiment_train
from experiments.sentiment import build_config, command_line, main


def run_main(argv: list[str]) -> tuple[int, str]:
    """main(argv) with stderr captured: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def assert_one_error_line(rc: int, err: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_validates(variant):
    config = sentiment_train.resolve(get_config(variant))
    sentiment_train.validate(config)
    assert config.data.source in ("imdb", "synthetic")
    assert config.train.seed == config.seed


def test_the_recorded_command_is_shell_text_that_rebuilds_the_config():
    """Spaces, `&` and tuples survive the shell: the command is split as a shell splits it."""
    argv = ["--encoder", "/my models/bert", "--imdb-url", "http://m/a.tar.gz?x=1&y=2",
            "--config.data.vocab=/my dir/vocab.txt", "--workdir", "/content/drive/My Drive/w",
            "--config.train.input_keys=('input_ids', 'attention_mask', 'extra')"]
    config, spec, workdir = build_config(argv)
    assert config.data.vocab == "/my dir/vocab.txt" and len(config.train.input_keys) == 3
    command = command_line(spec, config, workdir)
    assert "--encoder '/my models/bert'" in command and "'http://m/a.tar.gz?x=1&y=2'" in command
    again, _, workdir_again = build_config(shlex.split(command)[3:])
    assert cli.flatten(again) == cli.flatten(config) and workdir_again == workdir
    command = command_line("my configs/s.py:smoke", config, workdir, base=config)
    assert shlex.split(command)[3:5] == ["--config", "my configs/s.py:smoke"]


def test_overrides_and_shortcuts_land_on_their_field():
    argv = ["--config", "configs.sentiment:smoke", "--config.train.learning_rate=2e-3",
            "--config.data.buckets", "8,16", "--seed", "7", "--unfreeze", "--workdir", "w"]
    config, spec, workdir = build_config(argv)
    assert (config.train.learning_rate, config.data.buckets) == (2e-3, "8,16")
    assert config.seed == 7 and config.train.seed == 7  # the loop's seed follows the one seed
    assert config.model.freeze_encoder is False and workdir == "w"
    want = {"train.learning_rate", "data.buckets", "seed", "train.seed", "model.freeze_encoder"}
    base, got = cli.flatten(get_config("smoke")), cli.flatten(config)
    assert {k for k in got if got[k] != base[k]} == want
    # The rebuilt command names the variant and gives the same config.
    command = command_line(spec, config, workdir)
    assert command.startswith("python -m experiments.sentiment --config configs/sentiment.py:"
                              "smoke --workdir w --lr 0.002 --seed 7 "
                              "--config.data.buckets='8,16'")
    again, _, _ = build_config(command.split()[3:])
    assert cli.flatten(again) == got


def test_the_flags_imply_the_variant():
    """Without --config the recipe follows the encoder and the data."""
    assert build_config([])[1] == "configs.sentiment:synthetic"
    assert build_config(["--encoder", "bert-base-uncased"])[1] == "configs.sentiment:notebook"
    config, spec, _ = build_config(["--imdb-archive", "a.tar.gz", "--config.model.gru_layers=2"])
    assert spec == "configs.sentiment:imdb_scratch"
    want = cli.flatten(get_config("imdb_scratch"))
    want.update({"data.imdb_archive": "a.tar.gz", "model.gru_layers": 2})
    assert cli.flatten(config) == want
    assert sentiment_train.resolve(config).data.source == "imdb"
    # A mirror URL means IMDB as an archive does: the variant and the resolved source agree.
    config, spec, _ = build_config(["--imdb-url", "http://x/a.tar.gz"])
    assert spec == "configs.sentiment:imdb_scratch"
    resolved = sentiment_train.resolve(config)
    assert resolved.data.source == "imdb" and resolved.data.imdb_archive is None
    sentiment_train.validate(resolved)  # the mirror replaces the variant's shared archive
    config, _, _ = build_config(["--config", "configs/sentiment.py:imdb_scratch",
                                 "--imdb-url", "http://x/a.tar.gz"])
    assert config.data.imdb_archive is None  # so with the variant named, too
    # --data imdb alone is the official download (its help), with imdb_scratch's recipe; the
    # variant named keeps its shared archive. The recorded command rebuilds the download.
    config, spec, workdir = build_config(["--data", "imdb"])
    assert spec == "configs.sentiment:imdb_scratch" and config.data.imdb_archive is None
    again, _, _ = build_config(shlex.split(command_line(spec, config, workdir))[3:])
    assert cli.flatten(again) == cli.flatten(config)
    config, _, _ = build_config(["--config", "configs/sentiment.py:imdb_scratch"])
    assert config.data.imdb_archive == get_config("imdb_scratch").data.imdb_archive



def test_imdb_scratch_without_its_archive_reads_imdb():
    """The variant is IMDB's: with its archive cleared the run downloads IMDB (the field's
    None), not the synthetic data."""
    config, _, _ = build_config(["--config", "configs/sentiment.py:imdb_scratch",
                                 "--config.data.imdb_archive=None"])
    assert sentiment_train.resolve(config).data.source == "imdb"


URL = "http://x/a.tar.gz"


@pytest.mark.parametrize("variant", [[], ["--config", "configs/sentiment.py:imdb_scratch"]])
@pytest.mark.parametrize("shortcut,override", [
    (["--imdb-url", URL], [f"--config.data.imdb_url={URL}"]),
    (["--imdb-archive", "a.tar.gz"], ["--config.data.imdb_archive=a.tar.gz"]),
    (["--encoder", "bert-base-uncased"], ["--config.model.encoder=bert-base-uncased"]),
    (["--data", "imdb"], ["--config.data.source=imdb"]),
])
def test_an_override_picks_the_variant_as_its_shortcut_does(variant, shortcut, override):
    """The variant and the mirror URL's archive rule read `--config.a.b=VALUE` as they read
    the shortcut flag; the recorded command rebuilds the same config."""
    config, spec, workdir = build_config([*variant, *shortcut])
    by_override, override_spec, _ = build_config([*variant, *override])
    assert override_spec == spec
    assert cli.flatten(by_override) == cli.flatten(config)
    command = command_line(override_spec, by_override, workdir)
    again, _, _ = build_config(command.split()[3:])
    assert cli.flatten(again) == cli.flatten(config)


def test_a_later_override_wins_over_the_shortcut():
    config, spec, _ = build_config(["--imdb-url", URL, "--config.data.imdb_url=None"])
    assert spec == "configs.sentiment:synthetic" and config.data.imdb_url is None


def test_the_synthetic_variant_named_stays_in_the_command():
    """Without --config the flags would imply another variant, so the command names it."""
    config, spec, workdir = build_config(["--config", "configs/sentiment.py:synthetic",
                                          "--imdb-url", URL])
    command = command_line(spec, config, workdir)
    assert "--config configs/sentiment.py:synthetic" in command
    again, _, _ = build_config(command.split()[3:])
    assert cli.flatten(again) == cli.flatten(config)


def test_the_unknown_flag_hint_loads_no_config_unless_needed():
    parser = cli.ArgumentParser(prog="p")
    parser.add_argument("--known")
    cli.parse_args(parser, ["--known", "1"], lambda: pytest.fail("fields read"))
    with pytest.raises(cli.UserError, match="--dtype is the config field a.dtype or b.dtype"):
        cli.parse_args(parser, ["--dtype", "x"], lambda: ["a.dtype", "b.dtype", "c.other"])


@pytest.mark.parametrize("argv,needle", [
    (["--config.train.nope=1"], "no field train.nope"),
    # An unknown name lists what its section holds, so the right one is in sight.
    (["--config.train.lr=1e-3"], "no field train.lr; config.train has checkpoint_every_steps, "
                                 "encoder_learning_rate, epochs,"),
    (["--config.optim.lr=1e-3"], "no field optim.lr; the config has data, encoder_cache, "
                                 "model, seed, train"),
    (["--config.train.epochs=two"], "train.epochs"),
    (["--config.train.max_steps=abc"], "train.max_steps"),
    (["--epochs", "two"], "argument --epochs: invalid int value"),  # argparse's own errors
    (["--bogus"], "unrecognized arguments: --bogus"),  # a field whose default is None
    (["--config.train.encoder_learning_rate=fast"], "train.encoder_learning_rate"),
    (["--config", "configs.sentiment:nope"], "unknown variant"),
    # Run from elsewhere, the repository's configs/NAME.py is the installed module too.
    (["--config", "elsewhere/configs/sentiment.py:minilm"],
     "name the installed module: --config configs.sentiment:minilm"),
    (["--config", "elsewhere/mine.py"], "give an existing file"),
    (["--config", "configs.recurrence"], "config configs.recurrence is another experiment's"),
    (["--config", "experiments.cli"], "config experiments.cli has no get_config(arg)"),
    (["--config.model.attention=dense"], "model.attention"),
    (["--config.model.gru_layers=0"], "--config.model.gru_layers"),
    (["--config.model.gru_layers=two"], "--config.model.gru_layers"),  # type-checked
    (["--config.model.gru_hidden=0"], "--config.model.gru_hidden must be >= 1"),
    (["--config.model.dropout=1.0"], "--config.model.dropout"),
    (["--config.train.warmup_steps=-5"], "--config.train.warmup_steps"),
    (["--max-steps", "-1"], "--config.train.max_steps must be >= 0, got -1"),  # trained none
    (["--config.train.keep_latest=0"], "--config.train.keep_latest must be >= 1"),  # kept none
    (["--workdir", ""], "the folder given is an empty string"),  # not the current folder
    (["--config", "", "--max-steps", "1"], "argument --config: an empty string"),  # not the default
    (["--config.train.val_split=nope"], "--config.train.val_split: unknown split 'nope'"),
    (["--config.train.loss=multiclass"], "train.loss and input_keys are the sentiment model's"),
    (["--config.train.input_keys=('x',)"], "train.loss and input_keys are the sentiment"),
    (["--config.train.num_devices=0"], "--config.train.num_devices=0, but"),
    (["--config", "configs.sentiment:smoke", "--max-steps", "1", "--resume", "--overwrite"],
     "--overwrite discards it: pass one"),
    (["--config", "configs.sentiment:smoke", "--max-steps", "1",  # short if not refused
      "--config.data.vocab=../shared/data/bert-base-uncased/vocab.txt"], "a scratch encoder"),
    (["--epochs", "-1"], "--config.train.epochs must be >= 0"),
    (["--limit", "-5"], "--limit must be >= 1"),  # a slice [:-5] would drop 5 of each split
    (["--limit", "0"], "--limit must be >= 1"),
    (["--imdb-sha256", "0" * 64], "--imdb-sha256 is the checksum of a mirror's archive"),
    (["--encoder", ""], "--config.model.encoder is an empty string"),  # "" is the folder "."
    (["--data-dir", " "], "--config.data.data_dir is an empty string"),
    (["--seed", "-1"], "--seed must be a whole number in 0..2**32-1"),  # NumPy's range
    (["--config.data.buckets=x"], "--config.data.buckets"),
    # None only where the default is None (or TrainConfig takes it): not a TypeError later.
    (["--config", "configs.sentiment:smoke", "--max-steps", "1", "--config.data.batch_size=None"],
     "--config.data.batch_size=None: this field takes a value"),
    (["--config.train.epochs=None"], "--config.train.epochs=None: this field takes a value"),
    (["--config.train=None"], "--config.train is a section: set its fields"),
    (["--config.model.word_vector_std=0"], "--config.model.word_vector_std"),
    # A field without a shortcut flag is set with --config.SECTION.FIELD=VALUE alone.
    (["--readout", "concat"], "unrecognized arguments: --readout concat; --readout is the "
                              "config field model.readout: --config.model.readout=VALUE"),
    # Several fields of that name: each is named.
    (["--dtype", "float32"], "--dtype is the config field encoder_cache.dtype or model.dtype: "
                             "--config.encoder_cache.dtype=VALUE or --config.model.dtype=VALUE"),
])
def test_bad_config_is_one_error_line(argv, needle, tmp_path):
    rc, err = run_main(["--workdir", str(tmp_path / "w"), *argv])
    assert_one_error_line(rc, err)
    assert needle in err, err
    assert not (tmp_path / "w").exists()  # nothing was done


def test_out_of_memory_is_one_error_line(tmp_path):
    """A batch no memory holds (NumPy's MemoryError when its rows are allocated) is one line
    naming the flags that need less."""
    rc, err = run_main(["--config", "configs.sentiment:smoke", "--workdir", str(tmp_path),
                        "--batch-size", str(10**12)])
    assert_one_error_line(rc, err)
    assert "out of memory" in err and "pass a smaller --batch-size or --max-length" in err, err


def test_xla_out_of_memory_is_one_error_line(capsys):
    def allocate() -> int:
        return int(jnp.zeros(10**13, jnp.float32).sum())  # 40 TB

    rc = cli.run_main(allocate, memory_fix="pass less")
    err = capsys.readouterr().err
    assert_one_error_line(rc, err)
    assert "RESOURCE_EXHAUSTED" in err and err.rstrip().endswith("): pass less"), err
    with pytest.raises(ZeroDivisionError):  # any other failure stays a traceback
        cli.run_main(lambda: 1 // 0)


def test_ctrl_c_in_a_garbage_collector_callback_still_stops(capsys):
    """Python drops a KeyboardInterrupt raised in a gc callback (JAX has one): run_main's
    SIGINT handler sends the signal again, to stop the command once the callback is done."""
    sent = []

    def callback(phase, info) -> None:
        if not sent:
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, inside the callback
                pass

    def command() -> int:
        gc.callbacks.append(callback)
        try:
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            gc.callbacks.remove(callback)
        return 0

    assert cli.run_main(command) == 130 and sent
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_config_file_loads_or_is_one_error_line(tmp_path):
    """A config file with a syntax error, or whose get_config returns no ConfigDict, is one
    line, as is a path without .py; ml_collections' get_config() without an argument loads."""
    mine = tmp_path / "mine.py"
    for text, needle in [("def get_config(:\n", r"mine.py: .*line 1"),
                         ("def get_config(arg=None):\n    return {}\n", "returned a dict")]:
        mine.write_text(text)
        with pytest.raises(cli.UserError, match=needle):
            cli.load_config(str(mine))
    with pytest.raises(cli.UserError, match="no config module ./configs/sentiment"):
        cli.load_config("./configs/sentiment")
    mine.write_text("from configs import sentiment\n\ndef get_config():\n"
                    "    return sentiment.get_config('smoke')\n")
    assert cli.load_config(str(mine)).data.max_length == 32


@pytest.mark.parametrize("variant,argv", [
    ("synthetic", []),
    ("imdb_scratch", ["--imdb-archive", "../shared/data/aclImdb_v1.tar.gz", "--encoder",
                      "scratch"]),
    ("minilm", ["--encoder", "../shared/data/all-MiniLM-L6-v2", "--imdb-archive",
                "../shared/data/aclImdb_v1.tar.gz", "--max-length", "256",
                "--config.data.truncation=head+tail",
                "--config.data.buckets=64,96,128,160,192,224,256", "--batch-size", "32",
                "--cache-encoder"]),
])
def test_the_readme_shortcut_commands_build_the_variants(variant, argv):
    config, _, _ = build_config(argv)
    assert cli.flatten(config) == cli.flatten(get_config(variant))


def test_train_help_points_at_the_config_fields(capsys):
    """Every field without a shortcut flag is set with --config.SECTION.FIELD=VALUE; the help
    says so and names the file that documents each field."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config.SECTION.FIELD=VALUE" in out and "configs/sentiment.py" in out
    assert "--readout" not in out and "--config.model.readout=concat" in out
