"""BYOL-A's augmentations of log-mel segments, on the device: pure jnp functions of PRNG keys.

Implemented from the BYOL-A papers' description (Niizumi et al., IJCNN 2021; TASLP 2023). All
arrays are time-major, as the encoder takes them: x [B, T, F] (B clips, T frames, F mel bins),
already pre-normalised (mean 0, standard deviation 1 over the data). Each function draws its
random values from the key it is given, per example, so a step's augmentations depend only on
its key (`fold_in(seed, step)`): a resumed run augments exactly as an uninterrupted one.

  random_segments      a random crop of `length` frames from each clip's valid frames
  log_mixup_exp        log((1 - lam) exp(x) + lam exp(x_past)): mixup in the linear domain
  mixup                ... with lam ~ U(0, ratio) and x_past drawn from a FIFO memory of past
                       segments (`push_memory` adds a batch to it)
  resize_crop          crop a window of a zero-padded virtual canvas, resize it back to T x F
                       with bilinear interpolation (align_corners=True), as explicit matrices
  random_resize_crop   ... with a random window size (a scale of the segment per axis) and place
  linear_fader         add a linear gain ramp over time in the log domain (BYOL-A v2)
  random_linear_fader  ... with gains at both ends ~ U(-gain, gain)
  standardise          per-batch normalisation after the augmentations (BYOL-A v2)
  make_views           the two independently augmented views of a batch: [B, 2, T, F]

Mixup draws from segments of earlier steps only (the memory is updated after the views are
made); the very first step, with an empty memory, mixes nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

# Added to the variance in `standardise`.
STANDARDISE_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """The augmentation fields of `config.pretrain` (hashable, so they are static under jit)."""

    mixup_ratio: float = 0.4
    virtual_crop_time: float = 1.5
    virtual_crop_freq: float = 1.0
    crop_scale_min: float = 0.6
    crop_scale_max: float = 1.5
    fader_gain: float = 1.0
    post_norm: str = "batch"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> AugmentSettings:
        p = config.pretrain
        return cls(
            # No memory (mixup_memory = 0) means no mixup, whatever the ratio.
            mixup_ratio=float(p.mixup_ratio) if p.mixup_memory > 0 else 0.0,
            virtual_crop_time=float(p.virtual_crop_time),
            virtual_crop_freq=float(p.virtual_crop_freq),
            crop_scale_min=float(p.crop_scale_min),
            crop_scale_max=float(p.crop_scale_max),
            fader_gain=float(p.fader_gain),
            post_norm=str(p.post_norm),
        )


# ------------------------------------------------------------------------------ random crops


def random_segments(
    key: jax.Array, logmel: jax.Array, n_valid: jax.Array, length: int
) -> jax.Array:
    """A random crop of `length` consecutive frames from each clip's valid frames.

    Args:
      key: PRNG key.
      logmel: [B, T, F] log-mel of whole clips.
      n_valid: [B] int, valid frames of each clip (the rest is padding).
      length: frames per segment.

    Returns:
      [B, length, F]: frames start .. start + length - 1 of each clip, start ~ U{0, ...,
      max(n_valid - length, 0)}; frames at or after n_valid (a clip shorter than `length`) are 0.
    """
    batch, frames, _ = logmel.shape
    n_valid = n_valid.astype(jnp.int32)
    start = jax.random.randint(key, (batch,), 0, jnp.maximum(n_valid - length, 0) + 1)
    index = start[:, None] + jnp.arange(length, dtype=jnp.int32)[None, :]  # [B, length]
    taken = jnp.take_along_axis(logmel, jnp.minimum(index, frames - 1)[:, :, None], axis=1)
    return jnp.where((index < n_valid[:, None])[:, :, None], taken, 0.0)


# ------------------------------------------------------------------------------ mixup


def log_mixup_exp(x: jax.Array, x_past: jax.Array, lam: jax.Array | float) -> jax.Array:
    """log((1 - lam) exp(x) + lam exp(x_past)), elementwise; lam broadcasts (e.g. [B, 1, 1]).

    Computed as logaddexp(log(1 - lam) + x, log(lam) + x_past), which never overflows and gives
    exactly x for lam = 0 and exactly x_past for lam = 1.
    """
    lam = jnp.asarray(lam, jnp.float32)
    return jnp.logaddexp(jnp.log1p(-lam) + x, jnp.log(lam) + x_past)


def mixup(
    key: jax.Array, x: jax.Array, memory: jax.Array, filled: jax.Array, ratio: float
) -> jax.Array:
    """Mixes each segment with a random past one: lam ~ U(0, ratio), x_past ~ U(memory[:filled]).

    Args:
      x: [B, T, F] segments.
      memory: [M, T, F] past segments, slots 0 .. filled - 1 in use.
      filled: int32 scalar, the number of slots in use (0: nothing is mixed).
      ratio: the largest mixing weight.

    Returns:
      [B, T, F] `log_mixup_exp(x, memory[i], lam)` per example.
    """
    if memory.shape[0] == 0 or ratio == 0.0:
        return x
    key_lam, key_index = jax.random.split(key)
    batch = x.shape[0]
    lam = ratio * jax.random.uniform(key_lam, (batch,), jnp.float32)
    lam = jnp.where(filled > 0, lam, 0.0)
    index = jax.random.randint(key_index, (batch,), 0, jnp.maximum(filled, 1))
    return log_mixup_exp(x, memory[index], lam[:, None, None])


def push_memory(
    memory: jax.Array, position: jax.Array, filled: jax.Array, segments: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Adds a batch of segments to the FIFO memory (a ring buffer); the oldest are overwritten.

    Args:
      memory: [M, T, F]; position: int32 scalar, the slot the next segment goes to; filled:
        int32 scalar, the slots in use; segments: [B, T, F], written in batch order.

    Returns:
      (memory, position, filled) after the write. With B >= M the memory holds the last M
      segments of the batch in order.
    """
    size, batch = memory.shape[0], segments.shape[0]
    if size == 0:
        return memory, position, filled
    segments = segments.astype(memory.dtype)
    if batch >= size:
        return segments[batch - size :], jnp.zeros_like(position), jnp.full_like(filled, size)
    slots = (position + jnp.arange(batch, dtype=position.dtype)) % size
    memory = memory.at[slots].set(segments)
    return memory, (position + batch) % size, jnp.minimum(filled + batch, size)


