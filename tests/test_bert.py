"""The Flax BERT encoder and its checkpoint loader, against PyTorch's transformers.BertModel."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from hw3_jax import bert
from hw3_jax.bert import BertConfig, BertEncoder, load_pretrained_bert

TINY = dict(
    vocab_size=500,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
)
SENTENCES = [
    "Hello WORLD how ARE yoU?",
    "This movie was an absolute delight from start to finish; the cast is superb.",
    "Terrible.",
    "I expected much more, but the second half drags and the ending makes no sense at all.",
]


@functools.partial(jax.jit, static_argnames=("config", "deterministic"))
def _apply(config, params, ids, mask, types=None, *, deterministic=True, rngs=None):
    """BertEncoder(config).apply, jitted (eager flax on 2 CPU cores is slow)."""
    return BertEncoder(config).apply(
        {"params": params}, ids, mask, types, deterministic=deterministic, rngs=rngs
    )


def _padded_batch(rng: np.random.Generator, vocab: int, lengths, length: int):
    lengths = np.asarray(lengths)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, vocab, size=(len(lengths), length)).astype(np.int32) * mask
    types = ((np.arange(length)[None, :] >= lengths[:, None] // 2) * mask).astype(np.int32)
    return ids, mask, types


# ------------------------------------------------------------------ torch references


@pytest.fixture(scope="module")
def torch_tiny(tmp_path_factory):
    """A random tiny transformers.BertModel saved with save_pretrained, and its directory."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertModel(
        transformers.BertConfig(**TINY, attn_implementation="eager")
    ).eval()
    # Every tensor random (LayerNorm scales and biases too), so a swapped or mis-transposed
    # tensor cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(path)
    return model, path


def _torch_outputs(model, ids, mask, types):
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            token_type_ids=torch.as_tensor(types, dtype=torch.long),
        )
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _max_diffs(jax_out, torch_out, mask):
    (seq, pooled), (tseq, tpooled) = jax_out, torch_out
    diff = np.abs(np.asarray(seq, np.float32) - tseq)
    real = np.asarray(mask).astype(bool)
    return {
        "sequence_real": float(diff[real].max()),
        "sequence_padded": float(diff[~real].max()) if (~real).any() else 0.0,
        "pooled": float(np.abs(np.asarray(pooled, np.float32) - tpooled).max()),
    }


def test_minilm_matches_pytorch(shared_data):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    path = shared_data / "all-MiniLM-L6-v2"

    config, params = load_pretrained_bert(path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        384,
        6,
        12,
    )
    chex.assert_trees_all_equal_shapes_and_dtypes(params, bert.bert_param_shapes(config))

    tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in enc], np.int32)
    mask = np.array([e.attention_mask for e in enc], np.int32)
    types = np.array([e.type_ids for e in enc], np.int32)
    assert ids[0, :7].tolist() == [101, 7592, 2088, 2129, 2024, 2017, 1029]
    assert (mask == 0).any(), "the batch should contain padding"

    model = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    torch.set_num_threads(2)
    diffs = _max_diffs(
        _apply(config, params, ids, mask, types),
        _torch_outputs(model, ids, mask, types),
        mask,
    )
    print(f"\nMiniLM-L6 (float32) max |jax - torch|: {diffs}")
    assert diffs["sequence_real"] < 1e-4
    assert diffs["sequence_padded"] < 1e-4
    assert diffs["pooled"] < 1e-4


def test_tiny_random_bert_matches_pytorch(torch_tiny):
    model, path = torch_tiny
    config, params = load_pretrained_bert(path)
    assert config == BertConfig(**TINY)  # HF's "dtype" key is the storage dtype: ignored
    ids, mask, types = _padded_batch(np.random.default_rng(0), TINY["vocab_size"], [13, 5, 1], 13)
    diffs = _max_diffs(
        _apply(config, params, ids, mask, types), _torch_outputs(model, ids, mask, types), mask
    )
    print(f"\ntiny random BERT (float32) max |jax - torch|: {diffs}")
    assert max(diffs.values()) < 1e-5


def _to_old_convention(tensors: dict) -> dict:
    """transformers-5 names -> the older hub layout (bert. prefix, gamma/beta, cls.* heads)."""
    old = {}
    for name, a in tensors.items():
        if name.endswith("LayerNorm.weight"):
            name = name.removesuffix("weight") + "gamma"
        elif name.endswith("LayerNorm.bias"):
            name = name.removesuffix("bias") + "beta"
        old["bert." + name] = a
    vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
    old["bert.embeddings.position_ids"] = np.arange(TINY["max_position_embeddings"])[None]
    old["cls.predictions.bias"] = np.zeros(vocab, np.float32)
    old["cls.predictions.transform.dense.weight"] = np.zeros((hidden, hidden), np.float32)
    return old


