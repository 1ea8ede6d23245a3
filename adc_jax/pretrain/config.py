"""Defaults, size presets and validation of BYOL-A pretraining configs (`adc_jax.pretrain`).

`configs/byola_pretrain.py` calls `pretrain_config(size)`. The encoder fields under `model` carry
the captioner's names (`adc_jax.config`): the encoder a run exports (`W/encoder/`) fits
`--config.model.byola_init=W/encoder` of a captioner config of the same size without other
flags (quick: 16 channels, d = 256; smoke: 8 channels, d = 32; paper: 64 channels, d = 2048).

Sizes:
  "paper": BYOL-A's published setting (AudioNTT2020 d = 2048, projector 4,096 -> 256, batch 256,
           Adam 3e-4, mixup memory 2,048 segments) for GPUs/TPUs.
  "quick": the same mechanisms shrunk to pretrain on 2 CPU cores.
  "smoke": seconds; used by the tests.

`validate(config)` checks every field a user can set and raises `config.ConfigError` naming the
key, so a bad value fails before anything is built or compiled.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

from adc_jax.config import (
    DTYPES,
    FIRST_BLOCK_SETTINGS,
    NONFINITE_POLICIES,
    ConfigError,
    base_config,
    get_field,
    min_clip_samples,
    parse_size,
)

CLIP_DATASETS = ("synthetic_clips", "synthetic_events", "audio_folder")
EMA_SCHEDULES = ("constant", "cosine")
POST_NORMS = ("batch", "none")


# Model fields taken from the captioner's config of the same size (`base_config(size).model`).
SHARED_MODEL_FIELDS = (
    "n_fft",
    "win_length",
    "hop_length",
    "n_mels",
    "f_min",
    "f_max",
    "norm_mean",
    "norm_std",
    "byola_channels",
    "byola_dim",
    "byola_dropout",
    "byola_first_block",
)


def pretrain_config(size: str = "paper") -> ml_collections.ConfigDict:
    """Returns the full default pretraining config at the given size."""
    size = parse_size(size)
    c = ml_collections.ConfigDict()
    # Name of the run, written into logs and into the exported encoder's meta.json.
    c.name = "byola_pretrain"
    # Size preset this config was built with (paper, quick or smoke); informational.
    c.size = size
    # Master seed: parameter init, augmentations, crops, dropout and data order derive from it.
    c.seed = 0

    # ---------------------------------------------------------------- data
    c.data = ml_collections.ConfigDict()
    # Clips to pretrain on, all built-in ones generated on first use: "synthetic_events"
    # (single-event scenes, -12..+6 dB over a rain/traffic background: the encoder probes best
    # after these, README), "synthetic_clips" (the captioner's scenes, 0-3 events 0-15 dB over
    # the background), or "audio_folder" (every WAV/FLAC/OGG under data.audio_dir, resampled and
    # cut into clips).
    c.data.name = "synthetic_events"
    # audio_folder: the folder tree of audio files (any rate, any length).
    c.data.audio_dir = ""
    # Directory holding tfds datasets; "" means $ADC_JAX_DATA_DIR or ~/.cache/adc_jax/datasets.
    c.data.data_dir = ""
    # Audio sample rate in Hz; BYOL-A's front end expects 16 kHz.
    c.data.sample_rate = 16000
    # Length in seconds of every clip (longer audio is cut into clips of this length).
    c.data.clip_seconds = 10.0
    # synthetic_*: number of training clips.
    c.data.num_train = 6000
    # synthetic_*: number of validation clips.
    c.data.num_validation = 300
    # synthetic_*: seed of the generator (the data, not the training run).
    c.data.synth_seed = 0
    # Number of batches prepared ahead of the device (host-side prefetch).
    c.data.prefetch = 2
    # Number of grain worker processes (0 = in the main process).
    c.data.num_workers = 0

    # ---------------------------------------------------------------- model
    c.model = ml_collections.ConfigDict()
    # Compute dtype: "float32" or "bfloat16" (params, optimizer state, EMA target, losses and
    # BatchNorm statistics stay float32; the front end and the augmentations are float32).
    c.model.dtype = "float32"
    # The front end and the encoder: the captioner's fields of the same size (documented in
    # adc_jax/config.py), so the exported encoder fits `model.byola_init` of that size and the
    # two never drift apart. norm_mean/norm_std are the pre-normalisation used when
    # pretrain.norm_stats_batches = 0 (otherwise estimated from the data).
    captioner = base_config(size).model
    for key in SHARED_MODEL_FIELDS:
        c.model[key] = captioner[key]
    # Projector and predictor MLPs (Linear -> BatchNorm -> ReLU -> Linear): hidden width.
    c.model.projector_hidden = 4096
    # Projector and predictor MLPs: output width (the space the BYOL loss compares in).
    c.model.projector_dim = 256

    # ---------------------------------------------------------------- pretrain (BYOL-A)
    c.pretrain = ml_collections.ConfigDict()
    # Log-mel frames of each random crop of a clip (96 frames = 0.96 s at hop 10 ms).
    c.pretrain.segment_frames = 96
    # Batches read at the start of a fresh run to estimate the log-mel's mean and standard
    # deviation over valid frames (the pre-normalisation; saved in every checkpoint and in the
    # encoder's meta.json); 0 = use model.norm_mean / model.norm_std instead.
    c.pretrain.norm_stats_batches = 10
    # Mixup: lambda ~ U(0, mixup_ratio), mixed in the linear domain with a past segment.
    c.pretrain.mixup_ratio = 0.4
    # Mixup: segments kept in the FIFO memory of past inputs (0 = no mixup).
    c.pretrain.mixup_memory = 2048
    # Random resize crop: the virtual canvas is this many times the segment along time.
    c.pretrain.virtual_crop_time = 1.5
    # Random resize crop: the virtual canvas is this many times the segment along frequency.
    c.pretrain.virtual_crop_freq = 1.0
    # Random resize crop: smallest crop size as a fraction of the segment (each axis).
    c.pretrain.crop_scale_min = 0.6
    # Random resize crop: largest crop size as a fraction of the segment (each axis).
    c.pretrain.crop_scale_max = 1.5
    # Random linear fader (BYOL-A v2): gains at both ends ~ U(-g, g) in log-mel units; 0 = off.
    c.pretrain.fader_gain = 1.0
    # Normalisation after the augmentations: "batch" (each view standardised over the global
    # batch, BYOL-A v2) or "none".
    c.pretrain.post_norm = "batch"
    # Target network = EMA of the online one: decay tau (BYOL-A: 0.99).
    c.pretrain.ema_decay = 0.99
    # "constant" tau (BYOL-A) or "cosine" (BYOL: tau rises from ema_decay to 1 over the run).
    c.pretrain.ema_schedule = "constant"

    # ---------------------------------------------------------------- train
    c.train = ml_collections.ConfigDict()
    # Global batch size in clips, summed over all devices and hosts.
    c.train.batch_size = 256
    # Number of optimiser steps.
    c.train.num_steps = 5000
    # Peak learning rate of Adam (BYOL-A: 3e-4).
    c.train.learning_rate = 3e-4
    # Linear warm-up steps (0 = none, as BYOL-A).
    c.train.warmup_steps = 0
    # Final learning rate as a fraction of the peak (cosine decay after the warm-up); 1.0 keeps
    # it constant, as BYOL-A does.
    c.train.final_lr_fraction = 1.0
    # Decoupled weight decay of the matrices and kernels (AdamW); 0 = plain Adam, as BYOL-A.
    c.train.weight_decay = 0.0
    # Global gradient-norm clipping threshold; 0 = no clipping (BYOL-A clips nothing).
    c.train.grad_clip = 0.0
    # Log metrics every this many steps.
    c.train.log_every = 50
    # Save a checkpoint (and export the encoder to WORKDIR/encoder) every this many steps and
    # at the end.
    c.train.checkpoint_every = 1000
    # Number of most recent checkpoints kept.
    c.train.keep_checkpoints = 3
    # On a NaN/Inf loss or gradient: "stop" (keep the last good checkpoint) or "skip" the update.
    c.train.nonfinite = "stop"

    _apply_size(c, size)
    return c


def _apply_size(c: ml_collections.ConfigDict, size: str) -> None:
    """Shrinks the paper-scale defaults for CPU runs; every mechanism stays switched on."""
    if size == "quick":
        c.data.clip_seconds = 2.0
        # 6,000 clips probe better than 2,000 at the same steps (README, BYOL-A pretraining).
        c.data.num_train = 6000
        c.data.num_validation = 100
        c.model.projector_hidden = 1024
        c.model.projector_dim = 128
        c.pretrain.mixup_memory = 512
        c.pretrain.norm_stats_batches = 5
        c.train.batch_size = 64
        c.train.num_steps = 1500
        c.train.learning_rate = 1e-3
        c.train.log_every = 25
        c.train.checkpoint_every = 250
    elif size == "smoke":
        c.data.clip_seconds = 1.0
        c.data.num_train = 16
        c.data.num_validation = 8
        c.model.projector_hidden = 32
        c.model.projector_dim = 16
        c.pretrain.mixup_memory = 16
        c.pretrain.norm_stats_batches = 2
        c.train.batch_size = 8
        c.train.num_steps = 6
        c.train.learning_rate = 1e-3
        c.train.log_every = 2
        c.train.checkpoint_every = 3


# ------------------------------------------------------------------------------------ validation


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"config.{key}={value!r} is invalid: {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(c: ml_collections.ConfigDict, key: str) -> None:
    value = get_field(c, key)
    _check(_is_int(value) and value > 0, key, value, "must be a positive integer.")


def _non_negative_int(c: ml_collections.ConfigDict, key: str) -> None:
    value = get_field(c, key)
    _check(_is_int(value) and value >= 0, key, value, "must be an integer >= 0.")


def _choice(c: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> None:
    value = get_field(c, key)
    _check(value in choices, key, value, f"must be one of {', '.join(map(repr, choices))}.")


def _in_range(c, key, lo, hi, *, lo_open=False, hi_open=False) -> None:
    value = get_field(c, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    lo_s = "(" if lo_open else "["
    hi_s = ")" if hi_open else "]"
    _check(ok, key, value, f"must be a number in {lo_s}{lo}, {hi}{hi_s}.")


def validate(c: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
    """Raises ConfigError naming the first field whose value cannot work.

    Args:
      c: a config from `configs/byola_pretrain.py`, with command-line overrides applied.
      num_devices: global device count; when given, the batch size must divide by it.
    """
    d = c.data
    _choice(c, "data.name", CLIP_DATASETS)
    if d.name == "audio_folder":
        _check(
            isinstance(d.audio_dir, str) and bool(d.audio_dir),
            "data.audio_dir",
            d.audio_dir,
            "must name a folder of WAV/FLAC/OGG files when data.name is 'audio_folder' "
            "(e.g. --config.data.audio_dir=/path/to/audio).",
        )
        _check(
            os.path.isdir(os.path.expanduser(d.audio_dir)),
            "data.audio_dir",
            d.audio_dir,
            "directory does not exist; point it at a folder tree of audio files.",
        )
    _positive_int(c, "data.sample_rate")
    _in_range(c, "data.clip_seconds", 0.0, 600.0, lo_open=True)
    n_samples = int(round(d.clip_seconds * d.sample_rate))
    _check(
        n_samples >= min_clip_samples(c),
        "data.clip_seconds",
        d.clip_seconds,
        f"a clip of {n_samples} samples is too short for BYOL-A's three 2x2 poolings; use at "
        f"least {min_clip_samples(c) / d.sample_rate:.3f} s.",
    )
    if d.name in ("synthetic_clips", "synthetic_events"):
        _positive_int(c, "data.num_train")
        _positive_int(c, "data.num_validation")
        _non_negative_int(c, "data.synth_seed")
    _non_negative_int(c, "data.prefetch")
    _non_negative_int(c, "data.num_workers")

    m = c.model
    _choice(c, "model.dtype", DTYPES)
    _choice(c, "model.byola_first_block", FIRST_BLOCK_SETTINGS)
    for key in (
        "model.n_fft",
        "model.win_length",
        "model.hop_length",
        "model.n_mels",
        "model.byola_channels",
        "model.byola_dim",
        "model.projector_hidden",
        "model.projector_dim",
    ):
        _positive_int(c, key)
    _check(
        m.win_length <= m.n_fft,
        "model.win_length",
        m.win_length,
        f"must not exceed model.n_fft={m.n_fft}.",
    )
    _check(
        m.n_mels % 8 == 0,
        "model.n_mels",
        m.n_mels,
        "must be a multiple of 8 (BYOL-A pools the mel axis three times by 2).",
    )
    _in_range(c, "model.f_min", 0.0, d.sample_rate / 2)
    _in_range(c, "model.f_max", m.f_min, d.sample_rate / 2, lo_open=True)
    _in_range(c, "model.norm_mean", -math.inf, math.inf, lo_open=True, hi_open=True)
    _in_range(c, "model.norm_std", 0.0, math.inf, lo_open=True, hi_open=True)
    _in_range(c, "model.byola_dropout", 0.0, 1.0, hi_open=True)

    p = c.pretrain
    _positive_int(c, "pretrain.segment_frames")
    _check(
        p.segment_frames >= 8,
        "pretrain.segment_frames",
        p.segment_frames,
        "must be at least 8 (BYOL-A pools the time axis three times by 2).",
    )
    _non_negative_int(c, "pretrain.norm_stats_batches")
    _in_range(c, "pretrain.mixup_ratio", 0.0, 1.0)
    _non_negative_int(c, "pretrain.mixup_memory")
    _in_range(c, "pretrain.virtual_crop_time", 1.0, 10.0)
    _in_range(c, "pretrain.virtual_crop_freq", 1.0, 10.0)
    _in_range(c, "pretrain.crop_scale_min", 0.0, 10.0, lo_open=True)
    _in_range(c, "pretrain.crop_scale_max", p.crop_scale_min, 10.0)
    _in_range(c, "pretrain.fader_gain", 0.0, 100.0)
    _choice(c, "pretrain.post_norm", POST_NORMS)
    _in_range(c, "pretrain.ema_decay", 0.0, 1.0)
    _choice(c, "pretrain.ema_schedule", EMA_SCHEDULES)

    t = c.train
    for key in (
        "train.batch_size",
        "train.num_steps",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
    ):
        _positive_int(c, key)
    _check(
        t.batch_size >= 2,
        "train.batch_size",
        t.batch_size,
        "BatchNorm and the per-batch normalisation need at least 2 clips per batch.",
    )
    _non_negative_int(c, "train.warmup_steps")
    _in_range(c, "train.learning_rate", 0.0, 1.0, lo_open=True)
    _in_range(c, "train.final_lr_fraction", 0.0, 1.0)
    _in_range(c, "train.weight_decay", 0.0, math.inf, hi_open=True)
    _in_range(c, "train.grad_clip", 0.0, math.inf, hi_open=True)
    _choice(c, "train.nonfinite", NONFINITE_POLICIES)
    if num_devices is not None:
        _check(
            t.batch_size % num_devices == 0,
            "train.batch_size",
            t.batch_size,
            f"must be divisible by the number of devices ({num_devices}); try "
            f"{max(num_devices, t.batch_size // num_devices * num_devices)}.",
        )


def model_fields(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields that determine the shapes of the train state (compared when restoring)."""
    keys = ("n_mels", "byola_channels", "byola_dim", "projector_hidden", "projector_dim")
    fields = {f"model.{k}": c.model[k] for k in keys}
    fields["pretrain.segment_frames"] = c.pretrain.segment_frames
    fields["pretrain.mixup_memory"] = c.pretrain.mixup_memory
    return fields
