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

`validate(config)` checks every field a user can set and raises `ConfigError` naming the
key, so a bad value fails before anything is built or compiled.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from adc_jax import config_checks as checks
from adc_jax.config import base_config

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
    size = checks.parse_size(size)
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
    # after these, docs/pretraining.md), "synthetic_clips" (the captioner's scenes, 0-3 events
    # 0-15 dB over the background), or "audio_folder" (every WAV/FLAC/OGG under data.audio_dir,
    # resampled and cut into clips).
    c.data.name = "synthetic_events"
    # audio_folder: the folder tree of audio files (any rate, any length).
    c.data.audio_dir = ""
    # audio_folder: leave out the recordings adc_jax holds out for evaluation in audio_dir's
    # layout (ESC-50 fold 5, FSD50K eval, 20% of each class folder by path hash): the clips
    # `clip_pairs` evaluates on and `tools/linear_probe.py --data_dir` tests on.
    c.data.exclude_held_out = False
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
        # 6,000 clips probe better than 2,000 at the same steps (docs/pretraining.md).
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


def validate(c: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
    """Raises ConfigError naming the first field whose value cannot work.

    Args:
      c: a config from `configs/byola_pretrain.py`, with command-line overrides applied.
      num_devices: global device count; when given, the batch size must divide by it.
    """
    d = c.data
    checks.choice(c, "data.name", CLIP_DATASETS)
    if d.name == "audio_folder":
        checks.check(
            isinstance(d.audio_dir, str) and bool(d.audio_dir),
            "data.audio_dir",
            d.audio_dir,
            "must name a folder of WAV/FLAC/OGG files when data.name is 'audio_folder' "
            "(e.g. --config.data.audio_dir=/path/to/audio).",
        )
        checks.check(
            os.path.isdir(os.path.expanduser(d.audio_dir)),
            "data.audio_dir",
            d.audio_dir,
            "directory does not exist; point it at a folder tree of audio files.",
        )
    checks.check_clip(c)
    if d.name in ("synthetic_clips", "synthetic_events"):
        checks.positive_int(c, "data.num_train")
        checks.positive_int(c, "data.num_validation")
        checks.non_negative_int(c, "data.synth_seed")
    checks.non_negative_int(c, "data.prefetch")
    checks.non_negative_int(c, "data.num_workers")

    checks.check_encoder(c)
    checks.positive_int(c, "model.projector_hidden")
    checks.positive_int(c, "model.projector_dim")

    p = c.pretrain
    checks.positive_int(c, "pretrain.segment_frames")
    checks.check(
        p.segment_frames >= 8,
        "pretrain.segment_frames",
        p.segment_frames,
        "must be at least 8 (BYOL-A pools the time axis three times by 2).",
    )
    checks.non_negative_int(c, "pretrain.norm_stats_batches")
    checks.in_range(c, "pretrain.mixup_ratio", 0.0, 1.0)
    checks.non_negative_int(c, "pretrain.mixup_memory")
    checks.in_range(c, "pretrain.virtual_crop_time", 1.0, 10.0)
    checks.in_range(c, "pretrain.virtual_crop_freq", 1.0, 10.0)
    checks.in_range(c, "pretrain.crop_scale_min", 0.0, 10.0, lo_open=True)
    checks.in_range(c, "pretrain.crop_scale_max", p.crop_scale_min, 10.0)
    checks.in_range(c, "pretrain.fader_gain", 0.0, 100.0)
    checks.choice(c, "pretrain.post_norm", POST_NORMS)
    checks.in_range(c, "pretrain.ema_decay", 0.0, 1.0)
    checks.choice(c, "pretrain.ema_schedule", EMA_SCHEDULES)

    checks.check_optimizer(c, clipping_optional=True)
    checks.check(
        c.train.batch_size >= 2,
        "train.batch_size",
        c.train.batch_size,
        "BatchNorm and the per-batch normalisation need at least 2 clips per batch.",
    )
    checks.check_batch_divides(c, ("train.batch_size",), num_devices)


def model_fields(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields that determine the shapes of the train state (compared when restoring)."""
    keys = ("n_mels", "byola_channels", "byola_dim", "projector_hidden", "projector_dim")
    fields = {f"model.{k}": c.model[k] for k in keys}
    fields["pretrain.segment_frames"] = c.pretrain.segment_frames
    fields["pretrain.mixup_memory"] = c.pretrain.mixup_memory
    return fields
