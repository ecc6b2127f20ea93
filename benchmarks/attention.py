"""Forward + backward through one whole encoder layer with each attention, T = 512..8192.

    python -m benchmarks.attention            # hidden 512, 8 heads, batch 1
    python -m benchmarks.attention --quick    # hidden 128, 2 heads, T 256

`BertEncoder` with one layer (embeddings, self-attention, output projection, feed-forward
2048, LayerNorms, pooler), hidden 512, 8 heads, batch 1, no dropout; the step is
`jax.grad` of the mean squared sequence output with respect to every parameter, jitted.
Attention: exact softmax (XLA, the `[T, T]` logits materialised), Performer (FAVOR+, 256
random features) and local (window 128 per side), all from `hw3_jax.attention` through
`BertConfig.attention`. A case whose compiled program needs more than `--max-gb` of memory
(XLA's own memory analysis, before anything runs) is skipped. The vocabulary is 1,000
tokens so that the embedding table's gradient stays negligible beside the layer.

The attention-only scaling experiment (cost and approximation error of the attention
functions themselves) is `experiments/attention_scaling.py`; this benchmark is the whole
layer around them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.inputs import BenchmarkParser, run
from experiments.cli import exit_with, positive, require
from hw3_jax import timing
from hw3_jax.bert import ATTENTION_KINDS, BertConfig, BertEncoder, init_bert_params

FULL = dict(dims=dict(hidden_size=512, num_attention_heads=8, intermediate_size=2048),
            lengths=[512, 1024, 2048, 4096, 8192], repeats=3, max_gb=8.0)
QUICK = dict(dims=dict(hidden_size=128, num_attention_heads=2, intermediate_size=256),
             lengths=[256], repeats=2, max_gb=8.0)
# The rest of the layer, the same in both.
LAYER = dict(num_hidden_layers=1, vocab_size=1000, performer_features=256, local_window=128)
BATCH = 1
DROPOUT = 0.0


def grad_step(kind: str, length: int, dims: dict):
    """(jitted grad function, params, ids, mask) of the one-layer encoder with attention
    `kind`, for BATCH sequences of `length` tokens."""
    cfg = BertConfig(max_position_embeddings=length, hidden_dropout_prob=DROPOUT,
                     attention_probs_dropout_prob=DROPOUT, attention=kind, **LAYER, **dims)
    enc = BertEncoder(cfg)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, (BATCH, length)),
                      jnp.int32)
    mask = jnp.ones((BATCH, length), jnp.int32)
    params = init_bert_params(cfg, jax.random.key(0))

    def loss(p, ids, mask):
        seq, _ = enc.apply({"params": p}, ids, mask, deterministic=True)
        return jnp.mean(jnp.square(seq.astype(jnp.float32)))

    return jax.jit(jax.grad(loss)), params, ids, mask


def run_case(kind: str, length: int, dims: dict, *, warmup: int, repeats: int,
             max_bytes: float) -> dict:
    g, params, ids, mask = grad_step(kind, length, dims)
    compiled, info = timing.compile_timed(g, params, ids, mask)
    row: dict = {"attention": kind, "length": length, "compile_s": info["compile_s"]}
    mem = compiled.memory_analysis()  # XLA's own, before it runs; None: the backend has none
    if mem is not None:
        need = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                   + mem.output_size_in_bytes)
        row["xla_memory_bytes"] = need
        if need > max_bytes:
            row["skipped"] = f"needs {need / 1e9:.1f} GB > {max_bytes / 1e9:.0f} GB"
            return row
    timed = timing.time_calls(timing.blocking(compiled, params, ids, mask),
                              warmup=warmup, repeats=repeats)
    row.update(timed)
    row["tokens_per_s"] = BATCH * length / timed["median_s"]
    if info.get("xla_flops"):
        row["xla_flops"] = info["xla_flops"]
        row["achieved_gflop_per_s"] = info["xla_flops"] / timed["median_s"] / 1e9
    return row


def main(argv: list[str] | None = None) -> dict:
    p = BenchmarkParser("attention", __doc__, FULL, QUICK)
    p.add_sized("--lengths", "sequence lengths", nargs="+")
    p.add_argument("--kinds", nargs="+", choices=ATTENTION_KINDS, default=list(ATTENTION_KINDS))
    p.add_sized("--max-gb", "skip a case whose compiled program needs more memory",
                type=float, minimum=None)
    args = p.parse(argv)
    # 0 or less skips every case (a benchmark of nothing), NaN none.
    require(positive(args.max_gb), "--max-gb", "a finite number > 0", args.max_gb)
    rows = []
    for length in args.lengths:
        for kind in args.kinds:
            print(f"[attention] {kind} T={length} ...", flush=True)
            rows.append(run_case(kind, length, args.dims, warmup=args.warmup,
                                 repeats=args.repeats, max_bytes=args.max_gb * 1e9))
    result = {
        **timing.benchmark_header("attention", args.quick),
        "layer": {**args.dims, **LAYER, "batch": BATCH, "dropout": DROPOUT},
        "what": "jax.grad of mean(sequence_output**2) w.r.t. all params of a 1-layer "
                "BertEncoder (forward + backward), jitted, float32",
        "rows": rows,
        "table_markdown": _table(rows, args.lengths, args.kinds),
    }
    skipped = [f"{r['attention']} T={r['length']} ({r['skipped']})" for r in rows
               if "skipped" in r]
    timing.report(result, args.out_dir, notes=["skipped: " + "; ".join(skipped)] if skipped else ())
    return result


def _table(rows: list[dict], lengths: list[int], kinds: list[str]) -> str:
    """Milliseconds per step of each attention (- where skipped) and the speed-ups over
    softmax, one line per length."""
    median = {(r["attention"], r["length"]): r.get("median_s") for r in rows}
    others = [k for k in kinds if k != "softmax"]
    table = []
    for length in lengths:
        times = [median[k, length] for k in kinds]
        soft = median.get(("softmax", length))
        table.append([length, *(None if t is None else t * 1e3 for t in times),
                      *(soft / median[k, length] if soft and median[k, length] else None
                        for k in others)])
    headers = ["T", *[f"{k} ms" for k in kinds],
               *[f"{k} speed-up vs softmax" for k in others]]
    return timing.markdown_table(headers, table)


if __name__ == "__main__":
    exit_with(run(main))
