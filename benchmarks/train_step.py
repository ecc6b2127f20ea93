"""One training step of the notebook model: this project (jit) against PyTorch, same CPU.

    python -m benchmarks.train_step            # small (MiniLM size) and bert-base, L 128/256
    python -m benchmarks.train_step --quick    # a tiny encoder: a smoke run, not a number

The model is the notebook's: a frozen BERT encoder (run without gradients, dropout active as
in `model.train()`), a 2-layer bidirectional GRU (hidden 256, dropout 0.25), dropout, a
linear layer to one logit; BCE-with-logits; Adam on the GRU and the head only.

- This project: `BertGRUSentiment` + exactly the training loop's step
  (`hw3_jax.train.make_train_step` with the frozen mask, `create_train_state`,
  `prepare_batch`), one jitted call per step.
- PyTorch: `transformers.BertModel` + `torch.nn.GRU` + `Dropout` + `Linear` (the notebook's
  class), train mode, the encoder under `torch.no_grad()`, `torch.optim.Adam` over the
  trainable parameters, with the same weights (copied from the JAX params with
  `bert_params_to_torch`), `torch.set_num_threads(os.cpu_count())`.

Batches hold `batch` sequences of exactly `length` real tokens (random ids), so the
project's length-aware GRU and the notebook's GRU over the padded tensor do the same work.
The two steps are timed interleaved (one of each per round) after a warm-up; the median
is reported. Before timing, the eval-mode logits of the two models are compared (the
same weights must give the same function).

Profiling (always recorded): each framework's encoder forward and GRU forward+backward
timed alone, XLA's cost analysis (FLOPs) of the compiled step, and a `jax.profiler` trace
of one step aggregated by XLA op (the GRU's `lax.scan` is the `while` op).
"""

from __future__ import annotations

import collections
import glob
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from hw3_jax.bert import BertConfig, BertEncoder, bert_params_to_torch
from hw3_jax.gru import GRU
from hw3_jax.models import BertGRUSentiment, init_params, trainable_mask
from hw3_jax.train import (
    TrainConfig,
    create_train_state,
    data_parallel,
    init_accumulators,
    make_optimizer,
    make_train_step,
    prepare_batch,
)

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
LEARNING_RATE = 1e-3


