"""BYOL's online and target networks around BYOL-A's AudioNTT2020 encoder, and the BYOL loss.

Implemented from the BYOL (Grill et al., 2020) and BYOL-A (Niizumi et al., 2021/2023) papers.

  online: log-mel view [B, T, F] -> AudioNTT2020 -> frames [B, T/8, d] -> mean + max over time
          -> embedding [B, d] -> projector MLP -> z [B, P] -> predictor MLP -> p [B, P]
  target: the same encoder and projector (no predictor) -> z [B, P]

MLP (projector and predictor): Linear(in -> hidden) -> BatchNorm -> ReLU -> Linear(hidden -> P);
BYOL-A uses hidden 4,096 and P = 256.

The target starts as a copy of the online encoder and projector; afterwards its parameters are
an exponential moving average of the online ones (`ema_update`, applied by the train step after
each optimiser update) and it never receives gradients. Its BatchNorm statistics are not
averaged: the target runs in training mode and keeps the statistics of its own forward passes,
as BYOL's and BYOL-A's implementations do.

The loss (`byol_loss`) is BYOL's symmetrised regression loss: for views 1 and 2 of each clip,
(2 - 2 cos(p1, sg(z2))) + (2 - 2 cos(p2, sg(z1))), averaged over the batch (range [0, 8]).

Public API: `MLP`, `pool_frames`, `OnlineNetwork`, `TargetNetwork`, `BYOL`, `ema_update`,
`regression_loss`, `byol_loss`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from adc_jax.models.byola import AudioNTT2020


class MLP(nnx.Module):
    """Linear -> BatchNorm -> ReLU -> Linear: [B, in_dim] -> [B, out_dim] float32.

    BatchNorm follows PyTorch's BatchNorm1d (eps 1e-5, momentum 0.1) with float32 statistics.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs
    ):
        dense = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.fc1 = nnx.Linear(in_dim, hidden, **dense)
        self.bn = nnx.BatchNorm(
            hidden,
            momentum=0.9,
            epsilon=1e-5,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            use_fast_variance=False,
            rngs=rngs,
        )
        self.fc2 = nnx.Linear(hidden, out_dim, **dense)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: [B, in_dim]; train: batch statistics (and update the running ones) or running."""
        h = self.fc1(x).astype(jnp.float32)
        h = jax.nn.relu(self.bn(h, use_running_average=not train))
        return self.fc2(h.astype(self.fc1.dtype)).astype(jnp.float32)


def pool_frames(frames: jax.Array) -> jax.Array:
    """BYOL-A's clip embedding: mean + max over time. [B, T', d] -> [B, d] float32."""
    frames = frames.astype(jnp.float32)
    return jnp.mean(frames, axis=1) + jnp.max(frames, axis=1)


class TargetNetwork(nnx.Module):
    """Encoder -> pooled embedding -> projector: log-mel [B, T, F] -> z [B, P] float32."""

    def __init__(self, encoder: AudioNTT2020, projector: MLP):
        self.encoder = encoder
        self.projector = projector

    def __call__(self, logmel: jax.Array, *, train: bool) -> jax.Array:
        return self.projector(pool_frames(self.encoder(logmel, train=train)), train=train)


class OnlineNetwork(nnx.Module):
    """Encoder -> pooled embedding -> projector -> predictor.

    `__call__`: log-mel [B, T, F] -> (projection z [B, P], prediction p [B, P]), float32.
    """

    def __init__(self, encoder: AudioNTT2020, projector: MLP, predictor: MLP):
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    def __call__(self, logmel: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        z = self.projector(pool_frames(self.encoder(logmel, train=train)), train=train)
        return z, self.predictor(z, train=train)


class BYOL(nnx.Module):
    """The online network and its EMA target (initialised as a copy of the online encoder and
    projector).

    Args:
      encoder: the online AudioNTT2020 encoder (`byola.encoder_from_config`).
      projector_hidden, projector_dim: hidden and output width of the projector and predictor.
      dtype: compute dtype of the MLPs' matmuls (parameters stay float32).
    """

    def __init__(
        self,
        encoder: AudioNTT2020,
        *,
        projector_hidden: int,
        projector_dim: int,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        dim = encoder.dim
        projector = MLP(dim, projector_hidden, projector_dim, dtype=dtype, rngs=rngs)
        predictor = MLP(projector_dim, projector_hidden, projector_dim, dtype=dtype, rngs=rngs)
        self.online = OnlineNetwork(encoder, projector, predictor)
        self.target = TargetNetwork(nnx.clone(encoder), nnx.clone(projector))

    def target_source(self) -> dict[str, Any]:
        """The online parameters the target averages, as a pure dict shaped like the target's
        parameters: {"encoder": {...}, "projector": {...}}."""
        return {
            "encoder": nnx.to_pure_dict(nnx.state(self.online.encoder, nnx.Param)),
            "projector": nnx.to_pure_dict(nnx.state(self.online.projector, nnx.Param)),
        }


def ema_update(model: BYOL, tau: jax.Array | float) -> None:
    """target <- tau * target + (1 - tau) * online, for every parameter of the target (in place).

    BatchNorm statistics are left alone: the target keeps those of its own forward passes.
    """
    target = nnx.state(model.target, nnx.Param)
    averaged = jax.tree.map(
        lambda t, o: tau * t + (1.0 - tau) * o, nnx.to_pure_dict(target), model.target_source()
    )
    nnx.replace_by_pure_dict(target, averaged)
    nnx.update(model.target, target)


def regression_loss(prediction: jax.Array, projection: jax.Array) -> jax.Array:
    """2 - 2 cos(prediction, projection) per row: [B, P], [B, P] -> [B] float32 in [0, 4]."""
    p = prediction.astype(jnp.float32)
    z = projection.astype(jnp.float32)
    # Normalised as x / max(||x||, 1e-12) (torch.nn.functional.normalize), so zero rows are safe.
    p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return 2.0 - 2.0 * jnp.sum(p * z, axis=-1)


def byol_loss(
    prediction1: jax.Array,
    prediction2: jax.Array,
    projection1: jax.Array,
    projection2: jax.Array,
) -> jax.Array:
    """BYOL's symmetrised loss, a scalar float32 in [0, 8].

    prediction1/2: the online predictions of views 1 and 2 [B, P]; projection1/2: the target
    projections of views 1 and 2 [B, P] (gradients are stopped here). Each online prediction is
    regressed onto the target projection of the *other* view; the two terms are summed and the
    sum is averaged over the batch.
    """
    z1 = jax.lax.stop_gradient(projection1)
    z2 = jax.lax.stop_gradient(projection2)
    return jnp.mean(regression_loss(prediction1, z2) + regression_loss(prediction2, z1))
