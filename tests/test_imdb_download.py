"""The IMDB download (tensorflow-datasets' DownloadManager) without TensorFlow, offline.

A local HTTP server (127.0.0.1, a random port) serves a tiny archive in the aclImdb layout. Each
download runs in a fresh interpreter in which `import tensorflow` fails as if TensorFlow were
not installed (Colab's TPU runtime has none), and reports whether TensorFlow got imported.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _data_helpers import make_archive

from hw3_jax.data import imdb, sources
from hw3_jax.data.errors import DataError

ROOT = Path(__file__).resolve().parents[1]

# The child's preamble: every import finder is wrapped so that it finds no TensorFlow, as if
# it were not installed (`import tensorflow` fails, importlib.util.find_spec gives None). Not
# sys.modules["tensorflow"] = None: tfds and etils take a name in sys.modules for an imported
# TensorFlow.
NO_TENSORFLOW = """
import json, sys

class NoTensorFlow:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)

sys.meta_path[:] = [NoTensorFlow(f) for f in sys.meta_path]
"""

LOAD = NO_TENSORFLOW + """
import ml_collections
from hw3_jax.data import imdb, sources
from hw3_jax.data.errors import DataError

args = json.loads(sys.argv[1])
for name, value in args.pop("official", {}).items():  # a tiny archive plays the official one
    setattr(imdb, name, value)
data = ml_collections.ConfigDict(args)
out = {}
try:
    raw = sources.load_source(data, 0)
    out.update(train=len(raw.train), test=len(raw.test), source_id=raw.source_id,
               identity=sources.source_identity(data, 0),
               path=str(sources.imdb_archive_path(data)))
except DataError as e:
    out["error"] = str(e)
out["tensorflow_imported"] = "tensorflow" in sys.modules
print(json.dumps(out))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(TFDS_DATA_DIR=str(tmp_path / "tfds_default"), PYTHONPATH=str(ROOT))
    return env


