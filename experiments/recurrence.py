"""Q2 experiment: the scalar RNN against its closed form, and learning its weights back.

    python -m experiments.recurrence [--out results/] [--seed 0] [--steps N] [--quick]

(a) Runs the figure's RNN (w_in=1, w_rec=-1, w_out=1000) with `jax.lax.scan` on thousands of
    random integer sequences and compares it with exact integer references: every hidden
    state against the prefix alternating sum, the final output against `closed_form`, with
    counts of saturated (y_T exactly 0 or 1) and tie (h_T = 0, y_T = 0.5) cases. Then the
    same for odd lengths, where h_T = (sum odd) - (sum even): the answer flips. Also the
    float32 limit (2**24) and the w_in/w_out rescaling that leaves every output unchanged.
(b) Trains a learnable ScalarRNN with Adam from several random initialisations at once
    (vmapped) to label sequences by "the even positions outweigh the odd ones", and reports
    the recovered weights and held-out accuracy, also at lengths never seen in training.

Writes OUT/recurrence.json and OUT/recurrence.png (loss and weights over training).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from experiments.answer_text import and_list, fill, reflow
from hw3_jax.recurrence import WEIGHT_NAMES, ScalarRNN, closed_form

LOW, HIGH = -9, 9  # integer inputs drawn uniformly from [LOW, HIGH]
MAX_CHECK_LENGTH = 128  # part (a): lengths uniform in 2..128 (even) and 1..127 (odd)
TRAIN_LENGTHS = (2, 4, 6, 8, 10)
UNSEEN_LENGTHS = (12, 16, 20, 32, 64, 100)
ODD_EVAL_LENGTHS = (3, 11, 33)


def random_ints(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """[n, length] int32, uniform in [LOW, HIGH]."""
    return rng.integers(LOW, HIGH + 1, size=(n, length), dtype=np.int32)


def left_pad(x: np.ndarray, pad_to: int) -> np.ndarray:
    """Left-pad [n, T] with zeros to [n, pad_to]. Leading zeros keep h at 0 for any weights,
    so every later hidden state, h_T included, is exactly the unpadded sequence's; an even
    pad also keeps each position's parity, so `closed_form` is unchanged. One padded shape
    means one compilation instead of one per length."""
    if (pad_to - x.shape[1]) % 2:
        raise ValueError("pad by an even number of positions to keep parities")
    return np.pad(x, ((0, 0), (pad_to - x.shape[1], 0)))


def random_length_ints(rng: np.random.Generator, n: int, pad_to: int):
    """n sequences with lengths uniform over {pad_to, pad_to - 2, ...} (>= 1), left-padded
    with zeros to pad_to: ([n, pad_to] int32, lengths [n])."""
    lengths = rng.choice(np.arange(pad_to, 0, -2), size=n)
    x = random_ints(rng, n, pad_to)
    x[np.arange(pad_to)[None, :] < (pad_to - lengths)[:, None]] = 0
    return x, lengths


def prefix_alternating_sums(x: np.ndarray) -> np.ndarray:
    """x: [n, T] ints -> [n, T] int64: h_t = sum_{s<=t} (-1)^(t-s) x_s, exactly (NumPy)."""
    sign = np.where(np.arange(x.shape[1]) % 2 == 0, 1, -1)  # (-1)^(t-s) = (-1)^t (-1)^s
    return sign * np.cumsum(sign * x.astype(np.int64), axis=1)


def even_minus_odd_np(x: np.ndarray) -> np.ndarray:
    """NumPy int64 reference: sum at even positions - sum at odd positions (from 1)."""
    x = x.astype(np.int64)
    return x[:, 1::2].sum(axis=1) - x[:, 0::2].sum(axis=1)


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_scan(rng: np.random.Generator, n: int) -> dict:
    """Part (a): the scan against exact references, even and odd lengths."""
    model = ScalarRNN()
    run = jax.jit(lambda x: model.apply({}, x))
    cf = jax.jit(closed_form)

    # Even lengths: all hidden states, all outputs, and the final output vs the closed form.
    x, lengths = random_length_ints(rng, n, MAX_CHECK_LENGTH)
    h, y = jax.device_get(run(x))
    h_ref = prefix_alternating_sums(x)
    with np.errstate(over="ignore"):  # exp(1000) = inf in float64 too: the output is 0.0
        y_ref = 1.0 / (1.0 + np.exp(-1000.0 * h_ref.astype(np.float64)))
    y_cf = np.asarray(cf(x))
    d = even_minus_odd_np(x)
    tie = d == 0
    saturated = (y[:, -1] == 0.0) | (y[:, -1] == 1.0)
    even = {
        "n_sequences": n,
        "lengths": f"uniform over even 2..{MAX_CHECK_LENGTH} (left-padded with zeros)",
        "max_abs_diff_h_all_steps_vs_exact": _max_abs(h, h_ref),
        "max_abs_diff_h_T_vs_even_minus_odd": _max_abs(h[:, -1], d),
        "max_abs_diff_y_all_steps_vs_float64": _max_abs(y, y_ref),
        "max_abs_diff_y_T_vs_closed_form": _max_abs(y[:, -1], y_cf),
        "n_y_T_equal_to_closed_form": int((y[:, -1] == y_cf).sum()),
        "n_saturated": int(saturated.sum()),
        "n_ties": int(tie.sum()),
        "y_T_on_ties": sorted({float(v) for v in y[tie, -1]}),
        "n_other_outputs": int((~tie & ~saturated).sum()),
        "n_ties_by_length": {
            int(t): int(c)
            for t, c in zip(*np.unique(lengths[tie], return_counts=True), strict=True)
            if t <= 8
        },
        "max_abs_h_T": int(np.abs(d).max()),
    }

    # Odd lengths: h_T = sum odd - sum even, so the final answer is the opposite one.
    x, _ = random_length_ints(rng, n, MAX_CHECK_LENGTH - 1)
    h, y = jax.device_get(run(x))
    d = even_minus_odd_np(x)
    y_cf = np.asarray(cf(x))
    decisive = d != 0
    odd = {
        "n_sequences": n,
        "lengths": f"uniform over odd 1..{MAX_CHECK_LENGTH - 1} (left-padded with zeros)",
        "n_ties": int((~decisive).sum()),
        "max_abs_diff_h_T_vs_odd_minus_even": _max_abs(h[:, -1], -d),
        "max_abs_diff_h_T_vs_even_minus_odd": _max_abs(h[:, -1], d),
        "max_abs_diff_y_T_vs_closed_form": _max_abs(y[:, -1], y_cf),
        "max_abs_diff_y_T_vs_1_minus_closed_form": _max_abs(y[:, -1], 1.0 - y_cf),
        "n_decisive": int(decisive.sum()),
        "n_decisive_agreeing_with_closed_form": int(
            ((y[decisive, -1] > 0.5) == (y_cf[decisive] > 0.5)).sum()
        ),
    }

    # float32 holds every integer only up to 2**24: beyond it 2**24 + 1 rounds to 2**24.
    big = 2**24
    limit = {}
    for name, seq in (("inside_2^24", [big - 1, big - 2]), ("beyond_2^24", [big + 1, big])):
        xs = np.array([seq], np.int32)
        hs, ys = jax.device_get(run(xs))
        limit[name] = {
            "x": seq,
            "exact_even_minus_odd": int(even_minus_odd_np(xs)[0]),
            "scan_h_T": float(hs[0, -1]),
            "scan_y_T": float(ys[0, -1]),
            "closed_form_y": float(cf(xs)[0]),
        }

    # Only w_in * w_out reaches the output: scaling h by c and w_out by 1/c changes nothing.
    rescaled_run = jax.jit(lambda w_in, w_out, x: ScalarRNN(w_in=w_in, w_out=w_out).apply({}, x))
    rescaled = {}
    for w_in, w_out in ((4.0, 250.0), (-1.0, -1000.0), (0.5, 2000.0)):
        _, y_r = rescaled_run(w_in, w_out, x)
        rescaled[f"w_in={w_in:g},w_out={w_out:g}"] = _max_abs(y_r, y)
    return {
        "inputs": f"integers uniform in [{LOW}, {HIGH}]",
        "even": even,
        "odd": odd,
        "float32_limit": limit,
        "rescaled_w_in_w_out_max_abs_diff_y_all_steps": rescaled,
    }


def labelled_sequences(rng: np.random.Generator, lengths, n_per_length: int, pad_to: int):
    """Random sequences of each length, left-padded to pad_to: (x [N, pad_to] int32,
    length [N], d [N] = sum at even positions - sum at odd positions, exact)."""
    xs, ls, ds = [], [], []
    for length in lengths:
        x = random_ints(rng, n_per_length, length)
        ds.append(even_minus_odd_np(x))
        xs.append(left_pad(x, pad_to))
        ls.append(np.full(n_per_length, length))
    return np.concatenate(xs), np.concatenate(ls), np.concatenate(ds)


def train(
    seed: int, steps: int, n_inits: int, n_per_length: int, batch_size: int, learning_rate: float
) -> tuple[dict, dict]:
    """Part (b): Adam on BCE of the final logit, `n_inits` random initialisations vmapped."""
    rng = np.random.default_rng(seed + 1)
    max_len = max(TRAIN_LENGTHS)
    x, _, d = labelled_sequences(rng, TRAIN_LENGTHS, n_per_length, pad_to=max_len)
    # Ties (d == 0) are dropped: with no bias the exact network outputs 0.5 on them, so any
    # 0/1 label would only pull w_rec away from -1 to break them.
    n_train_ties = int((d == 0).sum())
    train_x = jnp.asarray(x[d != 0])
    train_y = jnp.asarray((d[d != 0] > 0).astype(np.float32))

    model = ScalarRNN(learnable=True)
    init_keys = jax.random.split(jax.random.key(seed), n_inits)
    params = jax.vmap(lambda k: model.init(k, train_x[:1])["params"])(init_keys)
    init_params = jax.device_get(params)
    # Cosine decay to 0: Adam's steps stay near lr in size however small the gradient, so a
    # constant rate leaves w_rec jittering around its optimum.
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    opt_state = jax.vmap(opt.init)(params)

    def loss_fn(p, x, y):
        _, logits = model.apply({"params": p}, x, method=ScalarRNN.hidden_and_logits)
        return optax.sigmoid_binary_cross_entropy(logits[:, -1], y).mean()

    @jax.jit
    def run_steps(carry, keys, train_x, train_y):
        """A chunk of steps per call (fewer host round trips); data passed, not baked in."""

        def step(carry, key):
            params, opt_state = carry
            idx = jax.random.randint(key, (batch_size,), 0, train_x.shape[0])
            xb, yb = train_x[idx], train_y[idx]  # one minibatch shared by every init

            def one(p, s):
                loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
                updates, s = opt.update(grads, s, p)
                return optax.apply_updates(p, updates), s, loss

            params, opt_state, loss = jax.vmap(one)(params, opt_state)
            return (params, opt_state), (loss, params)

        return jax.lax.scan(step, carry, keys)

    chunk = 50
    keys = jax.random.split(jax.random.key(seed + 2), steps)
    carry, losses, weights = (params, opt_state), [], []
    with tqdm(total=steps, desc="train ScalarRNN", unit="step", leave=False) as bar:
        for start in range(0, steps, chunk):
            carry, (loss, p) = run_steps(carry, keys[start : start + chunk], train_x, train_y)
            losses.append(np.asarray(loss))
            weights.append(jax.device_get(p))
            bar.update(loss.shape[0])
    params = carry[0]
    history = {"loss": np.concatenate(losses).tolist()}
    for name in WEIGHT_NAMES:
        history[name] = np.concatenate([w[name] for w in weights]).tolist()

    # Held-out sequences: new draws at the training lengths, unseen even lengths, odd lengths.
    # The figure's weights ride along as one more row of weights; even lengths share one
    # padded shape (100), odd ones another (33): two compilations in all.
    final = jax.device_get(params)
    rows = {
        k: np.append(np.asarray(final[k]), w)
        for k, w in zip(
            WEIGHT_NAMES, (ScalarRNN.w_in, ScalarRNN.w_rec, ScalarRNN.w_out), strict=True
        )
    }
    final_outputs = jax.jit(
        jax.vmap(lambda p, x: model.apply({"params": p}, x)[1][:, -1], in_axes=(0, None))
    )
    eval_rng = np.random.default_rng(seed + 3)
    accuracy = {}
    for group, lengths, pad_to in (
        ("seen_lengths", TRAIN_LENGTHS, max(UNSEEN_LENGTHS)),
        ("unseen_lengths", UNSEEN_LENGTHS, max(UNSEEN_LENGTHS)),
        ("odd_lengths", ODD_EVAL_LENGTHS, max(ODD_EVAL_LENGTHS)),
    ):
        x, length_of, d = labelled_sequences(eval_rng, lengths, 2000, pad_to=pad_to)
        y = np.asarray(final_outputs(rows, x))  # [n_inits + 1, N]
        accuracy[group] = {}
        for length in lengths:
            sel = (length_of == length) & (d != 0)  # accuracy on decisive sequences
            acc = ((y[:, sel] > 0.5) == (d[sel] > 0)).mean(axis=1)
            accuracy[group][str(length)] = {
                "n_decisive": int(sel.sum()),
                "n_ties": int(((length_of == length) & (d == 0)).sum()),
                "learned_per_init": [round(float(a), 4) for a in acc[:-1]],
                "figure_weights": float(acc[-1]),
            }

    # Where does the training loss put w_rec for a fixed product w_in * w_out? On separable
    # data the product only sets the confidence; at a finite product the BCE minimiser in
    # w_rec need not sit exactly at -1.
    grid = -1.0 + np.linspace(-5e-3, 5e-3, 101)
    grid_loss = jax.jit(
        jax.vmap(
            jax.vmap(
                lambda w_rec, prod: loss_fn(
                    {"w_in": jnp.float32(1.0), "w_rec": w_rec, "w_out": prod}, train_x, train_y
                ),
                in_axes=(0, None),
            ),
            in_axes=(None, 0),
        )
    )
    products = np.array([2.0, 6.0, 20.0], np.float32)
    losses_on_grid = np.asarray(grid_loss(grid.astype(np.float32), products))
    argmin_w_rec = {
        f"{p:g}": round(float(grid[np.argmin(row)]), 5)
        for p, row in zip(products, losses_on_grid, strict=True)
    }

    w_in, w_rec, w_out = (np.asarray(final[k], np.float64) for k in WEIGHT_NAMES)
    even_accuracies = [
        a
        for g in ("seen_lengths", "unseen_lengths")
        for v in accuracy[g].values()
        for a in v["learned_per_init"]
    ]
    result = {
        "setup": {
            "task": "label 1 if the sum of x at even positions > the sum at odd positions "
            "(positions from 1)",
            "inputs": f"integers uniform in [{LOW}, {HIGH}]",
            "ties": "dropped from training and from the accuracies (with no bias the exact "
            "network outputs exactly 0.5 on them)",
            "train_lengths": list(TRAIN_LENGTHS),
            "n_train": int(train_x.shape[0]),
            "n_train_ties_dropped": n_train_ties,
            "padding": f"left, zeros, to length {max_len} (exact: h stays 0 on leading zeros)",
            "loss": "sigmoid BCE on the final logit w_out * h_T",
            "optimizer": f"adam, cosine decay from lr={learning_rate} to 0",
            "steps": steps,
            "batch_size": batch_size,
            "n_inits": n_inits,
            "init": "w_in, w_rec, w_out ~ U[-1, 1)",
        },
        "initial_weights": {k: np.asarray(init_params[k]).tolist() for k in WEIGHT_NAMES},
        "final_weights": {
            "w_in": w_in.tolist(),
            "w_rec": w_rec.tolist(),
            "w_out": w_out.tolist(),
            "w_in_times_w_out": (w_in * w_out).tolist(),
        },
        "max_abs_w_rec_plus_1": float(np.abs(w_rec + 1.0).max()),
        "all_products_positive": bool((w_in * w_out > 0).all()),
        "final_loss_per_init": history["loss"][-1],
        "accuracy": accuracy,
        "min_accuracy_even_lengths": float(min(even_accuracies)),
        "train_loss_argmin_w_rec_by_product": {
            "grid": "w_rec in -1 +- 5e-3, step 1e-4, whole training set",
            "argmin": argmin_w_rec,
        },
    }
    return result, history


def plot(history: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = np.asarray(history["loss"])
    w = {k: np.asarray(history[k]) for k in ("w_in", "w_rec", "w_out")}
    steps = np.arange(1, loss.shape[0] + 1)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (ax_loss, ax_rec), (ax_err, ax_scale) = axes
    ax_loss.plot(steps, loss, lw=0.8)
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel="BCE (minibatch)",
        title="training loss, one line per random init",
    )
    ax_rec.plot(steps, w["w_rec"], lw=1)
    ax_rec.axhline(-1.0, color="k", ls="--", lw=0.8, label="figure: -1")
    ax_rec.set(xlabel="step", ylabel="w_rec", title="recurrent weight")
    ax_rec.legend()
    ax_err.plot(steps, np.abs(w["w_rec"] + 1.0), lw=0.8)
    ax_err.set(yscale="log", xlabel="step", ylabel="|w_rec + 1|", title="distance of w_rec from -1")
    for name, style in (("w_in", ":"), ("w_out", "--")):
        ax_scale.plot(steps, w[name], ls=style, lw=0.8, color="gray")
    ax_scale.plot(steps, w["w_in"] * w["w_out"], lw=1.2)
    ax_scale.set(
        yscale="symlog",
        xlabel="step",
        ylabel="weight",
        title="w_in * w_out (solid); w_in (dotted), w_out (dashed)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------ docs/answers.md, Q2

Q2_TEMPLATE = r"""
Code: `hw3_jax/recurrence.py` (`ScalarRNN`, `closed_form`); numbers: `results/recurrence.json`
and `results/recurrence.png`, regenerated by `<<command>>` (seed <<seed>>,
about <<cpu_s>> s of CPU time on this 2-core machine).

