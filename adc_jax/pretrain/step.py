"""BYOL-A pretraining: the train state (online + EMA target, optimizer, mixup memory), the pure
jitted step, the normalisation statistics and the encoder export.

Nothing here imports the data or evaluation stack (tfds, grain, librosa, pycocoevalcap), so the
step can be benchmarked on a machine that only has jax, flax, optax, ml-collections and numpy.

Public API:
  create_pretrain_state(config, mesh, *, norm_stats=None) -> train_state.TrainState
  jit_pretrain_step(ts, config, mesh) -> (rng_state, state, batch) -> (state, metrics)
  jit_log_mel_moments(config, mesh) -> (batch) -> (sum, sum of squares, count) of valid frames
  export_encoder(state_or_model, config, out_dir, *, step=None) -> meta dict
  pretrain_step, compute_loss, ema_decay_schedule, learning_rate_schedule, make_optimizer

The state is the NNX state of {"model": BYOL, "optimizer": Adam of the online network only,
"buffers": the mixup memory and the pre-normalisation statistics}, minus the dropout RNG
streams, which are reseeded inside the step from `fold_in(seed_key, step)`. Every random choice
of a step (the crop of each clip, both views' augmentations, dropout in both networks) derives
from that key, so a resumed run is exactly an uninterrupted one.

One step, for a batch {"wav": [B, N] int16 (full scale) or float in [-1, 1], "wav_len": [B]
int32 valid samples} (global arrays sharded over "data"):
  1. log-mel of each whole clip (the front end of `adc_jax.models.frontend`, samples from
     wav_len on zeroed), pre-normalised with the state's statistics: (log-mel - mean) / std;
  2. a random segment of pretrain.segment_frames frames of each clip's valid frames;
  3. two views per segment (`byol_augment.make_views`: mixup with the memory, random resize
     crop, random linear fader, per-batch standardisation);
  4. both views of every clip through the online network and the target network, as one batch of
     2B (BatchNorm sees both views); BYOL's symmetrised loss; gradients of the online network only;
  5. Adam (optionally clipped, AdamW) updates the online network; then the target's parameters
     become tau * target + (1 - tau) * online (the EMA, inside the step);
  6. the batch's segments enter the mixup memory (FIFO; not when mixup is off).
A step whose loss or gradient norm is not finite leaves the whole state as it was (metrics report
`finite` = 0) and only advances the step counter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from adc_jax import sharding as sharding_lib
from adc_jax import train_state
from adc_jax.config import BYOLA_META_FILE, BYOLA_PARAMS_FILE
from adc_jax.models import frontend
from adc_jax.models.byol import BYOL, byol_loss, ema_update
from adc_jax.models.byola import AudioNTT2020, encoder_from_config
from adc_jax.models.layers import compute_dtype
from adc_jax.pretrain import augment as byol_augment

# What an exported encoder's meta.json names as its source.
EXPORT_SOURCE = "adc_jax BYOL-A pretraining (python -m adc_jax.pretrain)"

# ---------------------------------------------------------------------------------- schedules


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to the peak, then cosine decay to final_lr_fraction * peak (a
    fraction of 1.0, the default, keeps the peak: BYOL-A's constant learning rate)."""
    return train_state.warmup_cosine_schedule(config.train)


