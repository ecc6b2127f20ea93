"""End to end through the sentiment command line (`experiments.sentiment.main`).

A tiny encoder on the embedded synthetic set, so that a run takes seconds once compiled: one
run trained per module (`trained`) is shared by the prediction tests and is the
uninterrupted reference of the resume test. Runs in this process share compiled steps (the
loop and the predictor cache them per model), so only a new model or loss setting compiles.
The runs use the smoke variant of configs/sentiment.py. A fault in the middle of a run
(Ctrl-C, a NaN loss) comes from data that makes one (`FaultyData`). The loop's own fault
tests (SIGKILL at a random step, corrupted checkpoints, disk full) are in tests/test_train.py;
the data sources' own in tests/test_input_pipeline.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import experiments.sentiment_train as sentiment_train
from configs.sentiment import get_config
from experiments.sentiment import NOTEBOOK_SENTENCES, main
from hw3_jax.predict import SentimentPredictor
from hw3_jax.train.checkpoints import load_best

ROOT = Path(__file__).resolve().parents[1]
SMOKE = get_config("smoke")
SIZE = SMOKE.data.synthetic_size  # 300 reviews in the training part (split 70/30)
TEST_SIZE = SIZE // 5  # the synthetic test part: a fifth of the training part
TINY = ["--config", f"{ROOT / 'configs' / 'sentiment.py'}:smoke", "--no-progress",
        "--seed", "0"]
EPOCHS = 2
# Facts of a run that differ between identical runs: wall-clock times.
TIME_KEYS = {"epoch_time_s", "train_time_s", "val_time_s", "examples_per_s"}


def run_main(argv: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    """main(argv) with stdout/stderr captured (and stdin replaced by a byte stream holding
    `stdin` in UTF-8, as a pipe is): (exit code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        if stdin is not None:
            mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_cli(args: list, *, stdin: bytes = b"", timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m experiments.sentiment ARGS` in a fresh interpreter (the real exit path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "experiments.sentiment", *args], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=timeout, env=env)


def metrics_of(workdir: Path) -> dict:
    return json.loads((workdir / "metrics.json").read_text())


def config_of(workdir: Path) -> dict:
    return json.loads((workdir / "config.json").read_text())


class FaultyData:
    """A run's data whose training batch for global step `at` (1-based) goes through
    `fault` (which may raise, or return a batch that makes the loss NaN)."""

    def __init__(self, data, at: int, fault):
        self.data, self.at, self.fault = data, at, fault

    def __getattr__(self, name):
        return getattr(self.data, name)

    def train_batches(self, epoch: int, start_step: int = 0):
        first = epoch * self.data.steps_per_epoch + start_step + 1
        for step, batch in enumerate(self.data.train_batches(epoch, start_step), first):
            yield self.fault(batch) if step == self.at else batch


def inject(monkeypatch, at: int, fault) -> None:
    """The next runs of this process read `FaultyData` instead of their data."""
    real = sentiment_train.get_datasets
    monkeypatch.setattr(sentiment_train, "get_datasets",
                        lambda *a, **kw: FaultyData(real(*a, **kw), at, fault))


def nan_labels(batch: dict) -> dict:
    return {**batch, "label": np.full_like(batch["label"], np.nan)}


def interrupt(batch: dict) -> dict:
    """An interrupt raised inside the run, as a second Ctrl-C: no checkpoint of its step."""
    raise KeyboardInterrupt


def ctrl_c(batch: dict) -> dict:
    os.kill(os.getpid(), signal.SIGINT)
    return batch


def assert_one_error_line(rc: int, err: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in history]


def final_params(workdir: Path):
    """The parameters of the last 'latest' checkpoint (the end of training)."""
    latest = workdir / "checkpoints" / "latest"
    step = max(int(d.name) for d in latest.iterdir() if d.name.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(latest / str(step) / "params")


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_same_run(a: Path, b: Path) -> None:
    """Two workdirs hold the same training run: history, test numbers, best and final
    parameters, bit for bit."""
    ma, mb = metrics_of(a), metrics_of(b)
    assert without_times(ma["history"]) == without_times(mb["history"])
    for k in ("steps", "best", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
              "test_examples", "predictions"):
        assert ma[k] == mb[k], k
    assert_trees_equal(load_best(a).params, load_best(b).params)
    assert_trees_equal(final_params(a), final_params(b))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One uninterrupted 2-epoch run of the tiny model: its workdir and output."""
    wd = tmp_path_factory.mktemp("sentiment") / "run"
    rc, out, err = run_main(["--workdir", str(wd), "--epochs", str(EPOCHS), *TINY])
    return {"workdir": wd, "rc": rc, "out": out, "err": err}


# --------------------------------------------------------------------------- train


@pytest.mark.slow  # the module's one compilation of the tiny model (shared by what follows)
def test_train_evaluate_predict(trained):
    wd = trained["workdir"]
    assert trained["rc"] == 0, trained["err"]
    assert "Traceback" not in trained["err"]
    m = metrics_of(wd)
    assert m["status"] == "completed" and m["error"] is None
    sizes = m["data"]["sizes"]
    assert sizes == {"train": 210, "validation": 90, "test": TEST_SIZE}  # 70/30 split of 300
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    for h in m["history"]:
        assert h["train_examples"] == sizes["train"] and h["val_examples"] == sizes["validation"]
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert math.isfinite(h[k]), k
    # Every test review counted once, padding never (60 = one full batch of 32 + 28).
    assert m["test_examples"] == TEST_SIZE
    assert math.isfinite(m["test_loss"]) and 0.0 <= m["test_accuracy"] <= 1.0
    assert 0.0 <= m["val_accuracy"] <= 1.0
    assert m["val_loss"] == min(h["val_loss"] for h in m["history"])  # best by val loss
    assert (wd / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (wd / "tokenizer.json").is_file()
    assert set(m["predictions"]) == set(NOTEBOOK_SENTENCES)
    for p in m["predictions"].values():
        assert 0.0 <= p <= 1.0
    assert f"on {TEST_SIZE} reviews" in trained["out"]
    # The best checkpoint, reloaded, scores as the model did at the end of training.
    pred = SentimentPredictor.load(wd)
    for text, p in m["predictions"].items():
        assert pred.predict_sentiment(text) == pytest.approx(p, abs=1e-6)
    # A text scores the same alone and among others (sorted by length, other batch shapes),
    # and results come back in input order.
    texts = [f"{w} movie, " * k for k in (1, 9, 3, 40, 2) for w in ("a great", "a dull")]
    together = [r.p_positive for r in pred.score(texts)]
    alone = [pred.predict_sentiment(t) for t in texts]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    with pytest.raises(TypeError, match=r"score\(\[text\]\)"):
        pred.score(texts[0])
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        SentimentPredictor(pred.model, pred.params, pred.tokenizer, batch_size=0)


@pytest.mark.slow  # three runs
def test_stop_interrupt_resume_equals_uninterrupted(trained, tmp_path, monkeypatch):
    """--max-steps at the end of epoch 1, then --resume stopped by Ctrl-C (a SIGINT) in
    epoch 2, which saves the step it stopped after, then --resume to the end: the same run
    as the uninterrupted one, exactly (CPU)."""
    assert trained["rc"] == 0
    steps_per_epoch = metrics_of(trained["workdir"])["history"][0]["step"]
    wd = tmp_path / "run"
    args = ["--workdir", str(wd), "--epochs", str(EPOCHS), *TINY]
    rc, _, err = run_main([*args, "--max-steps", str(steps_per_epoch)])
    assert rc == 0, err
    assert [h["epoch"] for h in metrics_of(wd)["history"]] == [1]

    with monkeypatch.context() as patch:
        inject(patch, steps_per_epoch + 3, ctrl_c)  # read while step spe + 2 is queued
        rc, _, err = run_main([*args, "--resume"])
    assert rc == 130 and "Traceback" not in err
    assert f"stopped after step {steps_per_epoch + 2} (batch 2 of epoch 2)" in err
    assert "--resume" in err

    rc, out, err = run_main([*args, "--resume"])
    assert rc == 0, err
    assert f"(step {steps_per_epoch + 2}, batch 2 of epoch 2)" in out
    assert_same_run(trained["workdir"], wd)


def test_existing_run_needs_resume_or_overwrite(trained):
    rc, _, err = run_main(["--workdir", str(trained["workdir"]), *TINY])
    assert_one_error_line(rc, err)
    assert "--resume" in err and "--overwrite" in err


def test_overwrite_retrains_the_tokenizer(trained, tmp_path):
    """--overwrite starts afresh: the tokenizer of the old run (other data) is not reused."""
    wd = tmp_path / "run"
    shutil.copytree(trained["workdir"], wd)
    old = (wd / "tokenizer.json").read_text()
    rc, _, err = run_main(["--workdir", str(wd), "--epochs", "0", "--overwrite", *TINY,
                           f"--config.data.synthetic_size={SIZE + 100}"])
    assert rc == 0, err
    assert (wd / "tokenizer.json").read_text() != old
    assert metrics_of(wd)["data"]["sizes"]["test"] == (SIZE + 100) // 5
    steps = [d.name for d in (wd / "checkpoints").glob("*/*") if d.name.isdigit()]
    assert steps == []  # the old run's checkpoints are gone (0 epochs: none new)


def test_nan_loss_stops_and_keeps_best(trained, tmp_path, monkeypatch):
    steps_per_epoch = metrics_of(trained["workdir"])["history"][0]["step"]
    wd = tmp_path / "run"
    inject(monkeypatch, steps_per_epoch + 2, nan_labels)  # labels NaN: the loss is NaN
    rc, _, err = run_main(["--workdir", str(wd), "--epochs", str(EPOCHS), *TINY])
    assert_one_error_line(rc, err)
    assert "non-finite" in err and f"step {steps_per_epoch + 2}" in err
    assert "best checkpoint" in err
    m = metrics_of(wd)
    assert m["status"] == "failed" and "non-finite" in m["error"]
    assert [h["epoch"] for h in m["history"]] == [1] and m["best"]["epoch"] == 1
    pred = SentimentPredictor.load(wd)  # the best checkpoint (epoch 1) still loads
    for r in pred.score(list(NOTEBOOK_SENTENCES)):
        assert r.error is None and 0.0 <= r.p_positive <= 1.0


@pytest.mark.slow  # compiles the model in bfloat16
def test_bfloat16_trains_and_evaluates(tmp_path):
    wd = tmp_path / "run"
    rc, out, err = run_main(["--workdir", str(wd), "--epochs", "1",
                             "--config.model.dtype=bfloat16", *TINY])
    assert rc == 0, err
    assert "bfloat16 on" in out
    m = metrics_of(wd)
    assert config_of(wd)["model"]["dtype"] == "bfloat16"
    assert m["test_examples"] == TEST_SIZE
    assert math.isfinite(m["test_loss"]) and 0.0 <= m["test_accuracy"] <= 1.0
    assert math.isfinite(m["history"][0]["val_loss"])
    ckpt = load_best(wd)  # parameters stay float32; only the compute is bfloat16
    assert {np.asarray(x).dtype for x in jax.tree.leaves(ckpt.params)} == {np.dtype("float32")}
    for p in m["predictions"].values():
        assert 0.0 <= p <= 1.0


# --------------------------------------------------------------------------- predict

LONG = "a truly wonderful film, " * 4200  # 100,800 characters: truncated to 32 tokens
VALID = [
    "Avengers was great!!",
    LONG,
    "great movie 😀🎬👍 loved it",
    "这部电影非常好看",  # Chinese
    "كان الفيلم رائعا",  # Arabic
    "यह फिल्म बहुत अच्छी थी",  # Hindi
    "bad\x00movie\x07 \x1b[31mawful\x1b[0m",  # control characters among words
    "line one\nline two\ttabbed",
]
INVALID = [
    "",
    "   \t\n  ",
    "\x00\x01\x02\x7f",  # only control characters: nothing left to score
    "\u200b\ufeff",  # only zero-width format characters
]


def test_predict_plain(trained):
    wd = str(trained["workdir"])
    rc, out, err = run_main(["predict", "--workdir", wd, *NOTEBOOK_SENTENCES])
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, NOTEBOOK_SENTENCES, strict=True):
        p, shown = line.split("\t")
        assert shown == text and 0.0 <= float(p) <= 1.0
    assert "2 scored, 0 rejected" in err
    # Line breaks and control characters in a text do not break the one-line format.
    rc, out, err = run_main(["predict", "--workdir", wd, VALID[-2], VALID[-1]])
    assert rc == 0, err
    assert len(out.splitlines()) == 2 and "\x1b" not in out
    # A stdout that cannot take the text (PYTHONIOENCODING=ascii): the text is escaped, the
    # tab between the columns is not.
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    with contextlib.redirect_stdout(ascii_out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["predict", "--workdir", wd, "caf\u00e9 \U0001f600"]) == 0
        ascii_out.flush()
    assert ascii_out.buffer.getvalue().decode().split("\t")[1] == "caf\\xe9 \\U0001f600\n"


def test_predict_real_process_stops_quietly_when_its_reader_does(trained):
    """`predict ... | head -1`: the reader closing the pipe ends predict at once, exit 0,
    with nothing on stderr about the pipe."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.sentiment", "predict", "--workdir",
         str(trained["workdir"]), *NOTEBOOK_SENTENCES], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before predict writes: its first write finds no reader
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"pipe" not in err.lower(), err.decode()


def test_predict_json_every_kind_of_input(trained):
    texts = [VALID[0], INVALID[0], *VALID[1:], *INVALID[1:]]
    rc, out, err = run_main(["predict", "--workdir", str(trained["workdir"]), "--json", *texts])
    assert rc == 1  # some inputs were rejected
    assert "Traceback" not in err
    assert f"{len(VALID)} scored, {len(INVALID)} rejected" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == texts  # one object per input, in order
    for r in rows:
        if r["text"] in INVALID:
            assert set(r) == {"text", "error"} and r["error"], r
        else:
            assert set(r) == {"text", "p_positive"}, r
            assert 0.0 <= r["p_positive"] <= 1.0
    # All valid: exit 0. The long text scores as its first tokens do (truncation).
    rc, out, _ = run_main(["predict", "--workdir", str(trained["workdir"]), "--json",
                           LONG, LONG[:400]])
    assert rc == 0
    p_long, p_start = (json.loads(line)["p_positive"] for line in out.splitlines())
    assert p_long == pytest.approx(p_start, abs=1e-6)


def test_predict_reads_stdin(trained):
    rc, out, err = run_main(["predict", "--workdir", str(trained["workdir"]), "--json"],
                            stdin="Avengers was great!!\n\nJustice League is terrible.\n")
    assert rc == 1, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [("error" in r) for r in rows] == [False, True, False]


def test_predict_undecodable_argv(trained):
    """What Python makes of argv bytes that are not UTF-8 (lone surrogates): a per-input
    error, printed as valid JSON, while the other text is scored."""
    rc, out, err = run_main(["predict", "--workdir", str(trained["workdir"]), "--json",
                             "caf\udce9 \udcff", "Avengers was great!!"])
    assert rc == 1 and "Traceback" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0] == {"text": "caf\udce9 \udcff", "error": rows[0]["error"]}
    assert 0.0 <= rows[1]["p_positive"] <= 1.0


def test_predict_real_process_undecodable_stdin(trained):
    """Bytes that are not UTF-8 on stdin: that line gets an error, the others are scored,
    and the real process exits 1 with no traceback."""
    proc = run_cli(["predict", "--workdir", str(trained["workdir"])],
                   stdin=b"good\n\xff\xfe bad bytes\nbad\n")
    assert proc.returncode == 1, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 3 and lines[1].startswith("error\t") and "\\udcff" in lines[1]
    assert all(0.0 <= float(line.split("\t")[0]) <= 1.0 for line in (lines[0], lines[2]))


def _review_archive(path: Path, raw, unsup: list[str]) -> Path:
    """An archive in the official layout holding `raw`'s reviews and `unsup`."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, text: str) -> None:
            data = text.encode()
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for part in ("train", "test"):
            split = getattr(raw, part)
            for i, (text, label) in enumerate(zip(split.texts, split.labels, strict=True)):
                add(f"{part}/{'pos' if label else 'neg'}/{i}_{8 if label else 3}.txt", text)
        for i, text in enumerate(unsup):
            add(f"train/unsup/{i}_0.txt", text)
    return path


def test_archive_run_with_word_vectors_and_concat_readout(tmp_path):
    """model.init_embeddings ppmi-svd counts the training texts and the archive's
    unlabelled reviews (tokenized once, cached); model.readout concat is saved with the
    model, so `predict` rebuilds it."""
    from hw3_jax.data.synthetic import make_synthetic

    raw = make_synthetic(3, 200, 40)
    unsup = make_synthetic(4, 50, 1).train.texts
    archive = _review_archive(tmp_path / "imdb.tar.gz", raw, unsup)
    wd = tmp_path / "run"
    rc, out, err = run_main(["--imdb-archive", str(archive), "--workdir", str(wd),
                             "--epochs", "1", *TINY, "--config.model.init_embeddings=ppmi-svd",
                             "--config.model.readout=concat"])
    assert rc == 0, err
    assert "word vectors: PPMI+SVD on 250 texts (50 unlabelled)" in out
    wv = metrics_of(wd)["word_vectors"]
    assert wv["init"] == "ppmi-svd" and wv["texts"] == 250 and wv["unsup_texts"] == 50
    assert len(list((wd / "cache").glob("tokens-*-unsup-*.npz"))) == 1
    pred = SentimentPredictor.load(wd)
    assert pred.model.readout == "concat"
    p = pred.predict_sentiment(NOTEBOOK_SENTENCES[1])
    assert 0.0 <= p <= 1.0
    assert metrics_of(wd)["predictions"][NOTEBOOK_SENTENCES[1]] == pytest.approx(p, abs=1e-6)
    # Resuming (here: one more epoch) restores the trained embeddings from the checkpoint
    # and does not count the word vectors again.
    rc, out, err = run_main(["--imdb-archive", str(archive), "--workdir", str(wd),
                             "--epochs", "2", *TINY, "--config.model.init_embeddings=ppmi-svd",
                             "--config.model.readout=concat", "--resume"])
    assert rc == 0, err
    assert "word vectors" not in out
    m = metrics_of(wd)
    assert m["word_vectors"]["note"] == "not recomputed: resumed"
    assert [h["epoch"] for h in m["history"]] == [1, 2]


# --------------------------------------------------------------------------- bad input


def _archive(path: Path, folders: list[str]) -> Path:
    """A small .tar.gz in the official aclImdb layout with two reviews per folder."""
    with tarfile.open(path, "w:gz") as tar:
        for folder in folders:
            for i in range(2):
                data = f"review {i} of {folder}<br />fine".encode()
                info = tarfile.TarInfo(f"aclImdb/{folder}/{i}_{7 if 'pos' in folder else 2}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str | None, str]]:
    """name -> (argv, stdin, a word the message must contain)."""
    (tmp / "empty").mkdir()
    (tmp / "not_gzip.tar.gz").write_text("this is not an archive\n")
    (tmp / "a_file").write_text("x")
    no_test_neg = _archive(tmp / "no_test_neg.tar.gz", ["train/pos", "train/neg", "test/pos"])
    w = str(tmp / "w")
    return {
        "missing archive": (["--imdb-archive", str(tmp / "missing.tar.gz"), "--workdir", w,
                             *TINY], None, "does not exist"),
        "not gzip": (["--imdb-archive", str(tmp / "not_gzip.tar.gz"), "--workdir", w, *TINY],
                     None, "not a readable"),
        "archive without test/neg": (["--imdb-archive", str(no_test_neg), "--workdir", w,
                                      *TINY], None, "test/neg is missing"),
        "predict: no checkpoint": (["predict", "--workdir", str(tmp / "empty"), "good"], None,
                                   "no checkpoint"),
        "predict: no workdir": (["predict", "--workdir", str(tmp / "nowhere"), "good"], None,
                                "does not exist"),
        "predict: workdir is a file": (["predict", "--workdir", str(tmp / "a_file"), "good"],
                                       None, "is not a folder"),
        "predict: no text": (["predict", "--workdir", str(tmp / "empty")], "", "no text"),
        "unwritable workdir": (["--workdir", str(tmp / "a_file" / "sub"), *TINY], None,
                               "not writable"),
        "max-length too small": (["--workdir", w, *TINY, "--max-length", "4"], None,
                                 "--max-length"),
        "max-length too large": (["--workdir", w, *TINY, "--max-length", "1000"], None,
                                 "--max-length"),
        "lr zero": (["--workdir", w, *TINY, "--lr", "0"], None,
                    "--config.train.learning_rate"),
        "heads not dividing hidden": (["--workdir", w, *TINY, "--config.model.heads=3"], None,
                                      "divisible"),
        "missing encoder": (["--workdir", w, *TINY, "--encoder", str(tmp / "nowhere")], None,
                            "cannot use --encoder"),
        "word vectors for a pretrained encoder": (
            ["--workdir", w, *TINY, "--encoder", str(tmp / "empty"),
             "--config.model.init_embeddings=ppmi-svd"], None, "--encoder scratch"),
    }


CASE_NAMES = [
    "missing archive", "not gzip", "archive without test/neg", "predict: no checkpoint",
    "predict: no workdir", "predict: workdir is a file", "predict: no text",
    "unwritable workdir", "max-length too small", "max-length too large", "lr zero",
    "heads not dividing hidden", "missing encoder",
    "word vectors for a pretrained encoder",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_one_error_line(name, tmp_path):
    argv, stdin, word = _bad_cases(tmp_path)[name]
    rc, out, err = run_main(argv, stdin=stdin)
    assert_one_error_line(rc, err)
    assert word in err, err
    assert not (tmp_path / "w" / "tokenizer.json").exists()  # failed before any data work


def test_bad_input_real_process(tmp_path):
    """The real exit path: status 2, one line on stderr, no traceback."""
    cases = _bad_cases(tmp_path)
    for name in ("missing archive", "predict: no checkpoint"):
        argv, _, word = cases[name]
        proc = run_cli(argv, timeout=120)
        err = proc.stderr.decode()
        assert_one_error_line(proc.returncode, err)
        assert word in err


def test_a_run_without_a_test_split_ends_cleanly(tmp_path):
    """train.test_split=None (no test evaluation) trains, keeps its best and says so."""
    rc, out, err = run_main([*TINY, "--epochs", "1", "--workdir", str(tmp_path / "w"),
                             "--config.train.test_split=None"])
    assert rc == 0, err[-3000:]
    assert "trained without a test evaluation" in out and "test accuracy" not in out
    metrics = metrics_of(tmp_path / "w")
    assert metrics["status"] == "completed" and metrics["test_loss"] is None
    assert metrics["best"]["epoch"] == 1
