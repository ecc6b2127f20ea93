"""`SentimentPredictor.score`: latency of one call on a warm model, throughput of batches.

    python -m benchmarks.predict            # MiniLM-size encoder, real IMDB test reviews
    python -m benchmarks.predict --quick    # a tiny encoder, synthetic reviews

The predictor is built directly (`SentimentPredictor(model, params, tokenizer)`) from a
randomly initialised notebook model (`benchmarks.notebook`, built by `hw3_jax.factory`)
and the bert-base-uncased WordPiece vocabulary:
random weights cost the same as trained ones. Timed, after a warm-up call that compiles
every shape involved:

- latency: `score([text])` for one short sentence and for one typical IMDB review (the
  median-length one of the sample), with the predictor's default `batch_size=32` and with
  `batch_size=1` (a batch is padded to the smallest power of two rows that holds its texts,
  so a single text runs as one row either way);
- throughput: `score(texts)` for a sample of IMDB test reviews in one call (texts/s), as
  they come and sorted by length by the caller (batches are padded to their longest text),
  and with `batch_size=1`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.inputs import BenchmarkParser, existing_file, run, sample_reviews
from benchmarks.notebook import SIZES, notebook_model
from configs.sentiment import get_config
from experiments.cli import add_data_options, exit_with
from hw3_jax import timing
from hw3_jax.bert import BertConfig
from hw3_jax.data.synthetic import generate_reviews
from hw3_jax.data.tokenizer import load_pretrained_tokenizer
from hw3_jax.models import init_params
from hw3_jax.predict import BATCH_SIZE, SentimentPredictor

SHORT_TEXT = "This film is terrific!"
FULL = dict(encoder="small", texts=64, repeats=5)
QUICK = dict(encoder="tiny", texts=16, repeats=3)


def _texts(args: Any) -> tuple[list[str], str]:
    """(the --texts reviews to score, where they come from)."""
    if args.quick:
        texts, _ = generate_reviews(args.texts, 0)
        return texts, "synthetic reviews"
    archive = existing_file(args.imdb_archive, "IMDB archive", "--imdb-archive PATH")
    texts = sample_reviews(archive, args.texts)
    return texts, f"first {len(texts)} test reviews of {archive.name}"


def _predictors(size: str, vocab: Path) -> tuple[dict[int, SentimentPredictor], Any,
                                                  BertConfig]:
    """({batch_size: predictor} for the predictor's default batch size and 1, tokenizer,
    BertConfig): the notebook recipe's length and truncation, as far as the encoder's
    positions reach; the encoder's vocabulary is the tokenizer's (the tiny size included)."""
    data = get_config("notebook").data
    cfg = BertConfig(**SIZES[size])
    tok = load_pretrained_tokenizer(vocab, min(data.max_length, cfg.max_position_embeddings))
    cfg = dataclasses.replace(cfg, vocab_size=tok.get_vocab_size())
    model = notebook_model(cfg)
    params = init_params(model, jax.random.key(0))
    return {bs: SentimentPredictor(model, params, tok, batch_size=bs,
                                   truncation=data.truncation)
            for bs in (BATCH_SIZE, 1)}, tok, cfg


def measure_latency(predictors: dict[int, SentimentPredictor], typical: str, *, warmup: int,
                    repeats: int) -> dict:
    """`score([text])` of the short sentence and the typical review, batch_size 32 and 1."""
    latency = {}
    for bs, pred in predictors.items():
        for name, text in (("short", SHORT_TEXT), ("typical_review", typical)):
            print(f"[predict] latency {name}, batch_size={bs} ...", flush=True)
            latency[f"{name}_batch_size_{bs}"] = timing.time_calls(
                lambda p=pred, t=text: p.score([t]), warmup=warmup, repeats=repeats)
    return latency


def measure_throughput(predictors: dict[int, SentimentPredictor], texts: list[str],
                       lengths: list[int], *, warmup: int, repeats: int) -> dict[str, dict]:
    """`score(texts)` as they come, sorted by length by the caller, and with batch_size 1;
    each `warmup` calls untimed, then the median of `repeats` timed ones."""
    print("[predict] throughput ...", flush=True)
    # The same texts sorted by length by the caller: each batch pads to its own longest
    # text, so grouping similar lengths shows what sorting inside `score` would save.
    by_length = [texts[i] for i in np.argsort(lengths, kind="stable")]
    # One text per batch: on a CPU the [32, heads, 512, 512] attention of a padded batch
    # leaves the caches, so small batches can be faster per text.
    cases = {"throughput": (BATCH_SIZE, texts, {"texts": len(texts), "batch_size": BATCH_SIZE,
                                                "mean_tokens": float(np.mean(lengths)),
                                                "median_tokens": float(np.median(lengths))}),
             "throughput_sorted_by_length": (BATCH_SIZE, by_length, {}),
             "throughput_batch_size_1": (1, texts, {"batch_size": 1})}
    out = {}
    for key, (bs, inputs, extra) in cases.items():
        t = timing.time_calls(lambda p=predictors[bs], x=inputs: p.score(x), warmup=warmup,
                              repeats=repeats)
        out[key] = {**t, "texts_per_s": len(texts) / t["median_s"], **extra}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = BenchmarkParser("predict", __doc__, FULL, QUICK)
    add_data_options(p)
    p.add_sized("--encoder", "encoder size, small being MiniLM's", type=str, choices=sorted(SIZES),
                minimum=None)
    p.add_sized("--texts", "reviews in the throughput call")
    args = p.parse(argv)
    vocab = existing_file(args.vocab, "vocabulary", "--vocab PATH/vocab.txt")
    texts, source = _texts(args)
    predictors, tok, cfg = _predictors(args.encoder, vocab)
    lengths = [len(tok.encode(t).ids) for t in texts]
    typical_idx = int(np.argsort(lengths)[len(lengths) // 2])
    typical = texts[typical_idx]

    latency = measure_latency(predictors, typical, warmup=args.warmup, repeats=args.repeats)
    throughputs = measure_throughput(predictors, texts, lengths, warmup=args.warmup,
                                     repeats=args.repeats)
    result = {
        **timing.benchmark_header("predict", args.quick),
        "encoder": args.encoder, "bert": cfg.to_dict(), "texts_source": source,
        "short_text": SHORT_TEXT, "typical_review_tokens": lengths[typical_idx],
        "latency": latency, **throughputs,
        "table_markdown": _table(latency, throughputs, len(texts)),
    }
    timing.report(result, args.out_dir, notes=[
        f"encoder {args.encoder}; typical review {result['typical_review_tokens']} tokens; "
        f"reviews: mean {throughputs['throughput']['mean_tokens']:.0f} tokens"])
    return result


def _table(latency: dict, throughputs: dict, n: int) -> str:
    rows = [[k.replace("_batch_size_", " (batch_size ") + ")", v["median_s"] * 1e3,
             1.0 / v["median_s"]] for k, v in latency.items()]
    for key, what in (("throughput", f"{n} reviews in one call (batch_size {BATCH_SIZE})"),
                      ("throughput_sorted_by_length", f"the {n} reviews sorted by length first"),
                      ("throughput_batch_size_1", f"the {n} reviews, batch_size 1")):
        t = throughputs[key]
        rows.append([f"throughput: {what}", t["median_s"] * 1e3, t["texts_per_s"]])
    return timing.markdown_table(["call", "median ms", "texts/s"], rows)


if __name__ == "__main__":
    exit_with(run(main))
