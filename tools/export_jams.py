"""Writes both clips of every clip_pairs pair as JAMS files (Scaper's format), to publish a build.

For each pair of each split: OUTPUT/<split>/<key>_1.jams and <key>_2.jams
(`adc_jax.data.clip_jams`), each checked to render back to the stored audio exactly (--nocheck
skips that). The flags name the build as tools/listen.py's do (building it if it is missing):

  python tools/export_jams.py --clips_dir=ESC-50 --background_dir=FSD50K --size=quick \\
      --output=/tmp/clip_pairs_jams

Render a pair from its files with `adc_jax.data.clip_jams.render_pair(path1, path2)`.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from listen import add_clip_pairs_flags, clip_pairs_spec  # noqa: E402  (sibling tool)
from make_synthetic import IO_HINT, add_size_flags, resolve  # noqa: E402  (sibling tool)

from adc_jax.data import clip_jams, clip_pairs  # noqa: E402
from adc_jax.data.errors import run_data_tool  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_flags(parser)
    add_clip_pairs_flags(parser)
    parser.add_argument("--output", required=True, help="directory for the JAMS files")
    parser.add_argument(
        "--splits", default=",".join(clip_pairs.SPLITS), help="comma-separated splits to write"
    )
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="render every pair back from its files and require the stored audio (default)",
    )
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = sorted(set(splits) - set(clip_pairs.SPLITS))
    if unknown or not splits:
        parser.error(f"--splits={args.splits!r}: choose from {','.join(clip_pairs.SPLITS)}.")
    run_data_tool(lambda: _export(args, splits), IO_HINT + " Check that --output is writable.")


def _export(args: argparse.Namespace, splits: list[str]) -> None:
    spec = clip_pairs_spec(args)
    builder = clip_pairs.build_clip_pairs(resolve(args)[0], spec, num_workers=args.num_workers)
    for split in splits:
        folder = os.path.join(args.output, split)
        done = clip_jams.write_split(
            builder.as_data_source(split),
            folder,
            spec.clips_dir,
            spec.background_dir,
            check=args.check,
        )
        checked = "each renders back exactly" if args.check else "not checked"
        print(
            f"{split}: {done.files} JAMS files for {done.pairs} pairs in {folder} "
            f"({done.seconds:.1f} s; {checked})"
        )


if __name__ == "__main__":
    main()
