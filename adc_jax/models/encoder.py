"""The difference encoder: cross-attention-concentrated (CAC) transformer over both clips.

Both clips' frame features are projected to d_model, tagged with a learned segment embedding
(clip 1 / clip 2) and sinusoidal positions that restart at 0 for each clip (so "earlier/later" is
visible), and concatenated into one sequence [B, 2T, D]. With `attention="cross"` the attention
mask lets a frame of clip 1 attend only to frames of clip 2 and vice versa (the paper's CAC
encoder); `attention="full"` is plain self-attention over both clips (the ablation's baseline).

Shapes: B batch, T frames per clip, D d_model, H heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from adc_jax.models.layers import FeedForward, MultiHeadAttention, layer_norm, sinusoidal_positions


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
    """Pre-LayerNorm transformer encoder layer."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, *, dropout: float, dtype, rngs: nnx.Rngs
    ):
        self.attention_norm = layer_norm(d_model, dtype, rngs)
        self.attention = MultiHeadAttention(
            d_model, num_heads, dropout=dropout, dtype=dtype, rngs=rngs
        )
        self.ffn_norm = layer_norm(d_model, dtype, rngs)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(
        self, x: jax.Array, mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, L, D], mask [B, 1, L, L] -> (x [B, L, D], attention weights [B, H, L, L])."""
        y = self.attention_norm(x)
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
        self.input_dropout = nnx.Dropout(dropout, rngs=rngs)
        self.layers = nnx.List(
            [
                EncoderLayer(d_model, num_heads, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
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
        mask = encoder_attention_mask(segment_ids, valid, self.attention_mode)
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, mask, train=train)
            all_weights.append(weights)
        return self.final_norm(x), valid, all_weights
