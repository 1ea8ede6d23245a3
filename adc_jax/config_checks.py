"""Checks of config fields, shared by the captioner's and pretraining's `validate`.

Each check raises `ConfigError` naming the dotted field, its value and what would work, so a bad
value fails before anything is built or compiled:

  config.train.batch_size=0 is invalid: must be a positive integer.

The field checks (`positive_int`, `choice`, `in_range`, ...) take the config and a dotted key;
the section checks (`check_clip`, `check_encoder`, `check_optimizer`, `check_batch_divides`)
validate the fields both trainers have under the same names: the clip length, the log-mel front
end and the BYOL-A encoder, the optimiser and the loop.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

DTYPES = ("float32", "bfloat16")
FIRST_BLOCK_SETTINGS = ("auto", "conv", "phases")
NONFINITE_POLICIES = ("stop", "skip")
SIZES = ("paper", "quick", "smoke")


class ConfigError(ValueError):
    """A config field has a value that cannot work; the message names the field and the fix."""


def parse_size(arg: str | None) -> str:
    """Maps the config-file argument (`late_sdd.py:quick`) to a size name."""
    size = (arg or "paper").strip().lower()
    if size not in SIZES:
        raise ConfigError(
            f"Unknown config size {arg!r}: use one of {', '.join(SIZES)} "
            "(e.g. --config=configs/late_sdd.py:quick)."
        )
    return size


# ------------------------------------------------------------------------------- field access


def get_field(c: ml_collections.ConfigDict, key: str) -> Any:
    """The value of a dotted field name: get_field(c, "model.d_model")."""
    node = c
    for part in key.split("."):
        node = node[part]
    return node


def has_field(c: ml_collections.ConfigDict, key: str) -> bool:
    """Whether the dotted field name exists: has_field(c, "model.d_model")."""
    try:
        get_field(c, key)
    except (KeyError, AttributeError, TypeError):
        return False
    return True


# ------------------------------------------------------------------------------- field checks


def check(ok: bool, key: str, value: Any, why: str) -> None:
    """Raises ConfigError "config.<key>=<value> is invalid: <why>" unless `ok`."""
    if not ok:
        raise ConfigError(f"config.{key}={value!r} is invalid: {why}")


def is_int(value: Any) -> bool:
    """An int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(c: ml_collections.ConfigDict, key: str) -> None:
    value = get_field(c, key)
    check(is_int(value) and value > 0, key, value, "must be a positive integer.")


def non_negative_int(c: ml_collections.ConfigDict, key: str) -> None:
    value = get_field(c, key)
    check(is_int(value) and value >= 0, key, value, "must be an integer >= 0.")


def choice(c: ml_collections.ConfigDict, key: str, choices: tuple[str, ...]) -> None:
    value = get_field(c, key)
    check(value in choices, key, value, f"must be one of {', '.join(map(repr, choices))}.")


