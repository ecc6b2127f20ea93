"""Tiny models and data for the training-loop tests, and a script for subprocess runs.

As a script (the kill-and-resume and 8-device tests run it in a fresh interpreter):
  python tests/_train_tiny.py --workdir DIR [--resume] [--print-steps] [--epochs N]
      [--out FILE.npz]       train the tiny bag-of-embeddings model; save final params;
                             --print-steps prints "STEP n" as the data hands out the batch
                             of global step n
  python tests/_train_tiny.py --one-step --num-devices N --out FILE.npz
      one training step (batch 12: padded to the device count), for the 8-device check
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class BagModel(nn.Module):
    """Embedding -> masked mean -> MLP with dropout -> logits [B] (or [B, C])."""

    vocab: int = 32
    features: int = 16
    num_classes: int | None = None  # None: one binary logit per example
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, *, deterministic=True):
        x = nn.Embed(self.vocab, self.features, name="embed")(input_ids).astype(self.dtype)
        m = attention_mask.astype(self.dtype)[..., None]
        x = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        x = nn.Dense(self.features, dtype=self.dtype, name="hidden")(x)
        x = nn.relu(x)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        out = nn.Dense(self.num_classes or 1, dtype=self.dtype, name="out")(x)
        return out if self.num_classes else out[:, 0]


class BNModel(nn.Module):
    """A model with batch statistics (model_state), multiclass, on 'image' inputs."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, image, *, deterministic=True):
        x = nn.Dense(8)(image)
        x = nn.BatchNorm(use_running_average=deterministic)(x)
        return nn.Dense(self.num_classes)(nn.relu(x))


def make_examples(n, length=8, vocab=32, seed=0, num_classes=None):
    """Token sequences whose label is easy to learn from the bag of tokens.

    binary: 1 if most real tokens are below vocab // 2. multiclass: which third of the
    vocabulary is most frequent.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, size=n)
    ids = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    labels = np.zeros((n,), np.float32 if num_classes is None else np.int32)
    for i, L in enumerate(lengths):
        if num_classes is None:
            y = rng.integers(0, 2)
            lo, hi = (1, vocab // 2) if y else (vocab // 2, vocab)
        else:
            y = rng.integers(0, num_classes)
            width = (vocab - 1) // num_classes
            lo, hi = 1 + y * width, 1 + (y + 1) * width
        major = rng.integers(lo, hi, size=L)
        noise = rng.integers(1, vocab, size=L)
        tok = np.where(rng.random(L) < 0.8, major, noise)
        ids[i, :L] = tok
        mask[i, :L] = 1
        labels[i] = y
    return {"input_ids": ids, "attention_mask": mask, "label": labels}


class TinyData:
    """train_batches(epoch, start_step) shuffled by (seed, epoch); eval batches padded with
    weight 0. Subclasses see (and may change) each training batch in `on_batch`."""

    def __init__(self, n_train=96, n_val=40, n_test=50, batch_size=12, seed=0, num_classes=None,
                 length=8, vocab=32):
        self.batch_size, self.seed = batch_size, seed
        self.splits = {
            "train": make_examples(n_train, length, vocab, seed, num_classes),
            "validation": make_examples(n_val, length, vocab, seed + 1, num_classes),
            "test": make_examples(n_test, length, vocab, seed + 2, num_classes),
        }
        self.steps_per_epoch = n_train // batch_size

    def _batches(self, arrays, order, drop_last):
        bs = self.batch_size
        n = len(order)
        stop = (n // bs) * bs if drop_last else n
        for start in range(0, stop, bs):
            idx = order[start:start + bs]
            b = {k: v[idx] for k, v in arrays.items()}
            b["weight"] = np.ones((len(idx),), np.float32)
            if len(idx) < bs:  # pad the last partial batch, weight 0
                pad = bs - len(idx)
                b = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                     for k, v in b.items()}
            yield b

    def train_batches(self, epoch, start_step=0):
        arrays = self.splits["train"]
        n = len(arrays["label"])
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        batches = itertools.islice(self._batches(arrays, order, drop_last=True), start_step,
                                   None)
        for i, b in enumerate(batches, start_step):
            yield self.on_batch(epoch * self.steps_per_epoch + i + 1, b)

    def on_batch(self, step, batch):
        """The batch of global step `step` (1-based), as the loop will get it."""
        return batch

    def eval_batches(self, split):
        arrays = self.splits[split]
        return self._batches(arrays, np.arange(len(arrays["label"])), drop_last=False)

    def eval_steps(self, split):
        return -(-len(self.splits[split]["label"]) // self.batch_size)


class NaNAt(TinyData):
    """The labels of the batch of global step `nan_step` are NaN: that step's loss is NaN."""

    def __init__(self, nan_step, **kw):
        super().__init__(**kw)
        self.nan_step = nan_step

    def on_batch(self, step, batch):
        if step == self.nan_step:
            batch = {**batch, "label": np.full_like(batch["label"], np.nan)}
        return batch


