"""Tests of adc_jax.data.registry: a config's data.name picks its dataset family's loader, in the
one data directory; an unknown name is refused with the names of the family."""

from __future__ import annotations

import os

import pytest

from adc_jax import config as config_lib
from adc_jax.data import registry
from adc_jax.data.synthetic.builder import SyntheticSpec


def test_data_dir_defaults_to_the_cache_and_expands_the_home(monkeypatch):
    config = config_lib.base_config("smoke")
    monkeypatch.setenv("ADC_JAX_DATA_DIR", "/some/where")
    config.data.data_dir = ""
    assert registry.data_dir(config) == config_lib.default_data_dir() == "/some/where"
    config.data.data_dir = "~/datasets"
    assert registry.data_dir(config) == os.path.expanduser("~/datasets")


def test_a_name_loads_its_builder_from_the_config(tmp_path):
    config = config_lib.base_config("smoke")
    config.data.data_dir = str(tmp_path)
    calls = []
    family = registry.Registry("a test dataset", {"one": lambda root, d: calls.append((root, d))})
    config.data.name = "one"
    family.load(config)
    assert calls == [(str(tmp_path), config.data)]
    config.data.name = "synthetic_adc"
    builder = registry.load_builder(config)
    assert builder.name == "synthetic_adc"
    assert builder.builder_config.name == SyntheticSpec.from_config(config.data).config_name
    assert builder.data_dir.startswith(str(tmp_path))


def test_an_unknown_name_is_refused_naming_it_and_the_known_ones(tmp_path):
    config = config_lib.base_config("smoke")
    config.data.data_dir = str(tmp_path)
    config.data.name = "synthetic_clips"  # a pretraining dataset, not a captioning one
    with pytest.raises(ValueError) as error:
        registry.load_builder(config)
    assert str(error.value) == (
        "config.data.name='synthetic_clips' is not a known dataset; use one of synthetic_adc, "
        "audio_diff_caps, clip_pairs, adiff."
    )
    assert registry.DATASETS.names == ("synthetic_adc", "audio_diff_caps", "clip_pairs", "adiff")
    assert not os.listdir(tmp_path)  # nothing built
