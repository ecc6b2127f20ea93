"""get_datasets: from config.data to SentimentData, with the workdir's tokenizer, the token
cache and `limit`."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from _data_helpers import data_config, make_archive

from hw3_jax.data import batching, sources, synthetic, token_cache
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import RawDataset, TextSplit
from hw3_jax.data.pipeline import get_datasets
from hw3_jax.data.tokenizer import tokenizer_fingerprint
from hw3_jax.train.workdir import atomic_path


def test_archive_source_through_get_datasets(tmp_path):
    path = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    config = data_config(source="imdb", imdb_archive=str(path), vocab_size=60, max_length=16,
                         batch_size=2)
    data = get_datasets(config, tmp_path / "wd", progress=False)
    assert data.info["invalid_utf8"] == 1
    assert data.info["sizes"] == {"train": 4, "validation": 2, "test": 4}
    # A second run reads nothing: the count comes back from the cache.
    again = get_datasets(config, tmp_path / "wd", progress=False)
    assert again.info["train_cache_hit"] and again.info["test_cache_hit"]
    assert "read_s" not in again.info and again.info["invalid_utf8"] == 1


def test_split_sizes_on_a_fake_25000_source(tmp_path, monkeypatch):
    texts = [f"review number {i}" for i in range(25_000)]
    fake = RawDataset("imdb", "fake:25000", TextSplit(texts, np.arange(25_000) % 2),
                      TextSplit(texts, np.arange(25_000) % 2))
    monkeypatch.setattr(sources, "load_source", lambda *a, **k: fake)
    monkeypatch.setattr(sources, "source_identity", lambda *a, **k: None)
    config = data_config(source="imdb", vocab_size=100, max_length=8, batch_size=128)
    data = get_datasets(config, tmp_path, progress=False)
    assert data.info["sizes"] == {"train": 17_500, "validation": 7_500, "test": 25_000}
    # Evaluation counts every test example exactly once.
    assert sum(b["weight"].sum() for b in data.eval_batches("test")) == 25_000
    assert data.eval_steps("test") == math.ceil(25_000 / 128)
    assert data.steps_per_epoch == math.ceil(17_500 / 128)


def test_scratch_tokenizer_is_saved_and_reused(tmp_path, caplog):
    config, wd = data_config(synthetic_size=400), tmp_path / "wd"
    first = get_datasets(config, wd, progress=False)
    assert first.info["tokenizer"].startswith("trained on 280")  # the train split only
    second = get_datasets(config, wd, progress=False)
    assert second.info["tokenizer"].startswith("reused")  # the same data and settings
    assert tokenizer_fingerprint(second.tokenizer) == tokenizer_fingerprint(first.tokenizer)
    # Other settings and no checkpoint: the workdir's vocabulary is a leftover of a run that
    # stopped before its first one, so this run trains the vocabulary a fresh workdir gets.
    other = data_config(synthetic_size=400, seed=1)
    assert get_datasets(other, wd, progress=False).info["tokenizer"].startswith("trained on")
    get_datasets(other, tmp_path / "fresh", progress=False)
    assert (wd / "tokenizer.json").read_bytes() == \
        (tmp_path / "fresh" / "tokenizer.json").read_bytes()
    # With no record of what it was trained on (a pretrained encoder's, or a kill while it
    # was replaced), it is not reused either.
    (wd / "tokenizer_source.json").unlink()
    assert get_datasets(other, wd, progress=False).info["tokenizer"].startswith("trained on")
    # With a checkpoint in the workdir (a resumed run), its vocabulary is the one the
    # checkpoint was trained with: kept, with a warning when the data or settings differ.
    (wd / "checkpoints" / "latest" / "7").mkdir(parents=True)  # a finished orbax step
    with caplog.at_level(logging.WARNING):
        kept = get_datasets(config, wd, progress=False)
    assert kept.info["tokenizer"].startswith("reused") and "trained on other data" in caplog.text
    assert (wd / "tokenizer.json").read_bytes() == \
        (tmp_path / "fresh" / "tokenizer.json").read_bytes()


def test_two_fresh_workdirs_get_byte_identical_tokenizers(tmp_path):
    config = data_config(synthetic_size=2000, vocab_size=800, seed=4242)
    for name in ("a", "b"):
        get_datasets(config, tmp_path / name, progress=False)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == \
        (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_second_run_hits_the_cache_and_does_not_tokenize(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HW3_JAX_CACHE", str(tmp_path / "cache"))
    config = data_config(synthetic_size=300)
    first = get_datasets(config, tmp_path / "wd", progress=False)
    assert not first.info["train_cache_hit"] and not first.info["test_cache_hit"]
    assert len(list((tmp_path / "cache").glob("tokens-synthetic-*.npz"))) == 2

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again")

    with monkeypatch.context() as m:
        m.setattr(token_cache, "encode_texts", no_tokenizing)
        m.setattr(synthetic, "make_synthetic", no_tokenizing)  # nor generated/read again
        second = get_datasets(config, tmp_path / "wd", progress=False)
    assert second.info["train_cache_hit"] and second.info["test_cache_hit"]
    for split in ("train", "validation", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert [a.example(i).tolist() for i in range(len(a))] == \
            [b.example(i).tolist() for i in range(len(b))]
        np.testing.assert_array_equal(a.labels, b.labels)
    # Another max_length or split seed is another key... and a corrupt file is rebuilt.
    other = get_datasets(data_config(synthetic_size=300, max_length=32), tmp_path / "wd2",
                         progress=False)
    assert not other.info["train_cache_hit"]
    for f in (tmp_path / "cache").glob("*.npz"):
        f.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        rebuilt = get_datasets(config, tmp_path / "wd", progress=False)
    assert not rebuilt.info["train_cache_hit"] and "unreadable token cache" in caplog.text
    assert len(rebuilt.train) == len(first.train)


def test_bad_options_give_one_clear_data_error(tmp_path):
    with pytest.raises(DataError, match="batch size must be positive"):
        get_datasets(data_config(batch_size=0), tmp_path, progress=False)
    with pytest.raises(DataError, match="unknown data source"):
        get_datasets(data_config(source="mnist"), tmp_path, progress=False)
    with pytest.raises(DataError, match="buckets take"):
        get_datasets(data_config(buckets="64,big"), tmp_path / "b", progress=False)
    with pytest.raises(DataError, match="unknown split"):
        batching.split_name("dev")
    assert [batching.split_name(s) for s in ("train", "val", "valid", "validation", "test")] \
        == ["train", "validation", "validation", "validation", "test"]


def test_synthetic_end_to_end(tmp_path):
    config = data_config(synthetic_size=1000, max_length=128, batch_size=32, vocab_size=4000)
    data = get_datasets(config, tmp_path, progress=False)
    assert data.info["sizes"] == {"train": 700, "validation": 300, "test": 200}
    assert data.pad_id == 0 and data.buckets == (32, 64, 128)
    assert (tmp_path / "tokenizer.json").is_file()
    for b in data.train_batches(0):
        assert b["input_ids"].shape[0] == 32 and b["input_ids"].shape[1] in data.buckets
        assert (b["input_ids"][:, 0] == data.tokenizer.token_to_id("[CLS]")).all()
    assert max(int(s.lengths.max()) for s in (data.train, data.test)) <= 128


def test_limit_draws_at_most_n_per_split_by_seed_in_order(tmp_path):
    full = get_datasets(data_config(synthetic_size=400), tmp_path, progress=False)
    cut = get_datasets(data_config(synthetic_size=400, limit=50), tmp_path, progress=False)
    assert {s: cut.num_examples(s) for s in batching.SPLITS} == {
        "train": 50, "validation": 50, "test": 50}
    assert cut.info["sizes"] == full.info["sizes"]  # the splits before the cut
    again = get_datasets(data_config(synthetic_size=400, limit=50), tmp_path, progress=False)
    other = get_datasets(data_config(synthetic_size=400, limit=50, seed=1), tmp_path / "o",
                         progress=False)
    for s in batching.SPLITS:
        np.testing.assert_array_equal(getattr(cut, s).starts, getattr(again, s).starts)
        starts = getattr(cut, s).starts
        assert (np.diff(starts) > 0).all()  # kept in order
        assert set(starts) <= set(getattr(full, s).starts)
    assert not np.array_equal(cut.train.starts, other.train.starts)
    # A limit above a split's size keeps it whole.
    whole = get_datasets(data_config(synthetic_size=400, limit=10_000), tmp_path,
                         progress=False)
    assert whole.num_examples("train") == full.num_examples("train")


def test_atomic_path_renames_on_success_and_removes_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp") and tmp.name != target.name
        tmp.write_text("new")
        assert not target.exists()  # nothing under the final name before the block ends
    assert target.read_text() == "new" and not tmp.exists()
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