def ema_decay_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """tau of step k: constant pretrain.ema_decay, or BYOL's cosine increase to 1:
    tau_k = 1 - (1 - tau_0) (cos(pi k / K) + 1) / 2 over K = train.num_steps."""
    p, steps = config.pretrain, max(int(config.train.num_steps), 1)
    tau0 = float(p.ema_decay)
    if p.ema_schedule == "constant":
        return lambda step: jnp.asarray(tau0, jnp.float32)

    def cosine(step):
        progress = jnp.minimum(jnp.asarray(step, jnp.float32) / steps, 1.0)
        return 1.0 - (1.0 - tau0) * (jnp.cos(math.pi * progress) + 1.0) / 2.0

    return cosine


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (AdamW when train.weight_decay > 0), after global-norm clipping if train.grad_clip."""
    t = config.train
    adam = optax.adamw(
        learning_rate_schedule(config),
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=t.weight_decay,
        mask=train_state.decay_mask,
    )
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), adam) if t.grad_clip else adam


# ---------------------------------------------------------------------------------- state


class Buffer(nnx.Variable):
    """Non-trainable pretraining state: the mixup memory and the normalisation statistics."""


class Buffers(nnx.Module):
    """memory [M, S, F] float32 (past pre-normalised segments), position and filled (int32
    scalars: the next slot, the slots in use), norm_mean and norm_std (float32 scalars: the
    pre-normalisation of the raw log-mel)."""

    def __init__(self, memory_size: int, frames: int, bins: int, norm_mean: float, norm_std: float):
        self.memory = Buffer(jnp.zeros((memory_size, frames, bins), jnp.float32))
        self.position = Buffer(jnp.zeros((), jnp.int32))
        self.filled = Buffer(jnp.zeros((), jnp.int32))
        self.norm_mean = Buffer(jnp.asarray(norm_mean, jnp.float32))
        self.norm_std = Buffer(jnp.asarray(norm_std, jnp.float32))


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> BYOL:
    """The online and target networks described by `config.model`."""
    m = config.model
    return BYOL(
        encoder_from_config(m, rngs=rngs),
        projector_hidden=m.projector_hidden,
        projector_dim=m.projector_dim,
        dtype=compute_dtype(m.dtype),
        rngs=rngs,
    )


def build_all(
    config: ml_collections.ConfigDict, norm_stats: tuple[float, float] | None = None
) -> tuple[BYOL, nnx.Optimizer, Buffers]:
    """The model (from config.seed), the optimizer of its online network, and the buffers.

    norm_stats: (mean, std) of the raw log-mel; None = config.model.norm_mean / norm_std.
    """
    model = build_model(config, train_state.init_rngs(config.seed))
    optimizer = nnx.Optimizer(model.online, make_optimizer(config), wrt=nnx.Param)
    mean, std = norm_stats or (config.model.norm_mean, config.model.norm_std)
    # Orbax cannot save an empty array: with mixup_memory = 0 (mixup off) the memory keeps one
    # slot, which stays empty (the step neither mixes nor pushes when mixup is off).
    buffers = Buffers(
        max(config.pretrain.mixup_memory, 1),
        config.pretrain.segment_frames,
        config.model.n_mels,
        float(mean),
        float(std),
    )
    return model, optimizer, buffers


def create_pretrain_state(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    *,
    norm_stats: tuple[float, float] | None = None,
) -> train_state.TrainState:
    """Initialises the model, optimizer and buffers on the host and places them on the mesh.

    Every process computes the same values from `config.seed`; each device then takes its part
    according to `sharding.STATE_RULES` (today: everything replicated). `norm_stats` = (mean,
    std) of the raw log-mel (`estimate_norm_stats`); None uses config.model.norm_mean/norm_std.
    """

    def build():
        model, optimizer, buffers = build_all(config, norm_stats)
        return {"model": model, "optimizer": optimizer, "buffers": buffers}

    return train_state.place_on_mesh(build, mesh)


def parameter_count(state: nnx.State, part: str = "online") -> int:
    """Number of parameters of the online (or "target") network in a pretrain state."""
    return train_state.parameter_count(state["model"][part])


# ---------------------------------------------------------------------------------- the step


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The static settings of a step (hashable, so they can be closed over by jit).

    log_mel: the front end without normalisation (the step normalises with the buffers'
    statistics); segment_frames: frames of each random crop; augment: BYOL-A's augmentations.
    """

    log_mel: frontend.LogMelSettings
    segment_frames: int
    augment: byol_augment.AugmentSettings

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> StepSettings:
        return cls(
            log_mel=frontend.LogMelSettings.from_config(config, normalised=False),
            segment_frames=int(config.pretrain.segment_frames),
            augment=byol_augment.AugmentSettings.from_config(config),
        )


