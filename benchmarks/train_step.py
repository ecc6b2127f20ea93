"""One training step of the notebook model: this project (jit) against PyTorch, same CPU.

    python -m benchmarks.train_step            # small (MiniLM size) and bert-base, L 128/256
    python -m benchmarks.train_step --quick    # a tiny encoder: a smoke run, not a number

The model is the notebook's: a frozen BERT encoder (run without gradients, dropout active as
in `model.train()`), a 2-layer bidirectional GRU (hidden 256, dropout 0.25), dropout, a
linear layer to one logit; BCE-with-logits; Adam on the GRU and the head only.

- This project: `BertGRUSentiment` from `hw3_jax.factory` (`benchmarks.notebook`) +
  exactly the training loop's step (`hw3_jax.train.steps`: `jit_train_step` with the
  frozen mask, `create_train_state`; `prepare_batch`), one jitted call per step.
- PyTorch: `transformers.BertModel` + `torch.nn.GRU` + `Dropout` + `Linear` (the notebook's
  class), train mode, the encoder under `torch.no_grad()`, `torch.optim.Adam` over the
  trainable parameters, with the same weights (copied from the JAX params with
  `bert_params_to_torch`). Threads: `torch.set_num_threads(os.cpu_count())` and also one
  thread (faster when other processes load the cores); the ratio is against the faster.
  `OMP_WAIT_POLICY=PASSIVE` is set before torch loads (unless already set): with spinning
  OpenMP barriers PyTorch runs 10-30x slower on a loaded machine.

Batches hold `batch` sequences of exactly `length` real tokens (random ids), so the
project's length-aware GRU and the notebook's GRU over the padded tensor do the same work.
The steps are timed interleaved (one of each per round) after a warm-up; the median is
reported. Before timing, the eval-mode logits of the two models are compared (the same
weights must give the same function).

Also measured (not part of the ratio): the `--cache-encoder` recipe's step (the GRU head
alone on stored encoder outputs, `hw3_jax.data.encoder_cache`), and its per-example cost over
the notebook's two epochs including one deterministic encoder pass per review.

Profiling (unless --no-profile): each framework's encoder forward and GRU forward+backward
timed alone, both frameworks' GEMM rate at the encoder's feed-forward shape, XLA's cost
analysis (FLOPs) of the compiled step, and a `jax.profiler` trace of one step whose XLA ops
are attributed to model parts through their source metadata in the compiled HLO
(`benchmarks.xla_profile`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from benchmarks.inputs import make_batch
from benchmarks.notebook import SIZES, eval_logits_diff, notebook_model, torch_model
from benchmarks.steps import (
    JaxStep,
    TorchStep,
    cached_head_step,
    gemm,
    jax_encoder_forward,
    jax_gru_forward_backward,
    notebook_step,
    torch_encoder_forward,
    torch_gru_forward_backward,
)
from benchmarks.xla_profile import profile_step
from hw3_jax import timing as _timing
from hw3_jax.bert import BertConfig
from hw3_jax.models import init_params

TARGET_RATIO = 2.0  # this project's examples/s over PyTorch's

# --------------------------------------------------------------------------- one case


def run_case(size: str, length: int, batch_size: int, *, warmup: int, repeats: int,
             profile: bool, epochs: int = 2) -> dict:
    """Both frameworks' step (and the cached-encoder head step) on encoder `size`, batches
    of `batch_size` x `length` tokens; with `profile`, the components and a trace too."""
    import torch

    cfg = BertConfig(**SIZES[size])
    model = notebook_model(cfg)
    params = init_params(model, jax.random.key(0))
    batch = make_batch(batch_size, length, cfg.vocab_size)
    tmodel = torch_model(cfg, params)
    diff = eval_logits_diff(model, params, tmodel, batch)

    jstep = notebook_step(model, params, batch)
    info = jstep.compile()
    contenders: dict[str, Any] = {"jax": jstep}
    hstep, head_error = _cached_head(model, params, batch)
    if hstep is not None:
        contenders["jax_cached_head"] = hstep
    # PyTorch with as many threads as cores (the usual setting) and with one thread: on a
    # loaded machine one thread can be faster; the ratio is taken against the faster one.
    cores = os.cpu_count() or 1
    tsteps = {f"torch_{n}t": TorchStep(tmodel, batch, n) for n in sorted({cores, 1}, reverse=True)}
    timed = _timing.time_interleaved({**contenders, **tsteps}, warmup=warmup, repeats=repeats)
    row = {"encoder": size, "bert": {k: getattr(cfg, k) for k in SIZES["bert-base"]},
           "length": length, "batch": batch_size, "eval_max_abs_logit_diff": diff,
           **_step_timings(timed, tsteps, info, tmodel, batch_size)}
    torch.set_num_threads(row["torch"]["threads"])

    comp_fns: dict[str, Any] = {}
    if hstep is not None:  # the encoder's one deterministic pass per review
        comp_fns["jax_encoder_forward_eval"] = jax_encoder_forward(
            cfg, params["bert"], batch, deterministic=True)
    if profile:
        comp_fns.update(_component_fns(cfg, params, tmodel, batch))
    comp = _timing.time_interleaved(comp_fns, warmup=1, repeats=max(2, repeats - 2))
    comp_s = {k: v["median_s"] for k, v in comp.items()}
    if hstep is not None:
        row["jax_cached_encoder"] = _cached_encoder_row(timed, comp_s, row, epochs)
    else:
        row["jax_cached_encoder"] = {"error": head_error}
    if profile:
        row.update(_profile_row(cfg, batch_size, length, comp_s, jstep))
    return row


def _cached_head(model, params, batch) -> tuple[JaxStep | None, str | None]:
    """The compiled cached-encoder head step, or (None, why not)."""
    try:
        hstep = cached_head_step(model, params, batch)
        hstep.compile()
        return hstep, None
    except (ImportError, AttributeError) as e:  # the encoder cache is optional here
        return None, f"{type(e).__name__}: {e}"


def _step_timings(timed: dict, tsteps: dict, info: dict, tmodel, batch_size: int) -> dict:
    """The step timings of one case: examples/s of each framework and their ratios."""
    best = min(tsteps, key=lambda k: timed[k]["median_s"])
    cores = os.cpu_count() or 1
    j, t = timed["jax"]["median_s"], timed[best]["median_s"]
    t_cores = timed[f"torch_{cores}t"]["median_s"]
    row: dict[str, Any] = {
        "jax": {**timed["jax"], "examples_per_s": batch_size / j, **info},
        "torch": {**timed[best], "examples_per_s": batch_size / t,
                  "threads": tsteps[best].threads,
                  "attn_implementation": tmodel.bert.config._attn_implementation},
        "torch_by_threads": {
            tsteps[k].threads: {**timed[k], "examples_per_s": batch_size / timed[k]["median_s"]}
            for k in tsteps},
        "ratio_jax_over_torch": t / j,
        "ratio_jax_over_torch_all_cores": t_cores / j,
    }
    if "xla_flops" in info:
        row["jax"]["achieved_gflop_per_s"] = info["xla_flops"] / j / 1e9
    return row


def _component_fns(cfg: BertConfig, params: Any, tmodel, batch: dict) -> dict[str, Any]:
    """Each framework's encoder forward, GRU forward + backward and feed-forward GEMM."""
    batch_size, length = batch["input_ids"].shape
    # The GRU's input: any [B, L, hidden] activations cost the same.
    x = np.random.default_rng(3).standard_normal(
        (batch_size, length, cfg.hidden_size)).astype(np.float32)
    lengths = np.full(batch_size, length, np.int32)
    rows_, inner, cols = batch_size * length, cfg.hidden_size, cfg.intermediate_size
    return {
        "jax_encoder_forward": jax_encoder_forward(cfg, params["bert"], batch),
        "torch_encoder_forward": torch_encoder_forward(tmodel, batch),
        "jax_gru_forward_backward": jax_gru_forward_backward(params["gru"], x, lengths),
        "torch_gru_forward_backward": torch_gru_forward_backward(tmodel, x),
        "jax_gemm": gemm(rows_, inner, cols, "jax"),
        "torch_gemm": gemm(rows_, inner, cols, "torch"),
    }


