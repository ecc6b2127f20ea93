"""The notebook's recipe at full size through the real pipeline, and where its step's time goes.

    python -m benchmarks.recipe            # all of IMDB, bert-base-uncased, 2 epochs; then minilm
    python -m benchmarks.recipe --quick    # tiny sizes on the CPU: a smoke run, not a number

On whatever accelerator is present, `configs/sentiment.py:notebook` trained by the
experiment's own run (`experiments.sentiment_train.train_and_evaluate`): all 50,000 labelled
IMDB reviews (17,500 train / 7,500 validation / 25,000 test), a frozen encoder of the
bert-base-uncased architecture, the 2x256 BiGRU head, batch 128, 512 tokens, the config's
compute dtype (bfloat16 on TPU/GPU), 2 epochs. The encoder's weights are the hub's where the
hub answers, else random ones of the same shape (12 layers, hidden 768, 12 heads,
intermediate 3072, the bert-base-uncased vocabulary), written as a local checkpoint and
loaded through the same path: the time is the same. Then `configs/sentiment.py:minilm`
(the shared frozen all-MiniLM-L6-v2, encoder cache) for an accuracy measured at full size.

Reported: the time per epoch (training + validation, from the run's metrics.json) against the
notebook's 14.5 minutes on a Colab GPU and the 7.2 minutes of bentrevett's
pytorch-sentiment-analysis tutorial, the training examples/s, and for one compiled step of
the recipe's largest shape (batch 128 x 512 real tokens, `benchmarks.steps.notebook_step`):
the share of its time in the encoder and in the GRU (`benchmarks.xla_profile.profile_step`;
the GRU is 512 sequential `lax.scan` steps per layer and direction: JAX has no cuDNN GRU,
jax issue #18867), XLA's FLOPs of the step, the FLOP/s achieved and their fraction of the
device's dense bfloat16 peak. The epoch ratios use the mean epoch (the first one includes
XLA's compilations), examples/s the last epoch.

`--quick`: the same code path on the CPU in a minute or two: a tiny random encoder (2 layers,
hidden 64), one GRU layer of 32, batches of 16 x 64 tokens, a small archive of synthetic
reviews (70 / 30 / 100), and MiniLM on 32 reviews per split.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import ml_collections
from safetensors.numpy import save_file

from benchmarks.inputs import BenchmarkParser, given_or_shared, make_batch, run, write_small_archive
from benchmarks.notebook import SIZES
from benchmarks.steps import notebook_step
from benchmarks.xla_profile import profile_step
from configs.sentiment import SHARED_MINILM, get_config
from experiments.cli import UserError, add_data_options, exit_with, given
from experiments.sentiment_train import RUN_ERRORS, resolve, train_and_evaluate
from hw3_jax import factory, timing
from hw3_jax.bert import BertConfig, init_bert_params
from hw3_jax.bert_weights import bert_params_to_torch
from hw3_jax.data.tokenizer import load_pretrained_tokenizer
from hw3_jax.models import init_params
from hw3_jax.train.workdir import Workdir, json_safe

NOTEBOOK_EPOCH_MIN = 14.5  # the homework notebook on a Colab GPU
TUTORIAL_EPOCH_MIN = 7.2  # bentrevett/pytorch-sentiment-analysis, the same model
# One GRU layer: XLA compiling the GRU's scans (in the profiled step, the run's initialisation,
# training and evaluation steps, the predictor) is most of --quick's time on a CPU.
QUICK_HEAD = dict(gru_hidden=32, gru_layers=1)
QUICK_DATA = dict(max_length=64, batch_size=16, buckets="64")
QUICK_REVIEWS_PER_FOLDER = 50  # 70 train / 30 validation / 100 test
QUICK_MINILM_LIMIT = 32  # reviews per split through MiniLM's encoder cache
# The profiled step's repetitions without --quick and with it.
FULL = dict(repeats=5)
QUICK = dict(repeats=2)

# Dense (no sparsity) bfloat16 peak FLOP/s per JAX device, by `device_kind` (first full
# match). NVIDIA's data sheets give the figures "with sparsity", halved here: A100 (SXM and
# PCIe) 312 TFLOPS; H100 SXM 989, PCIe 756, NVL 835; H200 SXM 989, NVL 835; L4 121. The T4
# has no bfloat16 tensor cores: 65 TFLOPS is its FP16 peak. Google Cloud's TPU system
# architecture pages: v2 45 and v3 123 TFLOPS per chip of two TensorCores, each one JAX
# device (22.5 and 61.5); v4 275 and v5p 459 per chip, one JAX device (megacore); v5e 197
# and v6e 918 per chip of one TensorCore.
_PEAKS: tuple[tuple[str, float], ...] = (
    (r"TPU v2", 22.5e12), (r"TPU v3", 61.5e12), (r"TPU v4", 275e12),
    (r"TPU v5( lite|e)", 197e12), (r"TPU v5p?", 459e12), (r"TPU v6( lite|e)", 918e12),
    (r"NVIDIA A100.*", 312e12), (r"NVIDIA H100 PCIe", 756e12), (r"NVIDIA H100 NVL", 835e12),
    (r"NVIDIA H100.*", 989e12), (r"NVIDIA H200 NVL", 835e12), (r"NVIDIA H200.*", 989e12),
    (r"NVIDIA L4", 121e12), (r"Tesla T4", 65e12),
)


def peak_flops(device_kind: str) -> float | None:
    """Dense bfloat16 peak FLOP/s of one JAX device of `device_kind`; None for a CPU or a
    device not in the table."""
    for pattern, peak in _PEAKS:
        if re.fullmatch(pattern, device_kind):
            return peak
    return None


# ----------------------------------------------------------------------------- the configs


def recipe_config(name: str, archive: str | None, vocab: str | None, quick: bool
                  ) -> ml_collections.ConfigDict:
    """`configs/sentiment.py:NAME` on IMDB from `archive` (None: the download) with the
    WordPiece `vocab` (None: the encoder's own); `quick`: the small sizes (minilm: a few
    reviews, their heads)."""
    config = get_config(name)
    config.data.update(source="imdb", imdb_archive=archive, vocab=vocab)
    # A rerun into the same --workdir trains afresh (the token cache is still reused).
    config.train.overwrite = True
    if quick:
        config.data.update(**QUICK_DATA)
        config.model.update(**QUICK_HEAD)
        config.train.update(progress=False, plot=False)
        if name == "minilm":
            config.data.update(limit=QUICK_MINILM_LIMIT, truncation="head")
    return config


# ----------------------------------------------------------------------------- the encoder


def choose_encoder(config: ml_collections.ConfigDict, root: Path, quick: bool
                   ) -> tuple[str, str, BertConfig]:
    """Point `config.model.encoder` at the hub's encoder it names (bert-base-uncased) where
    it loads, else at a random checkpoint of its shape written under `root` (tiny with
    `quick`, which never asks the hub): BERT's random initialisation in the hub's file
    layout (config.json + model.safetensors), loaded as the hub's would be. Returns
    ("hub" | "random", why, the encoder's BertConfig as `config`'s run loads it)."""
    hub = config.model.encoder
    why = "--quick"
    if not quick:
        try:
            bert_cfg, _ = factory.pretrained_encoder(config.model)  # downloads it
            return "hub", f"{hub} from the Hugging Face hub", bert_cfg
        except (OSError, ValueError) as e:
            why = f"the hub's {hub} did not load ({e})"
    vocab = config.data.vocab or config.model.encoder
    vocab_size = load_pretrained_tokenizer(vocab, config.data.max_length).get_vocab_size()
    sizes = SIZES["tiny"] if quick else {}  # BertConfig's defaults are bert-base-uncased's
    bert = BertConfig(**{**sizes, "vocab_size": vocab_size})
    directory = root / "random-encoder"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(bert.to_hf_dict(), indent=1))
    params = init_bert_params(bert, jax.random.key(0))
    save_file(bert_params_to_torch(params), str(directory / "model.safetensors"))
    config.model.encoder = str(directory)
    shape = "a tiny encoder" if quick else f"the shape of {hub}"
    bert_cfg, _ = factory.pretrained_encoder(config.model)
    return ("random", f"{why}: random weights of {shape}, frozen (the time is the same)",
            bert_cfg)


# ----------------------------------------------------------------------------- the step


def _shares(by_part: dict[str, float]) -> dict[str, float | None]:
    """The step's fractions of time in the encoder, in the GRU and elsewhere, from
    `profile_step`'s parts (None where the profile attributed no time)."""
    if not by_part:
        return {"encoder": None, "gru": None, "other": None}
    encoder = sum(v for k, v in by_part.items() if k.startswith("encoder"))
    gru = sum(v for k, v in by_part.items() if k.startswith("GRU"))
    return {"encoder": encoder, "gru": gru, "other": max(0.0, 1.0 - encoder - gru)}


