"""The benchmarks run end to end with --quick (tiny sizes) and write their JSON.

Smoke only: no timing is asserted (numbers come from `python -m benchmarks.NAME`); the recipe's
test checks that its timings and shares are there and in range, not their values.
`benchmarks.train_step --quick` is left out: ~50 s of CPU even on a tiny encoder (XLA
compiles the GRU's scan and its backward for two steps, and transformers loads)."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _quick_run(name: str, out_dir: pathlib.Path, *args: str, capsys=None) -> tuple[dict, str]:
    """(bench_NAME.json, stdout) of `python -m benchmarks.NAME --quick ARGS` on the CPU; given
    capsys, of its main() in this process instead (no second interpreter and jax import)."""
    argv = ["--quick", "--out-dir", str(out_dir), *args]
    if capsys is None:
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *argv], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        stdout = proc.stdout
    else:
        from benchmarks.inputs import run

        module = importlib.import_module(f"benchmarks.{name}")
        assert run(lambda: module.main(argv)) == 0, capsys.readouterr().err[-3000:]
        stdout = capsys.readouterr().out
    out = json.loads((out_dir / f"bench_{name}.json").read_text())
    assert out["benchmark"] == name and out["quick"] is True
    assert out["table_markdown"].startswith("|")
    assert "|---|" in stdout  # the Markdown table was printed
    return out, stdout


# The start of the line each benchmark prints after its table (None: none with --quick).
NOTES = {"input_pipeline": "tokenize target (<= 30 s for ", "predict": "encoder tiny; typical "
         "review ", "attention": None}


@pytest.mark.parametrize("name", ["input_pipeline", "predict", "attention"])
def test_quick_run_writes_json(name, tmp_path, shared_data, capsys):
    args = []
    if name in ("input_pipeline", "predict"):
        args = ["--vocab", str(shared_data / "bert-base-uncased" / "vocab.txt")]
    _, stdout = _quick_run(name, tmp_path, *args, capsys=capsys)
    if NOTES[name] is not None:
        assert any(line.startswith(NOTES[name]) for line in stdout.splitlines())


def test_report_prints_notes_but_does_not_store_them(tmp_path, capsys):
    from hw3_jax import timing

    result = {"benchmark": "x", "table_markdown": "| a |"}
    path = timing.report(result, tmp_path, notes=["a note"])
    assert capsys.readouterr().out.splitlines() == ["| a |", "a note", f"wrote {path}"]
    assert json.loads(path.read_text()) == result


def test_the_default_results_folder_is_the_current_folders(tmp_path, monkeypatch, capsys):
    """Without --out-dir a benchmark writes results/ in the folder it runs in (the
    checkout's root), not beside the installed package."""
    from hw3_jax import timing

    monkeypatch.chdir(tmp_path)
    path = timing.report({"benchmark": "x", "table_markdown": "| a |"}, None)
    assert path.resolve() == tmp_path / "results" / "bench_x.json"


def test_recipe_quick_run(tmp_path, shared_data):
    """The recipe's training runs (notebook and minilm), their metrics read back, the step's
    FLOPs and profile shares, in the JSON and the printed tables."""
    vocab = shared_data / "bert-base-uncased" / "vocab.txt"
    out, stdout = _quick_run("recipe", tmp_path, "--vocab", str(vocab))
    assert out["weights"] == "random"  # --quick never asks the hub
    (row,) = out["rows"]
    epochs = out["notebook"]["epoch_time_s"]
    assert len(epochs) == 2 and all(t > 0 for t in epochs)
    assert row["epoch_1_min"] == pytest.approx(epochs[0] / 60)
    assert row["examples_per_s"] > 0 and row["step_gflop"] > 0
    assert row["achieved_tflop_per_s"] > 0
    assert row["peak_fraction"] is None and "unknown peak" in stdout  # no CPU peak
    step = out["step"]
    assert step["xla_flops"] > 0 and step["step"]["median_s"] > 0
    shares = step["shares"]
    assert all(0.0 <= shares[k] <= 1.0 for k in ("encoder", "gru", "other"))
    assert shares["encoder"] > 0 and shares["gru"] > 0 and step["shares_note"] is None
    assert row["encoder_share"] == shares["encoder"] and row["gru_share"] == shares["gru"]
    assert sum(shares.values()) == pytest.approx(1.0)
    minilm = out["minilm"]
    assert len(minilm["epoch_time_s"]) == 2 and all(t > 0 for t in minilm["epoch_time_s"])
    assert 0.0 <= minilm["test_accuracy"] <= 1.0 and minilm["encoder_cache_s"] > 0
    assert out["minilm_row"]["test_accuracy"] == minilm["test_accuracy"]
    tables = [line for line in out["table_markdown"].splitlines() if line.startswith("|---|")]
    assert len(tables) == 2 and "| minilm" in stdout  # the notebook's and minilm's


def test_recipe_missing_archive_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.recipe", "--quick", "--out-dir", str(tmp_path),
           "--imdb-archive", str(tmp_path / "missing.tar.gz")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: IMDB archive {tmp_path / 'missing.tar.gz'} not found: pass --imdb-archive PATH"]
    assert not (tmp_path / "bench_recipe.json").exists()


def test_recipe_empty_workdir_is_one_line(tmp_path, capsys, monkeypatch):
    """An empty --workdir (an unset shell variable) is refused, not the current folder."""
    from benchmarks import recipe
    from benchmarks.inputs import run

    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--skip-minilm", "--workdir", "", "--out-dir", str(tmp_path / "out")]
    assert run(lambda: recipe.main(argv)) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: argument --workdir: an empty string: name the file or folder "
        "(see python -m benchmarks.recipe --help)"]
    assert not list(tmp_path.iterdir())


