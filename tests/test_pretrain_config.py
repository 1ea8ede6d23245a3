"""Tests of the pretraining configs (`configs/byola_pretrain.py`, `adc_jax.pretrain.config`): every
size validates and fits the captioner of that size; invalid values are named."""

from __future__ import annotations

import re

import pytest

from adc_jax import config as config_lib
from adc_jax.pretrain import config as pretrain_config_lib


@pytest.mark.parametrize("size", ["paper", "quick", "smoke"])
def test_each_size_validates_and_fits_the_captioner_of_that_size(load_config, size):
    config = load_config("byola_pretrain", None if size == "paper" else size)
    pretrain_config_lib.validate(config, num_devices=1)
    captioner = config_lib.base_config(size)
    for field in ("n_mels", "byola_channels", "byola_dim", "hop_length", "n_fft"):
        assert config.model[field] == captioner.model[field], field


@pytest.mark.parametrize(
    "overrides, key, message",
    [
        ({"pretrain.ema_decay": 1.5}, "pretrain.ema_decay", "number in [0.0, 1.0]"),
        ({"data.name": "audioset"}, "data.name", "must be one of"),
        ({"train.batch_size": 1}, "train.batch_size", "at least 2 clips"),
        ({"pretrain.crop_scale_max": 0.5}, "pretrain.crop_scale_max", "number in [0.6, 10.0]"),
        ({"data.name": "audio_folder"}, "data.audio_dir", "must name a folder"),
        (
            {"data.name": "audio_folder", "data.audio_dir": "/no/such/folder"},
            "data.audio_dir",
            "directory does not exist",
        ),
        ({"pretrain.segment_frames": 4}, "pretrain.segment_frames", "at least 8"),
        ({"pretrain.post_norm": "layer"}, "pretrain.post_norm", "'batch', 'none'"),
    ],
)
def test_invalid_values_are_named(load_config, overrides, key, message):
    config = load_config("byola_pretrain", "smoke")
    for name, value in overrides.items():
        section, field = name.split(".")
        config[section][field] = value
    with pytest.raises(config_lib.ConfigError, match=re.escape(f"config.{key}=")) as info:
        pretrain_config_lib.validate(config)
    assert message in str(info.value)


def test_batch_must_divide_among_the_devices(load_config):
    with pytest.raises(config_lib.ConfigError, match="divisible by the number of devices"):
        pretrain_config_lib.validate(load_config("byola_pretrain", "smoke"), num_devices=3)
