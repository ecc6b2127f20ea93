"""What a review longer than max_length keeps: head, tail, or head+tail."""

import hashlib
import json

import numpy as np
import pytest

from hw3_jax.data import batching, token_cache
from hw3_jax.data.errors import DataError
from hw3_jax.data.tokenizer import load_pretrained_tokenizer

WORDS = [f"w{i}" for i in range(300)]  # "w17" -> "w", "##17": ids differ along the text


def _tokenizer(shared_data, max_length):
    return load_pretrained_tokenizer(shared_data / "bert-base-uncased" / "vocab.txt",
                                     max_length=max_length)


@pytest.fixture(scope="module")
def tok(shared_data):
    return _tokenizer(shared_data, 64)


def test_each_truncation_keeps_its_part(tok, shared_data):
    text = " ".join(WORDS)
    full = _tokenizer(shared_data, 10_000).encode(text).ids  # [CLS] text [SEP], uncut
    assert len(full) > 64
    got = {t: token_cache.encode_texts(tok, [text, "short review"], truncation=t)
           for t in token_cache.TRUNCATIONS}
    head = token_cache.head_tokens(64)
    assert head == 16  # 62 text tokens x 128/510
    expect = {"head": full[:63] + full[-1:],
              "tail": full[:1] + full[-63:],
              "head+tail": full[:1 + head] + full[-(63 - head):]}
    for t, ts in got.items():
        assert ts.lengths.tolist()[0] == 64, t
        np.testing.assert_array_equal(ts.example(0), expect[t], err_msg=t)
        # A review that fits is the same under every truncation.
        np.testing.assert_array_equal(ts.example(1), got["head"].example(1), err_msg=t)
    assert tok.truncation["max_length"] == 64  # the caller's tokenizer is not changed
    assert token_cache.head_tokens(512) == 128  # Sun et al.'s 128 + 382


def test_unknown_truncation_is_one_clear_error(tok):
    with pytest.raises(DataError, match="unknown truncation 'middle'.*head, tail, head\\+tail"):
        token_cache.encode_texts(tok, ["x"], truncation="middle")


def test_cache_key_follows_the_truncation(tmp_path):
    key = dict(cache_dir=tmp_path, source_id="imdb:abc", split="train", tok_fp="f",
               max_length=256)
    paths = {t: token_cache.cache_path(**key, truncation=t) for t in token_cache.TRUNCATIONS}
    assert len(set(paths.values())) == 3
    # A "head" key has no truncation field: the digest of the other fields alone.
    plain = json.dumps({"v": token_cache.CACHE_FORMAT, "source": "imdb:abc", "split": "train",
                        "tok": "f", "max_length": 256}, sort_keys=True)
    digest = hashlib.sha256(plain.encode()).hexdigest()[:20]
    assert paths["head"] == tmp_path / f"tokens-imdb-train-{digest}.npz"


def test_predict_batches_cut_like_the_data(tok):
    text = " ".join(WORDS)
    (batch,) = batching.predict_batches(tok, [text], truncation="tail", batch_size=1)
    want = token_cache.encode_texts(tok, [text], truncation="tail").example(0)
    np.testing.assert_array_equal(batch["input_ids"][0, :64], want)
