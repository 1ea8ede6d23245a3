"""Transformer building blocks shared by the difference encoder and the text decoder.

Attention is written out (not `jax.nn.dot_product_attention`) so that the attention weights can be
returned for plotting from the same code path that trains. Sequences here are short (2 x 125 audio
frames, 32 tokens), so the explicit softmax costs little.

Shapes: B batch, L query length, S key length, H heads, K head size, D model width.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def compute_dtype(name: str):
    """Config dtype name ("float32" or "bfloat16", `config.model.dtype`) -> jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


# Random bits per dropout draw. With 16, each 32-bit word of the PRNG gives two draws and the keep
# test compares a 16-bit draw with round(rate * 2^16), so the dropped fraction is the rate to
# within 2^-17 and kept values are scaled by the exact inverse of the realised keep probability.
# With 32 the layer is `nnx.Dropout` itself (`jax.random.bernoulli`). Threefry costs ~10 ns per
# word on a 2-core CPU, most of the `:quick` model's dropout cost (the step took 78 ms less with
# dropout off), so CPUs draw 16 bits; accelerators keep 32 until a GPU measurement says otherwise
# (`tools/gpu_check.py` times both). `ADC_JAX_DROPOUT_BITS=16|32` overrides, read when traced.
DROPOUT_BITS_ENV = "ADC_JAX_DROPOUT_BITS"


def dropout_draw_bits() -> int:
    """16 or 32: `ADC_JAX_DROPOUT_BITS` if set, else 16 on CPU and 32 on accelerators."""
    value = os.environ.get(DROPOUT_BITS_ENV, "")
    if value:
        if value not in ("16", "32"):
            raise ValueError(f"{DROPOUT_BITS_ENV}={value!r}; use 16 or 32 (or leave it unset).")
        return int(value)
    return 16 if jax.default_backend() == "cpu" else 32


def dropout_keep_mask(
    key: jax.Array, rate: float, shape: tuple[int, ...]
) -> tuple[jax.Array, float]:
    """Keep mask of dropout at `rate` from half as many PRNG words as `jax.random.bernoulli`.

    Returns (mask [shape] bool, realised keep probability 1 - round(rate * 2^16) / 2^16).
    Threefry costs ~5-10 ns per 32-bit word on CPUs, most of a small model's dropout cost.
    """
    levels = 1 << 16
    threshold = int(round(rate * levels))
    shape = tuple(shape)
    last = shape[-1] if shape else 1
    lead = shape[:-1] if shape else ()
    words = jax.random.bits(key, lead + ((last + 1) // 2,), jnp.uint32)
    draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(lead + (-1,))[..., :last]
    return (draws >= threshold).reshape(shape), 1.0 - threshold / levels


class Dropout(nnx.Dropout):
    """`nnx.Dropout` (same arguments, state and RNG stream) drawing `dropout_draw_bits()` random
    bits per element.

    With 16 bits, statistically the same layer: each element is kept with probability 1 - rate
    (to 2^-17) and scaled by its inverse; the masks differ from nnx.Dropout's for the same key.
    With 32 it is nnx.Dropout.
    """

    def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        if dropout_draw_bits() == 32:
            return super().__call__(inputs, deterministic=deterministic)
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate >= 1.0:
            return jnp.zeros_like(inputs)
        if self.broadcast_dims:
            raise NotImplementedError("adc_jax's Dropout has no broadcast_dims.")
        keep, keep_prob = dropout_keep_mask(self.rngs(), self.rate, inputs.shape)
        return jax.lax.select(
            keep, inputs / jnp.asarray(keep_prob, inputs.dtype), jnp.zeros_like(inputs)
        )


# Large negative logit for masked keys; finite so a fully masked row gives a uniform, not NaN, row.
MASK_VALUE = -1e9


@functools.lru_cache(maxsize=32)
def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """Sinusoidal position table of Vaswani et al.: [length, dim] float32 (sin | cos halves)."""
    half = dim // 2
    inv_freq = np.exp(-np.log(10000.0) * np.arange(half) / max(half - 1, 1))
    angles = np.arange(length)[:, None] * inv_freq[None, :]
    table = np.zeros((length, dim), np.float32)
    table[:, :half] = np.sin(angles)
    table[:, half : 2 * half] = np.cos(angles)
    return table


class MultiHeadAttention(nnx.Module):
    """Multi-head attention with an explicit boolean mask; returns output and weights."""

    def __init__(self, d_model: int, num_heads: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        dense = functools.partial(
            nnx.LinearGeneral, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
        )
        self.query = dense(d_model, (num_heads, self.head_dim))
        self.key = dense(d_model, (num_heads, self.head_dim))
        self.value = dense(d_model, (num_heads, self.head_dim))
        self.out = dense((num_heads, self.head_dim), d_model, axis=(-2, -1))
        self.dropout = Dropout(dropout, rngs=rngs)

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, S, D] -> keys, values [B, S, H, K] (what the decoder caches)."""
        return self.key(x), self.value(x)

    def project_q(self, x: jax.Array) -> jax.Array:
        """x [B, L, D] -> queries [B, L, H, K], already scaled by 1 / sqrt(K)."""
        return self.query(x) * (self.head_dim**-0.5)

    def attend_projected(
        self, q: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Scaled queries [B, L, H, K] over keys/values [B, S, H, K].

        Args:
          mask: [B, 1 or H, L or 1, S] bool, True where query l may attend to key s.
        Returns:
          context [B, L, H, K] (before the output projection), weights [B, H, L, S] float32.
        """
        logits = jnp.einsum("blhk,bshk->bhls", q, keys).astype(jnp.float32)
        logits = jnp.where(mask, logits, MASK_VALUE)
        weights = jax.nn.softmax(logits, axis=-1)
        dropped = self.dropout(weights, deterministic=not train)
        context = jnp.einsum("bhls,bshk->blhk", dropped.astype(values.dtype), values)
        return context, weights

    def attend(
        self, x_q: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """Attends queries from x_q [B, L, D] to precomputed keys/values [B, S, H, K].

        Args:
          mask: [B, 1 or H, L, S] bool, True where query l may attend to key s.
        Returns:
          output [B, L, D] and attention weights [B, H, L, S] float32.
        """
        context, weights = self.attend_projected(
            self.project_q(x_q), keys, values, mask, train=train
        )
        return self.out(context), weights

    def __call__(
        self, x_q: jax.Array, x_kv: jax.Array, mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """x_q [B, L, D], x_kv [B, S, D], mask [B, 1|H, L, S] -> ([B, L, D], [B, H, L, S])."""
        keys, values = self.project_kv(x_kv)
        return self.attend(x_q, keys, values, mask, train=train)


class FeedForward(nnx.Module):
    """Position-wise MLP: Linear(D->F) -> GELU -> Dropout -> Linear(F->D)."""

    def __init__(self, d_model: int, d_ff: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.up = nnx.Linear(d_model, d_ff, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.down = nnx.Linear(d_ff, d_model, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x [B, L, D] -> [B, L, D]."""
        return self.down(self.dropout(jax.nn.gelu(self.up(x)), deterministic=not train))


def layer_norm(dim: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm computing its statistics in float32 whatever the compute dtype."""
    return nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
