"""ADIFF's leaderboard layout for our runs: one table per metric, columns CLD-1..3 / ACD-1..3.

  python tools/adiff_table.py runs/adiff_cld runs/adiff_acd
  python tools/adiff_table.py "late SDD=runs/adiff_cld,runs/adiff_acd" --metrics=SPICE,CIDEr

Each argument is a system: `[NAME=]WORKDIR[,WORKDIR...]` (one workdir per subset it was trained
on; NAME defaults to the runs' config name) or an eval JSON file written by `adc_jax.evaluate` /
training (`WORKDIR/eval/*.json`). A workdir contributes its latest greedy eval of the `eval`
split (ADIFF's protocol: greedy decoding on the test/evaluation split). Scores are x 100 as ADIFF
reports them; the most-frequent-answer baseline of each tier and, for SPICE, ADIFF's published
figures (labelled as theirs) are printed below ours. SPICE (and SPIDEr) are "n/a" unless Stanford
CoreNLP is installed for pycocoevalcap; the other metrics are always computed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

from adc_jax import report

METRICS = ("SPICE", "SPIDEr", "CIDEr", "BLEU_4", "METEOR", "ROUGE_L")


def latest_eval(workdir: str) -> str:
    """The eval JSON of the highest step of the `eval` split decoded greedily, in `workdir`."""
    found = []
    for path in glob.glob(os.path.join(workdir, "eval", "*.json")):
        name = os.path.basename(path)
        m = re.fullmatch(r"(?:step_(\d+)|eval_(\d+)_greedy)\.json", name)
        if not m:
            continue
        with open(path) as f:
            result = json.load(f)
        if result.get("dataset") == "adiff" and result.get("split") == "eval":
            if result.get("decode") == "greedy":
                found.append((int(result["step"]), path))
    if not found:
        raise FileNotFoundError(
            f"No greedy ADIFF eval of the 'eval' split in {workdir}/eval; run "
            f"python -m adc_jax.evaluate --workdir={workdir} --split=eval --decode=greedy."
        )
    return max(found)[1]


def load_system(arg: str) -> tuple[str, list[dict]]:
    """`[NAME=]PATH[,PATH...]` -> (row name, eval results)."""
    name, _, paths = arg.rpartition("=") if "=" in arg else ("", "", arg)
    results = []
    for path in paths.split(","):
        path = os.path.expanduser(path)
        json_path = path if path.endswith(".json") else latest_eval(path)
        with open(json_path) as f:
            result = json.load(f)
        if result.get("dataset") != "adiff" or "tiers" not in result:
            raise ValueError(f"{json_path} is not a tiered ADIFF evaluation.")
        results.append(result)
    return name or results[0]["config_name"], results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("systems", nargs="+", help="[NAME=]WORKDIR[,WORKDIR...] or eval JSONs")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated metrics")
    parser.add_argument("--output", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    metrics = [m for m in args.metrics.split(",") if m]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        print(f"Error: unknown metric(s) {unknown}; choose from {METRICS}.", file=sys.stderr)
        return 2
    try:
        systems = [load_system(a) for a in args.systems]
    except (FileNotFoundError, ValueError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    text = "\n\n".join(f"### {m} (x 100)\n\n{report.adiff_table(systems, m)}" for m in metrics)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