def make_batch(batch: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[batch, length] random token ids (all real), labels 0/1, weights 1."""
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000 % vocab, vocab, (batch, length)).astype(np.int32),
        "attention_mask": np.ones((batch, length), np.int32),
        "label": rng.integers(0, 2, batch).astype(np.float32),
        "weight": np.ones(batch, np.float32),
    }


# --------------------------------------------------------------------------- this project


class JaxStep:
    """The training loop's own step on a fixed device batch; `__call__` runs one step."""

    def __init__(self, model: BertGRUSentiment, params: Any, batch: dict, workdir: str):
        self.dp = data_parallel()
        mask = trainable_mask(params, freeze_encoder=True)
        self.config = TrainConfig(workdir=workdir, learning_rate=LEARNING_RATE, seed=0)
        tx = make_optimizer(LEARNING_RATE, mask)
        self.step = make_train_step(model, tx, self.config, self.dp, mask)
        self.state = create_train_state(params, tx, self.dp)
        self.acc = init_accumulators(self.dp)
        # The loop transfers each batch one step ahead, so the step itself sees device arrays.
        self.batch = prepare_batch(batch, self.dp, self.config)

    def compile(self) -> dict:
        """Compile; return the compile time and XLA's cost analysis of the step."""
        t0 = time.perf_counter()
        compiled = self.step.lower(self.state, self.acc, self.batch).compile()
        out = {"compile_s": time.perf_counter() - t0}
        cost = compiled.cost_analysis()
        if isinstance(cost, list):
            cost = cost[0] if cost else {}
        if cost:
            out["xla_flops"] = float(cost.get("flops", 0.0))
            out["xla_bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
        return out

    def __call__(self) -> None:
        self.state, self.acc = self.step(self.state, self.acc, self.batch)
        jax.block_until_ready(self.acc)


def jax_encoder_forward(cfg: BertConfig, bert_params: Any, batch: dict):
    """The frozen encoder's forward alone (train mode: dropout on), jitted."""
    enc = BertEncoder(cfg)
    f = jax.jit(lambda p, ids, m, key: enc.apply(
        {"params": p}, ids, m, deterministic=False, rngs={"dropout": key})[0])
    ids, m = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    key = jax.random.key(1)
    return lambda: jax.block_until_ready(f(bert_params, ids, m, key))


def jax_gru_forward_backward(gru_params: Any, x: np.ndarray, lengths: np.ndarray):
    """The 2x256 BiGRU's forward + backward alone (gradient of the final states' sum)."""
    gru = GRU(256, num_layers=2, bidirectional=True, dropout=0.25)

    def loss(p, x, lengths, key):
        _, h = gru.apply({"params": p}, x, lengths, deterministic=False, rngs={"dropout": key})
        return h.sum()

    g = jax.jit(jax.grad(loss))
    x, lengths = jnp.asarray(x), jnp.asarray(lengths)
    key = jax.random.key(2)
    return lambda: jax.block_until_ready(g(gru_params, x, lengths, key))


def profile_step(step: JaxStep, top: int = 12) -> dict:
    """One step under `jax.profiler`, XLA ops aggregated by name (self time, summed over
    XLA's worker threads), split into the GRU's scan bodies and everything else."""
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        try:
            t0 = time.perf_counter()
            step()
            wall = time.perf_counter() - t0
        finally:
            jax.profiler.stop_trace()
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        if not files:
            return {"error": "no trace written"}
        pd = ProfileData.from_file(files[-1])
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for plane in pd.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's worker threads only
                continue
            evs = sorted(line.events, key=lambda e: (e.start_ns, -e.duration_ns))
            stack: list = []  # (end_ns, name) of the open events, for self time
            for e in evs:
                if e.name.startswith(("ThreadpoolListener", "ThunkExecutor", "end: ")):
                    continue
                while stack and stack[-1][0] <= e.start_ns:
                    stack.pop()
                if stack:  # the child's time is not its parent's self time
                    totals[stack[-1][1]] -= e.duration_ns
                totals[e.name] += e.duration_ns
                counts[e.name] += 1
                stack.append((e.start_ns + e.duration_ns, e.name))
    busy = sum(totals.values())
    # Nothing in the step loops except the GRU's scans: an op executed more than once per
    # step is inside a scan body (once per time step), so it is the GRU's recurrence.
    in_scans = sum(ns for n, ns in totals.items() if counts[n] > 1 or n.startswith("while"))
    kinds: collections.Counter = collections.Counter()
    for name, ns in totals.items():
        kinds[name.split(".")[0].rstrip("0123456789_")] += ns
    return {
        "wall_s": wall,
        "busy_s_all_threads": busy / 1e9,
        "gru_scan_ops_s": in_scans / 1e9,
        "other_ops_s": (busy - in_scans) / 1e9,
        "by_kind_s": {k: v / 1e9 for k, v in kinds.most_common(top)},
        "top_ops": [{"name": n, "self_s": totals[n] / 1e9, "calls": counts[n]}
                    for n, _ in totals.most_common(top)],
    }


# --------------------------------------------------------------------------- PyTorch


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
    sd = {f"bert.{k}": torch.from_numpy(np.array(v))
          for k, v in bert_params_to_torch(params["bert"]).items()}
    for name, p in params["gru"].items():  # "l1_reverse" -> weight_ih_l1_reverse ...
        for leaf, v in p.items():
            sd[f"rnn.{leaf}_{name}"] = torch.from_numpy(np.array(v))
    sd["out.weight"] = torch.from_numpy(np.array(params["out"]["kernel"]).T.copy())
    sd["out.bias"] = torch.from_numpy(np.array(params["out"]["bias"]))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit the torch model: missing {missing}, "
                           f"unexpected {unexpected}")
    for n, p in model.named_parameters():  # the notebook froze BERT this way
        p.requires_grad = not n.startswith("bert.")
    return model


class TorchStep:
    """One notebook training step in PyTorch with `threads` intra-op threads."""

    def __init__(self, model, batch: dict, threads: int):
        import torch

        self.torch, self.model, self.threads = torch, model, threads
        self.ids = torch.from_numpy(batch["input_ids"]).long()
        self.mask = torch.from_numpy(batch["attention_mask"]).long()
        self.labels = torch.from_numpy(batch["label"])
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                    lr=LEARNING_RATE)
        self.loss = torch.nn.BCEWithLogitsLoss()

    def __call__(self) -> None:
        self.torch.set_num_threads(self.threads)
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.ids, self.mask), self.labels)
        loss.backward()
        self.opt.step()