def load_without_tensorflow(tmp_path: Path, **data) -> dict:
    """sources.load_source(config.data) in a child without TensorFlow: its report."""
    fields = dict(source="imdb", imdb_archive=None, imdb_url=None, imdb_sha256=None,
                  data_dir=None, synthetic_size=10) | data
    r = subprocess.run([sys.executable, "-c", LOAD, json.dumps(fields)], cwd=ROOT,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out.pop("tensorflow_imported") is False
    assert "Traceback" not in r.stderr, r.stderr
    return out


class Server:
    """An HTTP server in a thread: path -> (body, bytes sent before the connection is cut,
    None: all); every request path is recorded."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, int | None]] = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                requests.append(self.path)
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, cut = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                self.close_connection = True  # HTTP/1.0: the client sees the end here

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = Server()
    yield s
    if s.thread.is_alive():
        s.stop()


@pytest.fixture
def tiny(tmp_path) -> tuple[bytes, str]:
    """A tiny archive in the aclImdb layout: (bytes, sha256)."""
    body = make_archive(tmp_path / "tiny.tar.gz").read_bytes()
    return body, hashlib.sha256(body).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- downloads


@pytest.mark.parametrize("checked_by", ["tfds", "here"])
def test_download_then_read_then_reuse_with_the_server_gone(tmp_path, server, tiny, checked_by):
    """The archive is downloaded into DATA_DIR/downloads/imdb_reviews/ and read; a second run
    reads it with the server stopped. checked_by="tfds": the official archive (size and
    sha256 known: DownloadManager checks them); "here": a mirror with its own sha256."""
    body, sha = tiny
    server.routes["/aclImdb_v1.tar.gz"] = (body, None)
    if checked_by == "tfds":
        args = dict(official={"IMDB_URL": server.url("/aclImdb_v1.tar.gz"),
                              "IMDB_SHA256": sha, "IMDB_SIZE": len(body)})
    else:
        args = dict(imdb_url=server.url("/aclImdb_v1.tar.gz"), imdb_sha256=sha.upper())
    first = load_without_tensorflow(tmp_path, **args)
    assert "error" not in first, first
    assert (first["train"], first["test"]) == (6, 4)
    assert first["source_id"] == first["identity"] == f"imdb-sha256:{sha}"
    path = Path(first["path"])
    assert path.parent == tmp_path / "tfds_default" / "downloads" / imdb.TFDS_NAME
    assert path.read_bytes() == body
    assert server.requests == ["/aclImdb_v1.tar.gz"]

    server.stop()
    again = load_without_tensorflow(tmp_path, **args)
    assert again == first
    assert server.requests == ["/aclImdb_v1.tar.gz"]


def test_data_dir_holds_the_download(tmp_path, server, tiny):
    body, sha = tiny
    server.routes["/m/imdb.tgz"] = (body, None)
    out = load_without_tensorflow(tmp_path, imdb_url=server.url("/m/imdb.tgz"),
                                  imdb_sha256=sha, data_dir=str(tmp_path / "mine"))
    assert Path(out["path"]).parent == tmp_path / "mine" / "downloads" / imdb.TFDS_NAME
    assert not _files(tmp_path / "tfds_default")


@pytest.mark.parametrize("checked_by", ["tfds", "here"])
def test_checksum_mismatch_names_both_and_keeps_nothing(tmp_path, server, tiny, checked_by):
    """A mirror that serves another file: one error naming the URL and both sha256s; nothing
    stays in the download folder, so the next run downloads again."""
    body, sha = tiny
    server.routes["/aclImdb_v1.tar.gz"] = (body, None)
    url = server.url("/aclImdb_v1.tar.gz")
    # "tfds": the official sha256 (and size), checked by DownloadManager; "here": another one.
    want = imdb.IMDB_SHA256 if checked_by == "tfds" else "ab" * 32
    out = load_without_tensorflow(tmp_path, imdb_url=url,
                                  imdb_sha256=None if checked_by == "tfds" else want)
    assert url in out["error"] and f"has sha256 {sha}" in out["error"], out
    assert f"expected {want}" in out["error"] and "\n" not in out["error"]
    assert not _files(tmp_path / "tfds_default")
    load_without_tensorflow(tmp_path, imdb_url=url, imdb_sha256=want)
    assert server.requests == ["/aclImdb_v1.tar.gz"] * 2


def test_download_cut_off_mid_file(tmp_path, server, tiny):
    """The server closes the connection before the Content-Length it announced."""
    body, sha = tiny
    server.routes["/aclImdb_v1.tar.gz"] = (body, len(body) // 2)
    url = server.url("/aclImdb_v1.tar.gz")
    out = load_without_tensorflow(tmp_path, imdb_url=url, imdb_sha256=sha)
    assert out["error"].startswith(f"could not download IMDB from {url} ("), out
    assert "--imdb-archive PATH" in out["error"] and "\n" not in out["error"]
    assert not _files(tmp_path / "tfds_default")
    # The server sends the whole file again: the next run gets it.
    server.routes["/aclImdb_v1.tar.gz"] = (body, None)
    assert load_without_tensorflow(tmp_path, imdb_url=url, imdb_sha256=sha)["train"] == 6


def test_no_network_and_no_archive_says_how_to_supply_one(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/aclImdb_v1.tar.gz"
    out = load_without_tensorflow(tmp_path, imdb_url=url)
    assert "not downloaded yet" in out["error"] and "cannot be reached" in out["error"], out
    assert "--imdb-archive PATH" in out["error"] and "--imdb-url URL" in out["error"]


def test_the_command_line_prints_one_error_line(tmp_path):
    """python -m experiments.sentiment --data imdb, offline and without TensorFlow."""
    url = f"http://127.0.0.1:{_closed_port()}/aclImdb_v1.tar.gz"
    main = NO_TENSORFLOW + """
import runpy
sys.argv = ["experiments.sentiment", *sys.argv[1:]]
try:
    runpy.run_module("experiments.sentiment", run_name="__main__")
finally:
    print("tensorflow imported:", "tensorflow" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", main, "--config", "configs.sentiment:smoke",
                        "--data", "imdb", "--imdb-url", url, "--workdir", str(tmp_path / "w"),
                        "--data-dir", str(tmp_path / "tfds")], cwd=ROOT, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot be reached" in lines[0]
    assert "tensorflow imported: False" in r.stdout


# --------------------------------------------------------------------------- in process


def test_the_official_record_is_tfds_own():
    """IMDB_URL/IMDB_SIZE/IMDB_SHA256 are the values tensorflow-datasets records."""
    spec = importlib.util.find_spec("tensorflow_datasets")  # finds it without importing it
    tsv = Path(spec.submodule_search_locations[0]) / "datasets" / "imdb_reviews" / "checksums.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines() if line.strip()]
    assert rows == [[imdb.IMDB_URL, str(imdb.IMDB_SIZE), imdb.IMDB_SHA256, imdb.IMDB_FILENAME]]


@pytest.mark.parametrize("fields,needle", [
    (dict(imdb_sha256="ab" * 32), "give the mirror with --imdb-url URL"),
    (dict(imdb_url="http://example.org/a.tgz", imdb_sha256="xyz"), "64 hexadecimal digits"),
    (dict(imdb_url="ftp://example.org/a.tgz"), "http:// or https:// URL"),
    (dict(imdb_url="http://example.org/a.tgz", imdb_archive="a.tar.gz"), "keep one"),
])
def test_bad_download_options_fail_before_any_download(fields, needle):
    import ml_collections

    data = ml_collections.ConfigDict(dict(source="imdb", imdb_archive=None, imdb_url=None,
                                          imdb_sha256=None, data_dir=None) | fields)
    with pytest.raises(DataError, match=needle):
        sources.source_identity(data, 0)


def test_the_identity_is_the_checked_sha256():
    assert imdb.download_identity() == f"imdb-sha256:{imdb.IMDB_SHA256}"
    assert imdb.download_identity("https://mirror.example/x", "AB" * 32) == \
        f"imdb-sha256:{'ab' * 32}"
