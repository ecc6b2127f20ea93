"""Word vectors from unlabelled text, for an encoder trained from scratch: PPMI + SVD.

A small encoder trained from scratch on 17,500 IMDB reviews learns its word embeddings from
the labels alone and overfits them (memorising names and titles of the training movies).
Counting which tokens occur near which others in all the unlabelled text there is (the
labelled training reviews without their labels, and the archive's 50,000 `train/unsup`
reviews) gives every token a vector before training starts: the positive pointwise mutual
information matrix of the co-occurrence counts, factorised by a truncated SVD (Levy,
Goldberg & Dagan 2015, "Improving Distributional Similarity with Lessons Learned from Word
Embeddings": context-distribution smoothing alpha=0.75, symmetric weighting U sqrt(S)).
On 2 CPU cores this takes about a minute for ~20M tokens, where masked-language-model
pretraining would take hours.

    vectors = ppmi_svd_embeddings([data.train, data.validation, unsup], vocab_size, dim=64,
                                  std=0.02, seed=0)
    params = with_word_embeddings(params, vectors)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from hw3_jax.data.token_cache import token_index


def token_stream(splits: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [T] int64, document [T] int64) of every example of `splits` (objects with
    `ids`, `starts`, `lengths`, as `token_cache.TokenizedSplit`), concatenated."""
    toks, docs, base = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], 0
    for s in splits:
        lengths = np.asarray(s.lengths, np.int64)
        toks.append(np.asarray(s.ids)[token_index(s.starts, lengths)].astype(np.int64))
        docs.append(np.repeat(np.arange(base, base + len(lengths), dtype=np.int64), lengths))
        base += len(lengths)
    return np.concatenate(toks), np.concatenate(docs)


def cooccurrence(tokens: np.ndarray, docs: np.ndarray, vocab_size: int, window: int = 5,
                 skip_ids: Sequence[int] = ()) -> sp.csr_matrix:
    """Symmetric co-occurrence counts [vocab, vocab] within `window` tokens of the same
    document, each pair weighted 1/distance (GloVe's weighting); `skip_ids` (special
    tokens) count nothing."""
    keep = np.ones(vocab_size, bool)
    keep[list(skip_ids)] = False
    total = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for d in range(1, window + 1):
        a, b = tokens[:-d], tokens[d:]
        ok = (docs[:-d] == docs[d:]) & keep[a] & keep[b]
        w = np.full(int(ok.sum()), 1.0 / d)
        total = total + sp.csr_matrix((w, (a[ok], b[ok])), shape=(vocab_size, vocab_size))
    return (total + total.T).tocsr()


def ppmi(counts: sp.csr_matrix, alpha: float = 0.75) -> sp.csr_matrix:
    """Positive PMI of a co-occurrence matrix, the context distribution raised to `alpha`
    (which keeps rare contexts from dominating)."""
    counts = counts.tocoo()
    total = counts.sum()
    if total <= 0:
        return sp.csr_matrix(counts.shape)
    row = np.asarray(counts.sum(axis=1)).ravel()
    col = np.asarray(counts.sum(axis=0)).ravel() ** alpha
    p_col = col / col.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts.data / total) - np.log(row[counts.row] / total) \
            - np.log(p_col[counts.col])
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape)


def ppmi_svd_embeddings(splits: Sequence[Any], vocab_size: int, dim: int, *,
                        window: int = 5, alpha: float = 0.75, skip_ids: Sequence[int] = (),
                        std: float, seed: int) -> np.ndarray:
    """[vocab_size, dim] float32 word vectors from the token ids of `splits`.

    U sqrt(S) of the rank-`dim` SVD of the PPMI matrix, scaled to standard deviation `std`
    (BERT's initializer range, what the rest of the encoder is initialised for). Tokens
    that never occur (and `skip_ids`) get N(0, std) vectors, as a fresh embedding would."""
    if dim >= vocab_size:
        raise ValueError(f"dim {dim} must be smaller than the vocabulary ({vocab_size})")
    tokens, docs = token_stream(splits)
    m = ppmi(cooccurrence(tokens, docs, vocab_size, window, skip_ids), alpha)
    if m.nnz == 0:
        raise ValueError("no co-occurrences to learn word vectors from: the text is empty")
    u, s, _ = randomized_svd(m, dim, n_iter=5, random_state=seed)
    vec = u * np.sqrt(s)[None, :]
    seen = np.asarray(m.sum(axis=1)).ravel() > 0
    vec *= std / vec[seen].std()
    rng = np.random.default_rng(seed)
    vec[~seen] = rng.normal(0.0, std, (int((~seen).sum()), dim))
    return vec.astype(np.float32)


def with_word_embeddings(params: Mapping, vectors: np.ndarray) -> dict:
    """BertGRUSentiment's `params` with the word embedding table replaced by `vectors`
    [vocab, hidden] (shapes checked)."""
    from hw3_jax.models import ENCODER_KEY  # here: this module needs no jax/flax

    enc = params[ENCODER_KEY]
    table = enc["embeddings"]["word_embeddings"]["embedding"]
    if tuple(table.shape) != tuple(vectors.shape):
        raise ValueError(f"word vectors {vectors.shape} do not fit the embedding table "
                         f"{tuple(table.shape)}")
    new_enc = {**enc, "embeddings": {**enc["embeddings"], "word_embeddings": {
        **enc["embeddings"]["word_embeddings"], "embedding": np.asarray(vectors, table.dtype)}}}
    return {**params, ENCODER_KEY: new_enc}