**The recurrence.** Figure 1 has integer inputs $x_t$, zero biases, a scalar hidden state
and weights $w_{in}=1$, $w_{rec}=-1$, $w_{out}=1000$:

$$h_0 = 0,\qquad h_t = w_{in}\,x_t + w_{rec}\,h_{t-1} = x_t - h_{t-1},\qquad y_t =
\sigma(w_{out}\,h_t) = \sigma(1000\,h_t).$$

**Unrolled.** $h_1 = x_1$, $h_2 = x_2 - x_1$, $h_3 = x_3 - x_2 + x_1$,
$h_4 = x_4 - x_3 + x_2 - x_1$, and in general (with any weights
$h_t = w_{in}\sum_{s=1}^{t} w_{rec}^{\,t-s}x_s$)

$$h_t = \sum_{s=1}^{t} (-1)^{t-s}\,x_s ,$$

by induction: $x_t - \sum_{s<t}(-1)^{t-1-s}x_s = x_t + \sum_{s<t}(-1)^{t-s}x_s$. The newest
input enters with $+$, and the signs alternate backwards in time.

**What the final output computes.** For even $T$, $(-1)^{T-t} = (-1)^t$, so with positions
counted from 1

$$h_T = \sum_{t\ \text{even}} x_t - \sum_{t\ \text{odd}} x_t =: D, \qquad y_T =
\sigma\Big(1000\Big(\sum_{t\ \text{even}} x_t - \sum_{t\ \text{odd}} x_t\Big)\Big).$$