def _cached_encoder_row(timed: dict, comp_s: dict, row: dict, epochs: int) -> dict:
    """The cached-encoder recipe's cost per example over `epochs` epochs."""
    batch_size, t = row["batch"], row["torch"]["median_s"]
    h = timed["jax_cached_head"]["median_s"]
    enc = comp_s["jax_encoder_forward_eval"]
    # Per example over `epochs` epochs: the head step every epoch, the encoder once.
    per_example = (epochs * h + enc) / (epochs * batch_size)
    return {
        "head_step": {**timed["jax_cached_head"], "examples_per_s": batch_size / h},
        "encoder_forward_eval_s": enc, "epochs": epochs,
        "examples_per_s_amortised": 1.0 / per_example,
        "ratio_over_torch_amortised": t / batch_size / per_example,
        "note": "encoder dropout off (the notebook kept it on): a different recipe",
    }


def _profile_row(cfg: BertConfig, batch_size: int, length: int, comp_s: dict,
                 jstep: JaxStep) -> dict:
    """The component timings, both GEMM rates and the profiled JAX step."""
    rows_, inner, cols = batch_size * length, cfg.hidden_size, cfg.intermediate_size
    flops = 2.0 * rows_ * inner * cols
    return {
        "components_median_s": comp_s,
        "gemm_gflop_per_s": {
            "shape": [rows_, inner, cols],
            "jax": flops / comp_s["jax_gemm"] / 1e9,
            "torch": flops / comp_s["torch_gemm"] / 1e9,
        },
        "jax_profile": profile_step(jstep),
    }


