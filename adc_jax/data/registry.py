"""The datasets a config can name: `config.data.name` -> the function that prepares its builder.

A `Registry` maps the names of one family of datasets to loaders, each taking the tfds data
directory and the config's `data` section and returning the prepared tfds builder (built on first
use). `DATASETS` is the captioner's family (`load_builder`); BYOL-A pretraining registers its
clip datasets the same way (`adc_jax.pretrain.clips.CLIP_DATASETS`). Every family finds its data
in the same directory, `data_dir(config)`.

Public API:
  data_dir(config)      config.data.data_dir, or ("") $ADC_JAX_DATA_DIR / ~/.cache/adc_jax/datasets.
  Registry(kind, loaders)   one family: `names`, `load(config)`.
  DATASETS              synthetic_adc, audio_diff_caps, clip_pairs, adiff.
  load_builder(config)  the prepared builder of a captioning config's dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import tensorflow_datasets as tfds

from adc_jax.config import default_data_dir
from adc_jax.data.adiff import build_adiff
from adc_jax.data.audiodiffcaps import build_audio_diff_caps
from adc_jax.data.clip_pairs import ClipPairsSpec, build_clip_pairs
from adc_jax.data.synthetic.builder import SyntheticSpec, build_synthetic

# (data directory, config.data) -> the prepared tfds builder.
Loader = Callable[[str, ml_collections.ConfigDict], tfds.core.DatasetBuilder]


def data_dir(config: ml_collections.ConfigDict) -> str:
    """The tfds data directory of `config.data` ("" -> the default cache directory)."""
    return os.path.expanduser(config.data.data_dir or default_data_dir())


class Registry:
    """The datasets of one family by name.

    Args:
      kind: what a name of this family is, for the error on an unknown one ("a clip dataset").
      loaders: name -> Loader, in the order the error lists them.
    """

    def __init__(self, kind: str, loaders: Mapping[str, Loader]):
        self.kind, self.loaders = kind, dict(loaders)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.loaders)

    def load(self, config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
        """The prepared builder of `config.data.name` in `data_dir(config)`.

        Raises:
          ValueError: the name is not one of this family's (the message lists them).
        """
        name = config.data.name
        if name not in self.loaders:
            raise ValueError(
                f"config.data.name={name!r} is not {self.kind}; use one of {', '.join(self.names)}."
            )
        return self.loaders[name](data_dir(config), config.data)


def _user_files(d: ml_collections.ConfigDict) -> dict[str, Any]:
    """The arguments of a dataset built from the user's CSVs and audio files."""
    return {
        "csv_dir": os.path.expanduser(d.csv_dir),
        "audio_dir": os.path.expanduser(d.audio_dir),
        "sample_rate": d.sample_rate,
        "min_clip_fraction": d.min_clip_fraction,
    }


DATASETS = Registry(
    "a known dataset",
    {
        "synthetic_adc": lambda root, d: build_synthetic(root, SyntheticSpec.from_config(d)),
        "audio_diff_caps": lambda root, d: build_audio_diff_caps(
            root, validation_fraction=d.validation_fraction, **_user_files(d)
        ),
        "clip_pairs": lambda root, d: build_clip_pairs(root, ClipPairsSpec.from_config(d)),
        "adiff": lambda root, d: build_adiff(
            root, subset=d.adiff_subset, clip_seconds=float(d.clip_seconds), **_user_files(d)
        ),
    },
)


def load_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared tfds builder of a captioning config's `data` section (built on first use)."""
    return DATASETS.load(config)
