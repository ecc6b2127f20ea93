"""Matrix-multiply rates of JAX (under XLA:CPU's library options) and PyTorch, float32 and
bfloat16, at the encoders' feed-forward shapes.

    python -m benchmarks.gemm            # MiniLM and bert-base feed-forward shapes, L=256 x 8
    python -m benchmarks.gemm --quick    # small shapes: a smoke run, not a number

A CPU with AMX-BF16 or AVX512-BF16 multiplies bfloat16 several times faster than float32,
if the library reaches those instructions. PyTorch's CPU matmul goes through oneDNN, which
does. XLA:CPU emits its own dots or hands them to a library: YNNPACK for single dots
(`--xla_cpu_experimental_ynn_fusion_type`, on by default in recent XLA), XNNPACK
(`--xla_cpu_use_xnnpack`, `--xla_cpu_experimental_xnn_fusion_type=dot`) or oneDNN
(`--xla_cpu_use_onednn`, `--xla_cpu_experimental_onednn_fusion_type=dot`, off by default);
`--xla_cpu_max_isa` caps what its own code generator may emit. Each XLA setting below is
timed in a fresh process (XLA reads XLA_FLAGS once); the table says which settings change
the bfloat16 rate on the machine that ran it (`machine.cpu_bf16`: the CPU's bfloat16 flags).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from hw3_jax import timing

# The feed-forward matmul of a batch of 8 x 256 tokens: MiniLM, then bert-base; the first
# call compiles, so two untimed calls.
FULL = dict(shapes=[[2048, 384, 1536], [2048, 768, 3072]], repeats=7, warmup=2)
QUICK = dict(shapes=[[256, 64, 256]], repeats=2, warmup=2)
WORKER_FLAG = "--worker"  # `python -m benchmarks.gemm --worker SPEC`: one measurement

# name -> XLA_FLAGS ("" is XLA's default)
XLA_SETTINGS = {
    "default": "",
    "onednn dot": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "xnnpack dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "no ynnpack": "--xla_cpu_experimental_ynn_fusion_type=",
    "no libraries": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_xnnpack=false",
}


def gemm(rows: int, inner: int, cols: int, framework: str, dtype: str = "float32"):
    """A callable: [rows, inner] @ [inner, cols] in `dtype` ("float32" | "bfloat16") with
    `framework` ("jax" | "torch"); it returns when the product is computed."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((rows, inner)).astype(np.float32)
    b = rng.standard_normal((inner, cols)).astype(np.float32)
    if framework == "jax":
        import jax
        import jax.numpy as jnp

        f = jax.jit(jnp.matmul)
        ja, jb = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        return timing.blocking(f, ja, jb)
    import torch

    ta, tb = (torch.from_numpy(x).to(getattr(torch, dtype)) for x in (a, b))
    return lambda: torch.matmul(ta, tb)


def rates(framework: str, shapes: list[list[int]], repeats: int, warmup: int
          ) -> dict[str, dict]:
    """GFLOP/s of `framework` at each [rows, inner, cols] shape, float32 and bfloat16."""
    out: dict[str, dict] = {}
    for rows, inner, cols in shapes:
        fns = {d: gemm(rows, inner, cols, framework, d) for d in ("float32", "bfloat16")}
        timed = timing.time_interleaved(fns, warmup=warmup, repeats=repeats)
        out[f"{rows}x{inner}x{cols}"] = {
            d: 2.0 * rows * inner * cols / t["median_s"] / 1e9 for d, t in timed.items()}
    return out


def _worker(xla_flags: str, **spec: Any) -> dict:
    """`rates(**spec)` in a fresh process with XLA_FLAGS=`xla_flags` (torch: default
    threading)."""
    spec = json.dumps(spec)
    try:
        return timing.in_fresh_process(["-m", "benchmarks.gemm", WORKER_FLAG, spec],
                                       {"XLA_FLAGS": xla_flags or None, "OMP_WAIT_POLICY": None})
    except RuntimeError as e:
        return {"error": [str(e)]}


def main(argv: list[str] | None = None) -> dict:
    # Imported here: `benchmarks.inputs` loads jax, which a torch worker must not.
    from benchmarks.inputs import BenchmarkParser

    args = BenchmarkParser("gemm", __doc__, FULL, QUICK).parse(argv)
    spec = dict(shapes=args.shapes, repeats=args.repeats, warmup=args.warmup)
    results: dict[str, Any] = {f"jax, XLA {name}": _worker(flags, framework="jax", **spec)
                               for name, flags in XLA_SETTINGS.items()}
    results["torch"] = _worker("", framework="torch", **spec)
    result = {**timing.benchmark_header("gemm", args.quick),
              "xla_settings": XLA_SETTINGS, "gflop_per_s": results,
              "table_markdown": _table(results, args.shapes)}
    timing.report(result, args.out_dir, notes=[timing.bf16_note(result["machine"])])
    return result


def _table(results: dict[str, dict], shapes: list[list[int]]) -> str:
    keys = [f"{r}x{i}x{c}" for r, i, c in shapes]
    headers = ["framework", *(f"{k} {d} GFLOP/s" for k in keys for d in ("fp32", "bf16"))]
    rows = [[name, *(r.get(k, {}).get(d) for k in keys for d in ("float32", "bfloat16"))]
            for name, r in results.items()]
    return timing.markdown_table(headers, rows)


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_FLAG]:  # one measurement, in this process (`_worker`)
        print(json.dumps(rates(**json.loads(sys.argv[2]))))
    else:
        from benchmarks.inputs import run

        raise SystemExit(run(main))
