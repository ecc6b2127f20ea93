"""Stop requests: Ctrl-C (SIGINT) or SIGTERM asks a training run to finish its step, save a
'latest' checkpoint and stop, so that --resume loses no step.

One process: the handlers here set a flag that the loop reads after every step; the first
signal puts the previous handlers back, so a second one acts at once. Several processes: JAX's
distributed runtime takes SIGTERM (a preemption notice) itself, and every process stops at the
step they agree on (`multihost_utils.reached_preemption_sync_point`, called at every step);
Ctrl-C ends one process at once and the others stop at their next collective.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import jax
from jax.experimental import multihost_utils

from hw3_jax.train.sharding import is_multiprocess


class StopRequested(KeyboardInterrupt):
    """Raised by the loop once the checkpoint of the step where it stopped is saved."""


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[int], bool]]:
    """Yield `requested(step) -> bool`: whether the run should save and stop after global
    step `step`; call it after every step. Signal handlers are in place only inside; a
    request that no call saw raises StopRequested on leaving."""
    if is_multiprocess():
        enabled = jax.config.jax_enable_preemption_service  # else there is no sync manager
        yield multihost_utils.reached_preemption_sync_point if enabled else lambda step: False
        return
    if threading.current_thread() is not threading.main_thread():
        yield lambda step: False  # Python delivers signals to the main thread only
        return
    received = threading.Event()
    # A signal this process ignores stays ignored: a script's background job ignores SIGINT
    # (the shell's rule, so that a Ctrl-C at the terminal spares it).
    previous = {s: h for s in (signal.SIGINT, signal.SIGTERM)
                if (h := signal.getsignal(s)) is not signal.SIG_IGN}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)

    def handler(signum: int, frame: object) -> None:
        received.set()
        restore()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this step with a checkpoint ({name} again stops at "
              "once)", file=sys.stderr, flush=True)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield lambda step: received.is_set()
    finally:
        restore()
    if received.is_set():  # came after the last step's check: in its evaluation or save
        raise StopRequested("stopped after the last training step (saved), before the test "
                            "evaluation")
