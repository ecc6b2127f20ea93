"""The notebook's model at the benchmarks' sizes, in this project and in PyTorch.

The notebook's model: a frozen BERT encoder, a 2-layer bidirectional GRU (hidden 256,
dropout 0.25), dropout, a linear layer to one logit. This project's is built by
`hw3_jax.factory.sentiment_model` from `configs/sentiment.py:notebook`'s model section
(float32, as PyTorch computes, or bfloat16); the PyTorch one (`benchmarks.torch_peer`) is
the notebook's class with the same weights.
"""

from __future__ import annotations

from configs.sentiment import get_config
from hw3_jax.bert import BertConfig
from hw3_jax.factory import sentiment_model
from hw3_jax.models import BertGRUSentiment

SIZES = {
    # sentence-transformers/all-MiniLM-L6-v2's shape
    "small": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                  intermediate_size=1536),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                      intermediate_size=3072),
    # --quick only
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                 intermediate_size=128, vocab_size=1000, max_position_embeddings=128),
}


def notebook_model(bert: BertConfig, dtype: str = "float32") -> BertGRUSentiment:
    """The notebook recipe's model (frozen encoder, BiGRU 2x256 head) on encoder `bert`,
    computing in `dtype` (parameters float32)."""
    model_cfg = get_config("notebook").model
    model_cfg.dtype = dtype
    return sentiment_model(model_cfg, bert)