def torch_encoder_forward(model, batch: dict):
    import torch

    ids = torch.from_numpy(batch["input_ids"]).long()
    mask = torch.from_numpy(batch["attention_mask"]).long()

    def run():
        model.train()
        with torch.no_grad():
            model.bert(ids, attention_mask=mask)

    return run


def torch_gru_forward_backward(model, x: np.ndarray):
    import torch

    xt = torch.from_numpy(np.array(x))

    def run():
        model.train()
        model.rnn.zero_grad(set_to_none=True)
        _, h = model.rnn(xt)
        h.sum().backward()

    return run


# --------------------------------------------------------------------------- driver


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


def run_case(size: str, length: int, batch_size: int, *, warmup: int, repeats: int,
             components: bool, profile: bool, workdir: str) -> dict:
    import torch

    cfg = BertConfig(**SIZES[size])
    model = BertGRUSentiment(bert=cfg)
    params = init_params(model, jax.random.key(0))
    batch = make_batch(batch_size, length, cfg.vocab_size)
    tmodel = torch_model(cfg, params)
    diff = eval_logits_diff(model, params, tmodel, batch)

    jstep = JaxStep(model, params, batch, workdir)
    info = jstep.compile()
    # PyTorch with as many threads as cores (the usual setting) and with one thread: on a
    # loaded machine one thread can be faster; the ratio is taken against the faster one.
    cores = os.cpu_count() or 1
    tsteps = {f"torch_{n}t": TorchStep(tmodel, batch, n) for n in sorted({cores, 1}, reverse=True)}
    timed = _timing.time_interleaved({"jax": jstep, **tsteps}, warmup=warmup, repeats=repeats)
    best = min(tsteps, key=lambda k: timed[k]["median_s"])
    best_threads = tsteps[best].threads
    torch.set_num_threads(best_threads)
    j, t = timed["jax"]["median_s"], timed[best]["median_s"]
    t_cores = timed[f"torch_{cores}t"]["median_s"]
    row: dict[str, Any] = {
        "encoder": size, "bert": {k: getattr(cfg, k) for k in SIZES["bert-base"]},
        "length": length, "batch": batch_size,
        "eval_max_abs_logit_diff": diff,
        "jax": {**timed["jax"], "examples_per_s": batch_size / j, **info},
        "torch": {**timed[best], "examples_per_s": batch_size / t, "threads": best_threads,
                  "attn_implementation": tmodel.bert.config._attn_implementation},
        "torch_by_threads": {
            tsteps[k].threads: {**timed[k], "examples_per_s": batch_size / timed[k]["median_s"]}
            for k in tsteps},
        "ratio_jax_over_torch": t / j,
        "ratio_jax_over_torch_all_cores": t_cores / j,
    }
    if "xla_flops" in info:
        row["jax"]["achieved_gflop_per_s"] = info["xla_flops"] / j / 1e9
    if components:
        # The GRU's input: any [B, L, hidden] activations cost the same.
        x = np.random.default_rng(3).standard_normal(
            (batch_size, length, cfg.hidden_size)).astype(np.float32)
        lengths = np.full(batch_size, length, np.int32)
        comp = _timing.time_interleaved({
            "jax_encoder_forward": jax_encoder_forward(cfg, params["bert"], batch),
            "torch_encoder_forward": torch_encoder_forward(tmodel, batch),
            "jax_gru_forward_backward": jax_gru_forward_backward(params["gru"], x, lengths),
            "torch_gru_forward_backward": torch_gru_forward_backward(tmodel, x),
        }, warmup=1, repeats=max(2, repeats - 2))
        row["components_median_s"] = {k: v["median_s"] for k, v in comp.items()}
    if profile:
        row["jax_profile"] = profile_step(jstep)
    del jstep, tsteps, tmodel
    return row


