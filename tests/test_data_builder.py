"""Tests of adc_jax.data.builder: the base every tfds builder derives from, and the checks of a
generated variant's spec.

A minimal builder on the base writes its `_split_jobs` with the shared writer and reads back with
the pair schema, its own description and homepage; `code_path` is each builder's own file; a
build is logged once with its split sizes. Spec checks name the first bad field, by its spec
field or its config key; an unknown split is refused with its name and the splits.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import os
from typing import Any

import numpy as np
import pytest

from adc_jax.config import base_config
from adc_jax.data import adiff, audiodiffcaps, clip_pairs
from adc_jax.data import builder as builder_lib
from adc_jax.data.features import as_text
from adc_jax.data.synthetic import builder as synthetic
from adc_jax.data.writer import serialize_example


def _example(i: int) -> dict[str, Any]:
    return {
        "key": f"k{i}",
        "audio1": np.arange(i + 3, dtype=np.int16),
        "audio2": -np.arange(i + 5, dtype=np.int16),
        "captions": [f"caption {i}"],
        "scene": "rain",
        "caption_tiers": np.zeros((0,), np.int32),
        "recipe": "",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def _record(i: int) -> bytes:
    return serialize_example(_example(i))


@dataclasses.dataclass(eq=False, kw_only=True)
class _TinyConfig(builder_lib.BuildConfig):
    sizes: dict[str, int]


class _Tiny(builder_lib.Builder, skip_registration=True):
    """A builder that only says what is its own."""

    name = "tiny_base_test"
    VERSION = "1.0.0"
    HOMEPAGE = "https://example.org/tiny"

    def _description(self) -> str:
        return "Tiny pairs: " + self.builder_config.description

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(n) for s, n in self.builder_config.sizes.items()}

    def _generate_examples(self, n):
        for i in range(n):
            yield f"k{i}", _example(i)

    def _split_jobs(self) -> builder_lib.SplitJobs:
        return {s: (_record, list(range(n))) for s, n in self.builder_config.sizes.items()}


def test_a_builder_on_the_base_writes_its_jobs_and_logs_the_build(tmp_path, caplog):
    config = _TinyConfig(name="v1", sizes={"train": 3, "eval": 2}, num_workers=1, description="x")
    with caplog.at_level(std_logging.INFO):
        built = _Tiny.prepare(config, str(tmp_path), "pairs")
    assert "Built tiny_base_test/v1 in " in caplog.text
    assert ": train 3, eval 2 pairs (" in caplog.text
    assert built.info.description == "Tiny pairs: x"
    assert built.info.homepage == "https://example.org/tiny"
    assert set(built.info.features.keys()) == set(_example(0))
    for split, n in config.sizes.items():
        source = built.as_data_source(split)
        assert len(source) == n
        for i in range(n):
            assert as_text(source[i]["key"]) == f"k{i}"
            np.testing.assert_array_equal(source[i]["audio2"], _example(i)["audio2"])
    caplog.clear()
    with caplog.at_level(std_logging.INFO):
        again = _Tiny.prepare(config, str(tmp_path), "pairs")
    assert again.data_dir == built.data_dir and "Built" not in caplog.text


def test_code_path_is_each_builders_own_file():
    for cls, module in (
        (synthetic.SyntheticAdc, synthetic),
        (audiodiffcaps.AudioDiffCaps, audiodiffcaps),
        (adiff.Adiff, adiff),
        (clip_pairs.ClipPairs, clip_pairs),
        (_Tiny, None),
    ):
        expected = module.__file__ if module else os.path.abspath(__file__)
        assert os.fspath(cls.code_path) == expected


@dataclasses.dataclass(frozen=True)
class _Spec(builder_lib.VariantSpec):
    num_train: int = 2
    num_eval: int = 1
    clip_seconds: float = 1
    seed: int = 0
    sample_rate: Any = 16000
    SPLITS = ("train", "eval")


def _check(spec: _Spec, **kwargs) -> None:
    spec.check_variant("pairs", **kwargs)


def test_check_variant_names_the_first_bad_field():
    spec = _Spec()
    _check(spec)
    assert spec.clip_seconds == 1.0 and isinstance(spec.clip_seconds, float)
    assert [f.name for f in dataclasses.fields(spec)][:2] == ["num_train", "num_eval"]
    cases = [
        (_Spec(num_eval=0), "num_eval=0: every split needs a positive number of pairs."),
        (_Spec(num_train=1.5, seed=-1), "num_train=1.5: every split"),
        (_Spec(seed=-1, clip_seconds=0), "seed=-1 must be an integer >= 0."),
        (_Spec(clip_seconds=0), "clip_seconds=0 must be positive."),
        (_Spec(sample_rate=8000.0), "sample_rate=8000.0 must be a positive integer."),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError) as error:
            _check(bad)
        assert str(error.value).startswith(message)
    with pytest.raises(ValueError, match=r"^data.synth_seed=-1 must be an integer >= 0.$"):
        _check(_Spec(seed=-1), config_keys=True)
    with pytest.raises(ValueError, match=r"^data.num_eval=0: every split"):
        _check(_Spec(num_eval=0), config_keys=True)
    _check(_Spec(sample_rate=8000.0), sample_rate=False)  # the rate left to the caller


def test_an_unknown_split_is_named_with_the_splits():
    assert builder_lib.split_id("eval", synthetic.SPLITS) == 2
    with pytest.raises(ValueError, match="no split 'test'; the splits are train, validation, eval"):
        builder_lib.split_id("test", synthetic.SPLITS)
    spec = synthetic.SyntheticSpec(1, 1, 1, 0.1, 0)
    with pytest.raises(ValueError, match="no split 'valid'"):
        synthetic.example(spec, "valid", 0)


def test_a_variant_from_a_config_its_split_sizes_and_name():
    config = base_config("smoke")
    config.data.update(num_train=5, num_eval=3, clip_seconds=2.5, synth_seed=1, sample_rate=8000)
    spec = _Spec(**_Spec.variant_fields(config.data))
    assert spec == _Spec(5, 3, 2.5, 1, 8000)
    assert spec.split_sizes == {"train": 5, "eval": 3}
    assert spec.variant_name == "n5-3_2p5s_seed1_sr8000"
    assert builder_lib.variant_name([3000, 100, 200], 4.0, 0, 16000) == "n3000-100-200_4s_seed0"
    assert builder_lib.variant_name([8, 8], 2.5, 1, 8000) == "n8-8_2p5s_seed1_sr8000"
