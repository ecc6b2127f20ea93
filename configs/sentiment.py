"""Q4, sentiment analysis: BERT encoder -> bidirectional GRU -> one logit, on reviews.

    python -m experiments.sentiment
        synthetic (the default): the embedded synthetic reviews (labels depend on word order;
        bag-of-words logistic regression 64.8%), a 2-layer encoder (hidden 64) trained from
        scratch, 2 epochs: test 99.90% (loss 0.0038; the run itself 104 s) on the idle 2-core
        Intel Xeon with AMX-BF16 (float32; the rounding, so the loss, differs between CPUs:
        99.70%, loss 0.0104, on the AMD EPYC without AVX-512); results/sentiment_default.json
    python -m experiments.sentiment --config configs/sentiment.py:imdb_scratch
        real IMDB from ../shared/data/aclImdb_v1.tar.gz, a 1-layer encoder (hidden 64) from
        scratch whose word embeddings start from PPMI+SVD vectors of the 75,000 unlabelled
        and training texts (std 0.5), a 1-layer BiGRU read by concat pooling, 384 tokens,
        3 epochs of Adam 2e-3 with cosine decay: test 88.07% (validation 89.24%) in
        9 min 46 s on the idle 2-core Intel Xeon with AMX-BF16;
        results/sentiment_imdb_scratch.json
    python -m experiments.sentiment --config configs/sentiment.py:notebook
        the homework notebook's recipe: frozen pretrained bert-base-uncased (hub download),
        IMDB downloaded once (tfds's DownloadManager), 2-layer BiGRU 256, 2 epochs of
        batch 128, 512 tokens, Adam 1e-3; needs a TPU/GPU. The notebook reported test 90.87%
        (loss 0.228)
    python -m experiments.sentiment --config configs/sentiment.py:minilm
        the notebook's recipe with the shared frozen all-MiniLM-L6-v2 in place of
        bert-base-uncased: every review of the shared archive (17,500 / 7,500 / 25,000),
        256 tokens kept head+tail, batch 32, 2 epochs of Adam 1e-3, the encoder's outputs
        computed once (encoder cache; 28 reviews/s, 30 min, on the idle 2-core Intel Xeon
        with AMX-BF16), head epochs of 8.2 and 7.2 min: test 86.84% (loss 0.308; validation
        87.25%), 50 min in all; results/sentiment_minilm_frozen.json (on the AMD EPYC with
        AVX512-BF16: 87.21%, and 84.64% at batch 128). With `--max-length 128
        --limit 2000 --config.data.buckets=None --config.data.truncation='head'` (a random
        2,000 reviews of each split; buckets 32, 64, 128): test 71.75% (validation 74.85%)
        in 4 min 11 s on the Xeon with AMX-BF16; results/sentiment_minilm.json
    python -m experiments.sentiment --config configs/sentiment.py:minilm_finetune
        the shared all-MiniLM-L6-v2 fine-tuned (Sun et al. 2019's recipe) with a linear
        head on the mean of its outputs, every review of the shared archive, 256 tokens
        kept head+tail, batch 16, 2 epochs of AdamW (weight decay 0.01) at 3e-5 for the
        encoder and 1e-3 for the head, warmup over 110 steps then linear decay to 0, a
        checkpoint every 100 steps (continue a stopped run with --resume): test 92.08%
        (loss 0.201; validation 91.45%, best at epoch 2), training epochs of 44.7 and 54.3
        min (6.5 and 5.4 reviews/s), 133 min in all with evaluation, on an idle 2-core Intel
        Xeon with AMX-BF16 (float32; the same metrics bit for bit in 115 min on another
        machine of that kind); results/sentiment_minilm_finetuned.json. One epoch
        (`--epochs 1`, the schedule then decays over it): test 91.22% (loss 0.215) in 70 min
        on that Xeon, the same metrics bit for bit as on an Intel Xeon without AMX;
        results/sentiment_minilm_finetuned_1epoch.json
    python -m experiments.sentiment --config configs/sentiment.py:smoke
        a tiny encoder on 300 synthetic reviews, 2 epochs: seconds once compiled, for the
        tests and the notebook's CPU run; accuracy near chance is expected

Each field's comment says what it does and, for a text field, the values it takes (the
train section's: TrainConfig in hw3_jax/train/config.py). A field whose default is None
(`placeholder`) says at its definition what None means.
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections
from ml_collections.config_dict import placeholder

from hw3_jax.bert import BertConfig
from hw3_jax.models import BertGRUSentiment
from hw3_jax.train.config import TrainConfig

SHARED_ARCHIVE = "../shared/data/aclImdb_v1.tar.gz"
SHARED_MINILM = "../shared/data/all-MiniLM-L6-v2"
# The MiniLM variants' data: 256 tokens, as 59% of IMDB reviews fit whole
# (experiments/token_lengths.py); the rest keep head and tail. Finer buckets than powers of
# two: less padding.
MINILM_DATA = dict(imdb_archive=SHARED_ARCHIVE, max_length=256, truncation="head+tail",
                   buckets="64,96,128,160,192,224,256")


def _data() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        # "synthetic" | "imdb"; None: picked from the encoder and the IMDB fields below
        # (experiments/sentiment_train.py's data_source)
        "source": placeholder(str),
        # An aclImdb_v1.tar.gz; None: download the official one once (tensorflow-datasets'
        # DownloadManager, which needs no TensorFlow).
        "imdb_archive": placeholder(str),
        "imdb_url": placeholder(str),  # a mirror of the archive; None: the official URL
        "imdb_sha256": placeholder(str),  # the mirror's sha256; None: the official archive's
        # tfds's data folder, the download going to DIR/downloads; None: $TFDS_DATA_DIR or
        # ~/tensorflow_datasets
        "data_dir": placeholder(str),
        "synthetic_size": 25_000,  # training part (split 70/30); the test part has a fifth
        "limit": placeholder(int),  # at most N examples per split, drawn at random by seed
        "max_length": 64,  # tokens per review including [CLS] and [SEP]
        # What a longer review keeps: "head" (the notebook) | "tail" | "head+tail" (its
        # first quarter and its end, as Sun et al. 2019); see data.token_cache
        "truncation": "head",
        "batch_size": 32,  # examples per batch (over all processes of a run)
        # Batch lengths "64,128,256"; None: powers of two from 32 up to max_length. More
        # buckets pad less but compile more often.
        "buckets": placeholder(str),
        "vocab_size": 4000,  # WordPiece vocabulary trained for a scratch encoder
        # vocab.txt / tokenizer.json for a pretrained encoder; None: the encoder's own
        "vocab": placeholder(str),
    })


def _model() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "encoder": "scratch",  # "scratch" | a hub name | a local dir (config.json + weights)
        "attention": "softmax",  # "softmax" | "performer" | "local"
        # The sizes of a scratch encoder (a pretrained one brings its own).
        "hidden_size": 64,
        "layers": 2,
        "heads": 4,
        "intermediate_size": 128,
        # The encoder's hidden dropout (BERT's hidden_dropout_prob; more regularises a small
        # scratch encoder); None: the encoder's own (BertConfig's 0.1 for a scratch encoder)
        "encoder_dropout": placeholder(float),
        "local_window": BertConfig.local_window,  # "local" attention: neighbours per side
        "performer_features": BertConfig.performer_features,  # "performer": random features
        # The head: GRU hidden size (per direction) and layers, dropout between them and
        # before the output layer.
        "gru_hidden": 64,
        "gru_layers": BertGRUSentiment.n_layers,
        "dropout": BertGRUSentiment.dropout,
        # "gru" (the notebook) | "linear": pooled encoder output -> dropout -> Dense(1)
        "head": BertGRUSentiment.head,
        # GRU head: "final" | "concat" (final; max; mean); linear head: "cls" | "mean";
        # None: the head's own (final, cls)
        "readout": placeholder(str),
        # True: BERT without attention mask and the GRU over padding, as the notebook ran.
        "notebook_parity": False,
        # Compute dtype "float32" | "bfloat16"; None: bfloat16 on TPU/GPU, float32 on CPU
        "dtype": placeholder(str),
        "freeze_encoder": True,  # a pretrained encoder; False fine-tunes it
        "freeze_word_embeddings": False,  # True: keep the word embeddings fixed (scratch)
        # A scratch encoder's word embeddings: "random" (BERT's init) | "ppmi-svd" (word
        # vectors of the training texts and an archive's unlabelled reviews)
        "init_embeddings": "random",
        "word_vector_std": BertConfig.initializer_range,  # scale of the PPMI+SVD vectors
    })


def _train() -> ml_collections.ConfigDict:
    """TrainConfig's defaults (hw3_jax/train/config.py says what each field does); one that
    is None becomes a typed placeholder, so that an override of the wrong type
    (`--config.train.max_steps=abc`) is refused when parsed."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {}
    for name, value in dataclasses.asdict(TrainConfig()).items():
        if value is None:
            (kind,) = (t for t in typing.get_args(hints[name]) if t is not type(None))
            value = placeholder(kind)
        fields[name] = value
    return ml_collections.ConfigDict(fields)


