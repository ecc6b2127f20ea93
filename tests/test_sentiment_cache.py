"""`--cache-encoder`: a frozen encoder's outputs computed once, the head trained on them.

A tiny random BERT written by the test (config.json + model.safetensors + tokenizer.json,
the layout `--encoder PATH` reads) on the embedded synthetic set, cut with `--limit`. Its
dropout is 0, so the notebook's recipe (encoder run every step) and the cached one must
train the same head on the same batches.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs.sentiment import get_config
from experiments.sentiment import NOTEBOOK_SENTENCES, main
from hw3_jax.bert import (
    BertConfig,
    bert_params_to_torch,
    init_bert_params,
    load_pretrained_bert,
)
from hw3_jax.data import encoder_cache as ec
from hw3_jax.data.pipeline import SentimentData, get_datasets
from hw3_jax.data.synthetic import make_synthetic
from hw3_jax.data.tokenizer import train_wordpiece_tokenizer
from hw3_jax.models import split_params
from hw3_jax.predict import SentimentPredictor
from hw3_jax.train.checkpoints import load_best

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200  # synthetic reviews in the training part and in test
LIMIT = 64  # examples per split actually used
ARGS = [
    "--data", "synthetic", f"--config.data.synthetic_size={SIZE}", "--limit", str(LIMIT),
    "--max-length", "32", "--batch-size", "16", "--epochs", "2", "--config.model.gru_hidden=8",
    "--no-progress", "--seed", "0",
]  # fmt: skip
TIME_KEYS = {"epoch_time_s", "train_time_s", "val_time_s", "examples_per_s"}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def history(workdir: Path) -> list[dict]:
    metrics = json.loads((workdir / "metrics.json").read_text())
    return [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in metrics["history"]]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A random tiny pretrained-style encoder folder, with a vocabulary of the synthetic set."""
    d = tmp_path_factory.mktemp("tiny-encoder")
    raw = make_synthetic(0, SIZE, SIZE)
    tok = train_wordpiece_tokenizer(raw.train.texts, vocab_size=300, max_length=32)
    tok.save(str(d / "tokenizer.json"))
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    params = init_bert_params(cfg, jax.random.key(0))
    save_file(bert_params_to_torch(params), str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg.to_dict() | {"model_type": "bert"}))
    return d


@pytest.fixture(scope="module")
def cached_run(encoder_dir, tmp_path_factory) -> dict:
    wd = tmp_path_factory.mktemp("cached")
    rc, out, err = run_main(["--encoder", str(encoder_dir), "--workdir", str(wd),
                             "--cache-encoder", "--config.encoder_cache.dtype=float32", *ARGS])
    assert rc == 0, err
    return {"workdir": wd, "out": out}


def test_cached_run_trains_the_head_and_stores_outputs(cached_run):
    wd = cached_run["workdir"]
    metrics = json.loads((wd / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert len(metrics["history"]) == 2
    assert metrics["config"]["input_keys"] == list(ec.INPUT_KEYS)
    info = metrics["encoder_cache"]
    assert info["encoder_dropout"] is False
    # Every example of each split (cut by --limit) encoded once.
    sizes = {k: min(LIMIT, n) for k, n in metrics["data"]["sizes"].items()}
    assert {k: v["examples"] for k, v in info["splits"].items()} == sizes
    assert metrics["test_examples"] == sizes["test"]
    assert metrics["history"][0]["val_examples"] == sizes["validation"]
    for split in info["splits"].values():
        assert not split["cache_hit"]
        assert Path(split["path"]).is_file()
    # The checkpoint holds the head only; the frozen encoder is one file beside it.
    ckpt = load_best(wd)
    assert set(ckpt.params) == {"gru", "out"}
    assert (wd / info["encoder_params"]).is_file()
    # Readable as the workdir's other files are (the umask's mode), not 0600.
    assert (wd / info["encoder_params"]).stat().st_mode == (wd / "metrics.json").stat().st_mode
    assert cached_run["out"].count("reviews/s") == 3  # one encoding pass per split


def test_second_run_reads_the_stored_outputs_and_trains_identically(cached_run, encoder_dir):
    wd = cached_run["workdir"]
    before = history(wd)
    rc, out, err = run_main(["--encoder", str(encoder_dir), "--workdir", str(wd),
                             "--cache-encoder", "--config.encoder_cache.dtype=float32",
                             "--overwrite", *ARGS])
    assert rc == 0, err
    assert out.count("read from cache") == 3
    assert history(wd) == before


def _small_data(encoder_dir: Path, tmp: Path) -> SentimentData:
    """The synthetic set through the tiny encoder's tokenizer; 40 test reviews (a partial
    last batch)."""
    config = get_config("smoke")
    config.model.encoder = str(encoder_dir)
    config.data.update(source="synthetic", synthetic_size=SIZE, batch_size=16)
    data = get_datasets(config, tmp, progress=False)
    assert data.num_examples("test") == 40 and data.max_length == 32
    return data


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("float16", 2e-2)])
def test_head_on_cached_outputs_equals_full_model(cached_run, encoder_dir, tmp_path, dtype,
                                                  atol):
    predictor = SentimentPredictor.load(cached_run["workdir"])
    model, params = predictor.model, predictor.params
    data = _small_data(encoder_dir, tmp_path)
    cached = ec.build_cached_encoder_data(data, model.bert, params["bert"],
                                          encoder_digest=ec.params_digest(params["bert"]),
                                          dtype=dtype, cache_dir=None)
    head = model.gru_head()
    _, head_params = split_params(params)
    full_fn = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, mask))
    head_fn = jax.jit(lambda x, mask: head.apply({"params": head_params}, x, mask))
    n = 0
    for tokens, feats in zip(data.eval_batches("test"), cached.eval_batches("test"),
                             strict=True):
        np.testing.assert_array_equal(tokens["attention_mask"], feats["attention_mask"])
        np.testing.assert_array_equal(tokens["weight"], feats["weight"])
        assert feats["features"].dtype == np.dtype(jax.numpy.dtype(dtype))
        full = full_fn(tokens["input_ids"], tokens["attention_mask"])
        mine = head_fn(feats["features"], feats["attention_mask"])
        chex.assert_trees_all_close(mine, full, atol=atol, rtol=0)
        n += int(feats["weight"].sum())
    assert n == 40


