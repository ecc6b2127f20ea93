"""PPMI + SVD word vectors (hw3_jax.data.word_vectors) for encoders trained from scratch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from hw3_jax.data import word_vectors as E


@dataclasses.dataclass
class Split:  # the fields of token_cache.TokenizedSplit that word_vectors reads
    ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


def split_of(docs: list[list[int]], gap: int = 0) -> Split:
    """Documents stored with `gap` junk ids between them (as a subset of a split is)."""
    ids, starts = [], []
    for d in docs:
        ids.extend([99] * gap)
        starts.append(len(ids))
        ids.extend(d)
    return Split(np.array(ids), np.array(starts), np.array([len(d) for d in docs]))


def test_token_stream_reads_only_each_examples_tokens():
    s1 = split_of([[1, 2, 3], [4]], gap=2)
    s2 = split_of([[5, 6]])
    toks, docs = E.token_stream([s1, s2])
    np.testing.assert_array_equal(toks, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(docs, [0, 0, 0, 1, 2, 2])


def test_cooccurrence_by_hand():
    toks, docs = E.token_stream([split_of([[1, 2, 3], [3, 1]])])
    c = E.cooccurrence(toks, docs, vocab_size=5, window=2).toarray()
    expect = np.zeros((5, 5))
    for a, b, w in [(1, 2, 1.0), (2, 3, 1.0), (1, 3, 0.5), (3, 1, 1.0)]:  # doc 2 is apart
        expect[a, b] += w
        expect[b, a] += w
    np.testing.assert_allclose(c, expect)
    # Special tokens count nothing; pairs never cross documents.
    c = E.cooccurrence(toks, docs, vocab_size=5, window=2, skip_ids=[2]).toarray()
    assert c[2].sum() == 0 and c[:, 2].sum() == 0 and c[1, 3] == c[3, 1] == 1.5


@pytest.mark.parametrize("alpha", [1.0, 0.75])
def test_ppmi_is_positive_pmi(alpha):
    counts = np.array([[0, 4, 1], [4, 0, 1], [1, 1, 2]], float)
    m = E.ppmi(sp.csr_matrix(counts), alpha=alpha).toarray()
    total = counts.sum()
    p_i = counts.sum(1) / total
    p_j = counts.sum(0) ** alpha / (counts.sum(0) ** alpha).sum()  # smoothed contexts
    with np.errstate(divide="ignore"):
        pmi = np.log(counts / total / np.outer(p_i, p_j))
    np.testing.assert_allclose(m, np.maximum(pmi, 0), atol=1e-12)


def test_vectors_put_words_of_the_same_contexts_together():
    """Two synonyms (1, 2) that never meet but share contexts end up closer to each other
    than to a word (3) of other contexts; the scale and unseen rows are BERT-like."""
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(400):
        w = [1, 2][rng.integers(2)]
        docs.append([10 + rng.integers(5), w, 20 + rng.integers(5)])
        docs.append([30 + rng.integers(5), 3, 40 + rng.integers(5)])
    vec = E.ppmi_svd_embeddings([split_of(docs)], vocab_size=60, dim=8, window=1,
                                skip_ids=[0], std=0.02, seed=0)
    assert vec.shape == (60, 8) and vec.dtype == np.float32
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    assert unit[1] @ unit[2] > 0.7 and abs(unit[1] @ unit[3]) < 0.2
    seen = np.array([1, 2, 3, *range(10, 15), *range(20, 25), *range(30, 35), *range(40, 45)])
    assert vec[seen].std() == pytest.approx(0.02, rel=1e-4)
    assert 0.005 < vec[50:].std() < 0.04  # never seen: N(0, 0.02)
    again = E.ppmi_svd_embeddings([split_of(docs)], vocab_size=60, dim=8, window=1,
                                  skip_ids=[0], std=0.02, seed=0)
    np.testing.assert_array_equal(vec, again)  # deterministic by seed
    other = E.ppmi_svd_embeddings([split_of(docs)], vocab_size=60, dim=8, window=1,
                                  skip_ids=[0], std=0.02, seed=1)
    assert not np.allclose(vec[50:], other[50:])  # the unseen rows are drawn from the seed
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        E.ppmi_svd_embeddings([split_of(docs)], vocab_size=8, dim=8, std=0.02, seed=0)
    with pytest.raises(ValueError, match="empty"):
        E.ppmi_svd_embeddings([split_of([[1]])], vocab_size=60, dim=8, std=0.02, seed=0)


def test_with_word_embeddings_replaces_only_the_table():
    params = {"bert": {"embeddings": {"word_embeddings": {"embedding": np.zeros((6, 4))},
                                      "position_embeddings": {"embedding": np.ones((3, 4))}},
                       "encoder": {"w": np.ones(2)}},
              "out": {"kernel": np.ones((4, 1))}}
    vec = np.arange(24, dtype=np.float32).reshape(6, 4)
    new = E.with_word_embeddings(params, vec)
    np.testing.assert_array_equal(new["bert"]["embeddings"]["word_embeddings"]["embedding"], vec)
    assert new["bert"]["embeddings"]["position_embeddings"] is \
        params["bert"]["embeddings"]["position_embeddings"]
    assert new["out"] is params["out"] and new["bert"]["encoder"] is params["bert"]["encoder"]
    assert (params["bert"]["embeddings"]["word_embeddings"]["embedding"] == 0).all()  # copy
    with pytest.raises(ValueError, match="do not fit"):
        E.with_word_embeddings(params, vec[:5])
