"""One training step of the notebook model: this project against PyTorch at its best.

Both frameworks in float32 and bfloat16, on the same CPU.

    python -m benchmarks.train_step            # small (MiniLM size) and bert-base, L 128/256
    python -m benchmarks.train_step --quick    # a tiny encoder: a smoke run, not a number

The model is the notebook's: a frozen BERT encoder (run without gradients, dropout active as
in `model.train()`), a 2-layer bidirectional GRU (hidden 256, dropout 0.25), dropout, a
linear layer to one logit; BCE-with-logits; Adam on the GRU and the head only.

- This project: `BertGRUSentiment` from `hw3_jax.factory` (`benchmarks.notebook`) +
  exactly the training loop's step (`hw3_jax.train.steps`: `jit_train_step` with the
  frozen mask, `create_train_state`; `prepare_batch`), one jitted call per step, computing
  in float32 (the CPU default) and in bfloat16 (float32 parameters and optimizer state).
- PyTorch (`benchmarks.torch_peer`): `transformers.BertModel` + `torch.nn.GRU` + `Dropout`
  + `Linear` (the notebook's class), train mode, the encoder under `torch.no_grad()`,
  `torch.optim.Adam`, the same weights; float32 and under `torch.autocast("cpu",
  torch.bfloat16)`. It runs in processes of its own, one per setting: "default" (as a
  PyTorch user runs it: one thread per core, OpenMP's own waiting, which spins), "passive"
  (`OMP_WAIT_POLICY=PASSIVE`: threads sleep between parallel regions, which is kinder to
  other processes sharing the cores) and "compiled" (the default threading, the model under
  `torch.compile`: TorchInductor's fused kernels; compiled in the warm-up calls, which are
  not timed). Ratios are against the fastest of the six.

Batches hold `batch` sequences of exactly `length` real tokens (random ids), so the
project's length-aware GRU and the notebook's GRU over the padded tensor do the same work.
Each process times its steps interleaved (one of each per round) after a warm-up; the median
is reported. Before timing, the eval-mode logits of the two models are compared (the same
weights must give the same function). The CPU's bfloat16 instructions (AMX-BF16,
AVX512-BF16) are listed with the results: without them, bfloat16 only converts.

Also measured (not part of the ratio): the `--cache-encoder` recipe's step (the GRU head
alone on stored encoder outputs, `hw3_jax.data.encoder_cache`), and its per-example cost over
the notebook's two epochs including one deterministic encoder pass per review.

Profiling (unless --no-profile): each framework's encoder forward and GRU forward+backward
timed alone, both frameworks' GEMM rate at the encoder's feed-forward shape (float32 and
bfloat16; `benchmarks.gemm` compares XLA's library options), XLA's cost analysis (FLOPs) of
the compiled step, and a `jax.profiler` trace of one step whose XLA ops are attributed to
model parts through their source metadata in the compiled HLO (`benchmarks.xla_profile`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from benchmarks.gemm import gemm
from benchmarks.inputs import BenchmarkParser, run
from benchmarks.notebook import (
    SIZES,
    component_inputs,
    component_medians,
    gemm_shape,
    notebook_model,
    random_case,
)
from benchmarks.steps import (
    JaxStep,
    cached_head_step,
    jax_encoder_forward,
    jax_gru_forward_backward,
    notebook_step,
)
from benchmarks.xla_profile import profile_step
from configs.sentiment import get_config
from experiments.cli import UserError, exit_with
from hw3_jax import timing
from hw3_jax.bert import BertConfig
from hw3_jax.models import BertGRUSentiment

TARGET_RATIO = 2.0  # this project's float32 examples/s over the fastest PyTorch's
DTYPES = ("float32", "bfloat16")
# name -> (OMP_WAIT_POLICY, whether the model runs under torch.compile)
TORCH_SETTINGS = {"default": (None, False), "passive": ("PASSIVE", False),
                  "compiled": (None, True)}
FULL = dict(sizes=["small", "bert-base"], lengths=[128, 256], batch=8, repeats=5)
QUICK = dict(sizes=["tiny"], lengths=[32], batch=4, repeats=2)
BERT_BASE_MAX_REPEATS = 3  # --repeats is capped at this at bert-base size

# --------------------------------------------------------------------------- one case


def run_case(size: str, length: int, batch_size: int, *, warmup: int, repeats: int,
             profile: bool) -> dict:
    """Both frameworks' steps (and the cached-encoder head step) on encoder `size`, batches
    of `batch_size` x `length` tokens; with `profile`, the components and a trace too. The
    cached-encoder recipe is costed over the notebook recipe's epochs."""
    model, params, batch = random_case(size, batch_size, length)
    cfg = model.bert
    models = {"float32": model, "bfloat16": notebook_model(cfg, "bfloat16")}
    jsteps = {d: notebook_step(models[d], params, batch) for d in DTYPES}
    info = {d: s.compile() for d, s in jsteps.items()}
    head = cached_head_step(model, params, batch)
    head.compile()
    timed = timing.time_interleaved(
        {**{f"jax_{d}": s for d, s in jsteps.items()}, "jax_cached_head": head},
        warmup=warmup, repeats=repeats)
    peers = {name: _torch_peer(policy, size=size, length=length, batch=batch_size,
                               warmup=warmup, repeats=repeats, compile=compiled,
                               components=profile and name == "default")
             for name, (policy, compiled) in TORCH_SETTINGS.items()}
    row = {"encoder": size, "bert": {k: getattr(cfg, k) for k in SIZES["bert-base"]},
           "length": length, "batch": batch_size,
           "eval_max_abs_logit_diff": peers["default"]["eval_max_abs_logit_diff"],
           **_step_timings(timed, peers, info, batch_size)}

    # The cached-encoder recipe's one deterministic encoder pass per review.
    comp_fns = {"jax_encoder_forward_eval": jax_encoder_forward(cfg, params["bert"], batch,
                                                                deterministic=True)}
    if profile:
        comp_fns.update(_component_fns(model, params, batch))
    comp_s = component_medians(comp_fns, repeats)
    row["jax_cached_encoder"] = _cached_encoder_row(timed["jax_cached_head"],
                                                    comp_s["jax_encoder_forward_eval"], row,
                                                    get_config("notebook").train.epochs)
    if profile:
        comp_s.update(peers["default"]["components_median_s"])
        row.update(_profile_row(cfg, batch_size, length, comp_s, jsteps["float32"]))
    return row


