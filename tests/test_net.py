"""`net.hub_files`: the hub's local cache before the network, choices in order, one line."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

from hw3_jax.data import net


def _hub(monkeypatch, cached: set[str], remote: set[str]) -> list[tuple[str, bool]]:
    """A stand-in for `hf_hub_download` serving `cached` files offline and `remote` ones
    online; returns the log of (filename, local_files_only) calls."""
    calls: list[tuple[str, bool]] = []

    def download(repo, filename, local_files_only=False):
        calls.append((filename, local_files_only))
        if filename in cached or (not local_files_only and filename in remote):
            return f"/hub/{repo}/{filename}"
        if local_files_only:
            raise LocalEntryNotFoundError(f"{filename} is not cached")
        raise RemoteEntryNotFoundError.__new__(RemoteEntryNotFoundError)  # 404: no such file

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(net, "can_reach", lambda host, timeout=5.0: True)
    return calls


CHOICES = [("tokenizer.json",), ("vocab.txt",)]


def test_a_cached_later_choice_wins_over_the_network(monkeypatch):
    calls = _hub(monkeypatch, cached={"vocab.txt"}, remote={"tokenizer.json"})
    assert net.hub_files("org/bert", CHOICES) == [Path("/hub/org/bert/vocab.txt")]
    assert all(offline for _, offline in calls)


def test_a_missing_choice_falls_through_to_the_next_download(monkeypatch):
    calls = _hub(monkeypatch, cached=set(), remote={"vocab.txt"})
    assert net.hub_files("org/bert", CHOICES) == [Path("/hub/org/bert/vocab.txt")]
    assert calls[-2:] == [("tokenizer.json", False), ("vocab.txt", False)]


def test_a_set_needs_every_file(monkeypatch):
    _hub(monkeypatch, cached={"config.json"}, remote={"config.json"})
    with pytest.raises(net.HubUnavailable, match="none of config.json \\+ model.safetensors"):
        net.hub_files("org/bert", [("config.json", "model.safetensors")])


def test_offline_and_unreachable_fail_without_downloading(monkeypatch):
    calls = _hub(monkeypatch, cached=set(), remote={"vocab.txt"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(net.HubUnavailable, match="HF_HUB_OFFLINE"):
        net.hub_files("org/bert", CHOICES)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(net, "can_reach", lambda host, timeout=5.0: False)
    with pytest.raises(net.HubUnavailable, match="cannot reach huggingface.co"):
        net.hub_files("org/bert", CHOICES)
    assert all(offline for _, offline in calls)
