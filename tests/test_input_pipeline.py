"""The sentiment input pipeline (issue 4 §1) and its data faults (issue 6 §2)."""

from __future__ import annotations

import io
import logging
import math
import re
import tarfile

import numpy as np
import pytest

from hw3_jax import input_pipeline as ip
from hw3_jax import synthetic_reviews as sr

# --------------------------------------------------------------------------- archives

REVIEWS = {
    "train/pos": {"0_9.txt": "A great film.<br /><br />Loved it.",
                  "1_8.txt": "Café naïve — 😀 fine", "10_7.txt": "Good<br/>stuff"},
    "train/neg": {"0_2.txt": "Bad.<br />Really bad.", "1_1.txt": b"broken \xff\xfe bytes",
                  "2_3.txt": "Dull"},
    "test/pos": {"0_10.txt": "Wonderful", "1_7.txt": "Nice one"},
    "test/neg": {"0_1.txt": "Awful", "1_4.txt": "Weak <BR /> ending"},
    "train/unsup": {"0_0.txt": "No label here", "1_0.txt": "Another<br />one"},
}


def make_archive(path, reviews=REVIEWS, *, reverse=False, empty_dirs=(), compression="gz"):
    """A tar archive in the official aclImdb_v1.tar.gz layout."""
    entries = []
    for folder, files in reviews.items():
        entries.append((f"aclImdb/{folder}", None))
        for name, text in files.items():
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            entries.append((f"aclImdb/{folder}/{name}", data))
    for folder in empty_dirs:
        entries.append((f"aclImdb/{folder}", None))
    if reverse:
        entries = entries[::-1]
    with tarfile.open(path, f"w:{compression}") as tar:
        for name, data in [("aclImdb", None), ("aclImdb/README", b"readme")] + entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_reads_labels_cleans_and_counts_invalid_utf8(tmp_path, caplog):
    path = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    with caplog.at_level(logging.WARNING):
        r = ip.read_imdb_archive(path)
    assert (len(r.train), len(r.test)) == (6, 4)
    # neg first then pos, each sorted by numeric id; 1 = positive.
    assert r.train.texts[:3] == ["Bad. Really bad.", "broken \ufffd\ufffd bytes", "Dull"]
    assert r.train.texts[3:] == ["A great film.  Loved it.", "Café naïve — 😀 fine", "Good stuff"]
    np.testing.assert_array_equal(r.train.labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(r.test.labels, [0, 0, 1, 1])
    assert r.test.texts[1] == "Weak   ending"
    assert not any("<br" in t.lower() for t in r.train.texts + r.test.texts)
    assert r.invalid_utf8 == 1 and r.invalid_utf8_files == ["train/neg/1_1.txt"]
    assert "not valid UTF-8" in caplog.text
    assert r.unsup is None


def test_archive_order_independent_unsup_and_extracted_folder(tmp_path):
    a = ip.read_imdb_archive(make_archive(tmp_path / "a.tar.gz"), include_unsup=True)
    b = ip.read_imdb_archive(make_archive(tmp_path / "b.tar.gz", reverse=True))
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    assert a.unsup == ["No label here", "Another one"]
    assert ip.read_imdb_unsup(tmp_path / "b.tar.gz") == ["No label here", "Another one"]
    # An uncompressed tar and an extracted folder give the same reviews.
    c = ip.read_imdb_archive(make_archive(tmp_path / "c.tar", compression=""))
    assert c.train.texts == a.train.texts
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    d = ip.read_imdb_archive(tmp_path / "x")
    assert d.train.texts == a.train.texts and d.test.texts == a.test.texts
    assert d.invalid_utf8 == 1


def test_bad_archives_give_one_clear_data_error(tmp_path):
    not_gz = tmp_path / "not.tar.gz"
    not_gz.write_text("this is not an archive\n" * 100)
    with pytest.raises(ip.DataError, match="not a readable .tar.gz archive"):
        ip.read_imdb_archive(not_gz)

    good = make_archive(tmp_path / "good.tar.gz").read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ip.DataError, match="not a readable"):
        ip.read_imdb_archive(truncated)

    missing = {k: v for k, v in REVIEWS.items() if k != "test/neg"}
    with pytest.raises(ip.DataError, match=r"test/neg is missing.*aclImdb/\{train,test\}"):
        ip.read_imdb_archive(make_archive(tmp_path / "missing.tar.gz", missing))

    no_test = {k: v for k, v in REVIEWS.items() if not k.startswith("test/")}
    with pytest.raises(ip.DataError, match="empty test split: test/neg is empty, test/pos is"):
        ip.read_imdb_archive(make_archive(tmp_path / "empty.tar.gz", no_test,
                                          empty_dirs=("test/pos", "test/neg")))

    with pytest.raises(ip.DataError, match="does not exist"):
        ip.read_imdb_archive(tmp_path / "nowhere.tar.gz")
    with pytest.raises(ip.DataError, match="train/unsup is missing"):
        ip.read_imdb_unsup(make_archive(tmp_path / "nounsup.tar.gz", {
            k: v for k, v in REVIEWS.items() if k != "train/unsup"}))
    # One line each: a message, not a traceback dump.
    try:
        ip.read_imdb_archive(not_gz)
    except ip.DataError as e:
        assert "\n" not in str(e) and isinstance(e, ValueError)


