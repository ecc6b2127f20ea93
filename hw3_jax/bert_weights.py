"""BERT weights: Hugging Face / PyTorch checkpoints to `BertEncoder` params and back.

`load_pretrained_bert(name_or_path)` reads `config.json` + `model.safetensors` from a local
directory or downloads them from the Hugging Face hub, and returns `(BertConfig, params)` in
the tree `hw3_jax.bert` documents. `bert_params_from_torch` converts a state dict (either the
transformers-5 `BertModel` names or the hub's older `bert.`-prefixed layout);
`bert_params_to_torch` is its inverse, for tests and for exporting. The names are also
reachable as `hw3_jax.bert.<name>`.
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from hw3_jax.bert import BertConfig, init_bert_params
from hw3_jax.data import net
from hw3_jax.data.errors import json_object


def bert_param_shapes(config: BertConfig) -> dict:
    """The params tree as `jax.ShapeDtypeStruct`s (nothing allocated)."""
    return jax.eval_shape(lambda: init_bert_params(config, jax.random.PRNGKey(0)))


# Flax module path inside a layer -> torch module path inside encoder.layer.N
_LAYER_MODULES = {
    ("attention", "query"): "attention.self.query",
    ("attention", "key"): "attention.self.key",
    ("attention", "value"): "attention.self.value",
    ("attention", "output"): "attention.output.dense",
    ("attention", "LayerNorm"): "attention.output.LayerNorm",
    ("intermediate",): "intermediate.dense",
    ("output",): "output.dense",
    ("LayerNorm",): "output.LayerNorm",
}
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}
_BUFFERS = ("position_ids", "token_type_ids")  # registered buffers, not weights


def torch_name(flax_path: tuple[str, ...]) -> str:
    """Flax params path -> transformers-5 BertModel state-dict name."""
    *module, leaf = flax_path
    if module[0] == "embeddings":
        prefix = "embeddings." + module[1]
    elif module[0] == "pooler":
        prefix = "pooler.dense"
    elif module[0].startswith("layer_"):
        n = module[0].removeprefix("layer_")
        prefix = f"encoder.layer.{n}.{_LAYER_MODULES[tuple(module[1:])]}"
    else:
        raise KeyError(f"not a BertEncoder parameter path: {'/'.join(flax_path)}")
    return f"{prefix}.{_LEAF[leaf]}"


def _normalise_names(names) -> dict[str, str]:
    """{transformers-5 BertModel name: checkpoint name}.

    Handles the older hub layout (`bert.` prefix, `LayerNorm.gamma/beta`): when the prefix
    is present, tensors outside `bert.` are task heads (`cls.*` of BertForPreTraining,
    `classifier.*`, ...) and are ignored. Buffers such as `embeddings.position_ids` are
    ignored.
    """
    names = list(names)
    prefixed = any(n.startswith("bert.") for n in names)
    mapping = {}
    for original in names:
        n = original
        if prefixed:
            if not n.startswith("bert."):
                continue
            n = n.removeprefix("bert.")
        if n.rsplit(".", 1)[-1] in _BUFFERS and n.startswith("embeddings."):
            continue
        if n.endswith("LayerNorm.gamma"):
            n = n.removesuffix("gamma") + "weight"
        elif n.endswith("LayerNorm.beta"):
            n = n.removesuffix("beta") + "bias"
        mapping[n] = original
    return mapping


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _fmt_list(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _pooler_init(config: BertConfig, shapes: Mapping[tuple[str, ...], Any]) -> dict:
    rng = jax.random.PRNGKey(0)
    out = {}
    for path, s in shapes.items():
        if path[0] == "pooler":
            if path[-1] == "kernel":
                w = jax.random.normal(rng, s.shape, jnp.float32) * config.initializer_range
                out[path] = np.asarray(w)
            else:
                out[path] = np.zeros(s.shape, np.float32)
    return out


def bert_params_from_torch(
    state_dict: Mapping[str, Any], config: BertConfig, *, source: str = "checkpoint"
) -> dict:
    """Convert a BERT state dict (either naming convention; NumPy or anything `np.asarray`
    takes; any float dtype) into `BertEncoder(config)` params (float32 NumPy arrays).

    Torch Linear weights `[out, in]` become Flax kernels `[in, out]`. Any missing, unexpected
    or mis-shaped tensor raises one ValueError listing all of them. A checkpoint without a
    pooler (e.g. saved from BertForMaskedLM) loads with a freshly initialised pooler and a
    warning: the sequence output is exact, the pooled output is not pretrained.
    """
    shapes = flatten_dict(bert_param_shapes(config))
    expected = {torch_name(path): path for path in shapes}
    mapping = _normalise_names(state_dict.keys())

    pooler_names = {n for n in expected if n.startswith("pooler.")}
    missing = [n for n in expected if n not in mapping]
    init_pooler = bool(pooler_names) and pooler_names <= set(missing)
    if init_pooler:
        missing = [n for n in missing if n not in pooler_names]
    unexpected = [n for n in mapping if n not in expected]

    flat, wrong = {}, []
    for name, original in mapping.items():
        if name not in expected:
            continue
        path = expected[name]
        array = np.asarray(state_dict[original])
        torch_shape = _torch_shape(shapes[path], path)
        if array.shape != torch_shape:
            wrong.append(
                f"{original} {_fmt_shape(array.shape)} (expected {_fmt_shape(torch_shape)})"
            )
            continue
        flat[path] = np.ascontiguousarray(array.T if path[-1] == "kernel" else array, np.float32)

    if missing or unexpected or wrong:
        parts = []
        if missing:
            items = [f"{n} {_fmt_shape(_torch_shape(shapes[expected[n]], expected[n]))}"
                     for n in missing]  # fmt: skip
            parts.append(f"missing {len(missing)}: " + _fmt_list(items))
        if unexpected:
            items = [f"{mapping[n]} {_fmt_shape(np.shape(state_dict[mapping[n]]))}"
                     for n in unexpected]  # fmt: skip
            parts.append(f"unexpected {len(unexpected)}: " + _fmt_list(items))
        if wrong:
            parts.append(f"wrong shape {len(wrong)}: " + _fmt_list(wrong))
        raise ValueError(
            f"{source} does not match BertConfig(hidden_size={config.hidden_size}, "
            f"num_hidden_layers={config.num_hidden_layers}, vocab_size={config.vocab_size}, "
            f"...): " + "; ".join(parts)
        )
    if init_pooler:
        warnings.warn(
            f"{source} has no pooler weights (pooler.dense.*): the pooler is randomly "
            "initialised, so pooled_output is not pretrained (sequence_output is).",
            stacklevel=2,
        )
        flat.update(_pooler_init(config, shapes))
    return unflatten_dict(flat)


def _torch_shape(shape_struct, path) -> tuple[int, ...]:
    shape = tuple(shape_struct.shape)
    return tuple(reversed(shape)) if path[-1] == "kernel" else shape


def bert_params_to_torch(params: Mapping) -> dict[str, np.ndarray]:
    """Inverse of `bert_params_from_torch`: transformers-5 `BertModel` state-dict names,
    float32 NumPy arrays (kernels transposed back to `[out, in]`)."""
    out = {}
    for path, v in flatten_dict(params).items():
        a = np.asarray(v, dtype=np.float32)
        out[torch_name(path)] = np.ascontiguousarray(a.T if path[-1] == "kernel" else a)
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a `.safetensors` file as NumPy; bfloat16 / float16 upcast to float32.

    Also takes a sharded checkpoint's `model.safetensors.index.json`.
    """
    from safetensors import SafetensorError, safe_open

    path = pathlib.Path(path)
    if path.name.endswith(".index.json"):
        weight_map = json_object(path).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
                isinstance(f, str) for f in weight_map.values()):
            raise ValueError(f"{path} has no weight_map object (tensor name -> shard file)")
        files = sorted(set(weight_map.values()))
        out = {}
        for f in files:
            out.update(read_safetensors(path.parent / f))
        return out
    out = {}
    try:
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                try:
                    a = f.get_tensor(name)
                except TypeError:  # a safetensors without ml_dtypes' bfloat16 for NumPy
                    with safe_open(str(path), framework="flax") as g:
                        a = np.asarray(g.get_tensor(name).astype(jnp.float32))
                # jnp's test: NumPy does not count ml_dtypes' bfloat16 as floating.
                if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != np.float32:
                    a = a.astype(np.float32)
                out[name] = a
    except SafetensorError as e:  # a cut-short or damaged file
        raise ValueError(unreadable_safetensors(path, e)) from None
    return out


