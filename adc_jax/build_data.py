"""Builds the dataset of a config, in one piece or in shards made on several machines.

  python -m adc_jax.build_data --config=configs/adiff.py:acd \\
      --config.data.csv_dir=/path/to/ADIFF/data/ACD --config.data.audio_dir=/path/to/audio

builds what `python -m adc_jax.main` with the same config would build on its first start (any
captioning config, or a pretraining config of `python -m adc_jax.pretrain`). A large build can be
split over processes or machines:

  # on each of n machines (each with the source files at the config's paths), i = 0 .. n-1:
  python -m adc_jax.build_data --config=... --shard=i --num_shards=n
  # then, with every shard folder in place, on one machine:
  python -m adc_jax.build_data --config=... --combine --num_shards=n

Shard i makes records i*N//n .. (i+1)*N//n - 1 of every split of N records (decoding and
resampling in a process per CPU of its machine) into `<shard_dir>/shard-<i>-of-<n>/`; the
default shard_dir is `<data_dir>/<dataset>/<variant>/<version>.shards`. Combining checks that
every shard is there, finished and made from the same settings and inputs, then writes the
dataset from the shards' records: equal, record for record, to a build in one piece. Copy the
shard folders made on other machines into the shard_dir first (or point --shard_dir at a
shared folder). Exit status 0 when the shard or the dataset is written (or already built), 2 for
a config or data error (a missing shard included), 1 for a failed build.
"""

from __future__ import annotations

import contextlib

from absl import app, flags
from ml_collections import config_flags

from adc_jax import cli
from adc_jax.data import clip_store, registry
from adc_jax.data import writer as writer_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Captioning or pretraining config file (configs/*.py[:arg]).", lock_config=False
)
_SHARD = flags.DEFINE_integer("shard", None, "Write only this shard (0 .. num_shards - 1).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "How many shards the build is split in.")
_COMBINE = flags.DEFINE_bool("combine", False, "Combine the num_shards shards into the dataset.")
_SHARD_DIR = flags.DEFINE_string(
    "shard_dir", "", "Folder of the shards (default: next to the dataset in its data_dir)."
)


def sharding(shard: int | None, num_shards: int | None, combine: bool, shard_dir: str):
    """The ShardedBuild the flags ask for, or None for a build in one piece.

    Raises:
      ConfigError: flags that do not fit together (the message says which).
    """
    if shard is None and not combine:
        if num_shards is not None:
            raise cli.ConfigError("--num_shards needs --shard=i (write a shard) or --combine.")
        return None
    if shard is not None and combine:
        raise cli.ConfigError("Give --shard=i to write a shard or --combine, not both.")
    if num_shards is None:
        raise cli.ConfigError("--shard and --combine need --num_shards=n.")
    try:
        return writer_lib.ShardedBuild(num_shards, shard, shard_dir)
    except ValueError as e:
        raise cli.ConfigError(str(e)) from None


def _loader(config):
    """The registry function that prepares `config.data.name`'s builder."""
    if config.data.name in registry.DATASETS.names:
        return registry.load_builder
    from adc_jax.pretrain import clips  # noqa: PLC0415 (pretraining only)

    return clips.CLIP_DATASETS.load


def build(config, spec: writer_lib.ShardedBuild | None) -> str:
    """Builds (a shard of, or the combination of the shards of) `config`'s dataset; returns
    what was done, in a sentence."""
    load = _loader(config)
    with writer_lib.sharded_build(spec) if spec else contextlib.nullcontext():
        try:
            builder = load(config)
        except writer_lib.ShardWritten as written:
            return (
                f"Wrote shard {spec.index} of {spec.count} to {written.args[0]}. When every "
                f"shard is there, combine them: the same command with --combine "
                f"--num_shards={spec.count}."
            )
    splits = ", ".join(
        f"{split} {builder.info.splits[split].num_examples}"
        for split in clip_store.pair_splits(builder)
    )
    if spec is not None and spec.index is not None:
        return f"{builder.name}/{builder.builder_config.name} is already built in " + (
            f"{builder.data_dir} ({splits}); nothing to shard."
        )
    built = (
        f"{builder.name}/{builder.builder_config.name} is built in {builder.data_dir}: {splits}."
    )
    if spec is not None:
        built += f" The shards in {spec.root(builder)} are no longer needed."
    return built


def main(argv: list[str]) -> None:
    cli.no_extra_arguments(argv)
    config = _CONFIG.value
    if config is None:
        cli.fail("Config error: --config is required.", code=2)
    spec = cli.run_guarded(
        lambda: sharding(_SHARD.value, _NUM_SHARDS.value, _COMBINE.value, _SHARD_DIR.value),
        paths_hint="",
    )
    message = cli.run_guarded(
        lambda: build(config, spec),
        paths_hint="Check that the source folders in the config and data.data_dir exist and "
        "that data.data_dir is writable.",
        paths={"data.data_dir": registry.data_dir(config)},
    )
    print(message)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.flags_parser("adc_jax/config.py (base_config)", "data"))
