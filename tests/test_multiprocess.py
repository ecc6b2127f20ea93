"""Data-parallel training over several processes (JAX's multi-controller runtime) on CPU.

The slow tests start real processes of `python -m experiments.sentiment` on 127.0.0.1: two
processes with one CPU device each must train what one process with eight devices trains
(the same global batches, so the same losses and parameters); a process whose peer dies
must stop with an error instead of waiting for it forever, and the run then resumes; a
checkpoint written on one layout resumes on another.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import sentiment
from hw3_jax.train import sharding
from hw3_jax.train.checkpoints import load_best

ROOT = Path(__file__).resolve().parents[1]
# The smoke variant, one epoch (7 steps of 32: an epoch end, a best checkpoint, a test
# evaluation).
SMOKE = ["--config", "configs/sentiment.py:smoke", "--epochs", "1"]
HEARTBEAT_S = 10  # a dead peer is noticed within this (the collectives usually fail sooner)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    """The environment of one subprocess: CPU with `devices` devices, no launch variables."""
    env = {k: v for k, v in os.environ.items() if k not in sharding.LAUNCH_ENV.values()}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _start(args: list[str], devices: int, log: Path) -> subprocess.Popen:
    """`python -m experiments.sentiment ARGS`: stdout piped, stderr to `log` (a pipe nobody
    reads could fill up and stall the process)."""
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "experiments.sentiment", *args],
                                cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                                stderr=stderr, text=True)


def _single(workdir: Path, extra: list[str], devices: int) -> subprocess.Popen:
    """One process of `devices` CPU devices (stderr in WORKDIR.pref.log, as `_finish` reads)."""
    return _start([*extra, "--workdir", str(workdir)], devices,
                  workdir.with_name(f"{workdir.name}.pref.log"))


def _processes(workdir: Path, extra: list[str], count: int = 2) -> list[subprocess.Popen]:
    """`count` processes of one run, one CPU device each (stderr in WORKDIR.pI.log)."""
    launch = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", str(count),
              "--heartbeat-timeout", str(HEARTBEAT_S)]
    return [_start([*extra, "--workdir", str(workdir), *launch, "--process-id", str(i)], 1,
                   workdir.with_name(f"{workdir.name}.p{i}.log")) for i in range(count)]


def _finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) once `proc` ends; fails the test after `timeout` s."""
    log = Path(proc.args[proc.args.index("--workdir") + 1])
    log = log.with_name(f"{log.name}.p{_process_id(proc)}.log")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"process still running after {timeout} s:\n{log.read_text()[-3000:]}")
    return proc.returncode, out, log.read_text()


@contextlib.contextmanager
def _reaped(procs: list[subprocess.Popen], limit_s: float = 900):
    """Kill every process of `procs` still running at the end, or after `limit_s` (a test
    blocked reading a silent process's output then fails instead of hanging). SIGKILL: a
    process of a multi-process run takes SIGTERM as a preemption notice, which only a
    training step acts on."""
    timer = threading.Timer(limit_s, lambda: [p.kill() for p in procs if p.poll() is None])
    timer.start()
    try:
        yield procs
    finally:
        timer.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _process_id(proc: subprocess.Popen) -> str:
    return proc.args[proc.args.index("--process-id") + 1] if "--process-id" in proc.args \
        else "ref"


# --------------------------------------------------------------------------- the launch


def test_launch_from_flags_and_environment(monkeypatch):
    for name in sharding.LAUNCH_ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert sharding.launch_from() is None
    assert sharding.launch_from("[::1]:80", 2, 0).coordinator_address == "[::1]:80"
    for bad, match in [(("host", 2, 0), "HOST:PORT"), (("h:0", 2, 0), "HOST:PORT"),
                       ((":12", 2, 0), "HOST:PORT"), (("h:1", 0, 0), "JAX_NUM_PROCESSES"),
                       (("h:1", 2, 2), r"JAX_PROCESS_ID must be a whole number from 0 to 1"),
                       (("h:1", "two", 0), "JAX_NUM_PROCESSES"),
                       (("h:1", 2, None), "missing JAX_PROCESS_ID"),
                       ((None, 2, 0), "missing JAX_COORDINATOR_ADDRESS")]:
        with pytest.raises(ValueError, match=match):
            sharding.launch_from(*bad)
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
           "JAX_PROCESS_ID": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert sharding.launch_from() == sharding.Launch("10.0.0.1:1234", 4, 3)
    # An argument wins over its variable.
    assert sharding.launch_from(process_id=1).process_id == 1


