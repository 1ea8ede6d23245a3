"""The difference encoder: cross-attention-concentrated (CAC) transformer over both clips.

Both clips' frame features are projected to d_model, tagged with a learned segment embedding
(clip 1 / clip 2) and sinusoidal positions that restart at 0 for each clip (so "earlier/later" is
visible), and concatenated into one sequence [B, 2T, D]. With `attention="cross"` the attention
mask lets a frame of clip 1 attend only to frames of clip 2 and vice versa (the paper's CAC
encoder); `attention="full"` is plain self-attention over both clips (the ablation's baseline).

The CAC mask zeroes the two diagonal blocks of the 2T x 2T attention, so a CAC layer is computed
as what it is, two cross-attentions: queries of clip 1 over keys/values of clip 2, and queries of
clip 2 over clip 1 (half the attention FLOPs, no 2T x 2T mask). The full 2T x 2T weights, for the
attention plots, are assembled from the two blocks (XLA drops them when only the loss is used).

Shapes: B batch, T frames per clip, D d_model, H heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from adc_jax.models.layers import (
    Dropout,
    FeedForward,
    MultiHeadAttention,
    layer_norm,
    sinusoidal_positions,
)


def encoder_attention_mask(segment_ids: jax.Array, valid: jax.Array, attention: str) -> jax.Array:
    """Which key frames each query frame may attend to.

    Args:
      segment_ids: [B, 2T] int, 0 for frames of clip 1 and 1 for frames of clip 2.
      valid: [B, 2T] bool, False for padding frames.
      attention: "cross" (only the other clip's frames) or "full" (every valid frame).
    Returns:
      [B, 1, 2T, 2T] bool, True where query i may attend to key j.
    """
    key_ok = valid[:, None, :]
    if attention == "cross":
        allowed = segment_ids[:, :, None] != segment_ids[:, None, :]
    elif attention == "full":
        # Full [B, 2T, 2T] like the cross mask, so callers get the documented shape in both modes.
        allowed = jnp.ones(segment_ids.shape + segment_ids.shape[-1:], dtype=bool)
    else:
        raise ValueError(f"Unknown attention mode {attention!r}; use 'cross' or 'full'.")
    return (allowed & key_ok)[:, None, :, :]


class EncoderLayer(nnx.Module):
    """Pre-LayerNorm transformer encoder layer over both clips' frames [B, 2T, D]."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        attention: str,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.attention_mode = attention
        self.attention_norm = layer_norm(d_model, dtype, rngs)
        self.attention = MultiHeadAttention(
            d_model, num_heads, dropout=dropout, dtype=dtype, rngs=rngs
        )
        self.ffn_norm = layer_norm(d_model, dtype, rngs)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def _cross_attention(
        self, y: jax.Array, valid: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """CAC attention as two cross-attentions: y [B, 2T, D], valid [B, 2T] bool ->
        (output [B, 2T, D], weights [B, H, 2T, 2T] float32, zero on the diagonal blocks)."""
        frames = y.shape[1] // 2
        keys, values = self.attention.project_kv(y)  # [B, 2T, H, K]
        queries = self.attention.project_q(y)
        clip = lambda a, i: a[:, i * frames : (i + 1) * frames]  # noqa: E731
        key_mask = lambda i: clip(valid, i)[:, None, None, :]  # noqa: E731 - [B, 1, 1, T]
        # Clip 1 reads clip 2 (block [0, 1]) and clip 2 reads clip 1 (block [1, 0]).
        context1, w12 = self.attention.attend_projected(
            clip(queries, 0), clip(keys, 1), clip(values, 1), key_mask(1), train=train
        )
        context2, w21 = self.attention.attend_projected(
            clip(queries, 1), clip(keys, 0), clip(values, 0), key_mask(0), train=train
        )
        out = self.attention.out(jnp.concatenate([context1, context2], axis=1))
        zeros = jnp.zeros_like(w12)
        weights = jnp.concatenate(
            [jnp.concatenate([zeros, w12], axis=-1), jnp.concatenate([w21, zeros], axis=-1)],
            axis=2,
        )
        return out, weights

    def __call__(
        self, x: jax.Array, valid: jax.Array, mask: jax.Array | None, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, 2T, D], valid [B, 2T] bool, mask [B, 1, 2T, 2T] bool (full attention only;
        None for CAC) -> (x [B, 2T, D], attention weights [B, H, 2T, 2T] float32)."""
        y = self.attention_norm(x)
        if self.attention_mode == "cross":
            y, weights = self._cross_attention(y, valid, train=train)
        else:
            y, weights = self.attention(y, y, mask, train=train)
        x = x + self.dropout(y, deterministic=not train)
        y = self.ffn(self.ffn_norm(x), train=train)
        return x + self.dropout(y, deterministic=not train), weights


class DifferenceEncoder(nnx.Module):
    """Projects two clips' frames, joins them and runs CAC (or full) encoder layers."""

    def __init__(
        self,
        feature_dim: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        *,
        attention: str,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        if attention not in ("cross", "full"):
            raise ValueError(f"Unknown attention mode {attention!r}; use 'cross' or 'full'.")
        self.attention_mode = attention
        self.d_model = d_model
        self.dtype = dtype
        self.input_projection = nnx.Linear(
            feature_dim, d_model, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
        )
        self.segment_embedding = nnx.Embed(
            2, d_model, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
        )
        self.input_dropout = Dropout(dropout, rngs=rngs)
        self.layers = nnx.List(
            [
                EncoderLayer(
                    d_model,
                    num_heads,
                    d_ff,
                    attention=attention,
                    dropout=dropout,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.final_norm = layer_norm(d_model, dtype, rngs)

    def project(self, frames: jax.Array) -> jax.Array:
        """Frame features [B, T, F] -> [B, T, D] (the "early" SDD acts on this)."""
        return self.input_projection(frames)

    def __call__(
        self,
        projected1: jax.Array,
        valid1: jax.Array,
        projected2: jax.Array,
        valid2: jax.Array,
        *,
        train: bool,
    ) -> tuple[jax.Array, jax.Array, list]:
        """Encodes a pair of projected clips.

        Args:
          projected1, projected2: [B, T, D] outputs of `project` for clip 1 and clip 2.
          valid1, valid2: [B, T] bool frame validity.
        Returns:
          memory [B, 2T, D] (clip 1 frames then clip 2 frames), its validity [B, 2T] bool, and a
          list with each layer's attention weights [B, H, 2T, 2T] float32.
        """
        batch, frames, _ = projected1.shape
        positions = jnp.asarray(sinusoidal_positions(frames, self.d_model), self.dtype)
        segment = self.segment_embedding(jnp.array([0, 1]))  # [2, D]
        x1 = projected1 + positions[None] + segment[0]
        x2 = projected2 + positions[None] + segment[1]
        x = self.input_dropout(jnp.concatenate([x1, x2], axis=1), deterministic=not train)
        valid = jnp.concatenate([valid1, valid2], axis=1)
        segment_ids = jnp.concatenate(
            [jnp.zeros((batch, frames), jnp.int32), jnp.ones((batch, frames), jnp.int32)], axis=1
        )
        # CAC layers mask by clip themselves; full attention needs the 2T x 2T mask.
        mask = (
            None
            if self.attention_mode == "cross"
            else encoder_attention_mask(segment_ids, valid, self.attention_mode)
        )
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, valid, mask, train=train)
            all_weights.append(weights)
        return self.final_norm(x), valid, all_weights
