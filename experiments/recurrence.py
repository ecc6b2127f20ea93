"""Q2 experiment: the scalar RNN against its closed form, and learning its weights back.

    python -m experiments.recurrence [--config configs/recurrence.py[:quick]] [--quick]
        [--out results/] [--seed 0] [--steps N] [--config.FIELD=VALUE]

(a) Runs the figure's RNN (w_in=1, w_rec=-1, w_out=1000) with `jax.lax.scan` on thousands of
    random integer sequences and compares it with exact integer references: every hidden
    state against the prefix alternating sum, the final output against `closed_form`, with
    counts of saturated (y_T exactly 0 or 1) and tie (h_T = 0, y_T = 0.5) cases. Then the
    same for odd lengths, where h_T = (sum odd) - (sum even): the answer flips. Also the
    float32 limit (2**24) and the w_in/w_out rescaling that leaves every output unchanged.
(b) Trains a learnable ScalarRNN with Adam from several random initialisations at once
    (vmapped) to label sequences by "the even positions outweigh the odd ones", and reports
    the recovered weights and held-out accuracy, also at lengths never seen in training.

Settings: `configs/recurrence.py`. Writes OUT/recurrence.json and OUT/recurrence.png (loss
and weights over training).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from experiments import cli
from experiments.recurrence_plots import plot
from experiments.recurrence_sequences import (
    HIGH,
    LOW,
    even_minus_odd_np,
    labelled_sequences,
    prefix_alternating_sums,
    random_length_ints,
)
from hw3_jax.recurrence import WEIGHT_NAMES, ScalarRNN, closed_form
from hw3_jax.timing import machine_info
from hw3_jax.train.workdir import Workdir

PROG = "python -m experiments.recurrence"
DEFAULT_CONFIG = "configs.recurrence"
SHORTCUTS = {"--out": cli.Shortcut("out", "output folder"),
             "--seed": cli.Shortcut("seed", type=int),
             "--steps": cli.Shortcut("train.steps", "training steps (the quick variant: 200)",
                                     type=int)}
CHUNK_STEPS = 50  # training steps per jitted call: fewer host round trips (speed only)


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --------------------------------------------------------------- (a) the scan against exact sums


def _check_even(run: Callable, cf: Callable, rng: np.random.Generator, n: int,
                max_length: int) -> dict:
    """Even lengths up to `max_length`: all hidden states, all outputs, and the final output
    vs the closed form."""
    x, lengths = random_length_ints(rng, n, max_length)
    h, y = jax.device_get(run(x))
    h_ref = prefix_alternating_sums(x)
    with np.errstate(over="ignore"):  # exp(1000) = inf in float64 too: the output is 0.0
        y_ref = 1.0 / (1.0 + np.exp(-1000.0 * h_ref.astype(np.float64)))
    y_cf = np.asarray(cf(x))
    d = even_minus_odd_np(x)
    tie = d == 0
    saturated = (y[:, -1] == 0.0) | (y[:, -1] == 1.0)
    return {
        "n_sequences": n,
        "lengths": f"uniform over even 2..{max_length} (left-padded with zeros)",
        "length_range": [2, max_length],
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


def _check_odd(cf: Callable, x: np.ndarray, h: np.ndarray, y: np.ndarray) -> dict:
    """Odd lengths (x [n, T], T odd, and the scan's h, y): h_T = sum odd - sum even, so the
    final answer is the opposite one."""
    d = even_minus_odd_np(x)
    y_cf = np.asarray(cf(x))
    decisive = d != 0
    return {
        "n_sequences": len(x),
        "lengths": f"uniform over odd 1..{x.shape[1]} (left-padded with zeros)",
        "length_range": [1, x.shape[1]],
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


def _float32_limit(run: Callable, cf: Callable) -> dict:
    """float32 holds every integer only up to 2**24: beyond it 2**24 + 1 rounds to 2**24."""
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
    return limit


def check_scan(rng: np.random.Generator, cfg: ml_collections.ConfigDict) -> dict:
    """Part (a): the scan against exact references, even lengths up to `cfg.max_length` and
    odd ones below it (`cfg.n_sequences` of each; cfg: the config's `check` section)."""
    model = ScalarRNN()
    run = jax.jit(lambda x: model.apply({}, x))
    cf = jax.jit(closed_form)
    even = _check_even(run, cf, rng, cfg.n_sequences, cfg.max_length)
    x, _ = random_length_ints(rng, cfg.n_sequences, cfg.max_length - 1)
    h, y = jax.device_get(run(x))
    # Only w_in * w_out reaches the output: scaling h by c and w_out by 1/c changes nothing.
    rescaled_run = jax.jit(lambda w_in, w_out, x: ScalarRNN(w_in=w_in, w_out=w_out).apply({}, x))
    return {
        "inputs": f"integers uniform in [{LOW}, {HIGH}]",
        "input_range": [LOW, HIGH],
        "even": even,
        "odd": _check_odd(cf, x, h, y),
        "float32_limit": _float32_limit(run, cf),
        "rescaled_w_in_w_out_max_abs_diff_y_all_steps": {
            f"w_in={w_in:g},w_out={w_out:g}": _max_abs(rescaled_run(w_in, w_out, x)[1], y)
            for w_in, w_out in ((4.0, 250.0), (-1.0, -1000.0), (0.5, 2000.0))
        },
    }


# ------------------------------------------------------------------- (b) learning the weights back


def bce_loss(model: ScalarRNN, params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean sigmoid BCE of the final logit w_out * h_T; x [B, T], y [B] in {0, 1}."""
    _, logits = model.apply({"params": params}, x, method=ScalarRNN.hidden_and_logits)
    return optax.sigmoid_binary_cross_entropy(logits[:, -1], y).mean()


def training_set(seed: int, lengths: tuple[int, ...],
                 n_per_length: int) -> tuple[jax.Array, jax.Array, int]:
    """(x [N, max(lengths)] int32, labels [N] float32, number of ties dropped)."""
    rng = np.random.default_rng(seed + 1)
    x, _, d = labelled_sequences(rng, lengths, n_per_length, pad_to=max(lengths))
    # Ties (d == 0) are dropped: with no bias the exact network outputs 0.5 on them, so any
    # 0/1 label would only pull w_rec away from -1 to break them.
    train_x = jnp.asarray(x[d != 0])
    train_y = jnp.asarray((d[d != 0] > 0).astype(np.float32))
    return train_x, train_y, int((d == 0).sum())


def fit(model: ScalarRNN, params: dict, train_x: jax.Array, train_y: jax.Array, seed: int,
        steps: int, batch_size: int, learning_rate: float) -> tuple[dict, dict]:
    """Adam from every init at once: (final params, history {"loss": [steps][inits], name:
    [steps][inits] for each weight})."""
    # Cosine decay from `learning_rate` to 0: Adam's steps stay near lr in size however small
    # the gradient, so a constant rate leaves w_rec jittering around its optimum.
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    @jax.jit
    def run_steps(carry, keys, train_x, train_y):
        """len(keys) Adam steps of every init at once; carry = (params, opt_state), vmapped
        over inits: (carry, (loss [steps, inits], params per step))."""

        def step(carry, key):
            params, opt_state = carry
            idx = jax.random.randint(key, (batch_size,), 0, train_x.shape[0])
            xb, yb = train_x[idx], train_y[idx]  # one minibatch shared by every init

            def one(p, s):
                loss, grads = jax.value_and_grad(lambda p: bce_loss(model, p, xb, yb))(p)
                updates, s = opt.update(grads, s, p)
                return optax.apply_updates(p, updates), s, loss

            params, opt_state, loss = jax.vmap(one)(params, opt_state)
            return (params, opt_state), (loss, params)

        return jax.lax.scan(step, carry, keys)

    keys = jax.random.split(jax.random.key(seed + 2), steps)
    carry, chunks = (params, jax.vmap(opt.init)(params)), []
    with tqdm(total=steps, desc="train ScalarRNN", unit="step", leave=False) as bar:
        for start in range(0, steps, CHUNK_STEPS):
            carry, chunk = run_steps(carry, keys[start:start + CHUNK_STEPS], train_x, train_y)
            chunks.append(jax.device_get(chunk))
            bar.update(len(chunk[0]))
    loss, weights = jax.tree.map(lambda *c: np.concatenate(c).tolist(), *chunks)
    return jax.device_get(carry[0]), {"loss": loss, **weights}


def held_out_accuracy(model: ScalarRNN, final: dict, seed: int,
                      train_lengths: tuple[int, ...], cfg: ml_collections.ConfigDict) -> dict:
    """{group: {length: accuracy on decisive sequences per init and of the figure's weights}}
    on `cfg.n_per_length` new draws per length at the training lengths, the unseen even
    lengths and the odd lengths (cfg: the config's `eval` section)."""
    # The figure's weights (ScalarRNN's defaults) ride along as one more row of weights; even
    # lengths share one padded shape (the longest unseen length), odd ones another: two
    # compilations in all.
    rows = {k: np.append(np.asarray(final[k]), getattr(ScalarRNN, k)) for k in WEIGHT_NAMES}
    final_outputs = jax.jit(jax.vmap(lambda p, x: model.apply({"params": p}, x)[1][:, -1],
                                     in_axes=(0, None)))
    eval_rng = np.random.default_rng(seed + 3)
    accuracy = {}
    for group, lengths, pad_to in (
        ("seen_lengths", train_lengths, max(cfg.unseen_lengths)),
        ("unseen_lengths", cfg.unseen_lengths, max(cfg.unseen_lengths)),
        ("odd_lengths", cfg.odd_lengths, max(cfg.odd_lengths)),
    ):
        x, length_of, d = labelled_sequences(eval_rng, lengths, cfg.n_per_length, pad_to=pad_to)
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
    return accuracy


def loss_argmin_w_rec(model: ScalarRNN, train_x: jax.Array, train_y: jax.Array) -> dict:
    """{product: the w_rec of lowest training loss on a grid around -1} at fixed w_in * w_out.

    On separable data the product only sets the confidence; at a finite product the BCE
    minimiser in w_rec need not sit exactly at -1."""
    grid = -1.0 + np.linspace(-5e-3, 5e-3, 101)

    def loss(w_rec, prod):
        params = {"w_in": jnp.float32(1.0), "w_rec": w_rec, "w_out": prod}
        return bce_loss(model, params, train_x, train_y)

    grid_loss = jax.jit(jax.vmap(jax.vmap(loss, in_axes=(0, None)), in_axes=(None, 0)))
    products = np.array([2.0, 6.0, 20.0], np.float32)
    losses_on_grid = np.asarray(grid_loss(grid.astype(np.float32), products))
    return {
        f"{p:g}": round(float(grid[np.argmin(row)]), 5)
        for p, row in zip(products, losses_on_grid, strict=True)
    }


def train(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """Part (b): Adam on BCE of the final logit, `config.train.n_inits` random initialisations
    vmapped, then held out (`config.eval`). Returns (the results, the per-step history)."""
    seed, cfg = config.seed, config.train
    train_x, train_y, n_train_ties = training_set(seed, cfg.lengths, cfg.n_per_length)
    model = ScalarRNN(learnable=True)
    init_keys = jax.random.split(jax.random.key(seed), cfg.n_inits)
    params = jax.vmap(lambda k: model.init(k, train_x[:1])["params"])(init_keys)
    init_params = jax.device_get(params)
    final, history = fit(model, params, train_x, train_y, seed, cfg.steps, cfg.batch_size,
                         cfg.learning_rate)
    accuracy = held_out_accuracy(model, final, seed, cfg.lengths, config.eval)
    w_in, w_rec, w_out = (np.asarray(final[k], np.float64) for k in WEIGHT_NAMES)
    even_accuracies = [a for g in ("seen_lengths", "unseen_lengths")
                       for v in accuracy[g].values() for a in v["learned_per_init"]]
    result = {
        "setup": {
            "task": "label 1 if the sum of x at even positions > the sum at odd positions "
            "(positions from 1)",
            "inputs": f"integers uniform in [{LOW}, {HIGH}]",
            "ties": "dropped from training and from the accuracies (with no bias the exact "
            "network outputs exactly 0.5 on them)",
            "train_lengths": list(cfg.lengths),
            "n_train": int(train_x.shape[0]),
            "n_train_ties_dropped": n_train_ties,
            "padding": f"left, zeros, to length {max(cfg.lengths)} (exact: h stays 0 on "
            "leading zeros)",
            "loss": "sigmoid BCE on the final logit w_out * h_T",
            "optimizer": f"adam, cosine decay from lr={cfg.learning_rate} to 0",
            "learning_rate": cfg.learning_rate,
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "n_inits": cfg.n_inits,
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
            "argmin": loss_argmin_w_rec(model, train_x, train_y),
        },
    }
    return result, history


# ---------------------------------------------------------------------------------------- run


def run(config: ml_collections.ConfigDict, command: str) -> dict:
    """Parts (a) and (b); writes OUT/recurrence.json, then OUT/recurrence.png, and returns
    what the JSON holds. `command` (what regenerates it) is recorded in it."""
    # One root for every output, `~` expanded (as given otherwise, for the print).
    out = pathlib.Path(config.out).expanduser()
    folder = Workdir(out)
    folder.check(flag="--out")  # a WorkdirError before any work if it cannot be written
    start, cpu_start = time.perf_counter(), time.process_time()
    scan_check = check_scan(np.random.default_rng(config.seed), config.check)
    training, history = train(config)
    result = {
        "command": command,
        "seed": config.seed,
        "machine": machine_info(),
        "scan_vs_closed_form": scan_check,
        "training": training,
        "wall_time_s": round(time.perf_counter() - start, 2),
        # CPU seconds of this process: the wall time above also counts other jobs' load.
        "cpu_time_s": round(time.process_time() - cpu_start, 2),
    }
    folder.write_json("recurrence.json", result)  # before the plot: a plot failure keeps it
    plot(history, out / "recurrence.png")
    print(f"wrote {out / 'recurrence.json'} and {out / 'recurrence.png'} "
          f"in {result['wall_time_s']:.1f} s ({result['cpu_time_s']:.1f} s CPU)")
    even = scan_check["even"]
    print(f"(a) max |y_T - closed form| over {even['n_sequences']} even-length "
          f"sequences: {even['max_abs_diff_y_T_vs_closed_form']:g}")
    print(f"(b) max |w_rec + 1| = {training['max_abs_w_rec_plus_1']:.2e}; min held-out accuracy "
          f"at even lengths {training['min_accuracy_even_lengths']:.4f}")
    return result


# ----------------------------------------------------------------------------------------- flags


def parse_args(argv: list[str] | None = None) -> tuple[ml_collections.ConfigDict, str]:
    """Command line -> (the config, the command that regenerates the run)."""
    config, command = cli.parse_flags(
        PROG, __doc__.split("\n\n")[0], argv, default_config=DEFAULT_CONFIG,
        shortcuts=SHORTCUTS, quick_help="the config's quick variant: small sizes, for a smoke "
        "test (seconds), written to runs/recurrence_quick/", skip=("out",))
    check(config)
    return config, command


def check(config: ml_collections.ConfigDict) -> None:
    """A value no run can use is a UserError naming its flag (any field can be set to None,
    `--config.train.steps=None`, so each is checked for its type too)."""
    cli.require(isinstance(config.out, str) and config.out, "--out", "a folder", config.out)
    cli.check_seed(config.seed)  # JAX's keys take 32 bits of it
    counts = {"--steps": config.train.steps,
              "--config.check.n_sequences": config.check.n_sequences,
              "--config.train.n_inits": config.train.n_inits,
              "--config.train.n_per_length": config.train.n_per_length,
              "--config.train.batch_size": config.train.batch_size,
              "--config.eval.n_per_length": config.eval.n_per_length}
    for flag, value in counts.items():
        cli.require(cli.whole(value, 1), flag, "at least 1 (a whole number)", value)
    cli.require(cli.positive(config.train.learning_rate), "--config.train.learning_rate",
                "positive and finite", config.train.learning_rate)
    # Sequences of one group are left-padded to one length by an even number of zeros.
    lengths = {"check.max_length": (config.check.max_length,),
               "train.lengths": config.train.lengths,
               "eval.unseen_lengths": config.eval.unseen_lengths,
               "eval.odd_lengths": config.eval.odd_lengths}
    for name, values in lengths.items():
        parity = "odd" if name == "eval.odd_lengths" else "even"
        if not values or any(not cli.whole(t, 1) or t % 2 != (parity == "odd")
                             for t in values):
            raise cli.UserError(f"--config.{name} must be {parity} lengths >= 1, got "
                                f"{values[0] if name == 'check.max_length' else values!r}")
    if max(config.train.lengths) > max(config.eval.unseen_lengths):
        raise cli.UserError("--config.eval.unseen_lengths must reach the longest of "
                            "--config.train.lengths (the seen lengths are padded to it)")


def main(argv: list[str] | None = None) -> int:
    """Exit status 0; 2 after one line on stderr for bad input or an output folder that cannot
    be written."""
    return cli.run_main(lambda: run(*parse_args(argv)) and 0)


if __name__ == "__main__":
    cli.exit_with(main())