# ------------------------------------------------------------------------ random resize crop


def interpolation_matrix(
    start: jax.Array, size: jax.Array, out_len: int, canvas_len: int
) -> jax.Array:
    """Bilinear resampling weights (align_corners=True) of a window of a 1-D canvas.

    Output sample k of each example reads canvas position start + k (size - 1) / (out_len - 1),
    linearly interpolated between its two neighbours.

    Args:
      start: [B] int, the window's first canvas index; size: [B] int >= 1, its length.

    Returns:
      [B, out_len, canvas_len] float32 weights; each row sums to 1.
    """
    step = (size.astype(jnp.float32) - 1.0) / max(out_len - 1, 1)  # [B]
    pos = (
        start.astype(jnp.float32)[:, None] + jnp.arange(out_len, dtype=jnp.float32) * step[:, None]
    )  # [B, out_len]
    low = jnp.clip(jnp.floor(pos), 0, canvas_len - 1)
    frac = pos - low
    low = low.astype(jnp.int32)
    high = jnp.minimum(low + 1, canvas_len - 1)
    return (
        jax.nn.one_hot(low, canvas_len) * (1.0 - frac)[..., None]
        + jax.nn.one_hot(high, canvas_len) * frac[..., None]
    )


def canvas_sizes(frames: int, bins: int, settings: AugmentSettings) -> tuple[int, int]:
    """(time, freq) size of the virtual canvas around a [frames, bins] segment."""
    return int(frames * settings.virtual_crop_time), int(bins * settings.virtual_crop_freq)


def resize_crop(
    x: jax.Array,
    time_start: jax.Array,
    time_size: jax.Array,
    freq_start: jax.Array,
    freq_size: jax.Array,
    canvas: tuple[int, int],
) -> jax.Array:
    """Crops a window of the virtual canvas and resizes it back to the segment's shape.

    The canvas is `canvas` = (time, freq) cells of zeros with x in its middle (offset
    ((canvas_t - T) // 2, (canvas_f - F) // 2)); the window covers canvas rows time_start ..
    time_start + time_size - 1 and columns freq_start .. freq_start + freq_size - 1 of each
    example. The canvas is never built: the resampling matrices are restricted to the cells
    where x lies (the zeros contribute nothing). Computed at the highest matmul precision, so
    the identity window (time_start, time_size, freq_start, freq_size) = (offset_t, T, offset_f,
    F) returns x exactly.

    Args:
      x: [B, T, F]; time_start, time_size, freq_start, freq_size: [B] int.

    Returns:
      [B, T, F] float32.
    """
    _, frames, bins = x.shape
    canvas_t, canvas_f = canvas
    off_t, off_f = (canvas_t - frames) // 2, (canvas_f - bins) // 2
    w_time = interpolation_matrix(time_start, time_size, frames, canvas_t)[
        ..., off_t : off_t + frames
    ]
    w_freq = interpolation_matrix(freq_start, freq_size, bins, canvas_f)[..., off_f : off_f + bins]
    highest = jax.lax.Precision.HIGHEST
    y = jnp.einsum("bot,btf->bof", w_time, x.astype(jnp.float32), precision=highest)
    return jnp.einsum("bof,bpf->bop", y, w_freq, precision=highest)