def in_range(
    c: ml_collections.ConfigDict,
    key: str,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """A finite number in [lo, hi] (an open end excludes its bound)."""
    value = get_field(c, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    lo_s = "(" if lo_open else "["
    hi_s = ")" if hi_open else "]"
    check(ok, key, value, f"must be a number in {lo_s}{lo}, {hi}{hi_s}.")


def boolean(c: ml_collections.ConfigDict, key: str) -> None:
    value = get_field(c, key)
    check(isinstance(value, bool), key, value, "must be True or False.")


def existing_directory(c: ml_collections.ConfigDict, key: str, needed_for: str, what: str) -> None:
    """The field names a directory that exists.

    needed_for: when the field is needed, e.g. "when data.name is 'adiff'".
    what: what the directory should hold, e.g. "your ADIFF copy".
    """
    value = get_field(c, key)
    check(
        isinstance(value, str) and bool(value),
        key,
        value,
        f"must name a directory {needed_for} (e.g. --config.{key}=/path/to/it).",
    )
    check(
        os.path.isdir(os.path.expanduser(value)),
        key,
        value,
        f"directory does not exist; point it at {what}.",
    )


# ----------------------------------------------------------------------------- section checks


def min_clip_samples(c: ml_collections.ConfigDict) -> int:
    """Fewest samples that give at least one frame after BYOL-A's three 2x2 poolings."""
    # Centred STFT: n_frames = n_samples // hop + 1; three poolings need 8 frames.
    return 7 * c.model.hop_length


def check_clip(c: ml_collections.ConfigDict) -> None:
    """data.sample_rate and data.clip_seconds: a clip long enough for BYOL-A's poolings."""
    positive_int(c, "data.sample_rate")
    in_range(c, "data.clip_seconds", 0.0, 600.0, lo_open=True)
    n_samples = int(round(c.data.clip_seconds * c.data.sample_rate))
    check(
        n_samples >= min_clip_samples(c),
        "data.clip_seconds",
        c.data.clip_seconds,
        f"a clip of {n_samples} samples is too short for BYOL-A's three 2x2 poolings; use at "
        f"least {min_clip_samples(c) / c.data.sample_rate:.3f} s.",
    )


def check_encoder(c: ml_collections.ConfigDict) -> None:
    """The compute dtype, the log-mel front end and the BYOL-A encoder (`config.model`)."""
    m = c.model
    choice(c, "model.dtype", DTYPES)
    choice(c, "model.byola_first_block", FIRST_BLOCK_SETTINGS)
    for key in (
        "model.n_fft",
        "model.win_length",
        "model.hop_length",
        "model.n_mels",
        "model.byola_channels",
        "model.byola_dim",
    ):
        positive_int(c, key)
    check(
        m.win_length <= m.n_fft,
        "model.win_length",
        m.win_length,
        f"must not exceed model.n_fft={m.n_fft}.",
    )
    check(
        m.n_mels % 8 == 0,
        "model.n_mels",
        m.n_mels,
        "must be a multiple of 8 (BYOL-A pools the mel axis three times by 2).",
    )
    in_range(c, "model.f_min", 0.0, c.data.sample_rate / 2)
    in_range(c, "model.f_max", m.f_min, c.data.sample_rate / 2, lo_open=True)
    in_range(c, "model.norm_mean", -math.inf, math.inf, lo_open=True, hi_open=True)
    in_range(c, "model.norm_std", 0.0, math.inf, lo_open=True, hi_open=True)
    in_range(c, "model.byola_dropout", 0.0, 1.0, hi_open=True)


def check_optimizer(c: ml_collections.ConfigDict, *, clipping_optional: bool) -> None:
    """The loop and the optimiser (`config.train`).

    clipping_optional: whether train.grad_clip may be 0 (no clipping, as BYOL-A pretrains).
    """
    for key in (
        "train.batch_size",
        "train.num_steps",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
    ):
        positive_int(c, key)
    non_negative_int(c, "train.warmup_steps")
    in_range(c, "train.learning_rate", 0.0, 1.0, lo_open=True)
    in_range(c, "train.final_lr_fraction", 0.0, 1.0)
    in_range(c, "train.weight_decay", 0.0, math.inf, hi_open=True)
    in_range(c, "train.grad_clip", 0.0, math.inf, lo_open=not clipping_optional, hi_open=True)
    choice(c, "train.nonfinite", NONFINITE_POLICIES)


def check_batch_divides(
    c: ml_collections.ConfigDict, keys: tuple[str, ...], num_devices: int | None
) -> None:
    """Each batch size in `keys` divides by the global device count (when it is given)."""
    if num_devices is None:
        return
    for key in keys:
        value = get_field(c, key)
        check(
            value % num_devices == 0,
            key,
            value,
            f"must be divisible by the number of devices ({num_devices}); try "
            f"{max(num_devices, value // num_devices * num_devices)}.",
        )