def test_recipe_run_error_is_one_line(tmp_path, capsys, monkeypatch):
    """A training run's error (here a stand-in for a NaN loss) ends the recipe as the
    sentiment command ends: one line, exit status 2."""
    from benchmarks import recipe
    from benchmarks.inputs import run
    from hw3_jax.train.workdir import TrainingError

    def fail(*args):
        raise TrainingError("the loss is NaN at step 3")

    monkeypatch.setattr(recipe, "run_recipe", fail)
    argv = ["--quick", "--skip-minilm", "--out-dir", str(tmp_path)]
    assert run(lambda: recipe.main(argv), recipe.RUN_ERRORS) == 2
    assert capsys.readouterr().err.splitlines() == ["error: the loss is NaN at step 3"]


def _one_line_error(argv: list[str], capsys) -> list[str]:
    """stderr of `python -m benchmarks.attention ARGV` run in this process, which must end
    with exit status 2 before measuring anything."""
    from benchmarks import attention
    from benchmarks.inputs import run

    assert run(lambda: attention.main(argv)) == 2
    return capsys.readouterr().err.splitlines()


def test_bad_flag_value_is_one_line(tmp_path, capsys):
    err = _one_line_error(["--repeats", "two", "--out-dir", str(tmp_path)], capsys)
    assert err == ["error: argument --repeats: invalid int value: 'two' "
                   "(see python -m benchmarks.attention --help)"]


@pytest.mark.parametrize("flags, message", [
    (["--repeats", "0"], "--repeats must be 1 or more, got 0"),
    (["--lengths", "512", "-8"], "--lengths must be 1 or more, got -8"),
    (["--warmup", "0"], "--warmup must be 1 or more, got 0"),  # it would time compiling
    (["--max-gb", "0"], "--max-gb must be a finite number > 0, got 0.0"),  # skips every case
])
def test_count_out_of_range_is_one_line(flags, message, tmp_path, capsys):
    err = _one_line_error([*flags, "--out-dir", str(tmp_path)], capsys)
    assert err == [f"error: {message}"]
    assert not (tmp_path / "bench_attention.json").exists()


def test_unwritable_out_dir_is_one_line(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    err = _one_line_error(["--out-dir", str(not_a_dir)], capsys)
    assert err == [f"error: {not_a_dir} is not writable (File exists): choose another --out-dir"]


# benchmarks.predict: its warm-up and repetitions.


class _Predictor:
    """Stands in for a SentimentPredictor: counts its score calls."""

    def __init__(self):
        self.calls = 0

    def score(self, texts):
        self.calls += 1
        return [0.5] * len(texts)


def test_predict_throughput_takes_the_repeats_flag():
    from benchmarks import predict

    preds = {predict.BATCH_SIZE: _Predictor(), 1: _Predictor()}
    out = predict.measure_throughput(preds, ["a b", "c"], [2, 1], warmup=1, repeats=4)
    assert all(len(out[k]["times_s"]) == 4 for k in out)
    assert preds[1].calls == 1 + 4  # warm-up, then the timed calls


def test_predict_needs_a_warm_up_call(tmp_path, capsys):
    """Zero warm-up calls would time the compilation of every shape."""
    from benchmarks import inputs, predict

    argv = ["--quick", "--warmup", "0", "--out-dir", str(tmp_path)]
    assert inputs.run(lambda: predict.main(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --warmup"), err


# The peers' processes: a failure is one error, with the install hint only when torch is missing.


def test_the_torch_peer_run_without_its_spec_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.torch_peer", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("code, message", [
    ("pass", "exit status 0, no output"),
    ("import sys; print('done'); sys.exit(0)", "exit status 0, no output"),
    ("import sys; sys.exit('Killed')", "Killed"),
])
def test_a_peer_without_its_json_line_is_a_runtime_error(code, message):
    from hw3_jax import timing

    with pytest.raises(RuntimeError) as e:
        timing.in_fresh_process(["-c", code], {})
    assert str(e.value) == message


@pytest.mark.parametrize("stderr, hint", [
    ("ModuleNotFoundError: No module named 'torch'", True),
    ("RuntimeError: out of memory", False),
])
def test_the_torch_peer_suggests_installing_torch_only_when_it_is_missing(stderr, hint,
                                                                         monkeypatch):
    from benchmarks import train_step
    from experiments.cli import UserError
    from hw3_jax import timing

    def fail(argv, env):
        raise RuntimeError(stderr)

    monkeypatch.setattr(timing, "in_fresh_process", fail)
    with pytest.raises(UserError) as e:
        train_step._torch_peer(None, size="tiny")
    assert str(e.value).startswith(f"the PyTorch peer failed ({stderr})")
    assert ("pip install torch" in str(e.value)) == hint


@pytest.mark.parametrize("name", ["attention", "gemm", "input_pipeline", "predict", "recipe",
                                  "train_step"])
def test_help_describes_the_benchmark_in_full(name, capsys):
    """--help shows the whole first paragraph of the module docstring, not its first line."""
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    first_paragraph = " ".join(module.__doc__.split("\n\n")[0].split())
    assert first_paragraph in " ".join(capsys.readouterr().out.split())