def main(argv: list[str] | None = None) -> dict:
    p = _timing.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None)
    p.add_argument("--lengths", nargs="+", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the component timings and the jax.profiler trace")
    args = p.parse_args(argv)
    # Before torch loads OpenMP: spinning OpenMP barriers make PyTorch 10-30x slower when
    # other processes share the cores (measured here: a GRU step 0.2 s -> 4-8 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        _timing.fail("this benchmark needs PyTorch and transformers: "
                     "pip install torch==2.13.0 'hw3-jax[torch]'")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    sizes = args.sizes or (["tiny"] if args.quick else ["small", "bert-base"])
    lengths = args.lengths or ([32, 64] if args.quick else [128, 256])
    batch = args.batch or (4 if args.quick else 8)
    repeats = args.repeats or (2 if args.quick else 5)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in sizes:
            for length in lengths:
                print(f"[train_step] {size} L={length} B={batch} ...", flush=True)
                rows.append(run_case(size, length, batch, warmup=args.warmup,
                                     repeats=repeats if size != "bert-base" else
                                     min(repeats, 3), components=not args.no_profile,
                                     profile=not args.no_profile, workdir=workdir))
    result = {
        "benchmark": "train_step",
        "command": "python -m benchmarks.train_step" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": {**_timing.machine_info(), "torch": torch.__version__,
                    "torch_threads_tried": sorted({threads, 1}, reverse=True),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "transformers": transformers.__version__},
        "target": "this project >= 2x PyTorch examples/s",
        "rows": rows,
    }
    headers = ["encoder", "L", "B", "jax ex/s", "torch ex/s", "torch thr", "jax/torch",
               f"jax/torch({threads} thr)", "jax step s", "torch step s"]
    table = [[r["encoder"], r["length"], r["batch"], r["jax"]["examples_per_s"],
              r["torch"]["examples_per_s"], r["torch"]["threads"], r["ratio_jax_over_torch"],
              r["ratio_jax_over_torch_all_cores"], r["jax"]["median_s"],
              r["torch"]["median_s"]] for r in rows]
    result["table_markdown"] = _timing.markdown_table(headers, table)
    path = _timing.write_json("train_step", result, args.out_dir)
    print(result["table_markdown"])
    if not args.no_profile:
        comp_h = ["encoder", "L", "jax enc fwd s", "torch enc fwd s", "jax GRU f+b s",
                  "torch GRU f+b s", "jax GFLOP/s", "jax GRU scan ops s (trace)"]
        comp = [[r["encoder"], r["length"], *(r["components_median_s"][k] for k in (
            "jax_encoder_forward", "torch_encoder_forward", "jax_gru_forward_backward",
            "torch_gru_forward_backward")), r["jax"].get("achieved_gflop_per_s"),
            r["jax_profile"].get("gru_scan_ops_s")] for r in rows]
        result["components_markdown"] = _timing.markdown_table(comp_h, comp)
        path = _timing.write_json("train_step", result, args.out_dir)
        print()
        print(result["components_markdown"])
    print(f"PyTorch: {threads} thread(s) (= cores) and 1 thread tried, the faster one in the "
          f"table (torch thr); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; wrote {path}")
    return result


if __name__ == "__main__":
    main()
