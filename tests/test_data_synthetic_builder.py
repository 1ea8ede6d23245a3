"""Tests of adc_jax.data.synthetic.builder: the variant spec, the tfds build, its reuse and its
lock."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from adc_jax import config as config_lib
from adc_jax.data import features as features_lib
from adc_jax.data.synthetic import builder as S

SR = 16000
SMALL = S.SyntheticSpec(num_train=6, num_validation=2, num_eval=2, clip_seconds=1.0, seed=0)


# ---------------------------------------------------------------------------------- spec


def test_config_names():
    assert S.SyntheticSpec(6000, 300, 600, 10.0, 0).config_name == "n6000-300-600_10s_seed0"
    assert S.SyntheticSpec(3000, 100, 200, 4.0, 0).config_name == "n3000-100-200_4s_seed0"
    assert S.SyntheticSpec(8, 8, 8, 2.5, 1, 8000).config_name == "n8-8-8_2p5s_seed1_sr8000"
    with_no_change = S.SyntheticSpec(3000, 100, 200, 4.0, 0, no_change_fraction=0.1)
    assert with_no_change.config_name == "n3000-100-200_4s_seed0_nc0p1"
    with pytest.raises(ValueError, match="no_change_fraction"):
        S.SyntheticSpec(8, 8, 8, 1.0, 0, no_change_fraction=1.5)


def test_presets_keep_the_names_of_builds_already_cached():
    """A config's spec, and so the folder of its cached build, is that of every earlier version."""
    names = {
        size: S.SyntheticSpec.from_config(config_lib.base_config(size).data).config_name
        for size in config_lib.SIZES
    }
    assert names == {
        "paper": "n6000-300-600_10s_seed0",
        "quick": "n3000-100-200_4s_seed0",
        "smoke": "n32-8-8_1s_seed0",
    }
    assert set(S.SyntheticAdc.builder_configs) == set(names.values())
    config = S.SyntheticAdc.builder_configs["n32-8-8_1s_seed0"]
    assert config.description == "32/8/8 pairs of 1 s at 16000 Hz, seed 0."
    assert config.spec.split_sizes == {"train": 32, "validation": 8, "eval": 8}


def test_spec_rejects_bad_values_and_stores_a_float_clip_length():
    assert S.SyntheticSpec(1, 1, 1, 2, 0).clip_seconds == 2.0
    assert isinstance(S.SyntheticSpec(1, 1, 1, 2, 0).clip_seconds, float)
    with pytest.raises(ValueError, match="num_train=0: every split needs a positive number"):
        S.SyntheticSpec(num_train=0, num_validation=1, num_eval=1, clip_seconds=1.0, seed=0)
    with pytest.raises(ValueError, match="seed=-1"):
        dataclasses.replace(SMALL, seed=-1)
    with pytest.raises(ValueError, match="clip_seconds=0"):
        dataclasses.replace(SMALL, clip_seconds=0)


# ---------------------------------------------------------------------------------- tfds build


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, S.build_synthetic(data_dir, SMALL)


def test_build_reads_back_with_the_schema(small_build):
    _, builder = small_build
    assert builder.name == "synthetic_adc"
    assert builder.builder_config.name == "n6-2-2_1s_seed0"
    assert set(builder.info.features.keys()) == set(features_lib.features_dict().keys())
    for split, num in (("train", 6), ("validation", 2), ("eval", 2)):
        source = builder.as_data_source(split)
        assert len(source) == num
        for i in range(num):
            ex = source[i]
            key, expected = S.example(SMALL, split, i)
            assert features_lib.as_text(ex["key"]) == key == f"{split}_{i:06d}"
            for name in ("audio1", "audio2"):
                assert ex[name].dtype == np.int16
                np.testing.assert_array_equal(ex[name], expected[name])
            assert [features_lib.as_text(c) for c in ex["captions"]] == expected["captions"]
            assert features_lib.as_text(ex["scene"]) == expected["scene"]
            assert [features_lib.as_text(o) for o in ex["edit_ops"]] == expected["edit_ops"]
            assert [features_lib.as_text(c) for c in ex["edit_classes"]] == expected["edit_classes"]
            assert ex["edit_magnitudes"].dtype == np.float32
            np.testing.assert_array_equal(ex["edit_magnitudes"], expected["edit_magnitudes"])


def test_build_is_reused_and_variants_coexist(small_build):
    data_dir, builder = small_build
    stamp = os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json"))
    again = S.build_synthetic(data_dir, SMALL)
    assert again.data_dir == builder.data_dir
    assert os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json")) == stamp
    other = S.build_synthetic(data_dir, dataclasses.replace(SMALL, seed=1))
    assert other.data_dir != builder.data_dir
    a, b = builder.as_data_source("train")[0], other.as_data_source("train")[0]
    assert not np.array_equal(a["audio1"], b["audio1"])
    assert len(builder.as_data_source("train")) == 6  # the first variant is untouched


def test_generated_records_match_tfds_standard_example_stream(small_build):
    _, builder = small_build
    stream = list(builder._generate_examples("validation", 2))
    source = builder.as_data_source("validation")
    for i, (key, ex) in enumerate(stream):
        assert features_lib.as_text(source[i]["key"]) == key
        np.testing.assert_array_equal(source[i]["audio2"], ex["audio2"])


def test_interrupted_build_is_not_read_back(tmp_path, monkeypatch):
    data_dir = str(tmp_path)
    spec = dataclasses.replace(SMALL, seed=5)
    calls = {"n": 0}
    real = S._serialized_example

    def failing(task):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt("simulated interruption")
        return real(task)

    monkeypatch.setattr(S, "_serialized_example", failing)
    with pytest.raises(KeyboardInterrupt):
        S.build_synthetic(data_dir, spec)
    config_dir = os.path.join(data_dir, "synthetic_adc", "n6-2-2_1s_seed5")
    version = str(S.SyntheticAdc.VERSION)
    assert not os.path.exists(os.path.join(config_dir, version))
    # A hard kill leaves tfds' temporary folder, and a partial final folder may exist.
    stale = os.path.join(config_dir, f"incomplete.ABCDEF_{version}")
    os.makedirs(stale)
    os.utime(stale, (0, 0))
    os.makedirs(os.path.join(config_dir, version))
    monkeypatch.setattr(S, "_serialized_example", real)
    builder = S.build_synthetic(data_dir, spec)
    assert len(builder.as_data_source("train")) == 6
    assert not os.path.exists(stale)


def test_worker_processes_write_the_same_bytes(tmp_path):
    """Data is a function of (seed, split, index): the process count does not matter, and the
    files are the same bytes whichever processes serialised the records."""
    spec = S.SyntheticSpec(num_train=64, num_validation=1, num_eval=1, clip_seconds=0.5, seed=3)
    one = S.build_synthetic(str(tmp_path / "one"), spec, num_workers=1)
    two = S.build_synthetic(str(tmp_path / "two"), spec, num_workers=2)  # 64 pairs: 2 workers
    a, b = one.as_data_source("train"), two.as_data_source("train")
    for i in (0, 31, 63):
        np.testing.assert_array_equal(a[i]["audio1"], b[i]["audio1"])
        assert a[i]["captions"] == b[i]["captions"]
    files = sorted(os.listdir(one.data_dir))
    assert files == sorted(os.listdir(two.data_dir))
    for name in files:
        with open(os.path.join(one.data_dir, name), "rb") as f1:
            with open(os.path.join(two.data_dir, name), "rb") as f2:
                assert f1.read() == f2.read(), name