def test_archive_source_through_build(tmp_path):
    path = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    data = ip.build_sentiment_data("imdb", imdb_archive=path, encoder="scratch", vocab_size=60,
                                   workdir=tmp_path / "wd", max_length=16, batch_size=2,
                                   progress=False)
    assert data.info["invalid_utf8"] == 1
    assert data.info["sizes"] == {"train": 4, "validation": 2, "test": 4}
    # A second run reads nothing: the count comes back from the cache.
    again = ip.build_sentiment_data("imdb", imdb_archive=path, encoder="scratch",
                                    vocab_size=60, workdir=tmp_path / "wd", max_length=16,
                                    batch_size=2, progress=False)
    assert again.info["train_cache_hit"] and again.info["test_cache_hit"]
    assert "read_s" not in again.info and again.info["invalid_utf8"] == 1


# --------------------------------------------------------------------------- tfds


@pytest.mark.slow
def test_tfds_source_with_mock_data():
    pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        r = ip.load_imdb_tfds(check_network=False)
    assert (len(r.train), len(r.test)) == (12, 12)
    assert all(isinstance(t, str) for t in r.train.texts)
    assert set(np.unique(r.train.labels)) <= {0, 1}
    assert r.source_id.startswith("tfds:imdb_reviews")


def test_tfds_unreachable_host_is_detected_quickly():
    assert not ip.can_reach(("unreachable.invalid", 80), timeout=2.0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_by_seed():
    a, b, c = ip.make_synthetic(3, 300, 100), ip.make_synthetic(3, 300, 100), \
        ip.make_synthetic(4, 300, 100)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert a.train.texts != c.train.texts
    assert a.train.texts != a.test.texts[:300]
    assert a.source_id == b.source_id != c.source_id


def _sentiment_words():
    pos = set(sr.POSITIVE_ADJECTIVES) | {p for p, _ in sr.POSITIVE_VERBS}
    neg = set(sr.NEGATIVE_ADJECTIVES) | {p for p, _ in sr.NEGATIVE_VERBS}
    return pos, neg


def test_synthetic_labels_follow_the_simple_cases():
    """A review whose only opinion is one un-negated sentiment word has that word's label;
    the same with one negation has the opposite label."""
    pos, neg = _sentiment_words()
    negators = {"not", "never", "neither", "far", "wasn", "isn", "weren", "aren", "didn"}
    texts, labels = sr.generate_reviews(3000, 11)
    checked = {0: 0, 1: 0}
    for text, label in zip(texts, labels, strict=True):
        if any(c in text for c in (" but", "However", "Still", "though", "if ", "while",
                                    "yet", "That said", "But", ",", "a ", "worth")):
            continue
        sentences = [s for s in re.split(r"[.!]+\s*", text) if s]
        words_per = [re.findall(r"[a-z]+", s.lower()) for s in sentences]
        opinion = [w for w in words_per if set(w) & (pos | neg)]
        if len(opinion) != 1:
            continue
        words = opinion[0]
        found = [w for w in words if w in pos | neg]
        if len(found) != 1:
            continue
        n_neg = sum(w in negators for w in words)
        if n_neg > 1:
            continue
        polarity = int(found[0] in pos)
        expected = polarity if n_neg == 0 else 1 - polarity
        assert label == expected, text
        checked[n_neg] += 1
    assert checked[0] > 50 and checked[1] > 20  # both kinds were exercised


def test_synthetic_defeats_bag_of_words_but_not_order():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    raw = ip.make_synthetic(0)  # the default sizes: 25,000 -> 17,500 / 7,500; test 5,000
    tr, _ = ip.split_indices(len(raw.train), 0.7, 0)
    x_train = [raw.train.texts[i] for i in tr]
    y_train = raw.train.labels[tr]
    vec = CountVectorizer()
    clf = LogisticRegression(max_iter=3000).fit(vec.fit_transform(x_train), y_train)
    bow = clf.score(vec.transform(raw.test.texts), raw.test.labels)
    assert bow <= 0.80, bow
    assert bow >= 0.55  # words do carry some signal (single-clause reviews): learnable
    # Labels balanced, and the length alone predicts nothing.
    assert abs(raw.train.labels.mean() - 0.5) < 0.02
    lengths = np.array([len(t.split()) for t in raw.test.texts])
    len_tr = np.array([len(t.split()) for t in x_train])
    by_len = LogisticRegression().fit(len_tr[:, None], y_train).score(lengths[:, None],
                                                                     raw.test.labels)
    assert by_len < 0.56, by_len
    # Reviews are short: ~10-60 words.
    assert 15 < lengths.mean() < 45 and lengths.max() < 120


# --------------------------------------------------------------------------- splits


def test_split_sizes_like_the_notebook():
    tr, va = ip.split_indices(25_000, 0.7, seed=0)
    assert (len(tr), len(va)) == (17_500, 7_500)
    assert len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == 25_000
    tr2, _ = ip.split_indices(25_000, 0.7, seed=0)
    tr3, _ = ip.split_indices(25_000, 0.7, seed=1)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(ip.DataError):
        ip.split_indices(1, 0.7)
    with pytest.raises(ip.DataError):
        ip.split_indices(10, 1.0)


def test_split_sizes_through_build_on_a_fake_25000_source(tmp_path, monkeypatch):
    texts = [f"review number {i}" for i in range(25_000)]
    fake = ip.RawDataset("imdb", "fake:25000", ip.TextSplit(texts, np.arange(25_000) % 2),
                         ip.TextSplit(texts, np.arange(25_000) % 2))
    monkeypatch.setattr(ip, "load_source", lambda *a, **k: fake)
    monkeypatch.setattr(ip, "source_identity", lambda *a, **k: None)
    data = ip.build_sentiment_data("imdb", encoder="scratch", vocab_size=100, max_length=8,
                                   workdir=tmp_path, batch_size=128, progress=False)
    assert data.info["sizes"] == {"train": 17_500, "validation": 7_500, "test": 25_000}
    # Evaluation counts every test example exactly once.
    assert sum(b["weight"].sum() for b in data.eval_batches("test")) == 25_000
    assert data.num_batches("test") == math.ceil(25_000 / 128) == data.eval_steps("test")
    assert data.steps_per_epoch == math.ceil(17_500 / 128)


# --------------------------------------------------------------------------- tokenizers


def test_pretrained_tokenizer_facts_with_the_real_vocab(shared_data):
    tok = ip.load_pretrained_tokenizer(shared_data / "bert-base-uncased" / "vocab.txt")
    assert tok.get_vocab_size() == 30522
    enc = tok.encode("Hello WORLD how ARE yoU?", add_special_tokens=False)
    assert enc.tokens == ["hello", "world", "how", "are", "you", "?"]
    assert enc.ids == [7592, 2088, 2129, 2024, 2017, 1029]
    assert [tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]")] == [101, 102, 0,
                                                                                  100]
    assert tok.encode("Hello WORLD how ARE yoU?").ids == [101, 7592, 2088, 2129, 2024, 2017,
                                                          1029, 102]
    long = tok.encode("word " * 2000).ids  # 510 tokens + [CLS] + [SEP]
    assert len(long) == 512 and long[0] == 101 and long[-1] == 102
    # The same from a folder holding only vocab.txt, and from MiniLM's tokenizer.json
    # (same uncased vocabulary; its own padding to 128 and truncation are replaced).
    folder = ip.load_pretrained_tokenizer(shared_data / "bert-base-uncased")
    mini = ip.load_pretrained_tokenizer(shared_data / "all-MiniLM-L6-v2", max_length=512)
    for t in (folder, mini):
        assert t.encode("Hello WORLD how ARE yoU?").ids == [101, 7592, 2088, 2129, 2024, 2017,
                                                            1029, 102]
        assert len(t.encode("word " * 2000).ids) == 512
    assert len(mini.encode("short").ids) == 3  # not padded


