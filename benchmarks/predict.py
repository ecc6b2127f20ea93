"""`SentimentPredictor.score`: latency of one call on a warm model, throughput of batches.

    python -m benchmarks.predict            # MiniLM-size encoder, real IMDB test reviews
    python -m benchmarks.predict --quick    # a tiny encoder, synthetic reviews

The predictor is built directly (`SentimentPredictor(model, params, tokenizer)`) from a
randomly initialised `BertGRUSentiment` and the bert-base-uncased WordPiece vocabulary:
random weights cost the same as trained ones. Timed, after a warm-up call that compiles
every shape involved:

- latency: `score([text])` for one short sentence and for one typical IMDB review (the
  median-length one of the sample), with the predictor's default `batch_size=32` and with
  `batch_size=1` (a single text is padded to `batch_size` rows);
- throughput: `score(texts)` for a sample of IMDB test reviews in one call (texts/s), as
  they come and sorted by length by the caller (batches are padded to their longest text),
  and with `batch_size=1`.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import jax
import numpy as np

from benchmarks import _timing
from benchmarks.train_step import SIZES
from hw3_jax import input_pipeline as ip
from hw3_jax.bert import BertConfig
from hw3_jax.models import BertGRUSentiment, init_params
from hw3_jax.predict import SentimentPredictor
from hw3_jax.synthetic_reviews import generate_reviews

SHORT_TEXT = "This film is terrific!"
_REVIEW = re.compile(r"(?:^|/)test/(pos|neg)/[^/]+\.txt$")


def sample_reviews(archive: Path, n: int) -> list[str]:
    """The first `n` test reviews in archive order (a streaming read that stops early)."""
    out = []
    with tarfile.open(archive, "r|gz") as tar:
        for m in tar:
            if m.isfile() and _REVIEW.search(m.name):
                f = tar.extractfile(m)
                out.append(ip.clean_text(f.read().decode("utf-8", errors="replace")))
                if len(out) == n:
                    break
    return out


def main(argv: list[str] | None = None) -> dict:
    p = _timing.base_parser(__doc__.splitlines()[0])
    p.add_argument("--archive", default=str(_timing.SHARED_DATA / "aclImdb_v1.tar.gz"))
    p.add_argument("--vocab", default=str(_timing.SHARED_DATA / "bert-base-uncased" / "vocab.txt"))
    p.add_argument("--encoder", choices=sorted(SIZES), default=None,
                   help="encoder size (default small = MiniLM size; tiny with --quick)")
    p.add_argument("--texts", type=int, default=None,
                   help="reviews in the throughput call (default 64)")
    args = p.parse_args(argv)
    vocab = Path(args.vocab)
    if not vocab.is_file():
        _timing.fail(f"vocabulary {vocab} not found: pass --vocab PATH/vocab.txt")
    size = args.encoder or ("tiny" if args.quick else "small")
    n_texts = args.texts or (16 if args.quick else 64)
    repeats = args.repeats or (3 if args.quick else 5)

    if args.quick:
        texts, _ = generate_reviews(n_texts, 0)
        source = "synthetic reviews"
    else:
        archive = Path(args.archive)
        if not archive.is_file():
            _timing.fail(f"IMDB archive {archive} not found: pass --archive PATH")
        texts = sample_reviews(archive, n_texts)
        source = f"first {len(texts)} test reviews of {archive.name}"

    # The encoder's vocabulary is the tokenizer's (the tiny size included).
    size_cfg = SIZES[size]
    max_length = min(512, size_cfg.get("max_position_embeddings", 512))
    tok = ip.load_pretrained_tokenizer(vocab, max_length)
    cfg = BertConfig(**{**size_cfg, "vocab_size": tok.get_vocab_size()})
    model = BertGRUSentiment(bert=cfg)
    params = init_params(model, jax.random.key(0))
    lengths = [len(tok.encode(t).ids) for t in texts]
    typical = texts[int(np.argsort(lengths)[len(lengths) // 2])]
    typical_tokens = len(tok.encode(typical).ids)

    latency = {}
    for bs in (32, 1):
        pred = SentimentPredictor(model, params, tok, batch_size=bs)
        for name, text in (("short", SHORT_TEXT), ("typical_review", typical)):
            print(f"[predict] latency {name}, batch_size={bs} ...", flush=True)
            r = _timing.time_calls(lambda p=pred, t=text: p.score([t]), warmup=args.warmup,
                                   repeats=repeats)
            latency[f"{name}_batch_size_{bs}"] = r
    print("[predict] throughput ...", flush=True)
    pred = SentimentPredictor(model, params, tok, batch_size=32)
    thr = _timing.time_calls(lambda: pred.score(texts), warmup=args.warmup, repeats=2)
    throughput = {**thr, "texts": len(texts), "texts_per_s": len(texts) / thr["median_s"],
                  "batch_size": 32, "mean_tokens": float(np.mean(lengths)),
                  "median_tokens": float(np.median(lengths))}
    # The same texts sorted by length by the caller: each batch pads to its own longest
    # text, so grouping similar lengths shows what sorting inside `score` would save.
    by_length = [texts[i] for i in np.argsort(lengths, kind="stable")]
    thr_sorted = _timing.time_calls(lambda: pred.score(by_length), warmup=args.warmup,
                                    repeats=2)
    throughput_sorted = {**thr_sorted, "texts_per_s": len(texts) / thr_sorted["median_s"]}
    # One text per batch: on a CPU the [32, heads, 512, 512] attention of a padded batch
    # leaves the caches, so small batches can be faster per text.
    pred1 = SentimentPredictor(model, params, tok, batch_size=1)
    thr_1 = _timing.time_calls(lambda: pred1.score(texts), warmup=args.warmup, repeats=2)
    throughput_1 = {**thr_1, "texts_per_s": len(texts) / thr_1["median_s"], "batch_size": 1}

    result = {
        "benchmark": "predict",
        "command": "python -m benchmarks.predict" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": _timing.machine_info(),
        "encoder": size, "bert": cfg.to_dict(), "texts_source": source,
        "short_text": SHORT_TEXT, "typical_review_tokens": typical_tokens,
        "latency": latency, "throughput": throughput,
        "throughput_sorted_by_length": throughput_sorted,
        "throughput_batch_size_1": throughput_1,
    }
    rows = [[k.replace("_batch_size_", " (batch_size "), v["median_s"] * 1e3,
             1.0 / v["median_s"]] for k, v in latency.items()]
    rows = [[r[0] + ")", *r[1:]] for r in rows]
    rows.append([f"throughput: {len(texts)} reviews in one call (batch_size 32)",
                 thr["median_s"] * 1e3, throughput["texts_per_s"]])
    rows.append([f"throughput: the {len(texts)} reviews sorted by length first",
                 thr_sorted["median_s"] * 1e3, throughput_sorted["texts_per_s"]])
    rows.append([f"throughput: the {len(texts)} reviews, batch_size 1",
                 thr_1["median_s"] * 1e3, throughput_1["texts_per_s"]])
    result["table_markdown"] = _timing.markdown_table(["call", "median ms", "texts/s"], rows)
    path = _timing.write_json("predict", result, args.out_dir)
    print(result["table_markdown"])
    print(f"encoder {size}; typical review {typical_tokens} tokens; reviews: mean "
          f"{throughput['mean_tokens']:.0f} tokens; wrote {path}")
    return result


if __name__ == "__main__":
    main()
