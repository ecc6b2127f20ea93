"""Shared test fixtures."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import signal
import tempfile

import pytest

# The tests of Ctrl-C send SIGINT to their own process and expect Python's handler, as under
# a terminal; a script that starts pytest as a background job passes SIGINT on ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """`../shared/data` beside the checkout (the real IMDB archive, vocab, MiniLM)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def tfds_temp(tmp_path, monkeypatch) -> None:
    """Python's temporary folder moved into `tmp_path`: a tensorflow-datasets builder of a
    dataset not yet prepared leaves an empty `tmp*tfds` folder there (`initialize_from_bucket`)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent XLA compilation cache for the run, shared by this process and the training
# processes that tests start (they inherit the environment): every subprocess would otherwise
# compile the smoke model's step again. A size limit turns on the cache's file lock, which
# keeps a process from reading an entry that another is still writing. Every program is
# cached, not only those that took a second to compile (JAX's default): a smoke run's ~100
# small programs took 2-3 s to compile again in each process (10.0 s warm runs against 7.6).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="hw3-jax-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(8 << 30),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
