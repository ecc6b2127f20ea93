"""The data sources: the IMDB archive and its faults, the network probe, the synthetic set, the
split. The IMDB download: tests/test_imdb_download.py."""

from __future__ import annotations

import logging
import os
import re
import tarfile

import numpy as np
import pytest
from _data_helpers import REVIEWS, make_archive

from hw3_jax.data import imdb, net, synthetic
from hw3_jax.data.errors import DataError

# --------------------------------------------------------------------------- archives


def test_archive_reads_labels_cleans_and_counts_invalid_utf8(tmp_path, caplog):
    path = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    with caplog.at_level(logging.WARNING):
        r = imdb.read_imdb_archive(path)
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


def test_archive_order_independent_unsup_and_extracted_folder(tmp_path):
    a = imdb.read_imdb_archive(make_archive(tmp_path / "a.tar.gz"))
    b = imdb.read_imdb_archive(make_archive(tmp_path / "b.tar.gz", reverse=True))
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    unsup_a, unsup_b = (imdb.read_imdb_unsup(tmp_path / n) for n in ("a.tar.gz", "b.tar.gz"))
    assert unsup_a == unsup_b == ["No label here", "Another one"]
    # An uncompressed tar and an extracted folder give the same reviews, and so does an
    # archive repacked by macOS's tar (a hidden `._NAME` metadata file beside each file).
    c = imdb.read_imdb_archive(make_archive(tmp_path / "c.tar", compression=""))
    assert c.train.texts == a.train.texts
    apple = {folder: {**files, **{f"._{name}": b"\x00\x05\x16\x07 Mac OS X"
                                  for name in files}} for folder, files in REVIEWS.items()}
    m = imdb.read_imdb_archive(make_archive(tmp_path / "m.tar.gz", apple))
    assert m.train.texts == a.train.texts and m.test.texts == a.test.texts
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    d = imdb.read_imdb_archive(tmp_path / "x")
    assert d.train.texts == a.train.texts and d.test.texts == a.test.texts
    assert d.invalid_utf8 == 1
    # The folder's name for the token cache changes with any review file in it (the top
    # folder's own mtime does not), and only then.
    before = imdb.archive_identity(tmp_path / "x")
    assert imdb.archive_identity(tmp_path / "x") == before == d.source_id
    top = os.stat(tmp_path / "x")
    review = next((tmp_path / "x" / "aclImdb" / "train" / "pos").iterdir())
    review.write_text("A different review")
    os.utime(tmp_path / "x", ns=(top.st_atime_ns, top.st_mtime_ns))
    changed = imdb.archive_identity(tmp_path / "x")
    assert changed != before
    # The unlabelled reviews (word vectors' text) are cached under the same name.
    next((tmp_path / "x" / "aclImdb" / "train" / "unsup").iterdir()).write_text("Another")
    assert imdb.archive_identity(tmp_path / "x") != changed
    # A dangling link, which the reader skips, hides none of the files after it.
    pos = tmp_path / "x" / "aclImdb" / "train" / "pos"
    (pos / "0_0.txt").symlink_to(tmp_path / "gone")
    changed = imdb.archive_identity(tmp_path / "x")
    (pos / "1_8.txt").write_text("Changed again")
    assert imdb.archive_identity(tmp_path / "x") != changed


def test_bad_archives_give_one_clear_data_error(tmp_path):
    not_gz = tmp_path / "not.tar.gz"
    not_gz.write_text("this is not an archive\n" * 100)
    with pytest.raises(DataError, match="not a readable .tar.gz archive"):
        imdb.read_imdb_archive(not_gz)

    good = make_archive(tmp_path / "good.tar.gz").read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a readable"):
        imdb.read_imdb_archive(truncated)

    missing = {k: v for k, v in REVIEWS.items() if k != "test/neg"}
    with pytest.raises(DataError, match=r"test/neg is missing.*aclImdb/\{train,test\}"):
        imdb.read_imdb_archive(make_archive(tmp_path / "missing.tar.gz", missing))

    no_test = {k: v for k, v in REVIEWS.items() if not k.startswith("test/")}
    with pytest.raises(DataError, match="empty test split: test/neg is empty, test/pos is"):
        imdb.read_imdb_archive(make_archive(tmp_path / "empty.tar.gz", no_test,
                                          empty_dirs=("test/pos", "test/neg")))

    with pytest.raises(DataError, match="does not exist: pass --imdb-archive PATH"):
        imdb.read_imdb_archive(tmp_path / "nowhere.tar.gz")
    with pytest.raises(DataError, match="train/unsup is missing"):
        imdb.read_imdb_unsup(make_archive(tmp_path / "nounsup.tar.gz", {
            k: v for k, v in REVIEWS.items() if k != "train/unsup"}))
    # One line each: a message, not a traceback dump.
    try:
        imdb.read_imdb_archive(not_gz)
    except DataError as e:
        assert "\n" not in str(e) and isinstance(e, ValueError)


# --------------------------------------------------------------------------- network