def step_breakdown(config: ml_collections.ConfigDict, bert_cfg: BertConfig, *, warmup: int,
                   repeats: int) -> dict:
    """One compiled training step of `config`'s model on encoder `bert_cfg` (from
    `choose_encoder`), on a batch of batch_size x max_length real tokens (the largest
    bucket): compile time, XLA's FLOPs, the median step time, the FLOP/s achieved against the
    device's peak, and the profile's shares of model parts."""
    resolved = resolve(config)
    model = factory.sentiment_model(resolved.model, bert_cfg)
    params = init_params(model, jax.random.key(0))  # random weights cost the same
    batch, length = resolved.data.batch_size, resolved.data.max_length
    step = notebook_step(model, params, make_batch(batch, length, bert_cfg.vocab_size))
    compiled = step.compile()
    timed = timing.time_calls(step, warmup=warmup, repeats=repeats)
    profile = profile_step(step)
    # XLA's cost analysis counts a while loop's body once: the GRU's recurrent matmuls are
    # undercounted, by a few percent of the step's FLOPs at the recipe's sizes.
    flops = compiled.get("xla_flops")
    achieved = flops / timed["median_s"] if flops else None
    devices = jax.devices()
    # The compiled program is one device's part of the data-parallel step.
    peak = peak_flops(devices[0].device_kind)
    shares = _shares(profile.get("by_part_fraction", {}))
    return {
        "batch": batch, "length": length, "dtype": resolved.model.dtype,
        "device_kind": devices[0].device_kind, "num_devices": len(devices),
        "compile_s": compiled["compile_s"], "xla_flops": flops, "step": timed,
        "achieved_flop_per_s": achieved, "peak_flop_per_s": peak,
        "peak_fraction": achieved / peak if achieved and peak else None,
        "shares": shares, "profile": profile,
        "shares_note": None if shares["encoder"] is not None else (
            "the profile attributed no time to XLA ops: the trace had no XLA op events on "
            "this device's plane nor on the host's XLA threads"),
    }