def _torch_peer(omp_wait_policy: str | None, **spec: Any) -> dict:
    """`benchmarks.torch_peer` in a fresh process with OMP_WAIT_POLICY=`omp_wait_policy`
    (None: unset, OpenMP's default)."""
    try:
        return timing.in_fresh_process(["-m", "benchmarks.torch_peer", json.dumps(spec)],
                                       {"OMP_WAIT_POLICY": omp_wait_policy})
    except RuntimeError as e:
        fix = (": pip install torch==2.13.0 'hw3-jax[torch]'" if "No module named" in str(e)
               else "")
        raise UserError(f"the PyTorch peer failed ({e}){fix}") from None


def _step_timings(timed: dict, peers: dict, info: dict, batch_size: int) -> dict:
    """The step timings of one case: examples/s of each framework, dtype and setting, and
    the ratios against the fastest PyTorch."""
    jax_rows = {d: {**timed[f"jax_{d}"], **info[d]} for d in DTYPES}
    for r in jax_rows.values():
        r["examples_per_s"] = batch_size / r["median_s"]
        if "xla_flops" in r:
            r["achieved_gflop_per_s"] = r["xla_flops"] / r["median_s"] / 1e9
    torch_rows = {f"{name} {d}": {**t, "examples_per_s": batch_size / t["median_s"],
                                  "threads": peer["threads"],
                                  "omp_wait_policy": peer["omp_wait_policy"]}
                  for name, peer in peers.items() for d, t in peer["steps"].items()}
    best = max(torch_rows, key=lambda k: torch_rows[k]["examples_per_s"])
    t_best = torch_rows[best]["examples_per_s"]
    return {
        "jax": jax_rows, "torch": torch_rows, "torch_fastest": best,
        "torch_attn_implementation": peers["default"]["attn_implementation"],
        "ratio_jax_over_torch": jax_rows["float32"]["examples_per_s"] / t_best,
        "ratio_jax_bf16_over_torch": jax_rows["bfloat16"]["examples_per_s"] / t_best,
    }


