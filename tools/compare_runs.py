"""Paired comparison of two runs' predictions on the same split: B - A per metric, with intervals.

  python tools/compare_runs.py workdirs/cac/eval/eval_800_greedy_predictions.jsonl \\
      workdirs/late_sdd/eval/eval_800_greedy_predictions.jsonl
  python tools/compare_runs.py A.jsonl B.jsonl --resamples=2000 --seed=1 --json_out=cmp.json

The two files (written by every evaluation, `adc_jax.predictions`) must hold the same pairs with
the same references. Each metric (BLEU-1/4, METEOR, ROUGE-L, CIDEr, SPICE/SPIDEr where SPICE
runs, difference accuracy on labelled data) is computed for both systems on the same bootstrap
resamples of the pairs (`adc_jax.metrics.bootstrap.paired_bootstrap`): the table gives A, B, the
difference B - A, its 95% percentile interval and a two-sided p-value. The interval covers the
noise of which pairs were drawn, not of the training seed: compare runs of several seeds (as
`tools/ablation.py` does) before claiming a system is better.
"""

from __future__ import annotations

import argparse
import json
import sys

from adc_jax.metrics import bootstrap
from adc_jax.predictions import PredictionsError, read_predictions


def compare(path_a: str, path_b: str, *, resamples: int, seed: int) -> dict:
    """metric -> {a, b, difference, lo, hi, p_value} of two predictions files."""
    preds_a, split_a = read_predictions(path_a)
    preds_b, split_b = read_predictions(path_b)
    if split_a.keys != split_b.keys or split_a.references != split_b.references:
        raise PredictionsError(
            f"{path_a} and {path_b} do not score the same pairs with the same references "
            f"({len(split_a.keys)} vs {len(split_b.keys)} pairs); compare evaluations of one split."
        )
    _, stats_a = bootstrap.pair_stats(preds_a, split_a)
    _, stats_b = bootstrap.pair_stats(preds_b, split_b)
    return bootstrap.paired_bootstrap(stats_a, stats_b, num_resamples=resamples, seed=seed)


def format_table(result: dict, name_a: str = "A", name_b: str = "B") -> str:
    lines = [
        f"| metric | {name_a} | {name_b} | {name_b} - {name_a} | 95% interval | p |",
        "|---|---|---|---|---|---|",
    ]
    for metric in bootstrap.METRICS:
        if metric not in result:
            continue
        r = result[metric]
        mark = " *" if r["lo"] > 0 or r["hi"] < 0 else ""
        lines.append(
            f"| {metric} | {r['a']:.4f} | {r['b']:.4f} | {r['difference']:+.4f}{mark} | "
            f"[{r['lo']:+.4f}, {r['hi']:+.4f}] | {r['p_value']:.3f} |"
        )
    lines.append("\n* the interval excludes 0.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", help="predictions file of system A (the reference)")
    parser.add_argument("b", help="predictions file of system B")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="resampling seed")
    parser.add_argument("--json_out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = compare(args.a, args.b, resamples=args.resamples, seed=args.seed)
    except (FileNotFoundError, PredictionsError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(f"A = {args.a}\nB = {args.b}\n")
    print(format_table(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {"a": args.a, "b": args.b, "resamples": args.resamples, **result}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