Because the inputs are integers, $D$ is an integer, so either $|D| \ge 1$ and
$|1000\,D| \ge 1000$, or $D = 0$. $\sigma(-1000) = 1/(1+e^{1000}) \approx 10^{-434}$, far
below the smallest float32 (or even float64) number, so the weight 1000 makes the sigmoid a
hard step:

$$y_T = \begin{cases} 1 & \text{if } \sum_{t\ \text{even}} x_t > \sum_{t\ \text{odd}} x_t,\\
\tfrac12 & \text{if they are equal (a tie: } h_T = 0\text{, exactly } \sigma(0)),\\ 0 & \text{if }
\sum_{t\ \text{even}} x_t < \sum_{t\ \text{odd}} x_t. \end{cases}$$

So the network is a binary classifier answering "do the inputs at even positions sum to
more than those at odd positions?", with a tie sitting exactly on the 0.5 threshold (no
bias can move it off). For odd $T$, $(-1)^{T-t} = -(-1)^t$, so
$h_T = \sum_{t\ \text{odd}} x_t - \sum_{t\ \text{even}} x_t = -D$ and
$y_T = \sigma(-1000\,D) = 1 - \sigma(1000\,D)$: the opposite question. In general every
output $y_t$ asks whether the inputs at positions of the same parity as $t$ outweigh the
others in the prefix $x_1..x_t$. Only the product $w_{in}w_{out}$ reaches the output
($y_t = \sigma(w_{in}w_{out}\sum_s w_{rec}^{t-s}x_s)$); 1000 is just a steepness.

