"""Batches: buckets, every example once, shuffling by (seed, epoch), processes, free texts,
the prefetch thread."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from _data_helpers import fake_split

from hw3_jax.data import batching
from hw3_jax.data.errors import DataError
from hw3_jax.data.pipeline import SentimentData
from hw3_jax.data.tokenizer import load_pretrained_tokenizer, train_wordpiece_tokenizer


def check_batch(b, split, buckets, batch_size, pad=0):
    assert set(b) == {"input_ids", "attention_mask", "label", "weight"}
    assert b["input_ids"].dtype == np.int32 and b["attention_mask"].dtype == np.int32
    assert b["label"].dtype == np.float32 and b["weight"].dtype == np.float32
    B, L = b["input_ids"].shape
    assert B == batch_size and L in buckets and b["attention_mask"].shape == (B, L)
    rows = b["input_ids"][:, 0] - 1000
    lens = b["attention_mask"].sum(1)
    np.testing.assert_array_equal(lens, split.lengths[rows])
    np.testing.assert_array_equal(b["label"], split.labels[rows])
    for r in range(B):  # real tokens then padding
        assert (b["input_ids"][r, :lens[r]] == rows[r] + 1000).all()
        assert (b["input_ids"][r, lens[r]:] == pad).all()
        assert (b["attention_mask"][r, :lens[r]] == 1).all()
    # Each example's bucket is the smallest that holds it, or a larger one (leftovers).
    assert (split.lengths[rows] <= L).all()
    return rows[b["weight"] > 0]


def test_eval_batches_count_every_example_once():
    split = fake_split()
    buckets = (16, 32, 64, 100)
    bb = batching.BucketedBatches(split, batch_size=8, buckets=buckets, pad_id=0)
    batches = list(bb())
    assert len(batches) == len(bb) == math.ceil(103 / 8)
    seen = np.concatenate([check_batch(b, split, buckets, 8) for b in batches])
    assert sorted(seen.tolist()) == list(range(103))
    weights = np.concatenate([b["weight"] for b in batches])
    assert weights.sum() == 103 and set(weights.tolist()) == {0.0, 1.0}
    assert sum((b["weight"] == 0).any() for b in batches) == 1  # one partial batch only
    # Padding rows repeat real examples of that batch (never an all-padding row).
    assert all(b["attention_mask"].sum(1).min() > 0 for b in batches)
    assert list(bb()) and [b["input_ids"].tolist() for b in bb()] == \
        [b["input_ids"].tolist() for b in batches]  # eval order is fixed


def test_train_batches_shuffle_by_seed_and_epoch():
    split = fake_split(n=200, max_len=60)
    buckets = (16, 32, 64)
    val, test = fake_split(30, max_len=60), fake_split(40, max_len=60)
    data = SentimentData(split, val, test, _tiny_tokenizer(), batch_size=16,
                            buckets=buckets, max_length=64, seed=5)

    def order(epoch, d=data, start=0):
        return [tuple(b["input_ids"][:, 0]) for b in d.train_batches(epoch, start)]

    e0, e0b, e1 = order(0), order(0), order(1)
    assert e0 == e0b and e0 != e1
    assert len(e0) == data.steps_per_epoch == math.ceil(200 / 16)
    assert order(0, start=5) == e0[5:]  # resume: skipping k batches sees the same rest
    other = SentimentData(split, val, test, _tiny_tokenizer(), batch_size=16,
                             buckets=buckets, max_length=64, seed=6)
    assert order(0, other) != e0
    lengths = [b["input_ids"].shape[1] for b in data.train_batches(0)]
    assert lengths != sorted(lengths)  # the batches are shuffled too, not only the buckets
    for epoch in (0, 1):
        seen = np.concatenate([check_batch(b, split, buckets, 16)
                               for b in data.train_batches(epoch)])
        assert sorted(seen.tolist()) == list(range(200))
    assert sum(b["weight"].sum() for b in data.eval_batches("val")) == 30
    assert sum(b["weight"].sum() for b in data.eval_batches("test")) == 40
    assert data.eval_steps("validation") == math.ceil(30 / 16)


def test_batches_split_over_processes():
    split = fake_split(n=50, max_len=30)
    parts = [list(batching.BucketedBatches(split, batch_size=8, buckets=(32,), process_index=p,
                                     process_count=2)()) for p in (0, 1)]
    whole = list(batching.BucketedBatches(split, batch_size=8, buckets=(32,))())
    for b0, b1, w in zip(*parts, whole, strict=True):
        assert b0["input_ids"].shape == (4, 32)
        np.testing.assert_array_equal(np.concatenate([b0["input_ids"], b1["input_ids"]]),
                                      w["input_ids"])
        np.testing.assert_array_equal(np.concatenate([b0["weight"], b1["weight"]]),
                                      w["weight"])
    with pytest.raises(DataError, match="multiple"):
        batching.BucketedBatches(split, batch_size=7, buckets=(32,), process_count=2)
    # Unsorted buckets would put examples in a bucket shorter than they are.
    with pytest.raises(DataError, match="not increasing"):
        batching.BucketedBatches(split, batch_size=8, buckets=(32, 16))


def _tiny_tokenizer():
    return train_wordpiece_tokenizer(["the movie was good", "the plot was bad"] * 5,
                                        vocab_size=100, max_length=64)


def test_default_buckets():
    assert batching.default_buckets(512) == (32, 64, 128, 256, 512)
    assert batching.default_buckets(200) == (32, 64, 128, 200)
    assert batching.default_buckets(16) == (16,)


def test_normalise_buckets_is_the_one_parser():
    nb = batching.normalise_buckets
    assert nb(None, 128) == (32, 64, 128)
    assert nb("64,128,256", 512) == (64, 128, 256, 512)
    assert nb("256, 64,,128", 512) == (64, 128, 256, 512)  # sorted, blanks ignored
    assert nb((64, 128, 256, 512), 128) == (64, 128)  # lengths from max_length up dropped
    assert nb([64, 64, 100], 200) == (64, 100, 200)
    assert nb("512", 128) == (128,)
    for bad in ("a,b", "64,x", "", "0,64", "-8", [0], ["x"]):
        with pytest.raises(DataError, match="buckets take") as e:
            nb(bad, 128)
        assert "\n" not in str(e.value)
    # SentimentData holds its buckets normalised the same way.
    split = fake_split(n=40, max_len=60)
    data = SentimentData(split, split, split, _tiny_tokenizer(), batch_size=8,
                         buckets="16,32,256", max_length=64, seed=0)
    assert data.buckets == (16, 32, 64)
    with pytest.raises(DataError, match="buckets take"):
        SentimentData(split, split, split, _tiny_tokenizer(), batch_size=8, buckets=(0, 32),
                      max_length=64, seed=0)


def test_predict_batches_take_any_text(shared_data):
    tok = load_pretrained_tokenizer(shared_data / "bert-base-uncased" / "vocab.txt",
                                       max_length=128)
    texts = ["Justice League is terrible. I hated it.", "Avengers was great!!", "",
             "😀 素晴らしい映画 \u0007 ok", "long " * 100_000, "a<br />b"]
    batches = list(batching.predict_batches(tok, texts, truncation="head", batch_size=4))
    # Sorted by length: the four shortest texts, then the two longest in 2 rows (the
    # smallest power of two that holds them), each padded to its own bucket.
    assert [b["input_ids"].shape for b in batches] == [(4, 32), (2, 128)]
    index = np.concatenate([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(6))
    w = np.concatenate([b["weight"] for b in batches])
    np.testing.assert_array_equal(w, np.ones(6))
    lens = np.concatenate([b["attention_mask"].sum(1) for b in batches])[np.argsort(index)]
    assert lens[2] == 2 and lens[4] == 128  # "" -> [CLS] [SEP]; long text truncated
    row = int(np.flatnonzero(index == 5)[0])
    ids = np.concatenate([np.pad(b["input_ids"], ((0, 0), (0, 128 - b["input_ids"].shape[1])))
                          for b in batches])
    assert tok.id_to_token(int(ids[row, 1])) == "a"  # <br /> removed
    # One text: one row; three: shortest first ("" before the two sentences), padding rows
    # marked -1.
    (one,) = batching.predict_batches(tok, texts[:1], truncation="head", batch_size=4)
    assert one["input_ids"].shape == (1, 32) and one["index"].tolist() == [0]
    three = list(batching.predict_batches(tok, texts[:3], truncation="head", batch_size=4))
    assert [b["index"].tolist() for b in three] == [[2, 1, 0, -1]]
    np.testing.assert_array_equal(three[0]["weight"], [1, 1, 1, 0])
    # 30 words + [CLS] [SEP] fill the 32 bucket exactly.
    (full,) = batching.predict_batches(tok, ["ok " * 30], truncation="head", batch_size=4)
    assert full["input_ids"].shape == (1, 32) and full["attention_mask"].all()


def test_prefetch_propagates_errors_and_stops_early():
    def gen():
        yield 1
        yield 2
        raise RuntimeError("boom")

    it = batching.prefetch(gen())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="boom"):
        next(it)
    # Closed early, the worker thread ends: while items remain, and after the last one
    # (two queued ahead, the end marker waiting for room).
    for source in (iter(range(10**9)), iter(range(3))):
        before = set(threading.enumerate())
        it = batching.prefetch(source)
        assert next(it) == 0  # the worker starts here
        (worker,) = set(threading.enumerate()) - before
        time.sleep(0.3)  # it fills the queue
        it.close()
        worker.join(timeout=5)
        assert not worker.is_alive()