def _component_fns(model: BertGRUSentiment, params: Any, batch: dict) -> dict[str, Any]:
    """This project's encoder forward, GRU forward + backward and feed-forward GEMMs of
    `model`."""
    cfg = model.bert
    x, shape = component_inputs(cfg, batch)
    lengths = np.full(x.shape[0], x.shape[1], np.int32)  # [B]: every token real
    return {
        "jax_encoder_forward": jax_encoder_forward(cfg, params["bert"], batch),
        "jax_gru_forward_backward": jax_gru_forward_backward(model, params["gru"], x, lengths),
        **{f"jax_gemm_{d}": gemm(*shape, "jax", d) for d in DTYPES},
    }


def _cached_encoder_row(head: dict, enc: float, row: dict, epochs: int) -> dict:
    """The cached-encoder recipe's cost per example over `epochs` epochs, from the head
    step's timing `head` and the deterministic encoder pass's `enc` seconds."""
    batch_size = row["batch"]
    t = batch_size / row["torch"][row["torch_fastest"]]["examples_per_s"]
    h = head["median_s"]
    # Per example over `epochs` epochs: the head step every epoch, the encoder once.
    per_example = (epochs * h + enc) / (epochs * batch_size)
    return {
        "head_step": {**head, "examples_per_s": batch_size / h},
        "encoder_forward_eval_s": enc, "epochs": epochs,
        "examples_per_s_amortised": 1.0 / per_example,
        "ratio_over_torch_amortised": t / batch_size / per_example,
        "note": "encoder dropout off (the notebook kept it on): a different recipe",
    }


def _profile_row(cfg: BertConfig, batch_size: int, length: int, comp_s: dict,
                 jstep: JaxStep) -> dict:
    """The component timings, both frameworks' GEMM rates and the profiled JAX step."""
    rows_, inner, cols = gemm_shape(cfg, batch_size, length)
    flops = 2.0 * rows_ * inner * cols
    return {
        "components_median_s": comp_s,
        "gemm_gflop_per_s": {"shape": [rows_, inner, cols], **{
            f"{fw} {d}": flops / comp_s[f"{fw}_gemm_{d}"] / 1e9
            for fw in ("jax", "torch") for d in DTYPES}},
        "jax_profile": profile_step(jstep),
    }


# --------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> dict:
    p = BenchmarkParser("train_step", __doc__, FULL, QUICK)
    p.add_sized("--sizes", "encoder sizes", type=str, nargs="+", choices=sorted(SIZES),
                minimum=None)
    p.add_sized("--lengths", "sequence lengths", nargs="+")
    p.add_sized("--batch", "sequences per step")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the component timings and the jax.profiler trace")
    args = p.parse(argv)
    rows = []
    for size in args.sizes:
        for length in args.lengths:
            print(f"[train_step] {size} L={length} B={args.batch} ...", flush=True)
            repeats = (args.repeats if size != "bert-base"
                       else min(args.repeats, BERT_BASE_MAX_REPEATS))
            rows.append(run_case(size, length, args.batch, warmup=args.warmup,
                                 repeats=repeats, profile=not args.no_profile))
    result = {
        **timing.benchmark_header(
            "train_step", args.quick,
            torch_settings={k: {"OMP_WAIT_POLICY": v, "torch_compile": c,
                                "threads": os.cpu_count()}
                            for k, (v, c) in TORCH_SETTINGS.items()}),
        "target": "this project (float32) >= 2x the fastest PyTorch examples/s "
                  "(notebook recipe, same work)",
        "target_met": all(r["ratio_jax_over_torch"] >= TARGET_RATIO for r in rows),
        "rows": rows,
        "table_markdown": _step_table(rows),
    }
    if not args.no_profile:
        result.update(_profile_tables(rows))
    timing.report(result, args.out_dir, notes=_notes(result))
    return result


