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

import time

import jax
import jax.numpy as jnp
import numpy as np

from hw3_jax import timing as _timing
from hw3_jax.bert import ATTENTION_KINDS, BertConfig, BertEncoder

FULL = dict(hidden_size=512, num_attention_heads=8, intermediate_size=2048)
QUICK = dict(hidden_size=128, num_attention_heads=2, intermediate_size=256)


def layer_config(kind: str, length: int, dims: dict) -> BertConfig:
    return BertConfig(vocab_size=1000, num_hidden_layers=1, max_position_embeddings=length,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      attention=kind, performer_features=256, local_window=128, **dims)


def grad_step(cfg: BertConfig, length: int, seed: int = 0):
    """(jitted grad function, params, ids, mask) for batch 1 and `length` tokens."""
    enc = BertEncoder(cfg)
    ids = jnp.asarray(np.random.default_rng(seed).integers(1, cfg.vocab_size, (1, length)),
                      jnp.int32)
    mask = jnp.ones((1, length), jnp.int32)
    params = jax.jit(lambda k: enc.init(k, ids[:, :8], mask[:, :8])["params"])(
        jax.random.key(seed))

    def loss(p, ids, mask):
        seq, _ = enc.apply({"params": p}, ids, mask, deterministic=True)
        return jnp.mean(jnp.square(seq.astype(jnp.float32)))

    return jax.jit(jax.grad(loss)), params, ids, mask


def run_case(kind: str, length: int, dims: dict, *, warmup: int, repeats: int,
             max_bytes: float) -> dict:
    cfg = layer_config(kind, length, dims)
    g, params, ids, mask = grad_step(cfg, length)
    t0 = time.perf_counter()
    compiled = g.lower(params, ids, mask).compile()
    row: dict = {"attention": kind, "length": length, "compile_s": time.perf_counter() - t0}
    mem = compiled.memory_analysis()
    if mem is not None:
        need = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                + mem.output_size_in_bytes)
        row["xla_memory_bytes"] = int(need)
        if need > max_bytes:
            row["skipped"] = f"needs {need / 1e9:.1f} GB > {max_bytes / 1e9:.0f} GB"
            return row
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    timed = _timing.time_calls(lambda: jax.block_until_ready(compiled(params, ids, mask)),
                               warmup=warmup, repeats=repeats)
    row.update(timed)
    row["tokens_per_s"] = length / timed["median_s"]
    if cost and cost.get("flops"):
        row["xla_flops"] = float(cost["flops"])
        row["achieved_gflop_per_s"] = float(cost["flops"]) / timed["median_s"] / 1e9
    return row


def main(argv: list[str] | None = None) -> dict:
    p = _timing.base_parser(__doc__.splitlines()[0])
    p.add_argument("--lengths", nargs="+", type=int, default=None)
    p.add_argument("--kinds", nargs="+", choices=ATTENTION_KINDS, default=list(ATTENTION_KINDS))
    p.add_argument("--max-gb", type=float, default=8.0,
                   help="skip a case whose compiled program needs more memory (default 8)")
    args = p.parse_args(argv)
    dims = QUICK if args.quick else FULL
    lengths = args.lengths or ([256] if args.quick else [512, 1024, 2048, 4096, 8192])
    repeats = args.repeats or (2 if args.quick else 3)
    rows = []
    for length in lengths:
        for kind in args.kinds:
            print(f"[attention] {kind} T={length} ...", flush=True)
            rows.append(run_case(kind, length, dims, warmup=args.warmup, repeats=repeats,
                                 max_bytes=args.max_gb * 1e9))
    by = {(r["attention"], r["length"]): r for r in rows}
    table = []
    for length in lengths:
        line: list = [length]
        for kind in args.kinds:
            r = by[(kind, length)]
            line.append(None if "skipped" in r else r["median_s"] * 1e3)
        for kind in args.kinds:
            if kind == "softmax":
                continue
            s, o = by.get(("softmax", length)), by[(kind, length)]
            ok = s is not None and "median_s" in s and "median_s" in o
            line.append(s["median_s"] / o["median_s"] if ok else None)
        table.append(line)
    headers = ["T", *[f"{k} ms" for k in args.kinds],
               *[f"{k} speed-up vs softmax" for k in args.kinds if k != "softmax"]]
    result = {
        **_timing.benchmark_header("attention", args.quick),
        "layer": {**dims, "num_hidden_layers": 1, "batch": 1, "performer_features": 256,
                  "local_window": 128, "dropout": 0.0, "vocab_size": 1000},
        "what": "jax.grad of mean(sequence_output**2) w.r.t. all params of a 1-layer "
                "BertEncoder (forward + backward), jitted, float32",
        "rows": rows,
        "table_markdown": _timing.markdown_table(headers, table),
    }
    path = _timing.write_json("attention", result, args.out_dir)
    print(result["table_markdown"])
    skipped = [f"{r['attention']} T={r['length']} ({r['skipped']})" for r in rows
               if "skipped" in r]
    if skipped:
        print("skipped: " + "; ".join(skipped))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
