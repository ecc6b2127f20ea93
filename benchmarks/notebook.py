"""The notebook's model at the benchmarks' sizes, in this project and in PyTorch.

The notebook's model: a frozen BERT encoder, a 2-layer bidirectional GRU (hidden 256,
dropout 0.25), dropout, a linear layer to one logit. This project's is built by
`hw3_jax.factory.sentiment_model` from `configs/sentiment.py:notebook`'s model section
(float32, as PyTorch computes); the PyTorch one is the notebook's class with the same
weights.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from configs.sentiment import get_config
from hw3_jax.bert import BertConfig
from hw3_jax.bert_weights import bert_params_to_torch
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


def notebook_model(bert: BertConfig) -> BertGRUSentiment:
    """The notebook recipe's model (frozen encoder, BiGRU 2x256 head) on encoder `bert`,
    float32."""
    model_cfg = get_config("notebook").model
    model_cfg.dtype = "float32"
    return sentiment_model(model_cfg, bert)


def torch_model(cfg: BertConfig, params: Any):
    """The notebook's BERTGRUSentiment in PyTorch with the JAX model's weights."""
    import torch
    import transformers

    tcfg = transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout_prob=cfg.hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.attention_probs_dropout_prob, hidden_act="gelu",
    )

    class BERTGRUSentiment(torch.nn.Module):  # the notebook's model
        def __init__(self, bert, hidden_dim=256, output_dim=1, n_layers=2,
                     bidirectional=True, dropout=0.25):
            super().__init__()
            self.bert = bert
            self.rnn = torch.nn.GRU(bert.config.hidden_size, hidden_dim, num_layers=n_layers,
                                    bidirectional=bidirectional, batch_first=True,
                                    dropout=0 if n_layers < 2 else dropout)
            self.out = torch.nn.Linear(hidden_dim * 2 if bidirectional else hidden_dim,
                                       output_dim)
            self.dropout = torch.nn.Dropout(dropout)

        def forward(self, text, attention_mask):
            with torch.no_grad():
                embedded = self.bert(text, attention_mask=attention_mask)[0]
            _, hidden = self.rnn(embedded)
            hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
            return self.out(hidden)[:, 0]

    model = BERTGRUSentiment(transformers.BertModel(tcfg))
    missing, unexpected = model.load_state_dict(_torch_state_dict(params), strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the torch model: missing {missing}, "
                           f"unexpected {unexpected}")
    for n, p in model.named_parameters():  # the notebook froze BERT this way
        p.requires_grad = not n.startswith("bert.")
    return model


def _torch_state_dict(params: Any) -> dict:
    """The JAX model's params under the PyTorch model's state-dict names."""
    import torch

    sd = {f"bert.{k}": torch.from_numpy(np.array(v))
          for k, v in bert_params_to_torch(params["bert"]).items()}
    for name, p in params["gru"].items():  # "l1_reverse" -> weight_ih_l1_reverse ...
        for leaf, v in p.items():
            sd[f"rnn.{leaf}_{name}"] = torch.from_numpy(np.array(v))
    sd["out.weight"] = torch.from_numpy(np.array(params["out"]["kernel"]).T.copy())
    sd["out.bias"] = torch.from_numpy(np.array(params["out"]["bias"]))
    return sd


def eval_logits_diff(model, params, tmodel, batch: dict) -> float:
    """max |logit difference| of the two models in eval mode on `batch`."""
    import torch

    got = np.asarray(jax.jit(lambda p, i, m: model.apply({"params": p}, i, m))(
        params, batch["input_ids"], batch["attention_mask"]))
    tmodel.eval()
    with torch.no_grad():
        want = tmodel(torch.from_numpy(batch["input_ids"]).long(),
                      torch.from_numpy(batch["attention_mask"]).long()).numpy()
    return float(np.abs(got - want).max())