def unreadable_safetensors(path: str | os.PathLike, error: Exception) -> str:
    """The one line for a `.safetensors` file that safetensors cannot read."""
    return (f"{path} is not a readable safetensors file ({error}); it may be cut short: "
            "download or copy it again")


def _resolve_checkpoint(name_or_path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """(config.json, weights file) from a local directory or a hub model name."""
    p = pathlib.Path(name_or_path).expanduser()
    if p.is_dir():
        config = p / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{p} has no config.json (a BERT checkpoint directory needs "
                                    "config.json and model.safetensors)")  # fmt: skip
        for weights in (p / "model.safetensors", p / "model.safetensors.index.json"):
            if weights.is_file():
                return config, weights
        hint = (" (only pytorch_model.bin found: re-save it with transformers' "
                "save_pretrained(..., safe_serialization=True))"
                if (p / "pytorch_model.bin").exists() else "")  # fmt: skip
        raise FileNotFoundError(f"{p} has no model.safetensors{hint}")
    name = str(name_or_path)
    if p.exists():
        raise FileNotFoundError(f"{name} is a file: pass the checkpoint's directory")
    if not net.is_hub_name(name):
        raise FileNotFoundError(f"{name}: no such checkpoint directory; pass a directory "
                                "holding config.json and model.safetensors, or a hub model "
                                "name such as bert-base-uncased")
    advice = (f"with no internet, download them elsewhere with the tokenizer (e.g. `hf "
              f"download {name} config.json model.safetensors vocab.txt --local-dir DIR`) "
              f"and pass the local directory DIR instead")
    try:
        config, weights = net.hub_files(name, [("config.json", "model.safetensors")])
    except net.HubUnavailable as e:
        raise OSError(f"could not fetch '{name}' (config.json + model.safetensors): {e}; "
                      f"{advice}") from e
    return config, weights


def load_pretrained_bert(
    name_or_path: str | os.PathLike = "bert-base-uncased", **config_overrides: Any
) -> tuple[BertConfig, dict]:
    """Pretrained BERT weights as `(BertConfig, params)` for `BertEncoder(config)`.

    `name_or_path`: a local directory holding `config.json` and `model.safetensors` (either
    naming convention: transformers-5 `BertModel` names, or the hub's older `bert.`-prefixed
    `LayerNorm.gamma/beta` file with `cls.*` heads, which are ignored), or a hub model name,
    downloaded with `huggingface_hub` (needs internet). `config_overrides` replace config
    fields that do not change the weights' shapes, e.g. `dtype="bfloat16"`,
    `hidden_dropout_prob=0.0` or `attention="performer"`.
    Params are float32 jax arrays, whatever dtype the file stores.
    """
    config_file, weights_file = _resolve_checkpoint(name_or_path)
    config = BertConfig.from_hf_dict(json_object(config_file), **config_overrides)
    tensors = read_safetensors(weights_file)
    params = bert_params_from_torch(tensors, config, source=str(weights_file))
    return config, jax.tree_util.tree_map(jnp.asarray, params)
