"""Tests of the GPT-2 module and `from_pretrained`: parity with Hugging Face transformers, the
checks of a model directory, the cache, and the zero-gated cross-attention.

The fixture tests/gpt2_fixture/ (config.json, model.safetensors, tokenizer.json, expected.npz) was
written once by `tools/make_gpt2_fixture.py` with transformers 5.25.0 and torch 2.14.1 (CPU,
float32): a tiny random GPT2LMHeadModel (n_embd 32, 2 layers, 4 heads, vocabulary 384) saved
with `save_pretrained`, and its logits for two rows of 24 token ids. Rerun that tool (it needs
torch and transformers, which these tests do not) to regenerate it.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax import lm_files
from adc_jax.models import gpt2, safetensors_io

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2_fixture")


@pytest.fixture(scope="module")
def model():
    return gpt2.from_pretrained(FIXTURE)


def test_logits_equal_transformers_gpt2lmheadmodel(model):
    expected = np.load(os.path.join(FIXTURE, "expected.npz"))
    with jax.default_matmul_precision("highest"):
        logits = np.asarray(model(jnp.asarray(expected["ids"])))
    assert logits.shape == (2, 24, 384) and logits.dtype == np.float32
    assert np.abs(expected["logits"]).max() > 1.0  # a test of something
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)


def test_safetensors_round_trip(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    safetensors_io.save_file(tensors, str(tmp_path / "x.safetensors"))
    back = safetensors_io.load_file(str(tmp_path / "x.safetensors"))
    assert set(back) == {"a", "b"}
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype


def _copy(tmp_path) -> str:
    directory = str(tmp_path / "lm")
    shutil.copytree(FIXTURE, directory)
    return directory


def test_a_directory_without_the_files_is_refused_naming_them(tmp_path):
    directory = _copy(tmp_path)
    os.remove(os.path.join(directory, "model.safetensors"))
    with pytest.raises(lm_files.LMFilesError, match="lacks model.safetensors"):
        gpt2.from_pretrained(directory)
    with pytest.raises(lm_files.LMFilesError, match="not a directory"):
        gpt2.from_pretrained(str(tmp_path / "nowhere"))


def test_a_config_that_is_not_gpt2_is_refused(tmp_path):
    directory = _copy(tmp_path)
    path = os.path.join(directory, "config.json")
    cfg = json.load(open(path))
    cfg["model_type"] = "llama"
    json.dump(cfg, open(path, "w"))
    with pytest.raises(lm_files.LMFilesError, match="'llama' model, not GPT-2"):
        gpt2.from_pretrained(directory)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path):
    directory = _copy(tmp_path)
    path = os.path.join(directory, "config.json")
    cfg = json.load(open(path))
    cfg["vocab_size"] = 10
    json.dump(cfg, open(path, "w"))
    with pytest.raises(lm_files.LMFilesError, match="does not belong to this model"):
        gpt2.from_pretrained(directory)


def test_missing_and_misshapen_tensors_are_named(tmp_path):
    directory = _copy(tmp_path)
    path = os.path.join(directory, "model.safetensors")
    tensors = safetensors_io.load_file(path)
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"][:10]
    safetensors_io.save_file(tensors, path)
    with pytest.raises(lm_files.LMFilesError) as e:
        gpt2.from_pretrained(directory)
    assert "h.1.mlp.c_fc.bias" in str(e.value) and "wpe.weight (10, 32)" in str(e.value)


def test_the_cache_gives_the_full_passes_logits(model):
    ids = jnp.asarray(np.load(os.path.join(FIXTURE, "expected.npz"))["ids"][:, :10])
    full = model(ids)
    cache = model.init_cache(2, 10)
    # A 4-token prefill, then one token at a time.
    x = model.add_positions(model.embed(ids[:, :4]), jnp.arange(4), train=False)
    mask = (jnp.arange(10)[None, :] <= jnp.arange(4)[:, None])[None, None]
    h, cache = model.blocks(x, mask, cache=cache, index=0, train=False)
    outs = [model.logits(h)]
    for t in range(4, 10):
        x = model.add_positions(model.embed(ids[:, t : t + 1]), jnp.array([t]), train=False)
        h, cache = model.blocks(
            x, (jnp.arange(10) <= t)[None, None, None], cache=cache, index=t, train=False
        )
        outs.append(model.logits(h))
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)


def test_zero_gated_cross_attention_leaves_the_lm_unchanged_at_init(model):
    crossed = gpt2.GPT2(model.config, cross_attention=True, rngs=nnx.Rngs(3))
    gpt2.load_weights(crossed, FIXTURE)
    ids = jnp.asarray(np.load(os.path.join(FIXTURE, "expected.npz"))["ids"])
    memory = jax.random.normal(jax.random.key(0), (2, 5, 32))
    kv = [b.cross.attention.project_kv(memory) for b in crossed.h]
    t = ids.shape[1]
    x = crossed.add_positions(crossed.embed(ids), jnp.arange(t), train=False)
    causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
    h, _ = crossed.blocks(
        x, causal, cross_kv=kv, cross_mask=jnp.ones((2, 1, 1, 5), bool), train=False
    )
    np.testing.assert_array_equal(crossed.logits(h), model(ids))
    # ... and the gate is a parameter that learning moves, through which the memory then acts.
    crossed.h[0].cross.gate[...] = jnp.float32(0.5)
    h2, _ = crossed.blocks(
        x, causal, cross_kv=kv, cross_mask=jnp.ones((2, 1, 1, 5), bool), train=False
    )
    assert np.abs(np.asarray(crossed.logits(h2) - model(ids))).max() > 1e-3
