"""WordPiece tokenizers: pretrained vocabularies, bad sources, and trained vocabularies that
are byte-identical for the same texts (in one process and across processes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hw3_jax.data import net, synthetic
from hw3_jax.data import tokenizer as T
from hw3_jax.data.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_pretrained_tokenizer_facts_with_the_real_vocab(shared_data):
    tok = T.load_pretrained_tokenizer(shared_data / "bert-base-uncased" / "vocab.txt")
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
    folder = T.load_pretrained_tokenizer(shared_data / "bert-base-uncased")
    mini = T.load_pretrained_tokenizer(shared_data / "all-MiniLM-L6-v2", max_length=512)
    for t in (folder, mini):
        assert t.encode("Hello WORLD how ARE yoU?").ids == [101, 7592, 2088, 2129, 2024, 2017,
                                                            1029, 102]
        assert len(t.encode("word " * 2000).ids) == 512
    assert len(mini.encode("short").ids) == 3  # not padded
    # A special token written in a text is that token from vocab.txt too, as from tokenizer.json.
    text = "a [SEP] b [MASK] [PAD] [sep]"
    assert tok.encode(text).ids == mini.encode(text).ids == [101, 1037, 102, 1038, 103, 0, 1031,
                                                             19802, 1033, 102]


def test_a_cased_vocabulary_keeps_the_case(tmp_path):
    """A vocab.txt with capitals (a cased model's, as bert-base-cased's) is not lower-cased;
    one without (bert-base-uncased's, above) is."""
    words = ["The", "the", "Cat", "cat", "café", "cafe"]
    (tmp_path / "vocab.txt").write_text("\n".join([*T.SPECIAL_TOKENS, *words]) + "\n")
    tok = T.load_pretrained_tokenizer(tmp_path / "vocab.txt")
    assert tok.encode("The cat Café", add_special_tokens=False).tokens == ["The", "cat", "[UNK]"]
    assert tok.encode("café", add_special_tokens=False).tokens == ["café"]  # accents kept


def test_bad_tokenizer_sources(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="neither tokenizer.json nor vocab.txt"):
        T.load_pretrained_tokenizer(tmp_path)
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"\[CLS\]"):
        T.load_pretrained_tokenizer(bad)
    with pytest.raises(DataError, match="does not exist"):
        T.load_pretrained_tokenizer("./no/such/dir")
    # A hub name with no network: one clear line, quickly (no minute of retries).
    monkeypatch.setattr(net, "can_reach", lambda *a, **k: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataError, match="vocab.txt") as e:
        T.load_pretrained_tokenizer("some-user/some-bert-that-is-not-cached")
    # The advice works on a user's machine: no path that only a checkout's neighbours have.
    assert "hf download some-user/some-bert-that-is-not-cached vocab.txt" in str(e.value)
    assert "shared/data" not in str(e.value)


def test_scratch_tokenizer_saves_and_loads(tmp_path):
    raw = synthetic.make_synthetic(0, 400, 50)
    tok = T.train_wordpiece_tokenizer(raw.train.texts, vocab_size=500, max_length=64)
    assert [tok.token_to_id(t) for t in T.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = tok.encode("The movie was not good at all!").ids
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids  # known words, no [UNK]
    tok.save(str(tmp_path / "tokenizer.json"))
    again = T.load_tokenizer_file(tmp_path / "tokenizer.json", max_length=64)
    assert T.tokenizer_fingerprint(again) == T.tokenizer_fingerprint(tok)
    assert again.encode("The movie was not good at all!").ids == ids


def test_trained_vocabulary_keeps_special_tokens_first_and_the_size():
    raw = synthetic.make_synthetic(1, 1000, 10)
    tok = T.train_wordpiece_tokenizer(raw.train.texts, vocab_size=600, max_length=64)
    assert tok.get_vocab_size() == 600
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    assert list(vocab)[:5] == list(T.SPECIAL_TOKENS)
    assert list(vocab.values()) == list(range(600))
    added = json.loads(tok.to_str())["added_tokens"]
    assert [(a["id"], a["content"], a["special"]) for a in added] == [
        (i, t, True) for i, t in enumerate(T.SPECIAL_TOKENS)]
    # The "##" characters and the characters first, then merged pieces of both kinds.
    pieces = list(vocab)[5:]
    assert any(p.startswith("##") and len(p) > 3 for p in pieces)
    assert any(not p.startswith("##") and len(p) > 1 for p in pieces)
    for word in ("masterpiece", "boring", "however"):
        assert "[UNK]" not in tok.encode(word).tokens


def _trained_bytes(tmp_path: Path, name: str) -> bytes:
    raw = synthetic.make_synthetic(4242, 2000, 10)
    tok = T.train_wordpiece_tokenizer(raw.train.texts, vocab_size=700, max_length=64)
    path = tmp_path / name
    tok.save(str(path))
    return path.read_bytes()


def test_training_twice_gives_byte_identical_tokenizer_json(tmp_path):
    assert _trained_bytes(tmp_path, "a.json") == _trained_bytes(tmp_path, "b.json")


TRAIN_IN_A_PROCESS = """
import hashlib, sys
from hw3_jax.data import synthetic, tokenizer
raw = synthetic.make_synthetic(4242, 2000, 10)
tok = tokenizer.train_wordpiece_tokenizer(raw.train.texts, vocab_size=700, max_length=64)
tok.save(sys.argv[1])
"""


def test_two_fresh_processes_train_byte_identical_tokenizer_json(tmp_path):
    """Hash maps are seeded per process (Python's and Rust's): two interpreters, each with
    its own hash seed, must still write the same bytes, and the same as this process."""
    digests = []
    for k, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"p{k}.json"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-c", TRAIN_IN_A_PROCESS, str(out)], check=True,
                       env=env, cwd=ROOT, timeout=300)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    here = hashlib.sha256(_trained_bytes(tmp_path, "here.json")).hexdigest()
    assert digests[0] == digests[1] == here
