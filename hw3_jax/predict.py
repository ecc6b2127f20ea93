"""Scoring free text with a trained sentiment model: the notebook's `predict_sentiment`.

    predictor = SentimentPredictor.load("runs/sentiment")
    predictor.predict_sentiment("Avengers was great!!")   # -> probability of positive
    predictor.score(["good", "", "bad"])                  # -> one result per input

`score` never raises for an input: an input that cannot be scored (empty, whitespace only,
not a string) gets a one-line error in its result while the others are scored.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from hw3_jax import factory
from hw3_jax.bert import BertConfig
from hw3_jax.data import encoder_cache
from hw3_jax.data.batching import predict_batches
from hw3_jax.data.errors import DataError
from hw3_jax.data.imdb import clean_text
from hw3_jax.data.tokenizer import load_tokenizer_file
from hw3_jax.models import BertGRUSentiment, join_params
from hw3_jax.train.checkpoints import load_best
from hw3_jax.train.workdir import Workdir

BATCH_SIZE = 32  # texts per forward pass


@functools.lru_cache(maxsize=8)
def _logits_fn(model: BertGRUSentiment):
    """jit(logits)(params, input_ids, attention_mask), one per model configuration: every
    predictor of the same model (a reload, the one after training) shares its compilations."""
    return jax.jit(
        lambda p, ids, mask: model.apply({"params": p}, ids, mask, deterministic=True))


def _run_config(wd: Workdir) -> dict[str, Any]:
    """The run's config.json: the sentiment config's sections ("data", "model", ...), the
    encoder's BertConfig ("bert") and, for an encoder-cache run, "encoder_params"."""
    try:
        meta = wd.read_json(wd.config.name)
    except (OSError, ValueError):
        meta = {}
    if not {"model", "data", "bert"} <= set(meta):
        raise DataError(f"{wd.config} does not describe a sentiment model: the workdir was "
                        "not written by the sentiment experiment; train again into it")
    return meta


def _full_params(wd: Workdir, meta: dict[str, Any], params: Any) -> Any:
    """An encoder-cache run checkpoints only the head ({"gru", "out"}); its frozen
    encoder's params are a file in the workdir (named in config.json), joined here."""
    saved = meta.get("encoder_params")
    if saved is None or "bert" in params:
        return params
    path = wd.encoder_params(saved)
    if not path.is_file():
        raise DataError(f"{path} is missing: it holds the frozen encoder of this "
                        "--cache-encoder run; train again into this workdir")
    return join_params(params, encoder_cache.load_encoder_params(path))


@dataclasses.dataclass
class Scored:
    """The result for one input: `p_positive` or `error`, never both."""

    text: Any
    p_positive: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        field = "p_positive" if self.error is None else "error"
        return {"text": self.text, field: getattr(self, field)}


class SentimentPredictor:
    """A trained BertGRUSentiment with its tokenizer, ready to score texts."""

    def __init__(self, model: BertGRUSentiment, params: Any, tokenizer: Any,
                 batch_size: int = BATCH_SIZE, truncation: str = "head"):
        if batch_size < 1:  # here, not at the first score() call, in range()
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.batch_size, self.truncation = batch_size, truncation
        self._logits = _logits_fn(model)

    @classmethod
    def load(cls, workdir: str | Path) -> SentimentPredictor:
        """The best checkpoint of a workdir written by `python -m experiments.sentiment`,
        its model rebuilt from the workdir's config.json through `hw3_jax.factory`.

        Raises CheckpointError (no or unreadable checkpoint) or DataError (no tokenizer,
        no model description)."""
        wd = Workdir(workdir)
        ckpt = load_best(wd)
        meta = _run_config(wd)
        if not wd.tokenizer.is_file():
            raise DataError(f"{wd.tokenizer} is missing: the workdir's tokenizer is needed to "
                            "score text; train again into this workdir")
        tokenizer = load_tokenizer_file(wd.tokenizer, meta["data"]["max_length"])
        model = factory.sentiment_model(meta["model"], BertConfig.from_dict(meta["bert"]))
        # A config.json without a truncation field reads as "head", the tokenizer's own cut.
        truncation = meta["data"].get("truncation", "head")
        return cls(model, _full_params(wd, meta, ckpt.params), tokenizer,
                   truncation=truncation)

    def score(self, texts: Sequence[Any]) -> list[Scored]:
        """One `Scored` per input, in order. Texts longer than the model's max length are
        truncated; any Unicode is accepted. Texts with nothing to score (empty, whitespace,
        control or format characters only) and strings that are not valid Unicode (unpaired
        surrogates, as Python makes of undecodable bytes) get an error."""
        if isinstance(texts, str):  # else each of its characters would be scored
            raise TypeError("score takes a sequence of texts: score([text]), or "
                            "predict_sentiment(text) for one")
        results = [Scored(t, error=self._problem(t)) for t in texts]
        valid = [i for i, r in enumerate(results) if r.error is None]
        if valid:
            probs = self._probabilities([results[i].text for i in valid])
            for i, p in zip(valid, probs, strict=True):
                results[i].p_positive = float(p)
        return results

    def _problem(self, text: Any) -> str | None:
        if not isinstance(text, str):
            return f"not a string ({type(text).__name__})"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # the tokenizer would reject the whole batch
            return "not valid Unicode (unpaired surrogates, e.g. from bytes that are not UTF-8)"
        cleaned = clean_text(text)
        if not cleaned.strip():
            return "empty or whitespace-only text: nothing to score"
        norm = self.tokenizer.normalizer
        if norm is not None and not norm.normalize_str(cleaned).strip():
            # e.g. only control characters or zero-width spaces, which normalization removes
            return "no text left after normalization (only control or format characters)"
        return None

    def predict_sentiment(self, text: str) -> float:
        """The notebook's `predict_sentiment`, as the probability that `text` is positive
        (the notebook printed P(negative): its label vocabulary mapped 'pos' to 0)."""
        (r,) = self.score([text])
        if r.error is not None:
            raise ValueError(r.error)
        return float(r.p_positive)

    def _probabilities(self, texts: list[str]) -> np.ndarray:
        out = np.empty(len(texts), np.float64)
        for batch in predict_batches(self.tokenizer, texts, truncation=self.truncation,
                                     batch_size=self.batch_size):
            logits = self._logits(self.params, batch["input_ids"], batch["attention_mask"])
            real = batch["index"] >= 0
            out[batch["index"][real]] = np.asarray(jax.nn.sigmoid(logits))[real]
        return out