def raw_log_mel(
    settings: StepSettings, wav: jax.Array, wav_len: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Un-normalised log-mel ln(mel + eps) of whole clips and their valid frames.

    wav: [B, N] int16 (full scale) or float in [-1, 1]; wav_len: [B] valid samples (the rest is
    zeroed first). Returns ([B, T, F] float32, [B] int32 valid frames = wav_len // hop + 1, or 0
    for an empty clip).
    """
    wav = frontend.float_waveform(wav)
    wav = jnp.where(jnp.arange(wav.shape[1])[None, :] < wav_len[:, None], wav, 0.0)
    logmel = settings.log_mel(wav)
    hop = settings.log_mel.hop_length
    n_valid = jnp.where(wav_len > 0, wav_len // hop + 1, 0).astype(jnp.int32)
    return logmel, jnp.minimum(n_valid, logmel.shape[1])


def compute_loss(
    online: nnx.Module, target: nnx.Module, views: jax.Array, *, train: bool = True
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BYOL's symmetrised loss of two views of each clip; scalar float32 and metrics.

    Args:
      online: `byol.OnlineNetwork`; target: `byol.TargetNetwork` (its outputs are treated as
        constants: the loss has no gradient with respect to it).
      views: [B, 2, S, F] the two views of each clip.
      train: BatchNorm on batch statistics (and running averages updated) and dropout on.

    Returns:
      (loss, {"loss", "projection_std"}): projection_std is the standard deviation over the batch
      of the online projections after l2 normalisation, averaged over dimensions (a collapsed
      representation gives 0; unit vectors spread in P dimensions give about 1 / sqrt(P)).
    """
    batch = views.shape[0]
    flat = views.reshape(batch * 2, *views.shape[2:])  # rows 2i, 2i + 1: views 1, 2 of clip i
    z_target = jax.lax.stop_gradient(target(flat, train=train)).reshape(batch, 2, -1)
    z_online, prediction = online(flat, train=train)
    prediction = prediction.reshape(batch, 2, -1)
    loss = byol_loss(prediction[:, 0], prediction[:, 1], z_target[:, 0], z_target[:, 1])
    unit = z_online / jnp.maximum(jnp.linalg.norm(z_online, axis=-1, keepdims=True), 1e-12)
    return loss, {"loss": loss, "projection_std": jnp.mean(jnp.std(unit, axis=0))}


def pretrain_step(
    graphdef: nnx.GraphDef,
    settings: StepSettings,
    schedule: optax.Schedule,
    tau_schedule: optax.Schedule,
    seed_key: jax.Array,
    rng_state: nnx.State,
    state: nnx.State,
    batch: dict[str, jax.Array],
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """One BYOL-A step (see the module docstring); pure. Returns the new state and metrics:
    loss, projection_std, grad_norm, learning_rate, ema_decay, memory_filled, finite."""
    # copy=True: the updates below mutate the merged Variables in place; without a copy they
    # would also overwrite `state`, and a non-finite step could not fall back to it.
    parts = nnx.merge(graphdef, rng_state, state, copy=True)
    model, optimizer, buffers = parts["model"], parts["optimizer"], parts["buffers"]
    step = optimizer.step[...]
    key_crop, key_views, key_online, key_target = jax.random.split(
        jax.random.fold_in(seed_key, step), 4
    )
    nnx.reseed(model.online, dropout=key_online)
    nnx.reseed(model.target, dropout=key_target)

    logmel, n_valid = raw_log_mel(settings, batch["wav"], batch["wav_len"])
    logmel = (logmel - buffers.norm_mean[...]) / buffers.norm_std[...]
    segments = byol_augment.random_segments(key_crop, logmel, n_valid, settings.segment_frames)
    memory, filled = buffers.memory[...], buffers.filled[...]
    views = byol_augment.make_views(key_views, segments, memory, filled, settings.augment)

    def loss_fn(online, target):
        return compute_loss(online, target, views, train=True)

    # Gradients of the online network only (argument 0); the target's BatchNorm statistics
    # still update from its forward pass.
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(model.online, model.target)
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model.online, grads)
    tau = tau_schedule(step)
    ema_update(model, tau)
    if settings.augment.mixup_ratio > 0:
        new_memory, position, filled = byol_augment.push_memory(
            memory, buffers.position[...], filled, segments
        )
        buffers.memory[...] = new_memory
        buffers.position[...] = position
        buffers.filled[...] = filled

    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = train_state.keep_if_finite(finite, train_state.split_state(parts)[2], state, step)
    metrics.update(
        grad_norm=grad_norm,
        learning_rate=schedule(step),
        ema_decay=jnp.asarray(tau, jnp.float32),
        memory_filled=new_state["buffers"]["filled"][...].astype(jnp.float32),
        finite=finite.astype(jnp.float32),
    )
    return new_state, metrics


def seed_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key every step's randomness is folded from (the step number is folded in)."""
    return train_state.step_key(config, 3)


def jit_pretrain_step(ts: train_state.TrainState, config: ml_collections.ConfigDict, mesh: Mesh):
    """The step compiled for the mesh: (rng_state, state, batch) -> (state, metrics).

    The state is donated (updated in place); the batch {"wav", "wav_len"} is sharded over "data".
    """
    fn = functools.partial(
        pretrain_step,
        ts.graphdef,
        StepSettings.from_config(config),
        learning_rate_schedule(config),
        ema_decay_schedule(config),
        seed_key(config),
    )
    return train_state.jit_step(fn, ts, mesh)


# ---------------------------------------------------------------------------------- statistics


def jit_log_mel_moments(config: ml_collections.ConfigDict, mesh: Mesh):
    """batch -> (sum, sum of squares, count) of the raw log-mel over valid frames, float32
    scalars (global over the batch); `estimate_norm_stats` accumulates them."""
    settings = StepSettings.from_config(config)

    def moments(batch):
        logmel, n_valid = raw_log_mel(settings, batch["wav"], batch["wav_len"])
        valid = (jnp.arange(logmel.shape[1])[None, :] < n_valid[:, None])[:, :, None]
        x = jnp.where(valid, logmel, 0.0)
        count = jnp.sum(n_valid).astype(jnp.float32) * logmel.shape[2]
        return jnp.sum(x), jnp.sum(jnp.square(x)), count

    replicated = sharding_lib.replicated(mesh)
    return jax.jit(
        moments, in_shardings=(sharding_lib.batch_sharding(mesh),), out_shardings=replicated
    )


def estimate_norm_stats(
    batches, config: ml_collections.ConfigDict, mesh: Mesh, num_batches: int
) -> tuple[float, float]:
    """(mean, std) of the raw log-mel over the valid frames of the first `num_batches` global
    batches of `batches` (an iterator of global batches on the mesh); sums in float64.

    Raises ValueError when those batches hold no valid frame.
    """
    moments = jit_log_mel_moments(config, mesh)
    total = total_sq = count = 0.0
    for _ in range(num_batches):
        s, s2, n = jax.device_get(moments(next(batches)))
        total, total_sq, count = total + float(s), total_sq + float(s2), count + float(n)
    if count == 0:
        raise ValueError(
            f"The first {num_batches} batches hold no audio (every wav_len is 0): cannot "
            "estimate the log-mel statistics. Check the data, or set "
            "--config.pretrain.norm_stats_batches=0 to use model.norm_mean/norm_std."
        )
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return mean, max(std, 1e-6)


# ---------------------------------------------------------------------------------- export


def _host(x) -> np.ndarray:
    """A (replicated, possibly multi-host) array or host value as a NumPy array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


def _variables(tree) -> dict[str, np.ndarray]:
    """'conv1/kernel' -> array for every Param and BatchStat of a module or state."""
    state = nnx.state(tree) if isinstance(tree, nnx.Module) else tree
    return {
        "/".join(str(p) for p in path): _host(var.get_value()).astype(np.float32)
        for path, var in nnx.to_flat_state(nnx.filter_state(state, (nnx.Param, nnx.BatchStat)))
    }


def export_encoder(
    state_or_model: nnx.State | BYOL | AudioNTT2020,
    config: ml_collections.ConfigDict,
    out_dir: str,
    *,
    step: int | None = None,
    source: str = EXPORT_SOURCE,
) -> dict[str, Any]:
    """Writes the online encoder in the directory format of `tools/convert_byola.py`.

      out_dir/params.npz  float32 arrays under AudioNTT2020's parameter paths ('conv1/kernel',
                          ..., 'bn1/mean', ..., 'fc2/bias'), read by `byola.load_pretrained`
      out_dir/meta.json   n_mels, channels, dim (checked by the captioner's `config.validate`),
                          source, step, config name and size, norm_mean / norm_std (the
                          pre-normalisation the encoder was trained with), parameter shapes

    Each file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
      state_or_model: a pretrain state (the `.state` of `create_pretrain_state`'s result; step
        and normalisation come from it), a `BYOL` model (its online encoder) or an
        `AudioNTT2020` encoder.
      config: the pretraining config (sizes, name; normalisation when not in a state).
      out_dir: the directory to write (created).
      step: recorded in meta.json (default: the state's step, or None).
      source: what meta.json names as the encoder's origin.

    Returns:
      the metadata written to meta.json.
    """
    norm = (float(config.model.norm_mean), float(config.model.norm_std))
    if isinstance(state_or_model, AudioNTT2020):
        arrays = _variables(state_or_model)
    elif isinstance(state_or_model, BYOL):
        arrays = _variables(state_or_model.online.encoder)
    else:
        state = state_or_model
        arrays = _variables(state["model"]["online"]["encoder"])
        buffers = state["buffers"]
        norm = (float(_host(buffers["norm_mean"][...])), float(_host(buffers["norm_std"][...])))
        if step is None:
            step = int(_host(state["optimizer"]["step"][...]))
    m = config.model
    expected = {"fc1/kernel": ((m.n_mels // 8) * m.byola_channels, m.byola_dim)}
    for name, shape in expected.items():
        if name not in arrays or tuple(arrays[name].shape) != shape:
            got = tuple(arrays[name].shape) if name in arrays else "missing"
            raise ValueError(
                f"export_encoder: {name} is {got}, but the config's encoder (n_mels={m.n_mels}, "
                f"byola_channels={m.byola_channels}, byola_dim={m.byola_dim}) needs {shape}; "
                "pass the config the model was built with."
            )
    meta = {
        "n_mels": int(m.n_mels),
        "channels": int(m.byola_channels),
        "dim": int(m.byola_dim),
        "source": source,
        "step": step,
        "config_name": str(config.name),
        "config_size": str(config.get("size", "")),
        "norm_mean": norm[0],
        "norm_std": norm[1],
        "params": {k: list(v.shape) for k, v in sorted(arrays.items())},
    }
    os.makedirs(out_dir, exist_ok=True)
    params_path = os.path.join(out_dir, BYOLA_PARAMS_FILE)
    with open(params_path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(params_path + ".tmp", params_path)
    meta_path = os.path.join(out_dir, BYOLA_META_FILE)
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path + ".tmp", meta_path)
    return meta
