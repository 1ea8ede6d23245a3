"""Builds the synthetic_adc dataset explicitly and reports how long it took.

Training builds it on first use anyway; this tool is for building ahead of time (e.g. once on a
shared file system before a multi-host run) and for timing. Sizes come from
`adc_jax.config.base_config(size).data`; any of them can be overridden.

  python tools/make_synthetic.py --size=quick
  python tools/make_synthetic.py --size=paper --data_dir=/tmp/adc_data --num_workers=2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import typing

from absl import logging

from adc_jax import config as config_lib
from adc_jax.data.errors import run_data_tool
from adc_jax.data.synthetic import builder as synthetic

# The SyntheticSpec fields a flag can override (the sample rate is the model's: not a flag).
OVERRIDABLE = ("num_train", "num_validation", "num_eval", "clip_seconds", "seed")


def add_size_flags(parser: argparse.ArgumentParser) -> None:
    """The flags shared with tools/listen.py: a size preset and overrides of its data fields."""
    parser.add_argument(
        "--size",
        default="quick",
        choices=config_lib.SIZES,
        help="size preset of adc_jax.config (default: quick)",
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="tfds data directory (default: $ADC_JAX_DATA_DIR or ~/.cache/adc_jax/datasets)",
    )
    types = typing.get_type_hints(synthetic.SyntheticSpec)
    for name in OVERRIDABLE:
        parser.add_argument(
            f"--{name}", type=types[name], default=None, help=f"override the preset's {name}"
        )
    parser.add_argument(
        "--num_workers", type=int, default=None, help="generation processes (default: all CPUs)"
    )
    parser.set_defaults(parser=parser)  # for resolve()'s usage errors


# After an I/O error while building: what to check.
IO_HINT = "Choose a --data_dir this user can write to, on a disk with free space."


def resolve(args: argparse.Namespace) -> tuple[str, synthetic.SyntheticSpec]:
    """(data_dir, the variant's spec) from the parsed flags; --num_workers is args.num_workers.

    An override out of range (--num_train=0) exits with status 2 and argparse's usage line.
    """
    spec = synthetic.SyntheticSpec.from_config(config_lib.base_config(args.size).data)
    overrides = {name: getattr(args, name) for name in OVERRIDABLE}
    try:
        spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        args.parser.error(f"--{e}")
    data_dir = os.path.expanduser(args.data_dir or config_lib.default_data_dir())
    return data_dir, spec


def _disk_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_flags(parser)
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)
    data_dir, spec = resolve(args)
    start = time.perf_counter()
    builder = run_data_tool(
        lambda: synthetic.build_synthetic(data_dir, spec, num_workers=args.num_workers), IO_HINT
    )
    elapsed = time.perf_counter() - start
    total = sum(spec.split_sizes.values())
    size_mb = _disk_size(builder.data_dir) / 2**20
    splits = ", ".join(f"{s}={len(builder.as_data_source(s))}" for s in synthetic.SPLITS)
    print(
        f"synthetic_adc/{builder.builder_config.name} at {builder.data_dir}\n"
        f"  {splits}; {size_mb:.1f} MiB on disk\n"
        f"  {elapsed:.1f} s for {total} pairs ({total / max(elapsed, 1e-9):.1f} pairs/s; "
        f"a few ms if it was already built)"
    )


if __name__ == "__main__":
    main()