# ----------------------------------------------------------------------------- the runs


def train_run(config: ml_collections.ConfigDict, workdir: Path, command: str) -> dict:
    """Train `config` into `workdir` with the experiment's run; the epoch times, examples/s
    and test metrics as its metrics.json records them."""
    result = train_and_evaluate(config, str(workdir), extra={"command": command})
    metrics = json_safe(result.metrics)  # as metrics.json holds it
    cache = metrics.get("encoder_cache") or {}
    return {
        "workdir": str(workdir),
        **{k: [e[k] for e in metrics["history"]]
           for k in ("epoch_time_s", "train_time_s", "val_time_s", "examples_per_s")},
        "val_accuracy": metrics["val_accuracy"], "test_loss": metrics["test_loss"],
        "test_accuracy": metrics["test_accuracy"], "test_examples": metrics["test_examples"],
        "sizes": metrics.get("data", {}).get("sizes"), "params": metrics["params"],
        "devices": metrics["devices"], "timings": metrics["timings"],
        "encoder_cache_s": cache.get("seconds"),
    }


def _minutes(seconds: list[float], i: int) -> float | None:
    return seconds[i] / 60 if i < len(seconds) else None


def _scaled(x: float | None, scale: float) -> float | None:
    return None if x is None else x * scale


def recipe_row(device: str, weights: str, run: dict, step: dict) -> dict[str, Any]:
    """The notebook run's row: its epochs against the notebook's and the tutorial's (the
    mean epoch, the first one's compilations included), and the step's breakdown."""
    epochs = run["epoch_time_s"]
    mean_min = sum(epochs) / len(epochs) / 60 if epochs else None
    return {
        "device": device, "weights": weights, "dtype": step["dtype"],
        "epoch_1_min": _minutes(epochs, 0), "epoch_2_min": _minutes(epochs, 1),
        "speedup_vs_notebook": NOTEBOOK_EPOCH_MIN / mean_min if mean_min else None,
        "speedup_vs_tutorial": TUTORIAL_EPOCH_MIN / mean_min if mean_min else None,
        # The last epoch's: the first one's includes XLA's compilations.
        "examples_per_s": run["examples_per_s"][-1] if run["examples_per_s"] else None,
        "encoder_share": step["shares"]["encoder"], "gru_share": step["shares"]["gru"],
        "step_gflop": _scaled(step["xla_flops"], 1e-9),
        "achieved_tflop_per_s": _scaled(step["achieved_flop_per_s"], 1e-12),
        "peak_fraction": step["peak_fraction"],
    }


