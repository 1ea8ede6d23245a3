"""Tests of adc_jax.rundir: the config, vocabulary and checkpoints of a run directory."""

from __future__ import annotations

import os

import pytest
from tensorflow_datasets.core.data_sources import base as data_sources

from adc_jax import rundir
from adc_jax.config import ConfigError, base_config
from adc_jax.data import caption_file, registry
from adc_jax.data.errors import BadData, MissingData
from adc_jax.rundir import VOCAB_FILE, fill_config_defaults, prepare_data


def test_old_config_json_gets_new_fields_with_defaults():
    config = base_config("smoke")
    del config.model["n_mels"]
    del config["eval"]
    assert sorted(fill_config_defaults(config)) == ["eval", "model.n_mels"]
    assert config.model.n_mels == 64 and config.eval.beam_size == 2
    assert fill_config_defaults(config) == []


def test_start_up_reads_captions_and_keys_without_opening_the_records(tmp_path, monkeypatch):
    """prepare_data and the eval split's entries come from the caption files; a build without
    them (made before they existed) is read from its records instead."""
    config = base_config("smoke")
    config.data.data_dir = str(tmp_path / "data")
    config.data.num_train, config.data.num_validation, config.data.num_eval = 8, 2, 3
    config.data.clip_seconds = 0.5
    builder = registry.load_builder(config)  # built before records are forbidden

    def opened(self, *args):
        raise AssertionError("start-up opened a record")

    monkeypatch.setattr(data_sources.BaseDataSource, "__getitem__", opened)
    monkeypatch.setattr(data_sources.BaseDataSource, "__getitems__", opened)
    data = prepare_data(config, str(tmp_path))
    assert data.train_stats.num_pairs == 8 and os.path.exists(tmp_path / VOCAB_FILE)
    split = data.eval_split("eval")
    assert split.keys == [f"eval_{i:06d}" for i in range(3)]
    assert split.source is not None and len(split.source) == 3  # its audio, read when batched

    caption_file.file_path(builder.data_dir, "train").unlink()
    with pytest.raises(AssertionError, match="opened a record"):
        prepare_data(config, str(tmp_path))


def _small_config(tmp_path):
    config = base_config("smoke")
    config.data.data_dir = str(tmp_path / "data")
    config.data.num_train, config.data.num_validation, config.data.num_eval = 8, 2, 3
    config.data.clip_seconds = 0.5
    return config


def test_a_data_error_of_process_0_is_said_on_every_process(tmp_path, monkeypatch):
    """Process 0 builds the dataset; when that fails on the user's data, the other processes
    stop with a data error too instead of waiting at the barrier forever."""
    config = _small_config(tmp_path)
    monkeypatch.setattr(rundir.multihost, "first_process_says", lambda flag: True)
    monkeypatch.setattr(rundir.jax, "process_index", lambda: 1)
    with pytest.raises(BadData, match="Process 0 could not build the dataset synthetic_adc"):
        prepare_data(config, str(tmp_path))
    # Process 0 raises its own error, after telling the others.
    monkeypatch.setattr(rundir.jax, "process_index", lambda: 0)
    told = []
    monkeypatch.setattr(
        rundir.multihost, "first_process_says", lambda flag: told.append(flag) or flag
    )

    def missing(config):
        raise MissingData("no such folder")

    monkeypatch.setattr(rundir.registry, "load_builder", missing)
    with pytest.raises(MissingData, match="no such folder"):
        prepare_data(config, str(tmp_path))
    assert told == [True]


def test_a_workdir_vocabulary_of_other_data_settings_is_a_config_error(tmp_path):
    config = _small_config(tmp_path)
    prepare_data(config, str(tmp_path))
    config.data.punctuation_tokens = True
    with pytest.raises(ConfigError, match="built for other data settings"):
        prepare_data(config, str(tmp_path))
