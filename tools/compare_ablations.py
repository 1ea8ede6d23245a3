"""Seed-paired comparison of two ablation grids: does a change help the same system, seed by seed?

  python tools/compare_ablations.py workdirs/real/ablation.json workdirs/real_byola/ablation.json
  python tools/compare_ablations.py A/ablation.json B/ablation.json --metrics=CIDEr,diff_acc \\
      --name_a="random init" --name_b="pretrained" --json_out=paired.json

A and B are `tools/ablation.py`'s ablation.json of two grids trained with one setting changed
(e.g. B with `--byola_init`, A without) and the same seeds. For every system that both grids hold
and every metric column (those of ablation.py's table), the seeds finished in both are paired:
seed s of B against seed s of A, which share their data order and the initialisation of
everything the change leaves alone. The table gives A's and B's mean over those seeds, the mean
of the per-seed differences B - A, its 95% Student-t interval (n - 1 degrees of freedom), the
paired t-test's two-sided p-value, the number of seeds where B was higher, and each seed's
difference. With n seeds the test has n - 1 degrees of freedom: at 4 seeds only a difference
that is consistent in sign and large against its spread clears p < 0.05.

Pairing removes the seed-to-seed spread that both grids share (the data order and the decoder's
start), which Welch's test between unpaired rows (ablation.py's own comparisons) must carry.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ablation  # noqa: E402  (tools/ablation.py: its columns and metric names)

LEVEL = 0.95


def read_grid(path: str) -> dict[str, Any]:
    """An ablation.json (a file, or the workdir_root holding one).

    Raises:
      FileNotFoundError: no such file (says how one is written).
      ValueError: the file is not an ablation summary.
    """
    if os.path.isdir(path):
        path = os.path.join(path, "ablation.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist; `python tools/ablation.py ... --workdir_root=ROOT` writes "
            "ROOT/ablation.json (add --table_only to write it from finished runs)."
        )
    with open(path) as f:
        grid = json.load(f)
    if not isinstance(grid, dict) or not isinstance(grid.get("systems"), dict):
        raise ValueError(f"{path} is not an ablation.json of tools/ablation.py (no 'systems').")
    return grid


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> dict:
    """B - A over paired values [n], [n]: mean, Student-t interval, paired t-test p-value.

    Raises:
      ValueError: fewer than 2 pairs, or a and b of different lengths.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"a paired test needs >= 2 pairs of values, got {a.size} and {b.size}.")
    d = b - a
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    if se == 0.0:  # the same difference on every seed: no spread to test against
        p = 1.0 if mean == 0.0 else 0.0
        lo = hi = mean
    else:
        half = float(scipy.stats.t.ppf(0.5 + level / 2, d.size - 1)) * se
        lo, hi = mean - half, mean + half
        p = float(scipy.stats.ttest_rel(b, a).pvalue)
    return {
        "a": float(a.mean()),
        "b": float(b.mean()),
        "difference": mean,
        "lo": lo,
        "hi": hi,
        "p_value": p,
        "b_higher": int((d > 0).sum()),
        "n": int(d.size),
        "per_seed": [float(x) for x in d],
    }


def compare(grid_a: dict, grid_b: dict, metrics: Sequence[str]) -> list[dict]:
    """One row per (system in both grids, metric): `paired_difference` over the seeds both
    finished, with the system, metric and seeds; metrics a grid lacks for a seed are skipped.

    Raises:
      ValueError: no system in both grids, or one with fewer than 2 seeds in both.
    """
    systems = [s for s in grid_a["systems"] if s in grid_b["systems"]]
    if not systems:
        raise ValueError(
            f"the grids share no system (A: {sorted(grid_a['systems'])}, B: "
            f"{sorted(grid_b['systems'])}); compare grids of the same --experiments."
        )
    rows = []
    for system in systems:
        seeds_a = grid_a["systems"][system]["per_seed"]
        seeds_b = grid_b["systems"][system]["per_seed"]
        seeds = sorted(set(seeds_a) & set(seeds_b), key=int)
        if len(seeds) < 2:
            raise ValueError(
                f"{system}: seeds {seeds} finished in both grids; a paired test needs 2 or more "
                "(run the same --seeds in both)."
            )
        for metric in metrics:
            pairs = [
                (seeds_a[s].get(metric), seeds_b[s].get(metric), s)
                for s in seeds
                if seeds_a[s].get(metric) is not None and seeds_b[s].get(metric) is not None
            ]
            if len(pairs) < 2:
                continue
            a, b, used = zip(*pairs, strict=True)
            row = paired_difference(a, b)
            rows.append(
                {"system": system, "metric": metric, "seeds": [int(s) for s in used], **row}
            )
    return rows


def format_table(rows: Sequence[dict], name_a: str, name_b: str) -> str:
    """The rows as a markdown table (a * marks an interval that excludes 0)."""
    lines = [
        f"| system | metric | {name_a} | {name_b} | {name_b} − {name_a} [95%] | p (paired t) "
        "| seeds higher | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " *" if r["lo"] > 0 or r["hi"] < 0 else ""
        per_seed = ", ".join(f"{d:+.3f}" for d in r["per_seed"])
        lines.append(
            f"| {r['system']} | {r['metric']} | {r['a']:.3f} | {r['b']:.3f} | "
            f"{r['difference']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]{mark} | "
            f"{r['p_value']:.3f} | {r['b_higher']}/{r['n']} | {per_seed} |"
        )
    lines.append("\n* the interval excludes 0. Seeds paired: seed s of B against seed s of A.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="ablation.json (or its workdir_root) of grid A, the reference")
    parser.add_argument("b", help="ablation.json (or its workdir_root) of grid B")
    parser.add_argument(
        "--metrics",
        default="CIDEr,diff_acc,swap_cons,distinct,discrim",
        help="comma-separated columns of ablation.py's table (its --compare_metrics names)",
    )
    parser.add_argument("--name_a", default="A", help="A's name in the table")
    parser.add_argument("--name_b", default="B", help="B's name in the table")
    parser.add_argument("--json_out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        metrics = ablation.resolve_metrics(args.metrics)
        rows = compare(read_grid(args.a), read_grid(args.b), metrics)
    except (FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    print(f"A ({args.name_a}) = {args.a}\nB ({args.name_b}) = {args.b}\n")
    print(format_table(rows, args.name_a, args.name_b))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"a": args.a, "b": args.b, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