class PrintSteps(TinyData):
    """Prints "STEP n" when handing out the batch of global step n."""

    def on_batch(self, step, batch):
        print(f"STEP {step}", flush=True)
        return batch


def init_params(model, data, seed=0, key="input_ids"):
    b = next(data.eval_batches("validation"))
    inputs = [b["input_ids"], b["attention_mask"]] if key == "input_ids" else [b[key]]
    # jit: one compilation instead of one per operation (seconds on a 2-core CPU)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), *inputs)["params"]


def evaluate(model, params, batches, *, loss="binary", input_keys=("input_ids", "attention_mask")):
    """Weighted loss and accuracy of `params` over `batches` on every device, through the
    loop's own eval step: {loss, accuracy, examples} (examples: the sum of the weights)."""
    from hw3_jax.train.sharding import data_parallel, replicate
    from hw3_jax.train.steps import jit_eval_step, run_eval, to_float32

    dp = data_parallel()
    eval_fn = jit_eval_step(dp, model=model, loss=loss, input_keys=input_keys)
    return run_eval(eval_fn, replicate(to_float32(params), dp), replicate({}, dp), batches, dp,
                    tuple(input_keys), desc="eval", bars=False)


def flat(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def one_step_result():
    """One training step on 1 device and on all devices (12 rows: padded to 16 on 8)."""
    from hw3_jax.train import sharding, steps

    data = TinyData(batch_size=12)
    model = BagModel()
    params = init_params(model, data)
    batch = next(data.train_batches(0))
    out = {}
    for n in (1, jax.device_count()):
        dp = sharding.data_parallel(num_devices=n)
        tx = steps.make_optimizer(1e-2, optimizer="adam", weight_decay=0.0)
        step = steps.jit_train_step(dp, model=model, tx=tx, loss="binary",
                                    input_keys=("input_ids", "attention_mask"), seed=3)
        dev_batch = sharding.prepare_batch(batch, dp, ("input_ids", "attention_mask"))
        state, acc = step(steps.create_train_state(params, tx, dp), steps.init_metrics(dp),
                          dev_batch)
        sums = np.asarray(acc["sums"])
        out[n] = {
            "loss": float(sums[0] / sums[2]),
            "examples": float(sums[2]),
            "batch_shards": len(dev_batch["input_ids"].addressable_shards),
            "batch_rows": int(dev_batch["input_ids"].shape[0]),
            "params": {k: v.tolist() for k, v in flat(state.params).items()},
        }
    return out


def main(argv=None):
    from hw3_jax.train import loop

    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--print-steps", action="store_true")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--one-step", action="store_true")
    a = ap.parse_args(argv)

    if a.one_step:
        import json

        print("RESULT " + json.dumps(one_step_result()))
        return

    data = PrintSteps() if a.print_steps else TinyData()
    model = BagModel()
    params = init_params(model, data)
    cfg = loop.TrainConfig(epochs=a.epochs, learning_rate=1e-2, seed=1, resume=a.resume,
                           checkpoint_every_steps=a.every, progress=False, verbose=True,
                           plot=False)
    res = loop.train(model, params, data, cfg, a.workdir)
    if a.out:
        np.savez(a.out, **flat(res.params), **{"final/" + k: v
                                                for k, v in flat(res.final_state.params).items()})


if __name__ == "__main__":
    main()
