"""The built-in synthetic_adc dataset: its tfds builder, the spec of a variant and the build lock.

Pairs are planned and mixed by `scenes` from sounds synthesised by `sounds` (both in this
subpackage). Nothing is read from disk: every sound comes from the pair's random generator, so
the data is the same on every machine. The builder derives from the shared base
(`adc_jax.data.builder.Builder`).

A variant is a `SyntheticSpec` (pairs per split, clip length, seed, sample rate). Its builder
config is named after it ("n6000-300-600_10s_seed0"), and variants co-exist in one data_dir under
synthetic_adc/<config name>/<version>. Pair i of split s is drawn from
np.random.default_rng([seed, split_id(s), i]), so the data does not depend on the number of build
processes; records are stored in index order. Processes that build the same variant at once
(several hosts on a shared file system) take turns under a file lock, and an interrupted build is
never read back.

Public API:
  SyntheticSpec                    what a variant is; `SyntheticSpec.from_config(config.data)`.
  build_synthetic(data_dir, spec)  builds (once) and returns the tfds builder.
  SyntheticAdc                     the tfds GeneratorBasedBuilder ("synthetic_adc"), one
                                   BuilderConfig (`SyntheticAdcConfig`) per spec.
  example(spec, split, index)      one stored example, made without a build.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from adc_jax import config as config_lib
from adc_jax.data import builder as builder_lib
from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.synthetic.scenes import generate_pair

SPLITS = ("train", "validation", "eval")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec(builder_lib.VariantSpec):
    """What defines a synthetic_adc variant: the data is a function of these fields only.

    Attributes:
      num_train, num_validation, num_eval: pairs per split (each > 0).
      clip_seconds: length of each clip (> 0; stored as float).
      seed: data seed (>= 0); pair i of split s comes from default_rng([seed, split_id(s), i]).
      sample_rate: Hz.
      no_change_fraction: share of pairs without a difference, in [0, 1) (`scenes.plan_pair`).
    """

    num_train: int
    num_validation: int
    num_eval: int
    clip_seconds: float
    seed: int
    sample_rate: int = features_lib.SAMPLE_RATE
    no_change_fraction: float = 0.0
    SPLITS = SPLITS

    def __post_init__(self) -> None:
        # This spec never checked the rate (a config's is checked by config.validate): kept so.
        self.check_variant("pairs", sample_rate=False)

    @classmethod
    def from_config(cls, data_config: Any) -> SyntheticSpec:
        """The spec of a `config.data` section (its synth_seed is the data seed)."""
        return cls(**cls.variant_fields(data_config))

    @property
    def config_name(self) -> str:
        """Name of the builder config, e.g. "n6000-300-600_10s_seed0" ("_sr8000" if not 16 kHz,
        "_nc0p1" with a tenth of the pairs without a difference)."""
        return self.variant_name


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticAdcConfig(builder_lib.BuildConfig):
    """A synthetic_adc variant: its spec (which names it) and the build parallelism."""

    spec: SyntheticSpec

    @classmethod
    def from_spec(cls, spec: SyntheticSpec, num_workers: int | None = None) -> SyntheticAdcConfig:
        return cls(
            name=spec.config_name,
            spec=spec,
            num_workers=num_workers,
            description=f"{spec.num_train}/{spec.num_validation}/{spec.num_eval} pairs of "
            f"{spec.clip_seconds:g} s at {spec.sample_rate} Hz, seed {spec.seed}.",
        )


def _preset_configs() -> list[SyntheticAdcConfig]:
    """One config per size of `adc_jax.config` (paper, quick, smoke)."""
    return [
        SyntheticAdcConfig.from_spec(SyntheticSpec.from_config(config_lib.base_config(size).data))
        for size in config_lib.SIZES
    ]


def example(spec: SyntheticSpec, split: str, index: int) -> tuple[str, dict[str, Any]]:
    """The stored example `index` of `split` of the variant `spec` as (key, feature dict)."""
    rng = np.random.default_rng([spec.seed, builder_lib.split_id(split, SPLITS), index])
    pair = generate_pair(
        rng, spec.clip_seconds, spec.sample_rate, no_change_fraction=spec.no_change_fraction
    )
    key = f"{split}_{index:06d}"
    return key, {
        "key": key,
        "audio1": features_lib.to_int16(pair["audio1"]),
        "audio2": features_lib.to_int16(pair["audio2"]),
        "captions": pair["captions"],
        "scene": pair["scene"],
        "caption_tiers": np.zeros((0,), np.int32),
        "recipe": "",
        "edit_ops": pair["edit_ops"],
        "edit_classes": pair["edit_classes"],
        "edit_magnitudes": np.asarray(pair["edit_magnitudes"], np.float32),
    }


def _serialized_example(task: tuple[SyntheticSpec, str, int]) -> bytes:
    """The stored record of `example(*task)` (top level: worker processes run it)."""
    return writer_lib.serialize_example(example(*task)[1])


class SyntheticAdc(builder_lib.Builder):
    """tfds builder of the synthetic audio-difference-captioning pairs (see module docstring).

    Records are stored in index order: record i of a split is the pair with key
    "<split>_<i:06d>", drawn from default_rng([seed, split_id, i]).
    """

    name = "synthetic_adc"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "10 event classes, 2 backgrounds, 7 edit operations.",
        "2.0.0": "audio1/audio2 stored as raw int16 bytes (Encoding.BYTES) in uncompressed "
        "array_record shards (adc_jax.data.writer): 100x faster to serialise, several times "
        "cheaper to read; the same samples. Variants with pairs without a difference "
        "(no_change_fraction > 0, named _nc...) are new configs; the others are unchanged.",
    }
    BUILDER_CONFIGS = _preset_configs()
    HOMEPAGE = "https://arxiv.org/abs/2308.11923"

    def _description(self) -> str:
        return (
            "Synthetic audio difference captioning pairs: a rain or traffic "
            "background with 0-2 foreground events; clip 2 is clip 1 after 1-2 "
            "edits, described by 5 reference captions."
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(split, num)
            for split, num in self.builder_config.spec.split_sizes.items()
        }

    def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """tfds' standard example stream, in one process.

        `_generate_splits` writes the same examples without it (see there); this stream stays as
        the reference the tests compare the written records with.
        """
        for i in range(num):
            yield example(self.builder_config.spec, split, i)

    def _split_jobs(self) -> builder_lib.SplitJobs:
        """Pair i of each split, made and serialised by the writer's workers, in index order."""
        spec = self.builder_config.spec
        return {
            split: (_serialized_example, [(spec, split, i) for i in range(num)])
            for split, num in spec.split_sizes.items()
        }


def build_synthetic(
    data_dir: str, spec: SyntheticSpec, *, num_workers: int | None = None
) -> tfds.core.DatasetBuilder:
    """Returns the prepared synthetic_adc builder of `spec`, building it if missing.

    Variants co-exist in one data_dir under synthetic_adc/<config name>/<version>. tfds writes a
    build into a temporary incomplete.* folder and renames it when every split is written, so an
    interrupted build is never read back: the next call builds again (and removes the leftovers).

    Args:
      data_dir: root directory of tfds datasets ("~" is expanded).
      spec: the variant (`SyntheticSpec.from_config(config.data)` for a config's).
      num_workers: generation processes (default: all CPUs); does not change the data.

    Returns:
      The builder; read a split with `builder.as_data_source(split)`.
    """
    data_dir = os.path.expanduser(data_dir)
    config = SyntheticAdcConfig.from_spec(spec, num_workers)
    preset = SyntheticAdc.builder_configs.get(config.name)
    if preset is not None:  # tfds requires the class's own object for a listed name
        preset.num_workers = num_workers
        config = preset
    return SyntheticAdc.prepare(config, data_dir, "pairs")