def test_bad_tokenizer_sources(tmp_path, monkeypatch):
    with pytest.raises(ip.DataError, match="neither tokenizer.json nor vocab.txt"):
        ip.load_pretrained_tokenizer(tmp_path)
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(ip.DataError, match=r"\[CLS\]"):
        ip.load_pretrained_tokenizer(bad)
    with pytest.raises(ip.DataError, match="does not exist"):
        ip.load_pretrained_tokenizer("./no/such/dir")
    # A hub name with no network: one clear line, quickly (no minute of retries).
    monkeypatch.setattr(ip, "can_reach", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ip.DataError, match="vocab.txt"):
        ip.load_pretrained_tokenizer("some-user/some-bert-that-is-not-cached")


def test_scratch_tokenizer_is_saved_and_reused(tmp_path, caplog):
    raw = ip.make_synthetic(0, 400, 50)
    tok = ip.train_wordpiece_tokenizer(raw.train.texts, vocab_size=500, max_length=64)
    assert [tok.token_to_id(t) for t in ip.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tok.encode("The movie was not good at all!").ids
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids  # known words, no [UNK]
    tok.save(str(tmp_path / "tokenizer.json"))
    again = ip.load_tokenizer_file(tmp_path / "tokenizer.json", max_length=64)
    assert ip.tokenizer_fingerprint(again) == ip.tokenizer_fingerprint(tok)
    assert again.encode("The movie was not good at all!").ids == ids

    kw = dict(encoder="scratch", workdir=tmp_path / "wd", vocab_size=500, max_length=64,
              batch_size=16, synthetic_train=400, synthetic_test=50, progress=False)
    first = ip.build_sentiment_data("synthetic", **kw)
    assert first.info["tokenizer"].startswith("trained on 280")  # the train split only
    second = ip.build_sentiment_data("synthetic", **kw)
    assert second.info["tokenizer"].startswith("reused")
    assert ip.tokenizer_fingerprint(second.tokenizer) == ip.tokenizer_fingerprint(
        first.tokenizer)
    # The workdir's vocabulary is kept (a checkpoint there was trained with it), with a
    # warning when the data or settings differ from those it was trained on.
    with caplog.at_level(logging.WARNING):
        third = ip.build_sentiment_data("synthetic", **(kw | {"seed": 1}))
    assert third.info["tokenizer"].startswith("reused") and "trained on other data" in caplog.text


# --------------------------------------------------------------------------- cache


def test_second_run_hits_the_cache_and_does_not_tokenize(tmp_path, monkeypatch, caplog):
    kw = dict(encoder="scratch", workdir=tmp_path / "wd", cache_dir=tmp_path / "cache",
              vocab_size=500, max_length=64, batch_size=16, synthetic_train=300,
              synthetic_test=60, progress=False)
    first = ip.build_sentiment_data("synthetic", **kw)
    assert not first.info["train_cache_hit"] and not first.info["test_cache_hit"]
    assert len(list((tmp_path / "cache").glob("tokens-synthetic-*.npz"))) == 2

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(ip, "encode_texts", no_tokenizing)
    monkeypatch.setattr(ip, "make_synthetic", no_tokenizing)  # nor generated/read again
    second = ip.build_sentiment_data("synthetic", **kw)
    assert second.info["train_cache_hit"] and second.info["test_cache_hit"]
    for split in ("train", "validation", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert [a.example(i).tolist() for i in range(len(a))] == \
            [b.example(i).tolist() for i in range(len(b))]
        np.testing.assert_array_equal(a.labels, b.labels)
    # Another max_length or split seed is another key... and a corrupt file is rebuilt.
    monkeypatch.undo()
    other = ip.build_sentiment_data("synthetic", **(kw | {"max_length": 32,
                                                           "workdir": tmp_path / "wd2"}))
    assert not other.info["train_cache_hit"]
    for f in (tmp_path / "cache").glob("*.npz"):
        f.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        rebuilt = ip.build_sentiment_data("synthetic", **kw)
    assert not rebuilt.info["train_cache_hit"] and "unreadable token cache" in caplog.text
    assert len(rebuilt.train) == len(first.train)


# --------------------------------------------------------------------------- batches


def fake_split(n=103, seed=0, max_len=100):
    """Example i's tokens are all 1000 + i, so a batch row tells which example it is."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, size=n).astype(np.int32)
    ids = np.concatenate([np.full(k, 1000 + i, np.int32) for i, k in enumerate(lengths)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return ip.TokenizedSplit(ids, starts, lengths, (np.arange(n) % 2).astype(np.int8))


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
    bb = ip.BucketedBatches(split, batch_size=8, buckets=buckets, pad_id=0)
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
    data = ip.SentimentData(split, val, test, _tiny_tokenizer(), batch_size=16,
                            buckets=buckets, max_length=64, seed=5)

    def order(epoch, d=data, start=0):
        return [tuple(b["input_ids"][:, 0]) for b in d.train_batches(epoch, start)]

    e0, e0b, e1 = order(0), order(0), order(1)
    assert e0 == e0b and e0 != e1
    assert len(e0) == data.steps_per_epoch == math.ceil(200 / 16)
    assert order(0, start=5) == e0[5:]  # resume: skipping k batches sees the same rest
    other = ip.SentimentData(split, val, test, _tiny_tokenizer(), batch_size=16,
                             buckets=buckets, max_length=64, seed=6)
    assert order(0, other) != e0
    for epoch in (0, 1):
        seen = np.concatenate([check_batch(b, split, buckets, 16)
                               for b in data.train_batches(epoch)])
        assert sorted(seen.tolist()) == list(range(200))
    assert sum(b["weight"].sum() for b in data.eval_batches("val")) == 30
    assert sum(b["weight"].sum() for b in data.eval_batches("test")) == 40
    assert data.num_batches("validation") == math.ceil(30 / 16)


def test_batches_split_over_processes():
    split = fake_split(n=50, max_len=30)
    parts = [list(ip.BucketedBatches(split, batch_size=8, buckets=(32,), process_index=p,
                                     process_count=2)()) for p in (0, 1)]
    whole = list(ip.BucketedBatches(split, batch_size=8, buckets=(32,))())
    for b0, b1, w in zip(*parts, whole, strict=True):
        assert b0["input_ids"].shape == (4, 32)
        np.testing.assert_array_equal(np.concatenate([b0["input_ids"], b1["input_ids"]]),
                                      w["input_ids"])
        np.testing.assert_array_equal(np.concatenate([b0["weight"], b1["weight"]]),
                                      w["weight"])
    with pytest.raises(ip.DataError, match="multiple"):
        ip.BucketedBatches(split, batch_size=7, buckets=(32,), process_count=2)


def _tiny_tokenizer():
    return ip.train_wordpiece_tokenizer(["the movie was good", "the plot was bad"] * 5,
                                        vocab_size=100, max_length=64)


def test_default_buckets_and_batch_size_checks(tmp_path):
    assert ip.default_buckets(512) == (32, 64, 128, 256, 512)
    assert ip.default_buckets(200) == (32, 64, 128, 200)
    assert ip.default_buckets(16) == (16,)
    with pytest.raises(ip.DataError, match="multiple of 8"):
        ip.build_sentiment_data("synthetic", batch_size=100, pad_to_multiple=8,
                                workdir=tmp_path)
    with pytest.raises(ip.DataError, match="unknown data source"):
        ip.build_sentiment_data("mnist", workdir=tmp_path)


def test_synthetic_build_end_to_end(tmp_path):
    data = ip.build_sentiment_data("synthetic", encoder="scratch", workdir=tmp_path,
                                   max_length=128, batch_size=32, synthetic_train=1000,
                                   synthetic_test=200, progress=False)
    assert data.info["sizes"] == {"train": 700, "validation": 300, "test": 200}
    assert data.pad_id == 0 and data.buckets == (32, 64, 128)
    assert (tmp_path / "tokenizer.json").is_file()
    for b in data.train_batches(0):
        assert b["input_ids"].shape[0] == 32 and b["input_ids"].shape[1] in data.buckets
        assert (b["input_ids"][:, 0] == data.tokenizer.token_to_id("[CLS]")).all()
    assert max(int(s.lengths.max()) for s in (data.train, data.test)) <= 128


def test_predict_batches_take_any_text(shared_data):
    tok = ip.load_pretrained_tokenizer(shared_data / "bert-base-uncased" / "vocab.txt",
                                       max_length=128)
    texts = ["Justice League is terrible. I hated it.", "Avengers was great!!", "",
             "😀 素晴らしい映画 \u0007 ok", "long " * 100_000, "a<br />b"]
    batches = list(ip.predict_batches(tok, texts, batch_size=4))
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
    # In input order (no sorting), one text: one row, padding rows marked -1.
    (one,) = ip.predict_batches(tok, texts[:1], batch_size=4, sort_by_length=False)
    assert one["input_ids"].shape == (1, 32) and one["index"].tolist() == [0]
    three = list(ip.predict_batches(tok, texts[:3], batch_size=4, sort_by_length=False))
    assert [b["index"].tolist() for b in three] == [[0, 1, 2, -1]]
    np.testing.assert_array_equal(three[0]["weight"], [1, 1, 1, 0])


def test_prefetch_propagates_errors_and_stops_early():
    def gen():
        yield 1
        yield 2
        raise RuntimeError("boom")

    it = ip.prefetch(gen(), 2)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="boom"):
        next(it)
    endless = ip.prefetch(iter(range(10**9)), 2)
    assert next(endless) == 0
    endless.close()  # the worker thread stops instead of blocking forever


# --------------------------------------------------------------------------- real data


def test_real_archive_counts(shared_data):
    raw = ip.read_imdb_archive(shared_data / "aclImdb_v1.tar.gz")
    assert (len(raw.train), len(raw.test)) == (25_000, 25_000)
    assert raw.train.labels.sum() == 12_500 and raw.test.labels.sum() == 12_500
    assert not any("<br" in t for t in raw.train.texts[:2000])
    tr, va = ip.split_indices(len(raw.train), 0.7, seed=0)
    assert (len(tr), len(va)) == (17_500, 7_500)
    assert raw.invalid_utf8 == 0
