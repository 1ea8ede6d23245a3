"""What the captioner's step (`adc_jax.step`) and pretraining's (`adc_jax.pretrain.step`) share.

  TrainState         what the loop holds: the static graph, the dropout RNG streams (not
                     checkpointed) and the state (what checkpoints save), placed on the mesh;
  place_on_mesh      builds the modules on the host from the seed and places their state;
  init_rngs          the parameter and dropout streams of `nnx.Rngs` for a seed;
  warmup_cosine_schedule, decay_mask   the learning rate and where weight decay applies;
  split_state, keep_if_finite   the state after an update, or the one before when the loss or the
                     gradient was not finite (the step counter advances either way);
  jit_step           a pure `(rng_state, state, batch) -> (state, metrics)` step compiled for the
                     mesh, the state donated.

Like the steps, nothing here imports the data or evaluation stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from adc_jax import sharding as sharding_lib


@dataclasses.dataclass
class TrainState:
    """What the loop holds: static graph, dropout RNG streams (not checkpointed) and the state.

    `state` holds params, BatchNorm statistics, optimizer state (step count included) and any
    buffers, placed with `shardings`; it is what checkpoints save.
    """

    graphdef: nnx.GraphDef
    rng_state: nnx.State
    state: nnx.State
    shardings: Any


def init_rngs(seed: int) -> nnx.Rngs:
    """Parameter init from `seed`; the dropout stream from the seed's key folded with 1."""
    return nnx.Rngs(params=seed, dropout=jax.random.fold_in(jax.random.key(seed), 1))


def split_state(parts: dict[str, nnx.Module]) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, RNG streams, everything else) of a dict of modules, e.g. {"model",
    "optimizer"}; the RNG streams are reseeded every step, so checkpoints leave them out."""
    return nnx.split(parts, nnx.RngState, ...)


def place_on_mesh(
    build: Callable[[], dict[str, nnx.Module]],
    mesh: Mesh,
    rules: tuple = sharding_lib.STATE_RULES,
) -> TrainState:
    """Builds the modules with `build()` on the host and places their state on the mesh.

    Initialisation runs on the host CPU, so every process computes the same values from the
    seed; each device then takes its slice according to `rules` (`sharding.STATE_RULES`).
    """
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        graphdef, rng_state, state = split_state(build())
        host_state = jax.device_get(state)
    shardings = sharding_lib.state_shardings(mesh, host_state, rules)
    placed = sharding_lib.put_state(host_state, shardings)
    rng_state = sharding_lib.put_replicated(rng_state, mesh)
    return TrainState(graphdef, rng_state, placed, shardings)


def parameter_count(state: nnx.State) -> int:
    """Number of parameters (nnx.Param leaves) in a module's state."""
    params = nnx.filter_state(state, nnx.Param)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------- optimiser


def warmup_cosine_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to train.learning_rate over train.warmup_steps, then cosine decay to
    train.final_lr_fraction * peak at train.num_steps (a fraction of 1.0 keeps the peak)."""
    warmup = min(train.warmup_steps, max(train.num_steps - 1, 0))
    if warmup == 0:  # (optax's warm-up schedule logs a warning for a warm-up of 0 steps)
        return optax.cosine_decay_schedule(
            train.learning_rate, max(train.num_steps, 1), alpha=train.final_lr_fraction
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(train.num_steps, warmup + 1),
        end_value=train.learning_rate * train.final_lr_fraction,
    )


def decay_mask(params):
    """Weight decay on matrices and conv kernels only (not biases, norms or scalars)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


# ---------------------------------------------------------------------------------- the step


def keep_if_finite(
    finite: jax.Array, new_state: nnx.State, old_state: nnx.State, step: jax.Array
) -> nnx.State:
    """`new_state` when `finite` (a bool scalar), else `old_state`, leaf by leaf; either way the
    optimizer's step counter becomes `step + 1`, so the data position and the RNG stream (both
    derived from the step) stay aligned."""
    state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, old_state)
    state["optimizer"]["step"][...] = step + 1
    return state


def step_key(config: ml_collections.ConfigDict, stream: int) -> jax.Array:
    """The key a step's randomness is folded from: the seed's key folded with `stream` (each
    trainer uses its own); the step number is folded in inside the step."""
    return jax.random.fold_in(jax.random.key(config.seed), stream)


def jit_step(fn: Callable, ts: TrainState, mesh: Mesh) -> Callable:
    """`fn(rng_state, state, batch) -> (state, metrics)` compiled for the mesh: the state
    donated (updated in place) and placed as `ts.shardings`, the batch sharded over "data", the
    RNG streams and the metrics replicated."""
    replicated = sharding_lib.replicated(mesh)
    return jax.jit(
        fn,
        donate_argnums=(1,),
        in_shardings=(replicated, ts.shardings, sharding_lib.batch_sharding(mesh)),
        out_shardings=(ts.shardings, replicated),
    )