def test_older_naming_convention_loads_identically(torch_tiny, tmp_path):
    _, path = torch_tiny
    config, params = load_pretrained_bert(path)
    tensors = bert.read_safetensors(path / "model.safetensors")
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    shutil.copy(path / "config.json", old_dir / "config.json")
    save_file(_to_old_convention(tensors), str(old_dir / "model.safetensors"))
    config_old, params_old = load_pretrained_bert(old_dir)
    assert config_old == config
    chex.assert_trees_all_equal(params_old, params)


def test_params_round_trip_to_torch_names(torch_tiny):
    _, path = torch_tiny
    config, params = load_pretrained_bert(path)
    tensors = bert.read_safetensors(path / "model.safetensors")
    back = bert.bert_params_to_torch(params)
    assert set(back) == set(tensors)
    for name, a in tensors.items():
        np.testing.assert_array_equal(back[name], a, err_msg=name)


def test_half_precision_tensors_are_upcast(torch_tiny, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save_file

    _, path = torch_tiny
    tensors = bert.read_safetensors(path / "model.safetensors")
    for dtype in (torch.bfloat16, torch.float16):
        d = tmp_path / str(dtype).removeprefix("torch.")
        d.mkdir()
        shutil.copy(path / "config.json", d / "config.json")
        torch_save_file(
            {k: torch.from_numpy(v).to(dtype) for k, v in tensors.items()},
            str(d / "model.safetensors"),
        )
        assert {a.dtype for a in bert.read_safetensors(d / "model.safetensors").values()} \
            == {np.dtype(np.float32)}
        _, params = load_pretrained_bert(d)
        for leaf in jax.tree_util.tree_leaves(params):
            assert leaf.dtype == jnp.float32
        want = {k: torch.from_numpy(v).to(dtype).float().numpy() for k, v in tensors.items()}
        got = bert.bert_params_to_torch(params)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ------------------------------------------------------------------ loader errors


@pytest.fixture(scope="module")
def tiny_tensors():
    config = BertConfig(**TINY)
    params = bert.init_bert_params(config, jax.random.PRNGKey(1))
    return config, bert.bert_params_to_torch(params)


def test_missing_tensor_is_named(tiny_tensors):
    config, tensors = tiny_tensors
    broken = dict(tensors)
    del broken["encoder.layer.1.intermediate.dense.weight"]
    with pytest.raises(ValueError, match=r"missing 1: encoder\.layer\.1\.intermediate\.dense"
                       r"\.weight \[128, 64\]"):  # fmt: skip
        bert.bert_params_from_torch(broken, config)


def test_unexpected_tensor_is_named(tiny_tensors):
    config, tensors = tiny_tensors
    broken = dict(tensors, **{"encoder.layer.0.attention.self.rotary.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match=r"unexpected 1: encoder\.layer\.0\.attention\.self"
                       r"\.rotary\.weight \[3, 4\]"):  # fmt: skip
        bert.bert_params_from_torch(broken, config)


def test_wrong_shape_is_named(tiny_tensors):
    config, tensors = tiny_tensors
    broken = dict(tensors)
    w = broken["encoder.layer.0.attention.self.query.weight"]
    broken["encoder.layer.0.attention.self.query.weight"] = w[:32]
    with pytest.raises(ValueError, match=r"wrong shape 1: encoder\.layer\.0\.attention\.self"
                       r"\.query\.weight \[32, 64\] \(expected \[64, 64\]\)"):  # fmt: skip
        bert.bert_params_from_torch(broken, config)


def test_all_problems_reported_at_once_from_a_file(tiny_tensors, tmp_path):
    config, tensors = tiny_tensors
    broken = dict(tensors)
    del broken["embeddings.LayerNorm.bias"]
    broken["extra.weight"] = np.zeros(2, np.float32)
    broken["pooler.dense.bias"] = np.zeros(65, np.float32)
    save_file(broken, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict() | {"model_type": "bert"}))
    with pytest.raises(ValueError) as info:
        load_pretrained_bert(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    for part in ("embeddings.LayerNorm.bias [64]", "extra.weight [2]", "pooler.dense.bias [65]"):
        assert part in msg


def test_missing_pooler_is_initialised_with_a_warning(tiny_tensors):
    config, tensors = tiny_tensors
    no_pooler = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    with pytest.warns(UserWarning, match="no pooler"):
        params = bert.bert_params_from_torch(no_pooler, config)
    chex.assert_trees_all_equal_shapes(params, bert.bert_param_shapes(config))
    assert np.all(params["pooler"]["bias"] == 0)
    # BERT's init, N(0, initializer_range): 64 x 64 draws give the std within a few percent
    assert np.std(params["pooler"]["kernel"]) == pytest.approx(config.initializer_range, rel=0.1)
    # Half a pooler is a broken file, not a headless model.
    del no_pooler["embeddings.LayerNorm.bias"]
    with pytest.raises(ValueError, match="pooler.dense.bias"):
        bert.bert_params_from_torch(dict(no_pooler, **{"pooler.dense.weight": np.zeros((64, 64))}),
                                    config)  # fmt: skip


def test_cut_short_weights_file_or_malformed_config_is_one_line(tiny_tensors, tmp_path):
    config, tensors = tiny_tensors
    save_file(tensors, str(tmp_path / "whole.safetensors"))
    whole = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict() | {"model_type": "bert"}))
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors "
                                         "file .*download or copy it again") as info:
        load_pretrained_bert(tmp_path)
    assert "\n" not in str(info.value)
    for content, match in (("{", "is not valid JSON"), ("[1, 2]", "holds a JSON list, not")):
        (tmp_path / "config.json").write_text(content)
        with pytest.raises(ValueError, match=f"config.json {match}") as info:
            load_pretrained_bert(tmp_path)
        assert "\n" not in str(info.value)
    # A sharded checkpoint's malformed index, beside a good config.json: the same one line.
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict() | {"model_type": "bert"}))
    (tmp_path / "model.safetensors").unlink()
    for content, match in (("{", "is not valid JSON"), ("[1]", "holds a JSON list, not"),
                           ("{}", "has no weight_map"),
                           ('{"weight_map": {"a": 1}}', "has no weight_map")):  # fmt: skip
        (tmp_path / "model.safetensors.index.json").write_text(content)
        with pytest.raises(ValueError, match=f"index.json {match}") as info:
            load_pretrained_bert(tmp_path)
        assert "\n" not in str(info.value)