def _notes(result: dict) -> list[str]:
    """The tables' legend and the CPU's bfloat16 flags."""
    cached = result["rows"][0]["jax_cached_encoder"]
    lines = ["torch default: OpenMP's own waiting; passive: OMP_WAIT_POLICY=PASSIVE; "
             "compiled: default waiting, the model under torch.compile; "
             "cached-enc: the --cache-encoder recipe, head step + one deterministic encoder "
             f"pass per review over {cached['epochs']} epochs; {cached['note']}"]
    if "profile_markdown" in result:
        lines.append("the last table: where the JAX float32 step's time goes "
                     "(jax.profiler, % of XLA busy time)")
    return [*lines, timing.bf16_note(result["machine"])]


def _step_table(rows: list[dict]) -> str:
    """Examples/s of every contender and the ratios over the fastest PyTorch."""
    torch_keys = [f"{s} {d}" for s in TORCH_SETTINGS for d in DTYPES]
    headers = ["encoder", "L", "B", "jax fp32 ex/s", "jax bf16 ex/s",
               *(f"torch {k.replace('float32', 'fp32').replace('bfloat16', 'bf16')} ex/s"
                 for k in torch_keys),
               "fastest torch", "jax fp32 / torch", "jax bf16 / torch", "cached-enc ex/s",
               "cached-enc / torch"]
    table = [[r["encoder"], r["length"], r["batch"],
              *(r["jax"][d]["examples_per_s"] for d in DTYPES),
              *(r["torch"][k]["examples_per_s"] for k in torch_keys),
              r["torch_fastest"], r["ratio_jax_over_torch"], r["ratio_jax_bf16_over_torch"],
              r["jax_cached_encoder"]["examples_per_s_amortised"],
              r["jax_cached_encoder"]["ratio_over_torch_amortised"]] for r in rows]
    return timing.markdown_table(headers, table)


def _profile_tables(rows: list[dict]) -> dict[str, str]:
    """The components table and the JAX float32 step's share of XLA busy time per model
    part (jax.profiler)."""
    parts = sorted({k for r in rows for k in r["jax_profile"].get("by_part_fraction", {})})
    gemm_keys = [f"{fw} {d}" for fw in ("jax", "torch") for d in DTYPES]
    comp_h = ["encoder", "L", "jax enc fwd s", "torch enc fwd s", "jax GRU f+b s",
              "torch GRU f+b s", *(f"GEMM GFLOP/s {k}" for k in gemm_keys),
              "step GFLOP/s jax fp32"]
    comp = [[r["encoder"], r["length"], *(r["components_median_s"][k] for k in (
        "jax_encoder_forward", "torch_encoder_forward", "jax_gru_forward_backward",
        "torch_gru_forward_backward")), *(r["gemm_gflop_per_s"][k] for k in gemm_keys),
        r["jax"]["float32"].get("achieved_gflop_per_s")] for r in rows]
    prof = [[r["encoder"], r["length"],
             *(100 * r["jax_profile"].get("by_part_fraction", {}).get(k, 0.0)
               for k in parts)] for r in rows]
    return {"components_markdown": timing.markdown_table(comp_h, comp),
            "profile_markdown": timing.markdown_table(
                ["encoder", "L", *[f"% {k}" for k in parts]], prof)}


if __name__ == "__main__":
    exit_with(run(main))