def minilm_row(run: dict) -> dict[str, Any]:
    """The minilm run's row: test accuracy, the encoder cache's time and the epochs'."""
    epochs = run["epoch_time_s"]
    return {"test_accuracy": run["test_accuracy"], "test_loss": run["test_loss"],
            "test_examples": run["test_examples"],
            "encoder_cache_min": _scaled(run["encoder_cache_s"], 1 / 60),
            "epoch_1_min": _minutes(epochs, 0), "epoch_2_min": _minutes(epochs, 1)}


def recipe_table(row: dict[str, Any], peak_known: bool) -> str:
    """The notebook run's Markdown table (shares and fractions in percent)."""
    peak = _scaled(row["peak_fraction"], 100) if peak_known else "unknown peak"
    cells = {
        "device": row["device"], "weights": row["weights"], "dtype": row["dtype"],
        "epoch 1 min": row["epoch_1_min"], "epoch 2 min": row["epoch_2_min"],
        f"x notebook ({NOTEBOOK_EPOCH_MIN} min)": row["speedup_vs_notebook"],
        f"x tutorial ({TUTORIAL_EPOCH_MIN} min)": row["speedup_vs_tutorial"],
        "examples/s": row["examples_per_s"],
        "% encoder": _scaled(row["encoder_share"], 100),
        "% GRU": _scaled(row["gru_share"], 100), "step GFLOP": row["step_gflop"],
        "TFLOP/s": row["achieved_tflop_per_s"], "% of peak": peak,
    }
    return timing.markdown_table(list(cells), [list(cells.values())])


def minilm_table(row: dict[str, Any]) -> str:
    """The minilm run's Markdown table."""
    cells = {
        "run": "minilm (frozen all-MiniLM-L6-v2, encoder cache)",
        "test accuracy %": _scaled(row["test_accuracy"], 100), "test loss": row["test_loss"],
        "test reviews": row["test_examples"], "encoder cache min": row["encoder_cache_min"],
        "epoch 1 min": row["epoch_1_min"], "epoch 2 min": row["epoch_2_min"],
    }
    return timing.markdown_table(list(cells), [list(cells.values())])


# ----------------------------------------------------------------------------- main


