"""The one network probe: whether a download can start, checked in seconds.

Download clients (tfds, the Hugging Face hub) retry an unreachable host for minutes before
they fail; probing first lets the caller fail in seconds with advice instead.
"""

from __future__ import annotations

import os
import socket

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


def hub_host() -> tuple[str, int]:
    """(name, port) of the Hugging Face hub's endpoint (HF_ENDPOINT, default huggingface.co)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