def _base() -> ml_collections.ConfigDict:
    """The embedded default (synthetic reviews, a small scratch encoder)."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # data order, initialisation and dropout
    config.data = _data()
    config.model = _model()
    config.encoder_cache = ml_collections.ConfigDict({
        # True: a frozen pretrained encoder's outputs computed once per review (dropout
        # off) and the GRU head trained on them, memory-mapped in WORKDIR/cache (or
        # $HW3_JAX_CACHE)
        "enabled": False,
        "dtype": "float16",  # storage of the outputs: "float16" | "bfloat16" | "float32"
    })
    config.train = _train()
    config.train.seed = config.get_ref("seed")  # dropout keys follow the one seed
    config.train.epochs = 2
    return config


def _imdb_scratch(config: ml_collections.ConfigDict) -> None:
    # One encoder layer and more dropout: the 17,500 training reviews are memorised otherwise.
    # IMDB even when the archive is cleared (--config.data.imdb_archive=None: the download).
    config.data.update(source="imdb", imdb_archive=SHARED_ARCHIVE, max_length=384, batch_size=64,
                       vocab_size=16_000, buckets="64,128,192,256,384")
    config.model.update(layers=1, heads=2, intermediate_size=256, gru_layers=1,
                        readout="concat", init_embeddings="ppmi-svd", word_vector_std=0.5,
                        encoder_dropout=0.2, dropout=0.4)
    config.train.update(epochs=3, learning_rate=2e-3, lr_schedule="cosine", warmup_steps=100)


def _notebook(config: ml_collections.ConfigDict) -> None:
    config.data.update(max_length=512, batch_size=128)
    config.model.update(encoder="bert-base-uncased", gru_hidden=BertGRUSentiment.hidden_dim)


def _minilm(config: ml_collections.ConfigDict) -> None:
    _notebook(config)
    config.data.update(MINILM_DATA)
    config.model.encoder = SHARED_MINILM
    config.encoder_cache.enabled = True
    # Batch 32, not the notebook's 128: on a CPU the head costs the same per review at 32
    # as at 128, and gets 4x the updates in 2 epochs (on the AMD EPYC: 84.64% test at 128,
    # its validation loss still falling fast; 87.21% at 32).
    config.data.batch_size = 32


def _minilm_finetune(config: ml_collections.ConfigDict) -> None:
    # Mean pooling: all-MiniLM-L6-v2 was trained (as a sentence encoder) on the mean of its
    # outputs, not on its [CLS] vector.
    config.data.update(MINILM_DATA, batch_size=16)
    config.model.update(encoder=SHARED_MINILM, freeze_encoder=False, head="linear",
                        readout="mean", dropout=0.1)
    # 17,500 / 16 = 1,094 steps an epoch: the warmup is about the first 10% of them.
    config.train.update(epochs=2, optimizer="adamw", learning_rate=1e-3,
                        encoder_learning_rate=3e-5, lr_schedule="linear", warmup_steps=110,
                        checkpoint_every_steps=100)


def _smoke(config: ml_collections.ConfigDict) -> None:
    config.data.update(synthetic_size=300, max_length=32, vocab_size=200)
    config.model.update(hidden_size=32, layers=1, heads=2, intermediate_size=64, gru_hidden=16)
    config.train.progress = False


_APPLY = {"synthetic": None, "imdb_scratch": _imdb_scratch, "notebook": _notebook,
          "minilm": _minilm, "minilm_finetune": _minilm_finetune, "smoke": _smoke}
VARIANTS = tuple(_APPLY)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of variant `arg` (None or "" is "synthetic"); raises ValueError for an
    unknown variant."""
    name = arg or "synthetic"
    if name not in _APPLY:
        raise ValueError(f"unknown variant {name!r}: choose from {', '.join(VARIANTS)}")
    config = _base()
    if _APPLY[name] is not None:
        _APPLY[name](config)
    return config