def _inputs(args, root: Path) -> tuple[str | None, str | None]:
    """(IMDB archive or None for the download, vocabulary or None for the hub's), checked:
    a named file that is missing is a `UserError`."""
    if args.imdb_archive is None and args.quick:
        archive = str(write_small_archive(root / "reviews.tar.gz", QUICK_REVIEWS_PER_FOLDER))
    else:
        archive = given_or_shared(args.imdb_archive, timing.SHARED_ARCHIVE, "IMDB archive",
                                  "--imdb-archive PATH")
    vocab = given_or_shared(args.vocab, timing.SHARED_VOCAB, "vocabulary",
                            "--vocab PATH/vocab.txt")
    if not args.skip_minilm and not Path(SHARED_MINILM).is_dir():
        raise UserError(f"the minilm run needs the encoder {SHARED_MINILM}: pass --skip-minilm")
    return archive, vocab


def run_recipe(args, root: Path, command: str) -> dict:
    """Everything `main` reports, with `root` as the work directory."""
    archive, vocab = _inputs(args, root)
    config = recipe_config("notebook", archive, vocab, args.quick)
    weights, weights_note, bert_cfg = choose_encoder(config, root, args.quick)
    print(f"[recipe] encoder: {weights_note}", flush=True)
    print("[recipe] one compiled step: FLOPs, time, profile ...", flush=True)
    step = step_breakdown(config, bert_cfg, warmup=args.warmup, repeats=args.repeats)
    print("[recipe] the notebook recipe, trained ...", flush=True)
    notebook = train_run(config, root / "notebook", command)
    minilm = minilm_result = None
    if not args.skip_minilm:
        print("[recipe] the minilm config, trained ...", flush=True)
        minilm = train_run(recipe_config("minilm", archive, None, args.quick),
                           root / "minilm", command)
        minilm_result = minilm_row(minilm)
    device = timing.device_name()
    row = recipe_row(device, weights, notebook, step)
    tables = [recipe_table(row, step["peak_flop_per_s"] is not None)]
    if minilm_result is not None:
        tables.append(minilm_table(minilm_result))
    return {
        **timing.benchmark_header("recipe", args.quick), "device": device,
        "weights": weights, "weights_note": weights_note, "imdb_archive": archive,
        "vocab": vocab, "reference_epoch_min": {"notebook": NOTEBOOK_EPOCH_MIN,
                                                "tutorial": TUTORIAL_EPOCH_MIN},
        "rows": [row], "minilm_row": minilm_result, "step": step, "notebook": notebook,
        "minilm": minilm,
        "table_markdown": "\n\n".join(tables),
    }


def main(argv: list[str] | None = None) -> dict:
    p = BenchmarkParser("recipe", __doc__, FULL, QUICK)
    p.add_argument("--workdir", type=given,
                   help="where the runs, token caches and the minilm run's encoder cache "
                        "(several GB at full size) go, kept (default a temporary directory, "
                        "removed at the end)")
    add_data_options(
        p, None, None,
        archive_help=f"(default {timing.SHARED_ARCHIVE} where it exists, else the official "
                     "archive downloaded once; --quick: a small archive of synthetic reviews)",
        vocab_help=f"(default {timing.SHARED_VOCAB} where it exists, else the hub's)")
    p.add_argument("--skip-minilm", action="store_true", help="leave out the minilm run")
    args = p.parse(argv)
    command = timing.benchmark_command("recipe", args.quick)
    if args.workdir is not None:
        root = Path(args.workdir)
        Workdir(root).check()
        result = run_recipe(args, root, command)
    else:
        with tempfile.TemporaryDirectory(prefix="recipe-") as d:
            result = run_recipe(args, Path(d), command)
    shares_note = result["step"]["shares_note"]
    timing.report(result, args.out_dir, notes=[f"shares: {shares_note}"] if shares_note else ())
    return result


if __name__ == "__main__":
    exit_with(run(main, RUN_ERRORS))  # a run's errors are the sentiment command's
