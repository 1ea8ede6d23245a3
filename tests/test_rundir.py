"""Tests of adc_jax.rundir: the config, vocabulary and checkpoints of a run directory."""

from __future__ import annotations

from adc_jax.config import base_config
from adc_jax.rundir import fill_config_defaults


def test_old_config_json_gets_new_fields_with_defaults():
    config = base_config("smoke")
    del config.model["n_mels"]
    del config["eval"]
    assert sorted(fill_config_defaults(config)) == ["eval", "model.n_mels"]
    assert config.model.n_mels == 64 and config.eval.beam_size == 2
    assert fill_config_defaults(config) == []