**Measured** (the scan is `jax.lax.scan` in float32; references are exact integer NumPy
arithmetic; inputs uniform integers in $[<<low>>, <<high>>]$):

- <<n_even>> sequences of even length (uniform over <<even_range>>, left-padded with zeros to
  <<pad_even>>
  so that one compiled scan serves all lengths; leading zeros keep $h$ at 0 and an even pad
keeps every position's parity, so nothing measured changes): the hidden state <<h_vs_exact>>, and
  $y_T$ <<y_vs_cf>> (<<y_vs_cf_detail>>; all outputs at all steps
  <<y_vs_f64>>). <<n_saturated>> final outputs are saturated (exactly 0.0
  or 1.0), <<n_ties>> are ties ($h_T = 0$), <<ties_value>>, and <<n_other>> are anything else.
- <<n_odd>> sequences of odd length (uniform over <<odd_range>>): $h_T = \sum_{\text{odd}} -
  \sum_{\text{even}}$ <<odd_h>> (<<odd_h_detail>>; against the even-$T$ formula it is off
by up to <<odd_h_off>> = $2|D|$), $y_T = 1 - $ `closed_form` <<odd_y>>, and of the <<n_decisive>>
  non-tie
  sequences **<<n_agree>>** get the even-$T$ closed form's answer<<flip_clause>>.
- Exactness has a range: float32 holds every integer only below $2^{24}$. For
  $x = <<x_in>>$ the scan gives $h_T = <<h_in>>$, $y_T = <<y_in>>$ (<<in_verdict>>); for
  $x = <<x_out>>$, $2^{24}+1$ rounds to $2^{24}$, the scan gives $h_T = <<h_out>>$ and
  $y_T = <<y_out>>$, while the true answer (and `closed_form`, which sums integers as integers)
  is <<y_out_true>>.
- Rescaling $(w_{in}, w_{out})$ to <<rescalings>> <<rescaled_effect>>.

**Learning the weights back.** A `ScalarRNN(learnable=True)` (weights drawn from
$U[-1,1)$) is trained from <<n_inits>> random initialisations at once (vmapped) with Adam (cosine
decay from $<<lr>>$, <<steps>> steps of <<batch>>) on the BCE of the final logit $w_{out}h_T$, over
<<n_train>> sequences of lengths <<train_lengths>> labelled 1 when the even positions outweigh the
odd ones. Ties (<<n_train_ties>> drawn) are dropped from training and from the accuracies: with no
bias
the exact network outputs exactly 0.5 on them, so a 0/1 label could only pull $w_{rec}$ off
$-1$. <<runs_find>> $w_{rec} \in [<<w_rec_min>>, <<w_rec_max>>]$ (max $|w_{rec}+1| =
<<w_rec_err>>$), and $w_{in}w_{out} \in [<<prod_min>>, <<prod_max>>]$, <<prod_sign>>, while
$w_{in}$ alone
ranges from $<<w_in_min>>$ to $<<w_in_max>>$ and $w_{out}$ <<w_out_sign>>. On
<<n_eval>> fresh sequences per length (non-ties), <<accuracy_sentence>>; the figure's weights are
<<figure_acc>>. At odd lengths <<odd_lengths>> the learned runs, like the figure's weights, are
<<odd_acc>> accurate on this label<<odd_clause>>.

What is identifiable: only $w_{rec}$ and the sign of $w_{in}w_{out}$. $w_{rec} = -1$ is the
only value for which the sign of $h_T$ is the label at every length (any other value weights
$x_{T-k}$ by $|w_{rec}|^k$ instead of 1); $w_{in}$ and $w_{out}$ enter only through their
product, so $(c\,w_{in}, w_{out}/c)$ is the same network for any $c \ne 0$; and the size of
the product is only a confidence: with ties excluded the classes are separated by a margin
$|D| \ge 1$, so the BCE keeps falling as the product grows and has no finite optimum (the
figure's 1000 is one point on that ray, and these runs stop near <<prod_round>>). The small,
consistent overshoot $|w_{rec}| > 1$ is a finite-product effect: at a fixed product, the
training loss over a grid of $w_{rec}$ is lowest at <<grid_argmin>>, moving to $-1$ as the product
grows. It costs accuracy only on long
sequences, where the oldest input is weighted $|w_{rec}|^{T-1} \approx <<oldest_weight>>$ at $T =
<<t_long>>$.
"""


def _int_range(text: str) -> tuple[int, int]:
    """'uniform over even 2..128 (...)' -> (2, 128)."""
    import re

    lo, hi = re.search(r"(\d+)\.\.(\d+)", text).groups()
    return int(lo), int(hi)


def _num(x: float) -> str:
    """A float as the shortest plain number: 0.0 -> '0', -1.0 -> '-1', 0.5 -> '0.5'."""
    return f"{x:g}"


def _sci(x: float) -> str:
    """4.13e-4 -> '4.1\\times 10^{-4}' (LaTeX)."""
    if x == 0:
        return "0"
    if 0.01 <= abs(x) < 100:
        return f"{x:.3g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}\\times 10^{{{int(exp)}}}"


def _big(x: int) -> str:
    """An integer near 2**24 in LaTeX: 16777217 -> '2^{24}+1'."""
    d = x - 2**24
    return "2^{24}" if d == 0 else f"2^{{24}}{d:+d}"


def q2_markdown(r: dict) -> str:
    """The body of docs/answers.md's Q2 section, every number from `recurrence.json` (`r`).

    The algebra is fixed text; every measured number, and every sentence whose truth depends
    on one (all runs near -1, all accurate, ...), comes from `r`."""
    check, t = r["scan_vs_closed_form"], r["training"]
    e, o = check["even"], check["odd"]
    lo, hi = (int(s) for s in check["inputs"].split("[")[1].rstrip("]").split(","))
    v: dict = {"command": r["command"], "seed": r["seed"], "cpu_s": f"{r['cpu_time_s']:.0f}",
               "low": lo, "high": hi}

    # (a) even lengths
    even_lo, even_hi = _int_range(e["lengths"])
    v.update(n_even=f"{e['n_sequences']:,}", even_range=f"{even_lo}..{even_hi}", pad_even=even_hi)
    dh = e["max_abs_diff_h_all_steps_vs_exact"]
    v["h_vs_exact"] = ("equals the alternating sum at every step exactly (max abs difference 0)"
                       if dh == 0 else
                       f"differs from the alternating sum by up to {_num(dh)} (max abs difference)")
    dy, n_eq = e["max_abs_diff_y_T_vs_closed_form"], e["n_y_T_equal_to_closed_form"]
    v["y_vs_cf"] = (f"equals `closed_form` bit for bit on all {n_eq:,}"
                    if n_eq == e["n_sequences"] else
                    f"equals `closed_form` bit for bit on {n_eq:,} of {e['n_sequences']:,}")
    v["y_vs_cf_detail"] = f"max abs difference {_num(dy)}"
    d64 = e["max_abs_diff_y_all_steps_vs_float64"]
    v["y_vs_f64"] = ("also equal a float64 reference exactly" if d64 == 0 else
                     f"are within {_num(d64)} of a float64 reference")
    ties = e["y_T_on_ties"]
    v.update(n_saturated=f"{e['n_saturated']:,}", n_ties=f"{e['n_ties']:,}",
             n_other=f"{e['n_other_outputs']:,}",
             ties_value=("every one of them exactly 0.5" if ties == [0.5] else
                         "with outputs " + ", ".join(_num(x) for x in ties)))

    # (a) odd lengths
    odd_lo, odd_hi = _int_range(o["lengths"])
    v.update(n_odd=f"{o['n_sequences']:,}", odd_range=f"{odd_lo}..{odd_hi}")
    dho = o["max_abs_diff_h_T_vs_odd_minus_even"]
    v["odd_h"] = "exactly" if dho == 0 else "approximately"
    v["odd_h_detail"] = f"max abs difference {_num(dho)}"
    v["odd_h_off"] = _num(o["max_abs_diff_h_T_vs_even_minus_odd"])
    dyo = o["max_abs_diff_y_T_vs_1_minus_closed_form"]
    v["odd_y"] = "exactly" if dyo == 0 else f"to within {_num(dyo)}"
    v["n_decisive"] = f"{o['n_decisive']:,}"
    v["n_agree"] = f"{o['n_decisive_agreeing_with_closed_form']:,}"
    v["flip_clause"] = (": the sign flips every time"
                        if o["n_decisive_agreeing_with_closed_form"] == 0 else "")

    # (a) float32 limit
    lim_in, lim_out = check["float32_limit"]["inside_2^24"], check["float32_limit"]["beyond_2^24"]
    v["x_in"] = "(" + r",\ ".join(_big(x) for x in lim_in["x"]) + ")"
    v["x_out"] = "(" + r",\ ".join(_big(x) for x in lim_out["x"]) + ")"
    v.update(h_in=_num(lim_in["scan_h_T"]), y_in=_num(lim_in["scan_y_T"]),
             h_out=_num(lim_out["scan_h_T"]), y_out=_num(lim_out["scan_y_T"]),
             y_out_true=_num(lim_out["closed_form_y"]))
    v["in_verdict"] = ("correct" if lim_in["scan_y_T"] == lim_in["closed_form_y"]
                       else f"`closed_form`: {_num(lim_in['closed_form_y'])}")

    # (a) rescaling w_in, w_out
    resc = check["rescaled_w_in_w_out_max_abs_diff_y_all_steps"]
    pairs = []
    for key in resc:
        w_in, w_out = (kv.split("=")[1] for kv in key.split(","))
        pairs.append(f"$({w_in}, {w_out})$")
    v["rescalings"] = (", ".join(pairs[:-1]) + " or " + pairs[-1]) if len(pairs) > 1 else pairs[0]
    worst = max(resc.values())
    v["rescaled_effect"] = ("changes no output at any step (max abs difference 0)" if worst == 0
                            else f"changes the outputs by at most {_num(worst)}")

    # (b) training
    s, fw = t["setup"], t["final_weights"]
    w_in, w_rec, w_out = (np.asarray(fw[k], np.float64) for k in ("w_in", "w_rec", "w_out"))
    prod = np.asarray(fw["w_in_times_w_out"], np.float64)
    lr = s["optimizer"].split("lr=")[1].split()[0]
    n = s["n_inits"]
    err = t["max_abs_w_rec_plus_1"]
    v.update(n_inits=n, lr=lr, steps=f"{s['steps']:,}", batch=s["batch_size"],
             n_train=f"{s['n_train']:,}", train_lengths=", ".join(map(str, s["train_lengths"])),
             n_train_ties=f"{s['n_train_ties_dropped']:,}",
             w_rec_min=f"{w_rec.min():.5f}", w_rec_max=f"{w_rec.max():.5f}", w_rec_err=_sci(err),
             prod_min=f"{prod.min():.1f}", prod_max=f"{prod.max():.1f}",
             w_in_min=f"{w_in.min():.2f}", w_in_max=f"{w_in.max():.2f}")
    v["runs_find"] = f"All {n} runs find" if err < 0.01 else f"The {n} runs end with"
    v["prod_sign"] = ("positive in every run" if t["all_products_positive"] else
                      f"positive in {(prod > 0).sum()} of {n} runs")
    same_sign = bool(np.all(np.sign(w_out) == np.sign(w_in)))
    both = bool((w_out > 0).any() and (w_out < 0).any())
    v["w_out_sign"] = (("takes either sign" if both else "keeps one sign")
                        + (" (the same as $w_{in}$'s)" if same_sign else ""))
    v["prod_round"] = f"{prod.min():.0f}-{prod.max():.0f}"

    acc = t["accuracy"]
    even_groups = {**acc["seen_lengths"], **acc["unseen_lengths"]}
    n_eval = {g["n_decisive"] + g["n_ties"] for g in even_groups.values()}
    v["n_eval"] = "/".join(f"{x:,}" for x in sorted(n_eval))
    perfect_seen = all(min(g["learned_per_init"]) == 1.0 for g in acc["seen_lengths"].values())
    unseen_perfect = [k for k, g in acc["unseen_lengths"].items()
                      if min(g["learned_per_init"]) == 1.0]
    parts = []
    if perfect_seen:
        parts.append("at the training lengths")
    if unseen_perfect:
        parts.append(f"at the unseen lengths {and_list(unseen_perfect)}")
    imperfect = {k: g for k, g in even_groups.items() if min(g["learned_per_init"]) < 1.0}
    clauses = [f"every run is 100% accurate {' and '.join(parts)}"] if parts else []

    def _p(a: float) -> str:
        return f"{100 * a:.2f}".rstrip("0").rstrip(".")

    if len(imperfect) <= 2:
        for k, g in imperfect.items():
            lo_acc, hi_acc = min(g["learned_per_init"]), max(g["learned_per_init"])
            errors = round((1.0 - lo_acc) * g["n_decisive"])
            clauses.append(f"{_p(lo_acc)}-{_p(hi_acc)}% at length {k} (at most {errors:,} "
                           f"errors of {g['n_decisive']:,})")
    else:
        accs = [a for g in imperfect.values() for a in g["learned_per_init"]]
        clauses.append(f"at lengths {and_list(list(imperfect))} the runs range from "
                       f"{_p(min(accs))}% to {_p(max(accs))}%")
    sentence = ", and ".join(clauses)
    v["accuracy_sentence"] = sentence
    fig = [g["figure_weights"] for g in even_groups.values()]
    v["figure_acc"] = ("100% everywhere" if min(fig) == 1.0 else
                       f"{100 * min(fig):.2f}-{100 * max(fig):.2f}% accurate")
    odd = acc["odd_lengths"]
    v["odd_lengths"] = and_list(list(odd))
    odd_all = [a for g in odd.values() for a in g["learned_per_init"] + [g["figure_weights"]]]
    v["odd_acc"] = ("0%" if max(odd_all) == 0
                    else f"{100 * min(odd_all):.1f}-{100 * max(odd_all):.1f}%")
    v["odd_clause"] = (": they\ngive the opposite answer on every non-tie sequence, as the "
                       "algebra above says" if max(odd_all) == 0 else "")
    grid = t["train_loss_argmin_w_rec_by_product"]["argmin"]
    items = [f"${_num(w)}$ ({'product ' if i == 0 else ''}{p})"
             for i, (p, w) in enumerate(grid.items())]
    v["grid_argmin"] = (", ".join(items[:-1]) + " and " + items[-1]) if len(items) > 1 else items[0]
    t_long = max(int(k) for k in acc["unseen_lengths"])
    v["t_long"] = t_long
    v["oldest_weight"] = f"{np.abs(w_rec).max() ** (t_long - 1):.2f}"

    return reflow(fill(Q2_TEMPLATE, v, "Q2 template"))


def q2_from_results(results_dir: str | pathlib.Path = "results") -> str:
    """`q2_markdown` of `results_dir/recurrence.json`."""
    path = pathlib.Path(results_dir) / "recurrence.json"
    return q2_markdown(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.recurrence", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("results"),
        help="output folder (default: results/)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default 2000; 200 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke test (seconds)"
    )
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else (200 if args.quick else 2000)
    if steps < 1:
        parser.error(f"--steps must be at least 1, got {steps}")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        sys.exit(
            f"error: cannot create output folder {args.out}: {e.strerror}; "
            "pass a writable --out DIR"
        )

    start, cpu_start = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(args.seed)
    check = check_scan(rng, n=512 if args.quick else 8192)
    training, history = train(
        args.seed,
        steps,
        n_inits=4 if args.quick else 8,
        n_per_length=256 if args.quick else 4096,
        batch_size=256,
        learning_rate=0.05,
    )
    plot(history, args.out / "recurrence.png")
    result = {
        "command": "python -m experiments.recurrence"
        + (f" --seed {args.seed}" if args.seed else "")
        + (" --quick" if args.quick else "")
        + (f" --steps {args.steps}" if args.steps is not None else ""),
        "seed": args.seed,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "scan_vs_closed_form": check,
        "training": training,
        "wall_time_s": round(time.perf_counter() - start, 2),
        # CPU seconds of this process: the wall time above also counts other jobs' load.
        "cpu_time_s": round(time.process_time() - cpu_start, 2),
    }
    (args.out / "recurrence.json").write_text(json.dumps(result, indent=2) + "\n")

    e, o, t = check["even"], check["odd"], training
    print(
        f"(a) even T: {e['n_sequences']} sequences, max|h - alternating sum| = "
        f"{e['max_abs_diff_h_all_steps_vs_exact']:g}, max|y_T - closed form| = "
        f"{e['max_abs_diff_y_T_vs_closed_form']:g}; {e['n_saturated']} saturated, "
        f"{e['n_ties']} ties (y_T = {e['y_T_on_ties']}), {e['n_other_outputs']} other"
    )
    print(
        f"    odd T: {o['n_sequences']} sequences, max|h_T - (odd - even)| = "
        f"{o['max_abs_diff_h_T_vs_odd_minus_even']:g}, max|y_T - (1 - closed form)| = "
        f"{o['max_abs_diff_y_T_vs_1_minus_closed_form']:g}, decisive agreeing with the "
        f"closed form: {o['n_decisive_agreeing_with_closed_form']}"
    )
    print(
        f"(b) w_rec = {np.round(t['final_weights']['w_rec'], 4).tolist()} "
        f"(max |w_rec + 1| = {t['max_abs_w_rec_plus_1']:.2e}); w_in*w_out = "
        f"{np.round(t['final_weights']['w_in_times_w_out'], 1).tolist()}"
    )
    print(
        f"    min held-out accuracy over inits and even lengths "
        f"{list(TRAIN_LENGTHS) + list(UNSEEN_LENGTHS)}: {t['min_accuracy_even_lengths']:.4f}"
    )
    print(
        "    training-loss argmin over w_rec at fixed w_in*w_out: "
        f"{t['train_loss_argmin_w_rec_by_product']['argmin']}"
    )
    print(
        f"wrote {args.out / 'recurrence.json'} and {args.out / 'recurrence.png'} "
        f"in {result['wall_time_s']:.1f} s ({result['cpu_time_s']:.1f} s CPU)"
    )
    return result


if __name__ == "__main__":
    main()
