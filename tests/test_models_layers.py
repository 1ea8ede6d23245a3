"""Tests of the shared transformer layers' dropout (16-bit draws from the standard JAX PRNG)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax.models import layers


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_mask_keeps_one_minus_rate(rate):
    shape = (64, 100, 257)  # odd last axis: the last word's second draw is cut off
    keep, keep_prob = layers.dropout_keep_mask(jax.random.key(0), rate, shape)
    assert keep.shape == shape and keep.dtype == jnp.bool_
    assert abs(keep_prob - (1 - rate)) <= 2.0**-17
    n = keep.size
    sigma = np.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(float(keep.mean()) - keep_prob) < 5 * sigma


def test_the_two_draws_of_one_word_are_independent():
    # Draws 2i and 2i + 1 come from the low and high halves of one 32-bit word; both dropped
    # should happen at rate^2, and each half alone at the rate.
    rate = 0.3
    keep, _ = layers.dropout_keep_mask(jax.random.key(1), rate, (2000, 512))
    dropped = ~np.asarray(keep).reshape(2000, 256, 2)
    low, high = dropped[..., 0], dropped[..., 1]
    n = low.size
    for part in (low, high):
        assert abs(part.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    both = (low & high).mean()
    p = rate * rate
    assert abs(both - p) < 5 * np.sqrt(p * (1 - p) / n)


def test_same_key_same_mask_other_key_other_mask():
    a, _ = layers.dropout_keep_mask(jax.random.key(5), 0.1, (32, 64))
    b, _ = layers.dropout_keep_mask(jax.random.key(5), 0.1, (32, 64))
    c, _ = layers.dropout_keep_mask(jax.random.key(6), 0.1, (32, 64))
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any()


def test_dropout_scales_kept_values_and_zeroes_the_rest():
    drop = layers.Dropout(0.25, rngs=nnx.Rngs(dropout=0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 33, 17)).astype(np.float32))
    y = np.asarray(drop(x, deterministic=False))
    kept = y != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    # Deterministic mode and rate 0 are the identity; each call draws a new mask.
    np.testing.assert_array_equal(drop(x, deterministic=True), x)
    np.testing.assert_array_equal(layers.Dropout(0.0, rngs=nnx.Rngs(0))(x), x)
    assert (np.asarray(drop(x, deterministic=False)) != y).any()


def test_dropout_gradient_is_the_mask_over_keep_prob():
    def f(x):  # a fresh layer per call: the same stream, so the same mask
        return layers.Dropout(0.5, rngs=nnx.Rngs(dropout=1))(x, deterministic=False)

    x = jnp.ones((16, 40), jnp.float32)
    y = f(x)
    g = jax.grad(lambda x: jnp.sum(f(x)))(x)
    assert 0 < float((y == 0).mean()) < 1
    np.testing.assert_allclose(np.asarray(g), np.asarray(y), rtol=1e-6)  # x = 1: y = mask / p


def test_draw_bits_default_and_override(monkeypatch):
    monkeypatch.delenv(layers.DROPOUT_BITS_ENV, raising=False)
    assert layers.dropout_draw_bits() == 16  # these tests run on the CPU
    monkeypatch.setenv(layers.DROPOUT_BITS_ENV, "32")
    assert layers.dropout_draw_bits() == 32
    monkeypatch.setenv(layers.DROPOUT_BITS_ENV, "8")
    with pytest.raises(ValueError, match="use 16 or 32"):
        layers.dropout_draw_bits()


def test_32_bit_draws_are_nnx_dropout(monkeypatch):
    """The accelerator default: the same masks as nnx.Dropout for the same stream."""
    monkeypatch.setenv(layers.DROPOUT_BITS_ENV, "32")
    x = jnp.ones((8, 64), jnp.float32)
    ours = layers.Dropout(0.3, rngs=nnx.Rngs(dropout=4))(x, deterministic=False)
    theirs = nnx.Dropout(0.3, rngs=nnx.Rngs(dropout=4))(x, deterministic=False)
    np.testing.assert_array_equal(ours, theirs)
    monkeypatch.setenv(layers.DROPOUT_BITS_ENV, "16")
    sixteen = layers.Dropout(0.3, rngs=nnx.Rngs(dropout=4))(x, deterministic=False)
    assert (np.asarray(sixteen) != np.asarray(theirs)).any()
