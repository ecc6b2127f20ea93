"""WordPiece tokenizers: a pretrained encoder's own, or one trained on the training split.

Hugging Face `tokenizers` WordPiece, BERT normalizer (lower-cased, but for a cased
vocabulary) and pre-tokenizer,
`[CLS] ... [SEP]`, cut to `max_length` (512 = 510 tokens + 2), no padding (batches pad to
their bucket). `load_pretrained_tokenizer` takes a local encoder folder, a `tokenizer.json`,
a `vocab.txt` or a hub name; `train_wordpiece_tokenizer` trains a vocabulary whose
`tokenizer.json` is byte-identical for the same texts and settings, in any process.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from hw3_jax.data import net
from hw3_jax.data.errors import DataError, first_line

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
LIMIT_ALPHABET = 1000  # characters kept for a trained vocabulary (the most frequent)


def _bert_pipeline(tok, cls_id: int, sep_id: int, lowercase: bool = True) -> None:
    from tokenizers import decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])


def _configure(tok, max_length: int):
    """`tok` set up as the module docstring says; the BERT pipeline where it has none (a bare
    vocabulary)."""
    if max_length < 3:
        raise DataError(f"max_length must be at least 3 ([CLS] token [SEP]), got {max_length}")
    missing = [t for t in SPECIAL_TOKENS[:4] if tok.token_to_id(t) is None]
    if missing:
        raise DataError(f"tokenizer has no {', '.join(missing)}: a BERT-style WordPiece "
                        f"vocabulary is needed")
    if tok.post_processor is None:
        # A bare vocab.txt does not say whether its model lower-cases: one holding capitals
        # is a cased model's (bert-base-cased: "The"), whose text must keep its case.
        cased = any(t != t.lower() for t in tok.get_vocab() if t not in SPECIAL_TOKENS)
        _bert_pipeline(tok, tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), not cased)
        # As in a tokenizer.json: "[SEP]" written in a text is the token, not "[", "sep", "]".
        tok.add_special_tokens([t for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None])
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def load_tokenizer_file(path: str | os.PathLike, max_length: int = 512):
    """A `tokenizer.json` (e.g. `WORKDIR/tokenizer.json`), set to truncate at max_length."""
    from tokenizers import Tokenizer

    p = Path(path).expanduser()
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read tokenizer {p}: {first_line(e)}") from None
    return _configure(tok, max_length)


def load_pretrained_tokenizer(name_or_path: str | os.PathLike, max_length: int = 512):
    """The WordPiece tokenizer of a pretrained BERT-style encoder.

    `name_or_path`: a local encoder folder (its `tokenizer.json`, else `vocab.txt`), a
    `tokenizer.json` file, a `vocab.txt` file, or a Hugging Face hub name such as
    "bert-base-uncased" (`tokenizer.json`, else `vocab.txt`, through `net.hub_files`).
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    p = Path(str(name_or_path)).expanduser()
    if p.is_dir():
        found = [p / f for f in ("tokenizer.json", "vocab.txt") if (p / f).is_file()]
        if not found:
            raise DataError(f"encoder folder {p} has neither tokenizer.json nor vocab.txt")
        p = found[0]
    elif not p.is_file():
        name = str(name_or_path)
        if not net.is_hub_name(name):
            raise DataError(f"tokenizer path {name} does not exist: pass an encoder folder, "
                            "a tokenizer.json or vocab.txt, or a hub name such as "
                            "bert-base-uncased")
        try:
            (p,) = net.hub_files(name, [("tokenizer.json",), ("vocab.txt",)])
        except ImportError:
            raise DataError("huggingface_hub is not installed; pass a local encoder folder or "
                            "vocab.txt") from None
        except net.HubUnavailable as e:
            raise DataError(f"the tokenizer of {name!r}: {e}: pass a local encoder folder, "
                            "tokenizer.json or vocab.txt instead (e.g. from `hf download "
                            f"{name} vocab.txt --local-dir DIR` elsewhere)") from None
    if p.suffix == ".json":
        return load_tokenizer_file(p, max_length)
    try:
        model = WordPiece.from_file(str(p), unk_token="[UNK]")
    except Exception as e:  # noqa: BLE001 - a bad file: one line
        raise DataError(f"cannot read WordPiece vocabulary {p}: {e}") from None
    return _configure(Tokenizer(model), max_length)


# Training. The `tokenizers` WordPiece trainer numbers each "##c" piece when it first meets c
# inside a word, walking a randomly seeded hash map of words, and it breaks ties between
# equally frequent merges by those numbers: so the same texts can give two runs different
# vocabularies. Here the alphabet is counted first and every "##c" is handed to the trainer
# as a special token, numbered in sorted order before training starts; nothing is numbered in
# hash order, and the ties fall the same way every time.


def _alphabet(texts: list[str], limit: int) -> list[str]:
    """The `limit` most frequent characters of `texts` after the lower-cased BERT normalizer
    (whitespace aside; ties by character), sorted."""
    from tokenizers import normalizers

    norm = normalizers.BertNormalizer(lowercase=True)
    raw: collections.Counter = collections.Counter()
    for text in texts:
        raw.update(text)
    # The normalizer works character by character (accents, case, control characters),
    # so normalizing each distinct character is normalizing the text; the one exception,
    # a final capital sigma lower-cased as "ς", is counted as both sigmas.
    counts: collections.Counter = collections.Counter()
    for ch, n in raw.items():
        for out in norm.normalize_str(ch) + ("ς" if ch == "Σ" else ""):
            if not out.isspace():
                counts[out] += n
    return sorted(sorted(counts, key=lambda ch: (-counts[ch], ch))[:limit])


def train_wordpiece_tokenizer(texts: Iterable[str], *, vocab_size: int,
                              max_length: int = 512):
    """A lower-cased BERT-style WordPiece tokenizer of about `vocab_size` pieces trained on
    `texts` (the training split only). Special tokens first: [PAD]=0, [UNK]=1, [CLS]=2,
    [SEP]=3, [MASK]=4; then the "##" characters, the characters (the `LIMIT_ALPHABET` most
    frequent, in code-point order) and the merged pieces in the order they were learned.
    Deterministic: the same texts and settings give a byte-identical `tokenizer.json`."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    if vocab_size < len(SPECIAL_TOKENS) + 30:
        raise DataError(f"vocab_size {vocab_size} is too small")
    texts = list(texts)
    alphabet = _alphabet(texts, LIMIT_ALPHABET)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS) + [f"##{ch}" for ch in alphabet],
        # The alphabet is exactly `alphabet`: its characters are kept whatever their count
        # and the limit drops every other one (so no "##c" outside the list can appear).
        initial_alphabet=alphabet, limit_alphabet=len(alphabet),
        continuing_subword_prefix="##")
    trained = Tokenizer(WordPiece(unk_token="[UNK]"))
    _bert_pipeline(trained, 2, 3)  # only its normalizer and pre-tokenizer act in training
    trained.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # A fresh tokenizer from the vocabulary: only the five tokens above are special in it.
    tok = Tokenizer(WordPiece(trained.get_vocab(), unk_token="[UNK]",
                              continuing_subword_prefix="##", max_input_chars_per_word=100))
    _bert_pipeline(tok, tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return _configure(tok, max_length)


def tokenizer_fingerprint(tok) -> str:
    """A hash of the tokenizer's vocabulary and pipeline (not of its truncation/padding)."""
    d = json.loads(tok.to_str())
    d.pop("truncation", None)
    d.pop("padding", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def pad_id(tok) -> int:
    i = tok.token_to_id("[PAD]")
    return 0 if i is None else int(i)
