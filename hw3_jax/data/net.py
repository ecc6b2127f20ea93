"""The network probe, and the Hugging Face hub's files behind it.

Download clients (tfds, the Hugging Face hub) retry an unreachable host for minutes before
they fail; probing first lets the caller fail in seconds with advice instead.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from hw3_jax.data.errors import first_line

_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
               "all_proxy")


def can_reach(host: tuple[str, int], timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `host` (name, port) opens within `timeout` seconds.

    True behind a proxy (a proxy variable is set): then only the download itself can tell."""
    if any(os.environ.get(k) for k in _PROXY_VARS):
        return True
    try:
        socket.create_connection(host, timeout=timeout).close()
        return True
    except OSError:
        return False


def url_host(url: str) -> tuple[str | None, int]:
    """(name, port) of the host of `url`, the port defaulting to its scheme's."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def is_hub_name(name: str) -> bool:
    """Whether `name` (not an existing local path) can be a hub repo id: "name" or
    "org/name". Anything else is a local path that does not exist."""
    return not (name.startswith((".", "/", "~")) or name.count("/") > 1
                or os.sep != "/" and os.sep in name)


class HubUnavailable(OSError):
    """A hub repo's files are neither in the local hub cache nor downloadable now."""


def hub_files(repo: str, choices: Sequence[Sequence[str]]) -> list[Path]:
    """Local paths of the first file set in `choices` that hub repo `repo` has.

    The local hub cache is read first for every choice (no network); only then is the host
    probed, and the files downloaded. E.g. `choices=[("tokenizer.json",), ("vocab.txt",)]`
    takes either file, `[("config.json", "model.safetensors")]` needs both.
    Raises `HubUnavailable` with a one-line reason (no advice: the caller knows what else to
    pass)."""
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    for files in choices:
        try:
            return [Path(huggingface_hub.hf_hub_download(repo, f, local_files_only=True))
                    for f in files]
        except Exception:  # noqa: BLE001 - not cached: the network below
            pass
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubUnavailable("not in the local hub cache, and HF_HUB_OFFLINE is set")
    name, port = url_host(huggingface_hub.constants.ENDPOINT)  # HF_ENDPOINT
    host = (name or "huggingface.co", port)
    if not can_reach(host):
        raise HubUnavailable(f"cannot reach {host[0]} (no internet?)")
    for files in choices:
        try:
            return [Path(huggingface_hub.hf_hub_download(repo, f)) for f in files]
        except RemoteEntryNotFoundError:
            continue  # the repo lacks this choice: try the next
        except Exception as e:  # noqa: BLE001 - missing repo, gated model, network: one line
            raise HubUnavailable(f"the Hugging Face hub's download failed "
                                 f"({first_line(e)})") from e
    names = " / ".join(" + ".join(files) for files in choices)
    raise HubUnavailable(f"the repo has none of {names}")