@pytest.mark.parametrize("argv, env, message", [
    (["--coordinator", "localhost"], {}, "--coordinator (or $JAX_COORDINATOR_ADDRESS) must be "
     "HOST:PORT"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"], {},
     "--process-id (or $JAX_PROCESS_ID) must be a whole number from 0 to 1, got '2'"),
    (["--num-processes", "2"], {}, "missing --coordinator (or $JAX_COORDINATOR_ADDRESS), "
     "--process-id (or $JAX_PROCESS_ID)"),
    ([], {"JAX_NUM_PROCESSES": "x", "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"},
     "--num-processes (or $JAX_NUM_PROCESSES) must be a whole number 1 or more, got 'x'"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0",
      "--heartbeat-timeout", "0"], {}, "--heartbeat-timeout must be 1 or more seconds"),
])
def test_bad_launch_is_one_line(argv, env, message, monkeypatch, capsys, tmp_path):
    for k in sharding.LAUNCH_ENV.values():
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = sentiment.main([*SMOKE, "--workdir", str(tmp_path / "run"), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0], lines
    assert not (tmp_path / "run").exists()  # rejected before any work


def test_single_process_helpers_do_nothing():
    assert not sharding.is_multiprocess()
    sharding.sync_processes("nothing to wait for")
    sharding.check_same_across_processes({"a value": "x"})
    tree = {"w": np.arange(3.0)}
    assert sharding.from_process_zero(tree) is tree
    # Without peers a collective error is just an error.
    assert sharding.peer_failure(ValueError("UNKNOWN: Gloo all-reduce failed")) is None
    sharding.leave_failed_run(2)  # returns: no distributed runtime to leave


# --------------------------------------------------------------------------- real processes


_MESH_SCRIPT = """
import sys
from hw3_jax.train import sharding
sharding.initialize_distributed(sharding.launch_from(sys.argv[1], 2, sys.argv[2]))
print("LOCAL", sharding.data_parallel(2).local_num_devices, flush=True)
try:
    sharding.data_parallel(3)
except ValueError as e:
    print("REFUSED", e, flush=True)
"""


def test_num_devices_takes_as_many_devices_from_every_process():
    # Two processes of two devices: a mesh of 2 holds one of each (each feeds its own rows).
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _MESH_SCRIPT, f"127.0.0.1:{port}", str(i)],
                              cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    with _reaped(procs, limit_s=120):
        outs = [p.communicate()[0] for p in procs]
    for out in outs:
        assert "LOCAL 1" in out, out[-2000:]
        assert "over 2 processes (use a multiple of 2)" in out, out[-2000:]


def _history(metrics: dict) -> list[dict]:
    return [{k: v for k, v in e.items() if "time" not in k and "per_s" not in k}
            for e in metrics["history"]]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.mark.slow  # two processes compile the model's step before one is killed