def test_unreachable_host_is_detected_quickly():
    assert not net.can_reach(("unreachable.invalid", 80), timeout=2.0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_by_seed():
    a, b, c = synthetic.make_synthetic(3, 300, 100), synthetic.make_synthetic(3, 300, 100), \
        synthetic.make_synthetic(4, 300, 100)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert a.train.texts != c.train.texts
    assert a.test.texts != a.train.texts[:100]  # the test part is drawn apart, not a prefix
    assert a.source_id == b.source_id != c.source_id


def _sentiment_words():
    pos = set(synthetic.POSITIVE_ADJECTIVES) | {p for p, _ in synthetic.POSITIVE_VERBS}
    neg = set(synthetic.NEGATIVE_ADJECTIVES) | {p for p, _ in synthetic.NEGATIVE_VERBS}
    return pos, neg


def test_synthetic_labels_follow_the_simple_cases():
    """A review whose only opinion is one un-negated sentiment word has that word's label;
    the same with one negation has the opposite label."""
    pos, neg = _sentiment_words()
    negators = {"not", "never", "neither", "far", "wasn", "isn", "weren", "aren", "didn"}
    texts, labels = synthetic.generate_reviews(3000, 11)
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


def test_synthetic_labels_follow_the_deciding_clause():
    """In a two-clause opinion the clause after a contrast connector, and the main clause of a
    concession ("Although A, B" / "B, although A"), decide the label."""
    pos, neg = ({w.split()[0] for v in verbs for w in v} | set(adjectives) | set(phrases)
                for verbs, adjectives, phrases in (
                    (synthetic.POSITIVE_VERBS, synthetic.POSITIVE_ADJECTIVES,
                     synthetic.POSITIVE_NOUN_PHRASES),
                    (synthetic.NEGATIVE_VERBS, synthetic.NEGATIVE_ADJECTIVES,
                     synthetic.NEGATIVE_NOUN_PHRASES)))
    words = re.compile(r"\b(?:{})\b".format("|".join(sorted(pos | neg, key=len)[::-1])))

    def polarity(clause):  # 1 = positive: its sentiment words' polarity, flipped by a negation
        found = {w in pos for w in words.findall(clause)}
        assert len(found) == 1, clause
        return found.pop() ^ (re.search(r"\b(not|never|neither|far from)\b|n't", clause)
                              is not None)

    conj = "although|even though|though|even if|while"
    rng, seen = np.random.default_rng(5), {"first": 0, "last": 0, "contrast": 0}
    for _ in range(600):
        text, label = synthetic.generate_review(rng, single_prob=0.0, two_opinions_prob=0.0,
                                                max_neutral=0)
        body = text.lower().rstrip(".!")
        prefix = next(p for p in synthetic.OPINION_PREFIXES[::-1] if body.startswith(p.lower()))
        body = body[len(prefix):]
        if m := re.fullmatch(rf"(?:{conj}) (.*?), (.*)", body):  # Although A, B
            form, deciding, other = "first", m[2], m[1]
        elif m := re.fullmatch(rf"(.*), (?:{conj}) (.*)", body):  # B, although A
            form, deciding, other = "last", m[1], m[2]
        else:  # A but B
            m = re.fullmatch(r"(.*?)(?:\. but|[.;] however,|\. still,|\. that said,|, and yet"
                             r"|, yet|,? but(?: in the end| overall)?) (.*)", body)
            form, deciding, other = "contrast", m[2], m[1]
        assert label == polarity(deciding), text
        seen[form] += polarity(deciding) != polarity(other)
    assert min(seen.values()) > 20, seen  # each form with clauses that disagree


def test_synthetic_defeats_bag_of_words_but_not_order():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    raw = synthetic.make_synthetic(0, 25_000, 5_000)  # the config's: 17,500 / 7,500; test 5,000
    tr, _ = imdb.split_indices(len(raw.train), 0.7, seed=0)
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
    tr, va = imdb.split_indices(25_000, 0.7, seed=0)
    assert (len(tr), len(va)) == (17_500, 7_500)
    assert len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == 25_000
    tr2, _ = imdb.split_indices(25_000, 0.7, seed=0)
    tr3, _ = imdb.split_indices(25_000, 0.7, seed=1)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(DataError):
        imdb.split_indices(1, 0.7, seed=0)
    with pytest.raises(DataError):
        imdb.split_indices(10, 1.0, seed=0)


# --------------------------------------------------------------------------- real data


def test_real_archive_counts(shared_data):
    raw = imdb.read_imdb_archive(shared_data / "aclImdb_v1.tar.gz")
    assert (len(raw.train), len(raw.test)) == (25_000, 25_000)
    assert raw.train.labels.sum() == 12_500 and raw.test.labels.sum() == 12_500
    assert not any("<br" in t for t in raw.train.texts[:2000])
    tr, va = imdb.split_indices(len(raw.train), 0.7, seed=0)
    assert (len(tr), len(va)) == (17_500, 7_500)
    assert raw.invalid_utf8 == 0
