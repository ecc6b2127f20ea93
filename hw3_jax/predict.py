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
import jax.numpy as jnp
import numpy as np

from hw3_jax import input_pipeline as ip
from hw3_jax.bert import BertConfig
from hw3_jax.models import BertGRUSentiment
from hw3_jax.train import load_for_inference

# Fields of BertGRUSentiment saved by the sentiment experiment (besides the BertConfig).
MODEL_FIELDS = ("hidden_dim", "n_layers", "bidirectional", "dropout", "gru_over_padding",
                "freeze_encoder", "encoder_attention_mask", "dtype", "readout")


def model_metadata(model: BertGRUSentiment, max_length: int) -> dict[str, Any]:
    """What `SentimentPredictor.load` needs to rebuild `model` (JSON-able)."""
    fields = {f: getattr(model, f) for f in MODEL_FIELDS}
    fields["dtype"] = jnp.dtype(fields["dtype"]).name
    return {"model": fields, "bert": model.bert.to_dict(), "max_length": int(max_length)}


def model_from_metadata(meta: dict[str, Any]) -> BertGRUSentiment:
    fields = dict(meta["model"])
    fields["dtype"] = jnp.dtype(fields["dtype"])
    return BertGRUSentiment(bert=BertConfig.from_dict(meta["bert"]), **fields)


@functools.lru_cache(maxsize=8)
def _logits_fn(model: BertGRUSentiment):
    """jit(logits)(params, input_ids, attention_mask), one per model configuration: every
    predictor of the same model (a reload, the one after training) shares its compilations."""
    return jax.jit(
        lambda p, ids, mask: model.apply({"params": p}, ids, mask, deterministic=True))


def _full_params(workdir: Path, meta: dict[str, Any], params: Any) -> Any:
    """A `--cache-encoder` run checkpoints only the head ({"gru", "out"}); its frozen
    encoder's params are a file in the workdir (named in the metadata), joined here."""
    from hw3_jax import encoder_cache

    saved = (meta.get("encoder_cache") or {}).get("encoder_params")
    if saved is None or "bert" in params:
        return params
    path = workdir / saved
    if not path.is_file():
        raise ip.DataError(f"{path} is missing: it holds the frozen encoder of this "
                           "--cache-encoder run; train again into this workdir")
    return encoder_cache.join_params(params, encoder_cache.load_encoder_params(path))


@dataclasses.dataclass
class Scored:
    """The result for one input: `p_positive` or `error`, never both."""

    text: Any
    p_positive: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.error is None:
            out["p_positive"] = self.p_positive
        else:
            out["error"] = self.error
        return out


class SentimentPredictor:
    """A trained BertGRUSentiment with its tokenizer, ready to score texts."""

    def __init__(self, model: BertGRUSentiment, params: Any, tokenizer: Any,
                 batch_size: int = 32):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.batch_size = batch_size
        trunc = tokenizer.truncation or {}
        self.max_length = int(trunc.get("max_length", 512))
        self._logits = _logits_fn(model)

    @classmethod
    def load(cls, workdir: str | Path, batch_size: int = 32) -> SentimentPredictor:
        """The best checkpoint of a workdir written by `python -m experiments.sentiment`.

        Raises CheckpointError (no or unreadable checkpoint) or DataError (no tokenizer)."""
        workdir = Path(workdir)
        ckpt = load_for_inference(workdir)
        meta = ckpt.extra
        if "model" not in meta or "bert" not in meta:
            raise ip.DataError(f"{workdir} was not written by the sentiment experiment "
                               "(its checkpoint has no model description)")
        tok_file = workdir / "tokenizer.json"
        if not tok_file.is_file():
            raise ip.DataError(f"{tok_file} is missing: the workdir's tokenizer is needed to "
                               "score text; train again into this workdir")
        tokenizer = ip.load_tokenizer_file(tok_file, int(meta.get("max_length", 512)))
        return cls(model_from_metadata(meta), _full_params(workdir, meta, ckpt.params),
                   tokenizer, batch_size)

    def score(self, texts: Sequence[Any]) -> list[Scored]:
        """One `Scored` per input, in order. Texts longer than the model's max length are
        truncated; any Unicode is accepted. Texts with nothing to score (empty, whitespace,
        control or format characters only) and strings that are not valid Unicode (unpaired
        surrogates, as Python makes of undecodable bytes) get an error."""
        results = [Scored(t) for t in texts]
        valid = []
        for i, r in enumerate(results):
            r.error = self._problem(r.text)
            if r.error is None:
                valid.append(i)
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
        cleaned = ip.clean_text(text)
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
        for batch in ip.predict_batches(self.tokenizer, texts, batch_size=self.batch_size):
            logits = self._logits(self.params, batch["input_ids"], batch["attention_mask"])
            real = batch["index"] >= 0
            out[batch["index"][real]] = np.asarray(jax.nn.sigmoid(logits))[real]
        return out


def predict_sentiment(workdir: str | Path, text: str) -> float:
    """Probability that `text` is positive, with the best model of `workdir`."""
    return SentimentPredictor.load(workdir).predict_sentiment(text)