def test_a_dead_process_stops_the_other_and_the_run_resumes(tmp_path):
    # Two epochs, a checkpoint every 3 steps: the kill lands mid-training, after a
    # checkpoint, possibly while the next one is being written.
    run = [*SMOKE[:2], "--epochs", "2", "--config.train.checkpoint_every_steps=3"]
    with _reaped(_processes(tmp_path / "run", run)) as (p0, p1):
        for line in p0.stdout:  # process 0 reports each epoch; kill its peer after the first
            if line.startswith("epoch 1/2"):
                break
        else:
            pytest.fail("process 0 ended before its first epoch: " + _finish(p0)[2][-3000:])
        p1.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        p1.wait(timeout=60)
        rc, _, err = _finish(p0, timeout=60 + HEARTBEAT_S)
        waited = time.monotonic() - killed_at
    assert rc not in (0, None) and waited < 60, (rc, waited, err[-3000:])
    # Ours when a collective with the dead process failed, JAX's when its heartbeat
    # monitor noticed first.
    assert "another process has probably died" in err or "another task died" in err, err[-3000:]

    # The same two processes, relaunched with --resume, finish the run from its latest
    # complete checkpoint.
    ((out, _),) = _run_all([(tmp_path / "run", "2proc", [*run, "--resume"])])
    assert "resumed from" in out, out[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 14 and [h["epoch"] for h in metrics["history"]] == [1, 2]


@pytest.mark.slow  # two processes compile the model's step
def test_sigterm_to_one_process_stops_all_at_one_saved_step(tmp_path):
    """SIGTERM, a preemption notice, to process 1 only: both processes finish the step they
    agree on, save it as the 'latest' checkpoint and stop (exit status 130)."""
    run = [*SMOKE[:2], "--epochs", "3", "--config.train.checkpoint_every_steps=100"]
    with _reaped(_processes(tmp_path / "run", run)) as (p0, p1):
        for line in p0.stdout:
            if line.startswith("epoch 1/3"):
                break
        else:
            pytest.fail("process 0 ended before its first epoch: " + _finish(p0)[2][-3000:])
        p1.send_signal(signal.SIGTERM)
        results = [_finish(p, timeout=120) for p in (p0, p1)]
    steps = set()
    for rc, _, err in results:
        assert rc == 130, err[-3000:]
        steps.update(int(s) for s in re.findall(r"stopped after step (\d+) ", err))
    (step,) = steps  # the same step in both processes
    assert 7 < step < 21
    # The 'latest' checkpoints kept (keep_latest 2): the stop's step and the one before it,
    # an epoch's end (7 steps an epoch; a slow machine may reach the second's before the
    # processes agree on a step).
    latest = tmp_path / "run" / "checkpoints" / "latest"
    ends = list(range(7, step, 7))
    assert sorted(int(d.name) for d in latest.iterdir() if d.name.isdigit()) == [ends[-1], step]


def _run_all(runs: list[tuple[Path, str, list[str]]]) -> list[list[str]]:
    """Runs (workdir, layout, args) side by side to the end; the stdout of each process of
    each. A layout is "2proc" (two processes of one CPU device) or "Ndev" (one process, N
    devices)."""
    procs = [_processes(workdir, args) if layout == "2proc"
             else [_single(workdir, args, int(layout.removesuffix("dev")))]
             for workdir, layout, args in runs]
    with _reaped([p for run in procs for p in run]):
        results = [[_finish(p) for p in run] for run in procs]
    for rc, _, err in (r for run in results for r in run):
        assert rc == 0, err[-3000:]
    return [[out for _, out, _ in run] for run in results]


@pytest.mark.slow  # four trainings, two of them two processes, each compiling the step
def test_two_processes_train_as_one_process_and_resume_across_layouts(tmp_path):
    # One run of the epoch's 7 steps, started by two processes, stopped after step 3,
    # resumed on one device, stopped after step 4 and finished by two processes again: each
    # way between one and several devices, and between one process and two, restores a
    # checkpoint written on the other. The global batch is the same on every layout, so it
    # must train what one process with eight devices trains uninterrupted (side by side
    # with the first part).
    ref_dir, mp_dir = tmp_path / "one", tmp_path / "two"
    (_, first1), (ref_out,) = _run_all([(mp_dir, "2proc", [*SMOKE, "--config.train.max_steps=3"]),
                                        (ref_dir, "8dev", SMOKE)])
    ((one,),) = _run_all([(mp_dir, "1dev", [*SMOKE, "--config.train.max_steps=4", "--resume"])])
    ((out0, out1),) = _run_all([(mp_dir, "2proc", [*SMOKE, "--resume"])])
    for out, step in ((one, 3), (out0, 4)):
        assert f"resumed from {mp_dir}" in out and f"(step {step}," in out, out[-2000:]
    assert "test accuracy" in ref_out and "test accuracy" in out0
    for out in (first1, out1):  # process 0 alone reports
        assert "test accuracy" not in out and "epoch 1/1" not in out, out[-2000:]

    a = json.loads((ref_dir / "metrics.json").read_text())
    b = json.loads((mp_dir / "metrics.json").read_text())
    assert (a["devices"]["num_devices"], b["devices"]["num_devices"]) == (8, 2)
    assert (a["devices"]["process_count"], b["devices"]["process_count"]) == (1, 2)
    assert a["steps"] == b["steps"] == 7 and a["best"]["step"] == b["best"]["step"] == 7
    ha, hb = _history(a), _history(b)
    assert len(ha) == len(hb) == 1
    for k, v in ha[0].items():
        assert v == pytest.approx(hb[0][k], abs=1e-5), k
    for k in ("test_loss", "test_accuracy", "val_loss", "val_accuracy"):
        assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert b["test_examples"] == a["test_examples"] == 60  # every example once, none twice
    for text, p in a["predictions"].items():
        assert b["predictions"][text] == pytest.approx(p, abs=1e-5), text
    jsonl = [json.loads(line) for line in (mp_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(jsonl) == 1  # one line per evaluation, written once

    # Both processes of the first part derived the same tokenizer; only process 0 wrote it,
    # and nothing was left behind.
    assert (mp_dir / "tokenizer.json").read_bytes() == (ref_dir / "tokenizer.json").read_bytes()
    assert not list(mp_dir.glob(".*.tmp")) and (mp_dir / "curves.png").is_file()
    pa, pb = load_best(ref_dir).params, load_best(mp_dir).params
    flat_a = dict(_leaves(pa))
    flat_b = dict(_leaves(pb))
    assert flat_a.keys() == flat_b.keys()
    for k, x in flat_a.items():
        np.testing.assert_allclose(flat_b[k], x, atol=1e-5, rtol=0, err_msg=k)