def random_resize_crop(key: jax.Array, x: jax.Array, settings: AugmentSettings) -> jax.Array:
    """`resize_crop` with, per example and axis, a window of floor(s * segment) cells (s ~
    U(crop_scale_min, crop_scale_max), clipped to [1, canvas]) at a uniform random position."""
    batch, frames, bins = x.shape
    canvas_t, canvas_f = canvas_sizes(frames, bins, settings)
    k_ts, k_fs, k_tp, k_fp = jax.random.split(key, 4)
    lo, hi = settings.crop_scale_min, settings.crop_scale_max

    def window(k_size, k_pos, length, canvas_len):
        scale = jax.random.uniform(k_size, (batch,), jnp.float32, lo, hi)
        size = jnp.clip(jnp.floor(scale * length).astype(jnp.int32), 1, canvas_len)
        start = jax.random.randint(k_pos, (batch,), 0, canvas_len - size + 1)
        return start, size

    time_start, time_size = window(k_ts, k_tp, frames, canvas_t)
    freq_start, freq_size = window(k_fs, k_fp, bins, canvas_f)
    return resize_crop(x, time_start, time_size, freq_start, freq_size, (canvas_t, canvas_f))


# ------------------------------------------------------------------------ random linear fader


def linear_fader(x: jax.Array, gain_start: jax.Array, gain_end: jax.Array) -> jax.Array:
    """Adds a gain ramp over time in the log domain: x[b, t] + g0[b] + (g1[b] - g0[b]) t / (T-1).

    x: [B, T, F]; gain_start, gain_end: [B] (log-mel units). Returns [B, T, F].
    """
    frames = x.shape[1]
    ramp = jnp.linspace(0.0, 1.0, frames, dtype=jnp.float32)  # [T]
    slope = gain_start[:, None] + (gain_end - gain_start)[:, None] * ramp[None, :]  # [B, T]
    return x + slope[:, :, None]


def random_linear_fader(key: jax.Array, x: jax.Array, gain: float) -> jax.Array:
    """`linear_fader` with the gains at both ends ~ U(-gain, gain) per example (0: identity)."""
    if gain == 0.0:
        return x
    gains = jax.random.uniform(key, (x.shape[0], 2), jnp.float32, -gain, gain)
    return linear_fader(x, gains[:, 0], gains[:, 1])


# ------------------------------------------------------------------------ normalisation, views


def standardise(x: jax.Array) -> jax.Array:
    """(x - mean) / std over the whole (global) batch: [B, T, F] -> [B, T, F]."""
    mean = jnp.mean(x)
    var = jnp.mean(jnp.square(x - mean))
    return (x - mean) * jax.lax.rsqrt(var + STANDARDISE_EPS)


def augment(
    key: jax.Array,
    segments: jax.Array,
    memory: jax.Array,
    filled: jax.Array,
    settings: AugmentSettings,
) -> jax.Array:
    """One view: mixup -> random resize crop -> random linear fader -> post-normalisation."""
    k_mix, k_crop, k_fade = jax.random.split(key, 3)
    x = mixup(k_mix, segments.astype(jnp.float32), memory, filled, settings.mixup_ratio)
    x = random_resize_crop(k_crop, x, settings)
    x = random_linear_fader(k_fade, x, settings.fader_gain)
    return standardise(x) if settings.post_norm == "batch" else x


def make_views(
    key: jax.Array,
    segments: jax.Array,
    memory: jax.Array,
    filled: jax.Array,
    settings: AugmentSettings,
) -> jax.Array:
    """Two independently augmented views of each segment.

    Args:
      key: PRNG key of the step; segments: [B, T, F] pre-normalised; memory, filled: the mixup
        memory (`mixup`).

    Returns:
      [B, 2, T, F] float32: views[:, 0] and views[:, 1].
    """
    views = [
        augment(jax.random.fold_in(key, v), segments, memory, filled, settings) for v in (0, 1)
    ]
    return jnp.stack(views, axis=1)
