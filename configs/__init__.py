"""Experiment configurations: one module per experiment, each with `get_config(arg=None)`
whose `arg` names a variant; docs/architecture.md says how a command line loads one."""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections


def apply_variant(config: ml_collections.ConfigDict, arg: str | None,
                  variants: Mapping[str, Mapping[str, object]]) -> ml_collections.ConfigDict:
    """`config` with variant `arg`'s differences (dotted field -> value) applied; None: the
    default, as it is. Raises ValueError (one line) for an unknown variant."""
    if arg is not None and arg not in variants:
        raise ValueError(f"unknown variant {arg!r}: choose from {', '.join(variants)}")
    config.update_from_flattened_dict(variants.get(arg, {}))
    return config