# --------------------------------------------------------------------------- driver


def _parse(argv: list[str] | None):
    p = _timing.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None,
                   help="encoder sizes (default: small bert-base; tiny with --quick)")
    p.add_argument("--lengths", nargs="+", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8)")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the component timings and the jax.profiler trace")
    return p.parse_args(argv)


def _load_torch():
    """(torch, transformers), loaded with passive OpenMP waiting; exit 2 without them."""
    # Before torch loads OpenMP: spinning OpenMP barriers make PyTorch 10-30x slower when
    # other processes share the cores (measured here: a GRU step 0.2 s -> 4-8 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
        import transformers
    except ImportError:
        _timing.fail("this benchmark needs PyTorch and transformers: "
                     "pip install torch==2.13.0 'hw3-jax[torch]'")
    return torch, transformers


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    torch, transformers = _load_torch()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    sizes = args.sizes or (["tiny"] if args.quick else ["small", "bert-base"])
    lengths = args.lengths or ([32] if args.quick else [128, 256])
    batch = args.batch or (4 if args.quick else 8)
    repeats = args.repeats or (2 if args.quick else 5)
    rows = []
    for size in sizes:
        for length in lengths:
            print(f"[train_step] {size} L={length} B={batch} ...", flush=True)
            rows.append(run_case(size, length, batch, warmup=args.warmup,
                                 repeats=repeats if size != "bert-base" else min(repeats, 3),
                                 profile=not args.no_profile))
    result = {
        "benchmark": "train_step",
        "command": "python -m benchmarks.train_step" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": {**_timing.machine_info(), "torch": torch.__version__,
                    "torch_threads_tried": sorted({threads, 1}, reverse=True),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "transformers": transformers.__version__},
        "target": "this project >= 2x PyTorch examples/s (notebook recipe, same work)",
        "target_met": all(r["ratio_jax_over_torch"] >= TARGET_RATIO for r in rows),
        "rows": rows,
    }
    result["table_markdown"] = _step_table(rows, threads)
    print(result["table_markdown"])
    print("cached-enc: the --cache-encoder recipe (head step + one deterministic encoder pass "
          "per review, over 2 epochs; encoder dropout off, unlike the notebook)")
    if not args.no_profile:
        result.update(_profile_tables(rows))
        print()
        print(result["components_markdown"])
        print()
        print("Where the JAX step's time goes (jax.profiler, % of XLA busy time):")
        print(result["profile_markdown"])
    path = _timing.write_json("train_step", result, args.out_dir)
    print(f"PyTorch: {threads} thread(s) (= cores) and 1 thread tried, the faster one in the "
          f"table (torch thr); OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; wrote {path}")
    return result


def _step_table(rows: list[dict], threads: int) -> str:
    headers = ["encoder", "L", "B", "jax ex/s", "torch ex/s", "torch thr", "jax/torch",
               f"jax/torch ({threads} thr)", "cached-enc ex/s", "cached-enc/torch"]
    table = [[r["encoder"], r["length"], r["batch"], r["jax"]["examples_per_s"],
              r["torch"]["examples_per_s"], r["torch"]["threads"], r["ratio_jax_over_torch"],
              r["ratio_jax_over_torch_all_cores"],
              r["jax_cached_encoder"].get("examples_per_s_amortised"),
              r["jax_cached_encoder"].get("ratio_over_torch_amortised")] for r in rows]
    return _timing.markdown_table(headers, table)


def _profile_tables(rows: list[dict]) -> dict[str, str]:
    """The components table and the profile's share of time per model part."""
    parts = sorted({k for r in rows for k in r["jax_profile"].get("by_part_fraction", {})})
    comp_h = ["encoder", "L", "jax enc fwd s", "torch enc fwd s", "jax GRU f+b s",
              "torch GRU f+b s", "GEMM GFLOP/s jax", "GEMM GFLOP/s torch",
              "step GFLOP/s jax"]
    comp = [[r["encoder"], r["length"], *(r["components_median_s"][k] for k in (
        "jax_encoder_forward", "torch_encoder_forward", "jax_gru_forward_backward",
        "torch_gru_forward_backward")), r["gemm_gflop_per_s"]["jax"],
        r["gemm_gflop_per_s"]["torch"], r["jax"].get("achieved_gflop_per_s")]
        for r in rows]
    prof = [[r["encoder"], r["length"],
             *(100 * r["jax_profile"].get("by_part_fraction", {}).get(k, 0.0)
               for k in parts)] for r in rows]
    return {"components_markdown": _timing.markdown_table(comp_h, comp),
            "profile_markdown": _timing.markdown_table(
                ["encoder", "L", *[f"% {k}" for k in parts]], prof)}


if __name__ == "__main__":
    main()
