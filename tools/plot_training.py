"""Plots a run's training curves (loss terms, learning rate, gradient norm, eval scores) to a PNG.

  python tools/plot_training.py workdirs/late_sdd_quick                 # -> DIR/plots/training.png
  python tools/plot_training.py DIR --output=/tmp/curves.png

Reads DIR/metrics.jsonl, written by `python -m adc_jax.main` while it trains (also partway
through a run). The eval panel shows the periodic evaluation scores with the most-frequent-caption
baseline's CIDEr dashed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from adc_jax.plotting import plot_training  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="workdir of a training run (holds metrics.jsonl)")
    parser.add_argument(
        "--output", default=None, help="PNG to write (default: WORKDIR/plots/training.png)"
    )
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)
    workdir = os.path.abspath(os.path.expanduser(args.workdir))
    output = args.output or os.path.join(workdir, "plots", "training.png")
    try:
        path = plot_training(
            os.path.join(workdir, "metrics.jsonl"), output, title=workdir, dpi=args.dpi
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