def test_unreachable_hub_says_how_to_use_a_local_directory(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from hw3_jax.data import net

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # The host does not answer: the probe says so at once, without the client's retries.
    monkeypatch.setattr(net, "can_reach", lambda host, timeout=5.0: False)
    with pytest.raises(OSError, match="could not fetch 'bert-base-uncased'.*cannot reach "
                                      r"huggingface\.co.*local directory"):
        load_pretrained_bert("bert-base-uncased")
    # The advice fetches the tokenizer too: the encoder's folder is where it is read from.
    with pytest.raises(OSError, match="config.json model.safetensors vocab.txt --local-dir"):
        load_pretrained_bert("bert-base-uncased")
    # The host answers but the download fails: the client's error, in one line.
    monkeypatch.setattr(net, "can_reach", lambda host, timeout=5.0: True)
    with pytest.raises(
        OSError,
        match="could not fetch 'bert-base-uncased'.*LocalEntryNotFoundError.*local directory",
    ):
        load_pretrained_bert("bert-base-uncased")


def test_missing_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        load_pretrained_bert(str(tmp_path / "nope" / "bert"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_pretrained_bert(tmp_path)


# ------------------------------------------------------------------ config


def test_config_defaults_are_bert_base_and_param_count():
    config = BertConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (30522, 768, 12)
    assert hash(config) == hash(BertConfig())
    shapes = bert.bert_param_shapes(config)  # nothing allocated
    # transformers' BertModel (with pooler) for bert-base-uncased has 109,482,240 parameters
    # (the notebook's 112,241,409 minus its 2,759,169 GRU + linear head).
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == 109_482_240
    assert shapes["layer_11"]["attention"]["query"]["kernel"].shape == (768, 768)


def test_config_round_trips_and_reads_hf_dicts():
    config = BertConfig(**TINY, attention="local", local_window=8, dtype="bfloat16")
    assert BertConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    hf = {**TINY, "model_type": "bert", "hidden_act": "gelu", "dtype": "bfloat16", "foo": 1}
    assert BertConfig.from_hf_dict(hf) == BertConfig(**TINY)
    assert BertConfig.from_hf_dict(hf, dtype="bfloat16").dtype == "bfloat16"
    # to_hf_dict writes the Hugging Face fields only; transformers reads them as the same shape.
    hf_out = config.to_hf_dict()
    assert "attention" not in hf_out and "dtype" not in hf_out
    assert BertConfig.from_hf_dict(hf_out) == BertConfig(**TINY)
    transformers = pytest.importorskip("transformers")
    assert transformers.BertConfig(**hf_out).num_hidden_layers == TINY["num_hidden_layers"]
    with pytest.raises(ValueError, match="unknown BertConfig fields: foo"):
        BertConfig.from_dict({"foo": 1})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(attention="linear"), "attention must be one of"),
        (dict(hidden_size=100, num_attention_heads=12), "divisible"),
        (dict(dtype="float64"), "dtype must be one of"),
        (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob must be in \[0, 1\)"),
        (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer"),
        (dict(pad_token_id=30522), "pad_token_id"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BertConfig(**kwargs)


@pytest.mark.parametrize(
    "hf, match",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"model_type": "roberta"}, "not a BERT config"),
    ],
)
def test_from_hf_dict_rejects_other_architectures(hf, match):
    with pytest.raises(ValueError, match=match):
        BertConfig.from_hf_dict(hf)


# ------------------------------------------------------------------ the encoder itself


@pytest.fixture(scope="module")
def tiny_params():
    return bert.init_bert_params(BertConfig(**TINY), jax.random.PRNGKey(0))


class EncoderShapesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_dtypes(self):
        config = BertConfig(**TINY)
        params = bert.init_bert_params(config, jax.random.PRNGKey(0))
        ids, mask, _ = _padded_batch(np.random.default_rng(0), 500, [7, 3], 7)
        # not the jitted _apply: the without_jit variant must run flax eagerly
        fn = self.variant(lambda p, i, m: BertEncoder(config).apply({"params": p}, i, m))
        seq, pooled = fn(params, ids, mask)
        chex.assert_shape(seq, (2, 7, 64))
        chex.assert_shape(pooled, (2, 64))
        chex.assert_type([seq, pooled], jnp.float32)
        chex.assert_tree_all_finite((seq, pooled))
        assert np.all(np.abs(np.asarray(pooled)) <= 1.0)  # tanh pooler


@pytest.mark.parametrize("attention", ["softmax", "performer", "local"])
def test_attention_kinds_run_and_ignore_padding(attention, tiny_params):
    config = BertConfig(**TINY, attention=attention, performer_features=32, local_window=2)
    rng = np.random.default_rng(1)
    ids, mask, types = _padded_batch(rng, 500, [12, 6, 9], 12)
    params = tiny_params  # the attention kind adds no parameters
    chex.assert_trees_all_equal_shapes(
        params, jax.eval_shape(lambda: bert.init_bert_params(config, jax.random.PRNGKey(0)))
    )
    fn = lambda i: _apply(config, params, i, mask, types)
    seq, pooled = fn(ids)
    chex.assert_shape([seq, pooled], [(3, 12, 64), (3, 64)])
    chex.assert_tree_all_finite((seq, pooled))
    # deterministic apply (the Performer projection is fixed by performer_seed)
    chex.assert_trees_all_equal(fn(ids), (seq, pooled))
    # other tokens at the padded positions change nothing at the real ones
    other = np.where(mask == 1, ids, rng.integers(1, 500, size=ids.shape)).astype(np.int32)
    seq2, pooled2 = fn(other)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(seq2)[real], np.asarray(seq)[real], atol=1e-6)
    np.testing.assert_allclose(pooled2, pooled, atol=1e-6)


def test_local_with_a_window_covering_everything_is_softmax(tiny_params):
    ids, mask, types = _padded_batch(np.random.default_rng(2), 500, [10, 4], 10)
    exact = _apply(BertConfig(**TINY), tiny_params, ids, mask, types)
    local = _apply(BertConfig(**TINY, attention="local", local_window=32), tiny_params, ids, mask,
                   types)  # fmt: skip
    chex.assert_trees_all_close(local, exact, atol=1e-5)


def test_performer_seed_changes_the_features(tiny_params):
    ids, mask, _ = _padded_batch(np.random.default_rng(3), 500, [8, 8], 8)
    a = _apply(BertConfig(**TINY, attention="performer", performer_features=16), tiny_params,
               ids, mask)  # fmt: skip
    b = _apply(BertConfig(**TINY, attention="performer", performer_features=16,
                          performer_seed=1), tiny_params, ids, mask)  # fmt: skip
    assert not np.allclose(a[0], b[0])


def test_performer_draws_its_own_features_in_each_layer(tiny_params, monkeypatch):
    drawn, performer = [], bert.attn.performer_attention

    def spy(q, k, v, projection, mask):
        drawn.append(np.asarray(projection))
        return performer(q, k, v, projection, mask)

    monkeypatch.setattr(bert.attn, "performer_attention", spy)
    ids, mask, _ = _padded_batch(np.random.default_rng(3), 500, [4], 4)
    config = BertConfig(**TINY, attention="performer", performer_features=16)
    BertEncoder(config).apply({"params": tiny_params}, ids, mask)  # eager: the draws are arrays
    assert len(drawn) == 2 and not np.allclose(drawn[0], drawn[1])


def test_performer_projections_are_constants_of_the_compiled_program(tiny_params):
    # No QR in the program: the features depend on the config alone, and jaxlib's CPU QR
    # kernels, several running at once (one per layer), deadlock its thread pool.
    config = BertConfig(**TINY, attention="performer", performer_features=32)
    ids, mask, _ = _padded_batch(np.random.default_rng(3), 500, [8, 8], 8)
    assert "geqrf" not in _apply.lower(config, tiny_params, ids, mask).as_text()


def test_dropout_only_when_not_deterministic(tiny_params):
    config = BertConfig(**TINY)
    ids, mask, _ = _padded_batch(np.random.default_rng(4), 500, [9, 5], 9)
    ref = _apply(config, tiny_params, ids, mask)

    def train(seed):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return _apply(config, tiny_params, ids, mask, deterministic=False, rngs=rngs)

    assert not np.allclose(train(0)[0], train(1)[0])
    assert not np.allclose(train(0)[0], ref[0])
    chex.assert_trees_all_equal(train(0), train(0))
    rngs = {"dropout": jax.random.PRNGKey(0)}
    chex.assert_trees_all_equal(_apply(config, tiny_params, ids, mask, rngs=rngs), ref)
    no_dropout = dataclasses.replace(config, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)  # fmt: skip
    chex.assert_trees_all_close(
        _apply(no_dropout, tiny_params, ids, mask, deterministic=False, rngs=rngs), ref, atol=1e-6
    )
    attention_only = dataclasses.replace(config, hidden_dropout_prob=0.0)
    assert not np.allclose(
        _apply(attention_only, tiny_params, ids, mask, deterministic=False, rngs=rngs)[0], ref[0]
    )


def test_bfloat16_compute_is_close_to_float32(torch_tiny):
    _, path = torch_tiny  # random weights of a realistic spread, not the N(0, 0.02) init
    config, params = load_pretrained_bert(path)
    bf16 = dataclasses.replace(config, dtype="bfloat16")
    ids, mask, types = _padded_batch(np.random.default_rng(5), 500, [16, 11], 16)
    seq32, pooled32 = _apply(config, params, ids, mask, types)
    seq16, pooled16 = _apply(bf16, params, ids, mask, types)
    chex.assert_type([seq16, pooled16], jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(params, jax.tree_util.tree_map(jnp.float32, params))
    real = mask.astype(bool)
    err = np.abs(np.asarray(seq16, np.float32) - np.asarray(seq32))[real]
    # LayerNorm-ed outputs have unit scale; bfloat16 keeps ~3 significant digits.
    assert err.mean() < 0.05 and err.max() < 0.5, (err.mean(), err.max())
    assert np.abs(np.asarray(pooled16, np.float32) - np.asarray(pooled32)).max() < 0.1


def test_too_long_input_is_a_clear_error(tiny_params):
    ids = np.ones((1, 65), np.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64"):
        _apply(BertConfig(**TINY), tiny_params, ids, ids)
    seq, _ = _apply(BertConfig(**TINY), tiny_params, ids[:, :64], ids[:, :64])  # the longest
    chex.assert_shape(seq, (1, 64, 64))


def test_token_types_default_to_zeros(tiny_params):
    ids, mask, types = _padded_batch(np.random.default_rng(6), 500, [6, 3], 6)
    default = _apply(BertConfig(**TINY), tiny_params, ids, mask)
    chex.assert_trees_all_equal(default, _apply(BertConfig(**TINY), tiny_params, ids, mask,
                                                np.zeros_like(types)))
    assert not np.allclose(default[0], _apply(BertConfig(**TINY), tiny_params, ids, mask,
                                              np.ones_like(types))[0])


def test_padding_row_of_the_word_embeddings_starts_at_zero():
    params = bert.init_bert_params(BertConfig(**TINY, pad_token_id=3), jax.random.PRNGKey(0))
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    assert (table[3] == 0).all() and (table[[0, 4]] != 0).all()
