"""The PyTorch peer of `benchmarks.train_step`: the notebook's model in PyTorch, timed in a
process of its own.

    python -m benchmarks.torch_peer '{"size": "small", "length": 256, "batch": 8,
                                      "warmup": 1, "repeats": 5, "compile": false,
                                      "components": false}'

prints one JSON line: the eval-mode logit difference against this project's model (same
weights), the training step's timings in float32 and under `torch.autocast("cpu",
torch.bfloat16)` (with "compile": true, of the model under `torch.compile`; the loss,
backward and Adam stay eager), and with "components": true the encoder forward, the GRU
forward + backward and the feed-forward GEMM (float32 and bfloat16) alone. Why a process of
its own: docs/architecture.md; `benchmarks.train_step` starts one per setting.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import numpy as np
import torch
import transformers

from benchmarks.gemm import gemm
from benchmarks.notebook import component_inputs, component_medians, random_case
from hw3_jax import timing
from hw3_jax.bert import BertConfig
from hw3_jax.bert_weights import bert_params_to_torch
from hw3_jax.models import BertGRUSentiment
from hw3_jax.train.config import TrainConfig

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}  # None: no autocast


class NotebookModel(torch.nn.Module):
    """The notebook's BERTGRUSentiment: BERT (no gradients) -> BiGRU (the notebook's 2x256)
    -> dropout -> Linear; [batch, length] ids -> [batch] logits."""

    def __init__(self, bert: transformers.BertModel, hidden_dim: int, n_layers: int,
                 dropout: float):
        super().__init__()
        self.bert = bert
        self.rnn = torch.nn.GRU(bert.config.hidden_size, hidden_dim, num_layers=n_layers,
                                bidirectional=True, batch_first=True, dropout=dropout)
        self.out = torch.nn.Linear(hidden_dim * 2, 1)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, text: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            embedded = self.bert(text, attention_mask=attention_mask)[0]
        _, hidden = self.rnn(embedded)
        hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
        return self.out(hidden)[:, 0]


def torch_model(jax_model: BertGRUSentiment, params: Any) -> NotebookModel:
    """The notebook's model with the sizes of this project's `jax_model` (bidirectional) and
    its weights `params`; BERT frozen as the notebook froze it (requires_grad off)."""
    bert = transformers.BertModel(transformers.BertConfig(**jax_model.bert.to_hf_dict()))
    model = NotebookModel(bert, jax_model.hidden_dim, jax_model.n_layers, jax_model.dropout)
    missing, unexpected = model.load_state_dict(_state_dict(params), strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the torch model: missing {missing}, "
                           f"unexpected {unexpected}")
    for n, p in model.named_parameters():
        p.requires_grad = not n.startswith("bert.")
    return model


def _state_dict(params: Any) -> dict[str, torch.Tensor]:
    """This project's params under the PyTorch model's state-dict names."""
    sd = {f"bert.{k}": torch.from_numpy(np.array(v))
          for k, v in bert_params_to_torch(params["bert"]).items()}
    for name, p in params["gru"].items():  # "l1_reverse" -> weight_ih_l1_reverse ...
        for leaf, v in p.items():
            sd[f"rnn.{leaf}_{name}"] = torch.from_numpy(np.array(v))
    sd["out.weight"] = torch.from_numpy(np.array(params["out"]["kernel"]).T.copy())
    sd["out.bias"] = torch.from_numpy(np.array(params["out"]["bias"]))
    return sd


def _tensors(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(batch["input_ids"]).long(),
            torch.from_numpy(batch["attention_mask"]).long(), torch.from_numpy(batch["label"]))


def train_step(model: NotebookModel, batch: dict, dtype: str):
    """One notebook training step (train mode, Adam on the head), autocast to `dtype`."""
    ids, mask, labels = _tensors(batch)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                           lr=TrainConfig.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def run() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=DTYPES[dtype], enabled=DTYPES[dtype] is not None):
            logits = model(ids, mask)
        loss_fn(logits.float(), labels).backward()
        opt.step()

    return run


def _components(model: NotebookModel, cfg: BertConfig, batch: dict) -> dict[str, Any]:
    """The encoder forward (train mode, no gradients), the GRU forward + backward and the
    feed-forward GEMM, float32."""
    ids, mask, _ = _tensors(batch)
    x, shape = component_inputs(cfg, batch)
    x = torch.from_numpy(x)

    def encoder() -> None:
        model.train()
        with torch.no_grad():
            model.bert(ids, attention_mask=mask)

    def gru() -> None:
        model.train()
        model.rnn.zero_grad(set_to_none=True)
        model.rnn(x)[1].sum().backward()

    return {"torch_encoder_forward": encoder, "torch_gru_forward_backward": gru,
            **{f"torch_gemm_{d}": gemm(*shape, "torch", d) for d in DTYPES}}


def logits_diff(model: Any, params: Any, tmodel: NotebookModel, batch: dict) -> float:
    """max |logit difference| of the two models in eval mode, float32."""
    got = np.asarray(jax.jit(lambda p, i, m: model.apply({"params": p}, i, m))(
        params, batch["input_ids"], batch["attention_mask"]))
    ids, mask, _ = _tensors(batch)
    tmodel.eval()
    with torch.no_grad():
        want = tmodel(ids, mask).numpy()
    return float(np.abs(got - want).max())


def measure(spec: dict) -> dict:
    """Time the steps (and the components) that `spec` asks for; see the module docstring."""
    torch.set_num_threads(os.cpu_count() or 1)
    model, params, batch = random_case(spec["size"], spec["batch"], spec["length"])
    cfg = model.bert
    tmodel = torch_model(model, params)
    out: dict[str, Any] = {
        "eval_max_abs_logit_diff": logits_diff(model, params, tmodel, batch),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "attn_implementation": tmodel.bert.config._attn_implementation,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    if spec.get("compile"):
        # TorchInductor over the whole forward (after the eager logit check above); each
        # dtype compiles in its warm-up call, which time_interleaved does not time.
        tmodel = torch.compile(tmodel)
    steps = {d: train_step(tmodel, batch, d) for d in DTYPES}
    out["steps"] = timing.time_interleaved(steps, warmup=spec["warmup"],
                                           repeats=spec["repeats"], rotate=True)
    if spec["components"]:
        out["components_median_s"] = component_medians(_components(tmodel, cfg, batch),
                                                       spec["repeats"])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].startswith("{"):  # run by hand: --help, say
        sys.exit("error: python -m benchmarks.torch_peer takes one JSON object, its keys in "
                 "the module docstring; python -m benchmarks.train_step starts it")
    print(json.dumps(measure(json.loads(sys.argv[1]))))