@pytest.mark.parametrize("dtype", ec.CACHE_DTYPES)
def test_stored_outputs_are_reread_exactly(encoder_dir, tmp_path, dtype):
    """Only real tokens are stored, one .npy per split (bfloat16 as its bit pattern), and
    a second call reads it back bit for bit instead of encoding again."""
    data = _small_data(encoder_dir, tmp_path)
    cfg, params = load_pretrained_bert(encoder_dir)
    kw = dict(cache_dir=tmp_path / "features", encoder_digest=ec.params_digest(params),
              buckets=tuple(data.buckets), batch_size=16, dtype=dtype)
    first, info1 = ec.load_or_encode_features(cfg, params, data.test, "test", **kw)
    again, info2 = ec.load_or_encode_features(cfg, params, data.test, "test", **kw)
    assert not info1["cache_hit"] and info2["cache_hit"] and info1["path"] == info2["path"]
    assert first.features.shape == (int(data.test.lengths.sum()), cfg.hidden_size)
    assert again.features.dtype == np.dtype(jax.numpy.dtype(dtype))
    np.testing.assert_array_equal(np.asarray(first.features).view(np.uint8),
                                  np.asarray(again.features).view(np.uint8))
    # A killed run's half-written file is deleted by the next one that writes; a live
    # writer's is left alone.
    path = Path(info1["path"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = path.with_name(f".{path.name}.{dead.pid}.tmp")
    live = path.with_name(f".{path.name}.{os.getppid()}.tmp")  # a running process
    orphan.write_bytes(b"x")
    live.write_bytes(b"x")
    path.unlink()
    _, info3 = ec.load_or_encode_features(cfg, params, data.test, "test", **kw)
    assert not info3["cache_hit"] and path.is_file()
    assert not orphan.exists() and live.exists()
    live.unlink()
    # An example's stored outputs are the encoder's on that example alone (up to float
    # rounding: other batch shapes, then the storage dtype).
    alone = ec.encode_split(cfg, params, data.test.subset(np.array([3])), buckets=(32,),
                            batch_size=1, dtype="float32")
    tol = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}[dtype]
    np.testing.assert_allclose(again.example(3).astype(np.float32), alone.example(0),
                               rtol=tol, atol=tol)


_ENCODER_FN = ec._encoder_fn


def _counted(monkeypatch, on_call=None) -> list[int]:
    """Count the encoder's batches (`ec._encoder_fn`'s calls); `on_call(n)` runs before the
    n-th one."""
    calls: list[int] = []

    def counting(*key):
        fn = _ENCODER_FN(*key)

        def call(*args):
            calls.append(len(calls) + 1)
            if on_call is not None:
                on_call(len(calls))
            return fn(*args)
        return call

    monkeypatch.setattr(ec, "_encoder_fn", counting)
    return calls


def _ctrl_c_at(n: int):
    def on_call(k: int) -> None:
        if k == n:
            raise KeyboardInterrupt
    return on_call


def _encoding(encoder_dir: Path, tmp_path: Path):
    """(encode(cache_dir, batch_size) -> (features, info) of the train split, the data)."""
    data = _small_data(encoder_dir, tmp_path)
    cfg, params = load_pretrained_bert(encoder_dir)

    def encode(cache_dir: Path, batch_size: int = 8):
        return ec.load_or_encode_features(
            cfg, params, data.train, "train", cache_dir=cache_dir, batch_size=batch_size,
            encoder_digest=ec.params_digest(params), buckets=tuple(data.buckets),
            dtype="float32")
    return encode, data


def _bytes(features: ec.FeatureSplit) -> bytes:
    return np.asarray(features.features).tobytes()


def test_a_stopped_pass_goes_on_where_it_stopped(encoder_dir, tmp_path, monkeypatch):
    """Ctrl-C in the middle of a split keeps the batches encoded so far; the next pass (in
    this process, as a notebook's cell run again) encodes only the rest, into a file equal
    byte for byte to that of a pass never stopped."""
    encode, data = _encoding(encoder_dir, tmp_path)
    whole, _ = encode(tmp_path / "whole")
    _counted(monkeypatch, _ctrl_c_at(4))  # three batches of 8 done
    with pytest.raises(KeyboardInterrupt, match=rf"^stopped encoding train after 24 of "
                       rf"{len(data.train)} reviews, kept in {tmp_path / 'stopped'}$"):
        encode(tmp_path / "stopped")
    calls = _counted(monkeypatch)
    again, info = encode(tmp_path / "stopped")
    assert info["resumed_after_reviews"] == 24 and not info["cache_hit"]
    assert len(calls) == -(-len(data.train) // 8) - 3
    assert _bytes(again) == _bytes(whole)
    assert [f.name for f in (tmp_path / "stopped").iterdir()] == [Path(info["path"]).name]


def test_a_stopped_pass_in_another_order_starts_over(encoder_dir, tmp_path, monkeypatch):
    """A pass stopped in its first batch keeps nothing; what a pass in batches of 8 kept is
    no use to one in batches of 16 (other batches), which starts over and deletes it."""
    encode, data = _encoding(encoder_dir, tmp_path)
    whole, _ = encode(tmp_path / "whole", batch_size=16)
    _counted(monkeypatch, _ctrl_c_at(1))
    with pytest.raises(KeyboardInterrupt, match="^$"):  # in the first batch: nothing kept
        encode(tmp_path / "stopped")
    assert not list((tmp_path / "stopped").iterdir())
    _counted(monkeypatch, _ctrl_c_at(4))
    with pytest.raises(KeyboardInterrupt, match="after 24 of"):
        encode(tmp_path / "stopped")
    calls = _counted(monkeypatch)
    again, info = encode(tmp_path / "stopped", batch_size=16)  # other batches: none reused
    assert "resumed_after_reviews" not in info and len(calls) == -(-len(data.train) // 16)
    assert _bytes(again) == _bytes(whole)
    assert len(list((tmp_path / "stopped").iterdir())) == 1


def test_ctrl_c_in_the_encoder_pass_says_what_was_kept_and_resume_goes_on(
        cached_run, encoder_dir, tmp_path, monkeypatch):
    """Ctrl-C in the command's pass over validation (train done, 16 of its reviews kept):
    one line, exit status 130; --resume encodes the rest and trains what an uninterrupted
    run trains."""
    monkeypatch.setenv("HW3_JAX_CACHE", str(tmp_path / "cache"))
    argv = ["--encoder", str(encoder_dir), "--workdir", str(tmp_path / "run"),
            "--cache-encoder", "--config.encoder_cache.dtype=float32", *ARGS]
    sizes = json.loads((cached_run["workdir"] / "metrics.json").read_text())["data"]["sizes"]
    batches = {k: -(-min(LIMIT, n) // 16) for k, n in sizes.items()}
    _counted(monkeypatch, _ctrl_c_at(batches["train"] + 2))
    rc, out, err = run_main(argv)
    assert rc == 130
    assert err == (f"stopped encoding validation after 16 of {min(LIMIT, sizes['validation'])} "
                   f"reviews, kept in {tmp_path / 'cache'}; continue with --resume\n")
    calls = _counted(monkeypatch)
    rc, out, err = run_main([*argv, "--resume"])
    assert rc == 0, err
    assert "read from cache" in out and "after the 16 of a stopped pass" in out
    assert len(calls) == batches["validation"] - 1 + batches["test"]
    assert history(tmp_path / "run") == history(cached_run["workdir"])


_KILLED_CHILD = """
import os, signal, sys
import numpy as np
from hw3_jax.bert import load_pretrained_bert
from hw3_jax.data import encoder_cache as ec
from hw3_jax.data.token_cache import TokenizedSplit

ec.SAVE_EVERY_S = 0  # a note after every batch
real = ec._encoder_fn
calls = []

def counting(*key):
    fn = real(*key)
    def call(*args):
        calls.append(1)
        if len(calls) == 4:  # killed outright, in the fourth batch
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args)
    return call

ec._encoder_fn = counting
encoder_dir, split_npz, cache_dir = sys.argv[1:]
cfg, params = load_pretrained_bert(encoder_dir)
with np.load(split_npz) as z:
    split = TokenizedSplit(z["ids"], z["starts"], z["lengths"], z["labels"])
    buckets = tuple(int(b) for b in z["buckets"])
ec.load_or_encode_features(cfg, params, split, "train", cache_dir=cache_dir, batch_size=8,
                           encoder_digest=ec.params_digest(params), buckets=buckets,
                           dtype="float32")
"""


def test_a_killed_pass_goes_on_from_its_last_note(encoder_dir, tmp_path, monkeypatch):
    """SIGKILL leaves the file and its last note (here written after every batch); the
    next process's pass takes them over and ends with the bytes of a pass never stopped."""
    encode, data = _encoding(encoder_dir, tmp_path)
    whole, _ = encode(tmp_path / "whole")
    split_npz, train = tmp_path / "split.npz", data.train
    np.savez(split_npz, ids=train.ids, starts=train.starts, lengths=train.lengths,
             labels=train.labels, buckets=np.array(data.buckets))
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(encoder_dir),
                            str(split_npz), str(tmp_path / "killed")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    (note,) = (tmp_path / "killed").glob(".*.tmp.json")
    assert json.loads(note.read_text())["batches"] == 3
    calls = _counted(monkeypatch)
    again, info = encode(tmp_path / "killed")
    assert info["resumed_after_reviews"] == 24 and len(calls) == -(-len(train) // 8) - 3
    assert _bytes(again) == _bytes(whole)
    assert [f.name for f in (tmp_path / "killed").iterdir()] == [Path(info["path"]).name]


def test_predict_from_the_workdir(cached_run):
    wd = str(cached_run["workdir"])
    rc, out, err = run_main(["predict", "--workdir", wd, "--json", *NOTEBOOK_SENTENCES])
    assert rc == 0, err
    got = {r["text"]: r["p_positive"] for r in map(json.loads, out.splitlines())}
    # The same full model (frozen encoder + best head) as the training run scored with.
    trained = json.loads((cached_run["workdir"] / "metrics.json").read_text())["predictions"]
    assert set(got) == set(NOTEBOOK_SENTENCES)
    for text, p in got.items():
        assert abs(p - trained[text]) < 1e-6


def test_predict_names_a_missing_or_damaged_encoder_file(cached_run, tmp_path):
    import shutil

    wd = tmp_path / "copy"
    shutil.copytree(cached_run["workdir"], wd)
    (encoder_file,) = wd.glob("encoder-*.safetensors")
    encoder_file.write_bytes(encoder_file.read_bytes()[:1000])  # a copy cut short
    rc, _, err = run_main(["predict", "--workdir", str(wd), "good"])
    assert rc == 2
    assert err.count("\n") == 1 and "is not a readable safetensors file" in err
    encoder_file.unlink()
    rc, _, err = run_main(["predict", "--workdir", str(wd), "good"])
    assert rc == 2
    assert err.count("\n") == 1 and "--cache-encoder" in err


@pytest.mark.slow  # a second training run, compiling the full model's step
def test_same_training_as_the_uncached_recipe_when_the_encoder_has_no_dropout(
        cached_run, encoder_dir, tmp_path):
    """The encoder has dropout 0: both paths see the same outputs, batches and head
    dropout masks (GRUHead runs in BertGRUSentiment's own scope), so they train alike."""
    rc, _, err = run_main(["--encoder", str(encoder_dir), "--workdir", str(tmp_path), *ARGS])
    assert rc == 0, err
    a, b = history(tmp_path), history(cached_run["workdir"])
    for ha, hb in zip(a, b, strict=True):
        for k, v in ha.items():
            assert v == pytest.approx(hb[k], rel=1e-4, abs=1e-5), k


@pytest.mark.parametrize("extra,needle", [
    (["--encoder", "scratch"], "frozen pretrained encoder"),
    (["--unfreeze"], "frozen pretrained encoder"),
    (["--config.model.notebook_parity=True"], "--config.model.notebook_parity"),
])
def test_cache_encoder_needs_a_frozen_pretrained_encoder(encoder_dir, tmp_path, extra,
                                                         needle):
    argv = ["--encoder", str(encoder_dir), "--workdir", str(tmp_path), "--cache-encoder",
            *ARGS, *extra]
    rc, _, err = run_main(argv)
    assert rc == 2
    assert err.count("\n") == 1 and needle in err
