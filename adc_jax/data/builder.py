"""The one base of every adc_jax tfds builder, and the checks every generated variant makes.

Each dataset module (`synthetic.builder`, `audiodiffcaps`, `adiff`, `clip_pairs`, and the
pretraining clips of `adc_jax.pretrain.clips`) subclasses `Builder` and keeps only what is its own:
its name, version, config, description and how it makes its records. What they all share lives
here once:

  * `code_path` is the file that defines the builder. tfds' default resolves the package with
    `importlib_resources`, which fails for an editable install without that package; the path
    only serves tfds to look for a checksums file next to it.
  * `_info` is built directly from the record schema (`features.features_dict()`, the pairs of
    every captioning dataset, unless a builder's `_features` says otherwise), the builder's
    `_description()` and its HOMEPAGE: tfds' `dataset_info_from_configs()` would look for a
    package directory of metadata.
  * `_generate_splits` writes every split of `_split_jobs()` with the shared writer
    (`adc_jax.data.writer`: no TensorFlow, worker processes, records in the order given, inside
    tfds' temporary build folder), with the config's `num_workers`.
  * `prepare(config, data_dir, unit)` returns the prepared builder, building it once under a file
    lock if missing (`writer.prepare_once`), and logs a build's size and speed. The generated
    datasets build through it; `build_audio_diff_caps` and `build_adiff` call tfds'
    `download_and_prepare` themselves.

A generated variant (synthetic_adc, clip_pairs, the synthetic clips) is a spec of split sizes,
clip length, seed and sample rate (`VariantSpec`: read from a config, checked, named by
`variant_name`); `split_id` is a split's part of each record's seed.

Public API:
  Builder, BuildConfig                 the tfds builder base and its config base (num_workers).
  VariantSpec                          the spec base of a generated variant: variant_fields,
                                       check_variant, split_sizes, variant_name.
  split_id(split, splits)              the index of a split (an error naming it if unknown).
  variant_name(sizes, clip_seconds, seed, sample_rate)   "n3000-100-200_4s_seed0".
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from adc_jax.data import features as features_lib
from adc_jax.data import source_files
from adc_jax.data import writer as writer_lib

# split name -> (fn, items): record i of the split is fn(items[i]), a serialised example.
SplitJobs = Mapping[str, tuple[Callable[[Any], bytes], Sequence[Any]]]


@dataclasses.dataclass(eq=False, kw_only=True)
class BuildConfig(tfds.core.BuilderConfig):
    """A builder config with the build parallelism.

    num_workers: processes that make the records of a split (None: all CPUs; small splits are
    made in-process, `writer.resolve_workers`). It never changes the data.
    """

    num_workers: int | None = None
    # The source files the build reads (`adc_jax.data.source_files`; None for generated data):
    # `prepare` logs which files changed since an older build of the same settings, and writes
    # the build's sources.json. Not in the repr: tfds logs the config.
    sources: source_files.Sources | None = dataclasses.field(default=None, repr=False)


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """What every adc_jax tfds builder shares (see the module docstring).

    A subclass gives its name (or tfds' default from the class name), VERSION, RELEASE_NOTES and
    a config deriving from `BuildConfig`, and defines `_description()`, tfds'
    `_split_generators` (the standard example stream, kept as the reference the tests compare
    the written records with) and `_split_jobs()`, or its own `_generate_splits`.
    """

    # The dataset's web page in its DatasetInfo (None: none).
    HOMEPAGE: str | None = None

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))

    def _description(self) -> str:
        """The DatasetInfo description of this builder and config."""
        raise NotImplementedError

    def _features(self) -> tfds.features.FeaturesDict:
        """The record schema: the pair schema shared by every captioning dataset."""
        return features_lib.features_dict()

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._description(),
            features=self._features(),
            homepage=self.HOMEPAGE,
        )

    def _split_jobs(self) -> SplitJobs:
        """split -> (fn, items) of every split to write (see `writer.generate_splits`)."""
        raise NotImplementedError

    def _write_splits(self, jobs: SplitJobs) -> list[tfds.core.SplitInfo]:
        """Writes the splits of `jobs` with the shared writer and the config's num_workers."""
        return writer_lib.generate_splits(self, jobs, num_workers=self.builder_config.num_workers)

    def _generate_splits(self, dl_manager: Any, download_config: Any) -> list[tfds.core.SplitInfo]:
        """Writes every split of `_split_jobs()`; returns their SplitInfos.

        Replaces tfds' writer, which needs TensorFlow once a split exceeds 1 GB (see
        `adc_jax.data.writer`): worker processes make and serialise the records and the main
        process writes them in order, inside tfds' temporary build folder.
        """
        del dl_manager, download_config  # nothing is downloaded
        return self._write_splits(self._split_jobs())

    @classmethod
    def prepare(
        cls, config: tfds.core.BuilderConfig, data_dir: str, unit: str
    ) -> tfds.core.DatasetBuilder:
        """The prepared builder of `config` in `data_dir`, built if missing.

        Processes that build the same variant at once take turns under a file lock, and an
        interrupted build is never read back (`writer.prepare_once`). A build is logged with
        the records per split (counted in `unit`, e.g. "pairs") and their rate.
        """
        builder, elapsed = writer_lib.prepare_once(cls, config, data_dir)
        if elapsed is not None:
            sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
            logging.info(
                "Built %s/%s in %.1f s: %s %s (%.1f %s/s).",
                cls.name,
                config.name,
                elapsed,
                ", ".join(f"{split} {n}" for split, n in sizes.items()),
                unit,
                sum(sizes.values()) / max(elapsed, 1e-9),
                unit,
            )
        return builder


# ------------------------------------------------------------------------ generated variants


class VariantSpec:
    """What the spec of every generated variant (synthetic_adc, clip_pairs, the synthetic clips)
    shares: a frozen dataclass with num_<split> for each of its SPLITS, clip_seconds, seed and
    sample_rate, of which its data is a function (with the inputs it names)."""

    SPLITS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def variant_fields(cls, data_config: Any) -> dict[str, Any]:
        """These fields from a `config.data` section (its synth_seed is the data seed), and its
        no_change_fraction when the spec has that field (pair datasets)."""
        fields = {
            **{f"num_{split}": getattr(data_config, f"num_{split}") for split in cls.SPLITS},
            "clip_seconds": data_config.clip_seconds,
            "seed": data_config.synth_seed,
            "sample_rate": data_config.sample_rate,
        }
        if "no_change_fraction" in {f.name for f in dataclasses.fields(cls)}:
            # Configs saved before the field existed had no such pairs.
            fields["no_change_fraction"] = float(getattr(data_config, "no_change_fraction", 0.0))
        return fields

    def check_variant(self, unit: str, *, config_keys: bool = False, sample_rate: bool = True):
        """Checks these fields (call it from __post_init__); stores clip_seconds as a float.

        Args:
          unit: what a split holds ("pairs", "clips"), for the messages.
          config_keys: name the fields by their config keys (data.num_train, data.synth_seed,
            ...) in the messages, for specs made from a config only.
          sample_rate: also check that the sample rate is a positive integer.

        Raises:
          ValueError: naming the first field in the order num_<split>, seed, clip_seconds,
            sample_rate that is out of range.
        """

        def key(field: str) -> str:
            return ("data." + {"seed": "synth_seed"}.get(field, field)) if config_keys else field

        for split in self.SPLITS:
            value = getattr(self, f"num_{split}")
            if not (isinstance(value, int) and value > 0):
                raise ValueError(
                    f"{key(f'num_{split}')}={value!r}: every split needs a positive number of "
                    f"{unit}."
                )
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"{key('seed')}={self.seed!r} must be an integer >= 0.")
        if not self.clip_seconds > 0:
            raise ValueError(f"{key('clip_seconds')}={self.clip_seconds!r} must be positive.")
        if sample_rate and not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(
                f"{key('sample_rate')}={self.sample_rate!r} must be a positive integer."
            )
        object.__setattr__(self, "clip_seconds", float(self.clip_seconds))
        fraction = getattr(self, "no_change_fraction", 0.0)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(
                f"{key('no_change_fraction')}={fraction!r} must be in [0, 1): the share of pairs "
                "without a difference."
            )

    @property
    def split_sizes(self) -> dict[str, int]:
        """{split: num_<split>}, in SPLITS order."""
        return {split: getattr(self, f"num_{split}") for split in self.SPLITS}

    @property
    def variant_name(self) -> str:
        """E.g. "n3000-100-200_4s_seed0" (`variant_name` of this spec), with "_nc0p1" appended
        when a tenth of the pairs have no difference (no_change_fraction > 0)."""
        sizes = list(self.split_sizes.values())
        name = variant_name(sizes, self.clip_seconds, self.seed, self.sample_rate)
        fraction = getattr(self, "no_change_fraction", 0.0)
        return name + f"_nc{fraction:g}".replace(".", "p") if fraction else name


def split_id(split: str, splits: Sequence[str]) -> int:
    """The index of `split` in `splits`: its part of the seed of every record it holds.

    Raises:
      ValueError: `split` is not one of `splits` (the message names both).
    """
    if split not in splits:
        raise ValueError(f"There is no split {split!r}; the splits are {', '.join(splits)}.")
    return splits.index(split)


def variant_name(
    split_sizes: Sequence[int], clip_seconds: float, seed: int, sample_rate: int
) -> str:
    """The name part of a generated dataset variant, e.g. "n3000-100-200_4s_seed0" (split sizes,
    clip length, seed; "_sr8000" appended when the rate is not SAMPLE_RATE)."""
    clip = f"{clip_seconds:g}".replace(".", "p")
    name = f"n{'-'.join(str(n) for n in split_sizes)}_{clip}s_seed{seed}"
    return name if sample_rate == features_lib.SAMPLE_RATE else f"{name}_sr{sample_rate}"
