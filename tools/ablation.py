"""The paper's ablation: baseline, CAC, early SDD, late SDD and late SDD's λ variants over seeds.

  python tools/ablation.py --size=quick                        # the whole grid (4 systems + 2 λ, seeds 0-3)
  python tools/ablation.py --size=quick --only=late_sdd        # one row, all its seeds
  python tools/ablation.py --size=quick --only=late_sdd_lambda0.5:seed0,cac:seed3
  python tools/ablation.py --size=quick --only=seed1           # every row's seed 1
  python tools/ablation.py --size=quick --table_only           # the table of what has finished
  python tools/ablation.py --size=smoke --seeds=0 --lambdas= --steps=2 --workdir_root=/tmp/abl
  python tools/ablation.py --size=paper --seeds=0,1,2 --data_dir=/data/adc --dry_run

The grid: every system of --experiments (baseline, cac, early_sdd, late_sdd) × --seeds (default
0,1,2,3), plus late_sdd with `model.sdd_weight` = λ for each of --lambdas (default 0.5,2) when
late_sdd is among the experiments. Each (system, seed, λ) is one run,
`python -m adc_jax.main --config=configs/<experiment>.py:<size>` in its own process (as a user
would run it) with `--config.seed=S` (and `--config.model.sdd_weight=λ`); all runs read the same
dataset (the data seed is `data.synth_seed`, not `seed`). Workdirs are
`<workdir_root>/<row>/seed<S>`, rows being `baseline`, `cac`, `early_sdd`, `late_sdd`,
`late_sdd_lambda0.5`, ...

Resuming and running in parts: a run with a stored result is skipped, an unfinished one resumes
from its last checkpoint, so rerunning the same command continues an interrupted ablation.
`--only=PATTERN[,PATTERN...]` runs part of the grid: a row (`late_sdd`), a row's seed
(`late_sdd:seed2`) or a seed of every row (`seed1`); an unknown pattern is an error listing the
rows. Parts may run in several sessions or on several machines: copy their workdirs into one
workdir_root and the table counts them. A workdir made with other settings (size, steps, seed, λ,
overrides) is an error rather than being silently reused.

Stored results: when a run finishes, `<workdir>/ablation_result.json` gets its settings (row,
experiment, seed, λ, size, steps, overrides), its final evaluation's scores, difference accuracy,
bootstrap intervals (where the evaluation wrote them) and most-frequent-caption baseline, the
paths of its eval JSON and predictions file relative to the workdir, its wall-clock time (summed
over resumed attempts, from `ablation_time.json`) and the machine that finished it. A run whose
final eval JSON (`eval/step_<num_steps>.json`) exists without a stored result (made by an older
version of this tool) gets one when the table is made.

The table, `<workdir_root>/ablation.md` (written at the end and, with --table_only, at any time),
is made from the stored results alone and always covers the whole grid: one row per system with
the mean ± sample standard deviation over seeds of BLEU-1, BLEU-4, METEOR, ROUGE-L, CIDEr, SPIDEr
and difference accuracy ("k/n" finished seeds) — and the diagnostics (swap consistency,
identical-pair rate, distinct captions, discriminability) when the runs' evaluations have them —,
the most-frequent-caption baseline, and a second
table of comparisons for CIDEr and difference accuracy (`--compare_metrics`): each pair of
adjacent rows and the pairs the paper's three claims need (CAC vs baseline, late SDD vs CAC, late
SDD vs early SDD), with the difference of the means, its 95% Welch–Satterthwaite interval and
Welch's t-test p-value over the per-seed values (`welch_difference`), marked where the interval
excludes 0; n/a where a row has fewer than 2 finished seeds. The header gives the machines and the
total run time. `<workdir_root>/ablation.json` holds the per-run numbers and the comparisons.

Public API (besides `main`): `plan`, `select_runs`, `command`, `stored_result`,
`welch_difference` -> `Difference`, `comparison_pairs`, `make_table`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("baseline", "cac", "early_sdd", "late_sdd")
# Row labels of the main table.
DESCRIPTIONS = {
    "baseline": "baseline (full attention, no SDD)",
    "cac": "CAC (cross attention, no SDD)",
    "early_sdd": "CAC + early SDD",
    "late_sdd": "CAC + late SDD",
}
# Row names in the comparisons table.
SHORT_NAMES = {
    "baseline": "baseline",
    "cac": "CAC",
    "early_sdd": "early SDD",
    "late_sdd": "late SDD",
}
# (column header, where the value is in an evaluation JSON or a stored result).
COLUMNS = (
    ("BLEU-1", ("scores", "BLEU_1")),
    ("BLEU-4", ("scores", "BLEU_4")),
    ("METEOR", ("scores", "METEOR")),
    ("ROUGE-L", ("scores", "ROUGE_L")),
    ("CIDEr", ("scores", "CIDEr")),
    ("SPIDEr", ("scores", "SPIDEr")),
    ("diff. acc.", ("difference_accuracy", "exact_set_accuracy")),
)
# The diagnostics (adc_jax.metrics.diagnostics), as columns when some stored result has them.
DIAGNOSTIC_COLUMNS = (
    ("swap cons.", ("diagnostics", "swap_consistency")),
    ("identical → none", ("diagnostics", "identical_pair_rate")),
    ("distinct", ("diagnostics", "distinct_captions")),
    ("discrim.", ("diagnostics", "discriminability")),
)
DEFAULT_COMPARE = "CIDEr,diff_acc"
# (row A, row B, why): comparisons the paper's claims need, A expected to beat B.
CLAIMS = (
    ("cac", "baseline", "claim 1: CAC beats full attention"),
    ("late_sdd", "cac", "claim 2: SDD helps"),
    ("late_sdd", "early_sdd", "claim 3: late SDD beats early"),
)
RESULT_FILE = "ablation_result.json"
RESULT_FORMAT = 1
# Flags `command` sets itself; anything else on a logged command line is an override.
_OWN_FLAGS = (
    "--config=",
    "--workdir=",
    "--config.seed=",
    "--config.model.sdd_weight=",
    "--config.train.num_steps=",
    "--config.data.data_dir=",
)


class AblationError(RuntimeError):
    """A run failed or a workdir holds a run with other settings; the message says which."""


@dataclasses.dataclass
class Run:
    """One training run of the ablation."""

    name: str  # row of the table: an experiment, or "late_sdd_lambda0.5"
    experiment: str  # configs/<experiment>.py
    seed: int
    sdd_weight: float | None  # None: the config's value
    workdir: str

    @property
    def key(self) -> str:
        """`<row>:seed<S>`, as --only spells one run."""
        return f"{self.name}:seed{self.seed}"

    def label(self) -> str:
        if self.sdd_weight is None:
            return DESCRIPTIONS.get(self.name, self.name)
        return f"{DESCRIPTIONS[self.experiment]}, \u03bb = {self.sdd_weight:g}"

    def short_label(self) -> str:
        base = SHORT_NAMES.get(self.experiment, self.experiment)
        return base if self.sdd_weight is None else f"{base} \u03bb={self.sdd_weight:g}"


def parse_list(text: str, kind: type) -> list:
    """ "0,1" -> [0, 1]; "" -> []."""
    return [kind(x) for x in text.split(",") if x.strip()]


def lambda_row(lam: float) -> str:
    """The row name of late_sdd at sdd_weight `lam`: 0.5 -> "late_sdd_lambda0.5"."""
    return f"late_sdd_lambda{lam:g}"


def plan(args: argparse.Namespace) -> list[Run]:
    """Every run of the grid, seed by seed (a full set of rows exists after each seed)."""
    runs = []
    for seed in args.seeds:
        for exp in args.experiments:
            runs.append(
                Run(exp, exp, seed, None, os.path.join(args.workdir_root, exp, f"seed{seed}"))
            )
        if "late_sdd" in args.experiments:
            for lam in args.lambdas:
                name = lambda_row(lam)
                runs.append(
                    Run(
                        name,
                        "late_sdd",
                        seed,
                        lam,
                        os.path.join(args.workdir_root, name, f"seed{seed}"),
                    )
                )
    return runs


def row_names(runs: Sequence[Run]) -> list[str]:
    """The rows of the table, in table order (order of first appearance in `plan`)."""
    return list(dict.fromkeys(run.name for run in runs))


def _canonical_row(name: str) -> str:
    """ "late_sdd_lambda2.0" -> "late_sdd_lambda2" (the spelling `plan` uses); else unchanged."""
    match = re.fullmatch(r"late_sdd_lambda([0-9.eE+-]+)", name)
    if match:
        try:
            return lambda_row(float(match.group(1)))
        except ValueError:
            pass
    return name


def select_runs(runs: Sequence[Run], only: str | None) -> list[Run]:
    """The runs of `runs` that `only` ("late_sdd", "late_sdd:seed2", "seed1", comma-separated)
    matches, in plan order; all of them when `only` is None or empty.

    Raises:
      ValueError: a pattern names an unknown row or seed, or matches no run; the message lists
        the rows and seeds of the grid.
    """
    if not only:
        return list(runs)
    rows = row_names(runs)
    seeds = list(dict.fromkeys(run.seed for run in runs))
    choices = (
        f"rows: {', '.join(rows)}; seeds: {', '.join(f'seed{s}' for s in seeds)}; "
        "patterns: ROW, ROW:seedS or seedS"
    )
    wanted: set[str] = set()
    for pattern in (p.strip() for p in only.split(",")):
        if not pattern:
            continue
        row, _, seed_part = pattern.partition(":")
        if re.fullmatch(r"seed\d+", row) and not seed_part:
            row, seed_part = "", row
        row = _canonical_row(row)
        if row and row not in rows:
            raise ValueError(f"--only={pattern!r}: unknown row {row!r} ({choices})")
        if seed_part:
            if not re.fullmatch(r"seed\d+", seed_part):
                raise ValueError(
                    f"--only={pattern!r}: {seed_part!r} is not a seed like 'seed2' ({choices})"
                )
            if int(seed_part[4:]) not in seeds:
                raise ValueError(
                    f"--only={pattern!r}: seed {seed_part[4:]} is not in --seeds ({choices})"
                )
        matched = [
            run.key
            for run in runs
            if (not row or run.name == row) and (not seed_part or run.seed == int(seed_part[4:]))
        ]
        if not matched:
            raise ValueError(f"--only={pattern!r} matches no run ({choices})")
        wanted.update(matched)
    return [run for run in runs if run.key in wanted]


def overrides(args: argparse.Namespace) -> list[str]:
    """The --override flags as they go on every run's command line."""
    return [o if o.startswith("--") else f"--{o}" for o in args.override]


def command(run: Run, args: argparse.Namespace) -> list[str]:
    """The `python -m adc_jax.main` command line of a run."""
    cmd = [
        sys.executable,
        "-m",
        "adc_jax.main",
        f"--config={os.path.join(REPO_ROOT, 'configs', run.experiment)}.py:{args.size}",
        f"--workdir={run.workdir}",
        f"--config.seed={run.seed}",
    ]
    if run.sdd_weight is not None:
        cmd.append(f"--config.model.sdd_weight={run.sdd_weight}")
    if args.steps is not None:
        cmd.append(f"--config.train.num_steps={args.steps}")
    if args.data_dir:
        cmd.append(f"--config.data.data_dir={os.path.abspath(os.path.expanduser(args.data_dir))}")
    return cmd + overrides(args)


def requested_steps(args: argparse.Namespace) -> int:
    if args.steps is not None:
        return args.steps
    sys.path.insert(0, REPO_ROOT)
    from adc_jax.config import base_config

    return int(base_config(args.size).train.num_steps)


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, obj: Any) -> None:
    """Writes through a temporary file, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _mismatch_error(run: Run, diffs: list[str], where: str) -> AblationError:
    return AblationError(
        f"{run.workdir} holds a run with other settings ({where}): {', '.join(diffs)}. "
        "Use the same --size/--steps/--override flags as that run, another --workdir_root, "
        "or delete that workdir."
    )


def check_workdir(run: Run, args: argparse.Namespace, num_steps: int) -> dict[str, Any] | None:
    """The run's config.json, or None when the run has not started.

    Raises:
      AblationError: the workdir holds a run made with other settings.
    """
    config_path = os.path.join(run.workdir, "config.json")
    if not os.path.exists(config_path):
        return None
    config = _read_json(config_path)
    found = {
        "train.num_steps": config["train"]["num_steps"],
        "seed": config["seed"],
        "name": config["name"],
    }
    wanted = {"train.num_steps": num_steps, "seed": run.seed, "name": run.experiment}
    if config.get("size") is not None:
        found["size"], wanted["size"] = config["size"], args.size
    if run.sdd_weight is not None:
        found["model.sdd_weight"] = config["model"]["sdd_weight"]
        wanted["model.sdd_weight"] = run.sdd_weight
    diffs = [f"{k}={found[k]!r} (wanted {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if diffs:
        raise _mismatch_error(run, diffs, "config.json")
    return config


def _eval_paths(run: Run, num_steps: int) -> tuple[str, str]:
    """(eval JSON, predictions file) of the run's final evaluation, relative to its workdir."""
    prefix = os.path.join("eval", f"step_{num_steps}")
    return prefix + ".json", prefix + "_predictions.jsonl"


def _time_record_path(run: Run) -> str:
    return os.path.join(run.workdir, "ablation_time.json")


def _logged_overrides(run: Run) -> list[str] | None:
    """The overrides on the last command line in the run's ablation_run.log; None without one."""
    path = os.path.join(run.workdir, "ablation_run.log")
    if not os.path.exists(path):
        return None
    last = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("$ "):
                last = line[2:].strip()
    if last is None:
        return None
    return [t for t in shlex.split(last) if t.startswith("--") and not t.startswith(_OWN_FLAGS)]


def write_result(
    run: Run,
    args: argparse.Namespace,
    num_steps: int,
    config: dict[str, Any],
    run_overrides: list[str] | None,
    backfilled: bool,
) -> dict[str, Any]:
    """Writes `<workdir>/ablation_result.json` from the run's final eval JSON and returns it."""
    eval_rel, predictions_rel = _eval_paths(run, num_steps)
    result = _read_json(os.path.join(run.workdir, eval_rel))
    attempts = []
    if os.path.exists(_time_record_path(run)):
        attempts = _read_json(_time_record_path(run))["attempts"]
    finished = [a for a in attempts if a.get("exit_code") == 0] or attempts
    record: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "run": {
            "name": run.name,
            "experiment": run.experiment,
            "seed": run.seed,
            "lambda": config.get("model", {}).get("sdd_weight", run.sdd_weight),
            "size": config.get("size", args.size),
            "num_steps": num_steps,
            # None: not known (a run backfilled without its ablation_run.log).
            "overrides": run_overrides,
        },
        "label": run.label(),
        "eval": {k: result.get(k) for k in ("step", "split", "dataset", "num_pairs", "decode")}
        | {"beam_size": result.get("beam_size", 1)},
        "scores": result["scores"],
        "difference_accuracy": result.get("difference_accuracy"),
        "intervals": result.get("intervals"),
        # name -> value (None where not computed) and name -> its interval.
        "diagnostics": {k: d.get("value") for k, d in (result.get("diagnostics") or {}).items()},
        "diagnostic_intervals": {
            k: d["interval"]
            for k, d in (result.get("diagnostics") or {}).items()
            if "interval" in d
        },
        "baseline": result.get("baseline"),
        "eval_json": eval_rel,
        "predictions": (
            predictions_rel if os.path.exists(os.path.join(run.workdir, predictions_rel)) else None
        ),
        # Sum over every attempt (resumed runs); None when no attempt was recorded.
        "wall_seconds": round(sum(a["seconds"] for a in attempts), 1) if attempts else None,
        "attempts": len(attempts),
        "machine": finished[-1]["machine"] if finished else None,
        "written_at": time.strftime("%F %T"),
        "backfilled": backfilled,
    }
    if "tiers" in result:
        record["tiers"] = result["tiers"]
    _write_json(os.path.join(run.workdir, RESULT_FILE), record)
    return record


def stored_result(run: Run, args: argparse.Namespace, num_steps: int) -> dict[str, Any] | None:
    """The run's stored result: its ablation_result.json, written first from its final eval
    JSON when only that exists (a run of an older version); None when the run has not finished.

    Raises:
      AblationError: the workdir holds a run made with other settings.
    """
    path = os.path.join(run.workdir, RESULT_FILE)
    if os.path.exists(path):
        record = _read_json(path)
        stored = record["run"]
        wanted = {
            "name": run.name,
            "experiment": run.experiment,
            "seed": run.seed,
            "size": args.size,
            "num_steps": num_steps,
        }
        if run.sdd_weight is not None:
            wanted["lambda"] = run.sdd_weight
        if stored.get("overrides") is not None:
            wanted["overrides"] = overrides(args)
        diffs = [
            f"{k}={stored.get(k)!r} (wanted {v!r})" for k, v in wanted.items() if stored.get(k) != v
        ]
        if diffs:
            raise _mismatch_error(run, diffs, RESULT_FILE)
        return record
    config = check_workdir(run, args, num_steps)
    if config is None or not os.path.exists(
        os.path.join(run.workdir, _eval_paths(run, num_steps)[0])
    ):
        return None
    return write_result(run, args, num_steps, config, _logged_overrides(run), backfilled=True)


def _cpu_model() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Platform, CPU count and JAX devices (probed in a subprocess so the parent never holds a GPU)."""
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    probe = (
        "import jax; d = jax.devices(); "
        "print(jax.__version__, len(d), d[0].platform, d[0].device_kind, sep='|')"
    )
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=REPO_ROOT,
        )
        version, count, plat, kind = out.stdout.strip().splitlines()[-1].split("|")
        info.update(jax=version, devices=f"{count} x {kind} ({plat})")
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as e:
        info["devices"] = f"unknown ({type(e).__name__})"
    return info


def execute(
    run: Run, args: argparse.Namespace, machine: dict[str, Any], index: int, total: int
) -> None:
    """Trains (or resumes) one run; appends its wall time to its ablation_time.json."""
    os.makedirs(run.workdir, exist_ok=True)
    cmd = command(run, args)
    log_path = os.path.join(run.workdir, "ablation_run.log")
    print(
        f"[{index}/{total}] {run.name} seed {run.seed}: training in {run.workdir} "
        f"(log: {log_path})",
        flush=True,
    )
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    record_path = _time_record_path(run)
    record = _read_json(record_path) if os.path.exists(record_path) else {"attempts": []}
    record["attempts"].append(
        {
            "seconds": round(seconds, 1),
            "exit_code": proc.returncode,
            "machine": machine,
            "finished_at": time.strftime("%F %T"),
        }
    )
    _write_json(record_path, record)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-15:])
        raise AblationError(
            f"{run.name} seed {run.seed} failed (exit {proc.returncode}) after "
            f"{seconds:.0f} s; last lines of {log_path}:\n{tail}\nFix the cause "
            "and rerun the same command to resume."
        )
    print(f"[{index}/{total}] {run.name} seed {run.seed}: done in {seconds:.0f} s", flush=True)


# ------------------------------------------------------------------------------ statistics


@dataclasses.dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) over per-seed values, with Welch's test.

    low, high: the Welch–Satterthwaite t interval at `confidence`; p_value: two-sided, from
    Welch's t-test; df: the Satterthwaite degrees of freedom. When both samples have zero
    variance the interval is [delta, delta] and p is 1 if delta == 0, else 0.
    """

    delta: float
    low: float
    high: float
    p_value: float
    df: float
    n_a: int
    n_b: int
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval excludes 0: the difference is beyond the seed-to-seed noise."""
        return self.low > 0.0 or self.high < 0.0


def welch_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> Difference:
    """Difference of the means of `a` and `b` [n_a], [n_b] (e.g. one metric's per-seed values of
    two rows) with its Welch–Satterthwaite interval and Welch's t-test p-value.

    Raises:
      ValueError: a sample has fewer than 2 values (no variance to estimate).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(
            f"Welch's test needs >= 2 values per sample, got {a.size} and {b.size}: "
            "finish more seeds of both rows."
        )
    delta = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical values within each sample: t is 0/0 or ±inf
        df = float(a.size + b.size - 2)
        return Difference(
            delta, delta, delta, 1.0 if delta == 0.0 else 0.0, df, a.size, b.size, confidence
        )
    df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)
    if not math.isfinite(p):  # cannot happen with se > 0; treated as "no difference"
        p = 1.0
    return Difference(delta, delta - half, delta + half, p, df, a.size, b.size, confidence)


def comparison_pairs(rows: Sequence[str]) -> list[tuple[str, str, str]]:
    """(row A, row B, why) to compare, A - B: each row against the one above it in table order,
    then the paper's claims (`CLAIMS`) that are not already adjacent; only rows in `rows`."""
    pairs = {(rows[i + 1], rows[i]): ["adjacent"] for i in range(len(rows) - 1)}
    for a, b, why in CLAIMS:
        if a in rows and b in rows:
            pairs.setdefault((a, b), []).append(why)
    return [(a, b, "; ".join(whys)) for (a, b), whys in pairs.items()]


def resolve_metrics(text: str) -> list[str]:
    """ "CIDEr,diff_acc" -> the COLUMNS headers ["CIDEr", "diff. acc."] (case, spaces and
    punctuation ignored; the eval JSON's key names work too).

    Raises:
      ValueError: an unknown metric; the message lists the choices.
    """

    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]", "", s.lower())

    names = {}
    for header, (_, key) in COLUMNS + DIAGNOSTIC_COLUMNS:
        names[norm(header)] = header
        names[norm(key)] = header
    names[norm("difference_accuracy")] = "diff. acc."
    out = []
    for item in parse_list(text, str):
        if norm(item) not in names:
            raise ValueError(
                f"unknown metric {item!r} in --compare_metrics; choose from "
                + ", ".join(h for h, _ in COLUMNS + DIAGNOSTIC_COLUMNS)
            )
        if names[norm(item)] not in out:
            out.append(names[norm(item)])
    return out


# ---------------------------------------------------------------------------------- table


def _get(result: dict[str, Any], where: tuple[str, str]) -> float | None:
    section = result.get(where[0]) or {}
    value = section.get(where[1])
    return None if value is None else float(value)


def _mean_std(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def _duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _machine_text(m: dict[str, Any]) -> str:
    return (
        f"{m.get('platform')}, {m.get('cpu_count')} x {m.get('cpu', 'CPU')}, "
        f"JAX {m.get('jax', '?')} on {m.get('devices')}"
    )


def make_table(
    runs: list[Run],
    results: dict[int, dict[str, Any]],
    args: argparse.Namespace,
    num_steps: int,
    compare: Sequence[str] = ("CIDEr", "diff. acc."),
) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and the JSON summary of the whole grid from the stored results.

    Args:
      runs: the grid (`plan`); results: index into `runs` -> its stored result
        (`stored_result`); compare: COLUMNS (or DIAGNOSTIC_COLUMNS) headers of the metrics
        compared between rows. The diagnostics' columns appear when a result has them.
    """
    diagnostic_headers = {c for c, _ in DIAGNOSTIC_COLUMNS}
    with_diagnostics = any(results[i].get("diagnostics") for i in results) or bool(
        diagnostic_headers & set(compare)
    )
    columns = COLUMNS + (DIAGNOSTIC_COLUMNS if with_diagnostics else ())
    rows: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        rows.setdefault(run.name, []).append(i)
    machines: list[dict[str, Any]] = []
    by_machine: dict[str, list[float | None]] = {}
    for i in sorted(results):
        machine = results[i].get("machine")
        if machine is not None and machine not in machines:
            machines.append(machine)
        text = _machine_text(machine) if machine else "machine not recorded"
        by_machine.setdefault(text, []).append(results[i].get("wall_seconds"))
    timed = [s for times in by_machine.values() for s in times if s is not None]
    total_seconds = float(sum(timed))
    header = ["system", "seeds", *[c for c, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary: dict[str, Any] = {
        "size": args.size,
        "num_steps": num_steps,
        "seeds": args.seeds,
        "lambdas": args.lambdas,
        "overrides": overrides(args),
        "machines": machines,
        "total_run_seconds": round(total_seconds, 1),
        "systems": {},
        "comparisons": [],
    }
    values: dict[str, dict[str, list[float]]] = {}
    for name, indices in rows.items():
        done = [i for i in indices if i in results]
        label = runs[indices[0]].label()
        per_seed = {runs[i].seed: {c: _get(results[i], w) for c, w in columns} for i in done}
        values[name] = {
            c: [v[c] for v in per_seed.values() if v[c] is not None] for c, _ in columns
        }
        summary["systems"][name] = {
            "label": label,
            "finished_seeds": len(done),
            "planned_seeds": len(indices),
            "per_seed": per_seed,
            "mean": {c: float(np.mean(v)) if v else None for c, v in values[name].items()},
            "std": {
                c: float(np.std(v, ddof=1)) if len(v) > 1 else None for c, v in values[name].items()
            },
            "per_seed_intervals": {
                runs[i].seed: results[i]["intervals"] for i in done if results[i].get("intervals")
            },
        }
        cells = [label, f"{len(done)}/{len(indices)}"]
        cells += [
            _mean_std([per_seed[runs[i].seed][c] for i in done]) if done else "not run"
            for c, _ in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    baseline = next(
        (results[i]["baseline"] for i in sorted(results) if results[i].get("baseline")), None
    )
    if baseline is not None:
        cells = [f"most frequent caption: \u201c{baseline['caption']}\u201d", "-"]
        cells += [_mean_std([_get(baseline, w)]) for _, w in columns]
        lines.append("| " + " | ".join(cells) + " |")
        summary["most_frequent_caption"] = {
            "caption": baseline["caption"],
            **{c: _get(baseline, w) for c, w in columns},
        }

    short = {name: runs[indices[0]].short_label() for name, indices in rows.items()}
    comp_header = ["comparison", "why"]
    for metric in compare:
        comp_header += [f"\u0394 {metric} [95% CI]", "p"]
    comp_lines = ["| " + " | ".join(comp_header) + " |", "|" + "---|" * len(comp_header)]
    for a, b, why in comparison_pairs(list(rows)):
        cells = [f"{short[a]} vs {short[b]}", why]
        for metric in compare:
            va, vb = values[a][metric], values[b][metric]
            entry: dict[str, Any] = {"a": a, "b": b, "why": why, "metric": metric}
            if len(va) < 2 or len(vb) < 2:
                cells += [f"n/a ({len(va)} and {len(vb)} seeds)", "n/a"]
                entry.update(n_a=len(va), n_b=len(vb), delta=None)
            else:
                d = welch_difference(va, vb)
                mark = " \u2713" if d.excludes_zero else ""
                cells += [f"{d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{mark}", _p_text(d.p_value)]
                entry.update(dataclasses.asdict(d), beyond_noise=d.excludes_zero)
            summary["comparisons"].append(entry)
        comp_lines.append("| " + " | ".join(cells) + " |")

    any_result = next((results[i] for i in sorted(results)), None)
    machine_lines = [
        f"{text} ({_runs(len(times))}"
        + (f", {_duration(sum(t for t in times if t is not None))}" if any(times) else "")
        + ")"
        for text, times in by_machine.items()
    ] or ["(no run finished)"]
    untimed = sum(len(times) for times in by_machine.values()) - len(timed)
    notes = [
        f"# Ablation ({args.size} size, {num_steps} steps, seeds "
        f"{', '.join(map(str, args.seeds))})",
        "",
        f"- Machine: {'; '.join(machine_lines)}",
        f"- Total run time: {_duration(total_seconds)} (the wall-clock times of "
        f"{_runs(len(timed))} summed, resumed attempts included"
        + (f"; {_runs(untimed)} without a recorded time" if untimed else "")
        + ")",
        f"- Workdirs: {args.workdir_root}/<system>/seed<S>",
    ]
    if overrides(args):
        notes.append(f"- Overrides: {' '.join(overrides(args))}")
    if any_result is not None:
        ev = any_result["eval"]
        notes.append(
            f"- Split: {ev['split']} of {ev['dataset']} ({ev['num_pairs']} pairs), "
            f"{ev['decode']} decoding"
        )
        spice_note = any_result["scores"].get("notes", {}).get("SPICE")
        if any_result["scores"].get("SPICE") is None and spice_note:
            notes.append(f"- SPIDEr n/a: {spice_note}")
    notes += [
        '- Cells: mean ± sample standard deviation over seeds; "seeds" counts finished runs.',
        "",
    ]
    comp_notes = [
        "",
        "Row A vs row B: \u0394 = mean(A) - mean(B) over seeds, its 95% Welch–Satterthwaite "
        "interval and Welch's t-test p-value over the per-seed values (no correction for the "
        "number of comparisons); \u2713: the interval excludes 0, a difference beyond the "
        "seed-to-seed noise; n/a: a row has fewer than 2 finished seeds.",
        "",
    ]
    text = "\n".join(notes + lines + comp_notes + comp_lines) + "\n"
    return text, summary


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="quick", choices=("paper", "quick", "smoke"))
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated training seeds")
    parser.add_argument(
        "--lambdas", default="0.5,2", help="sdd_weight values of the late_sdd sweep ('' for none)"
    )
    parser.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help="comma-separated subset of " + ",".join(EXPERIMENTS),
    )
    parser.add_argument(
        "--only",
        default=None,
        help="run only these runs of the grid: ROW, ROW:seedS or seedS, comma-separated "
        "(e.g. late_sdd:seed2,seed1); the table still covers the whole grid",
    )
    parser.add_argument(
        "--compare_metrics",
        default=DEFAULT_COMPARE,
        help="metrics of the row-vs-row comparisons (of "
        + ", ".join(c for c, _ in COLUMNS + DIAGNOSTIC_COLUMNS)
        + f"; default {DEFAULT_COMPARE})",
    )
    parser.add_argument(
        "--workdir_root", default=None, help="where the runs go (default: workdirs/ablation_<size>)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="override train.num_steps of every run"
    )
    parser.add_argument("--data_dir", default=None, help="override data.data_dir")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra config override for every run, e.g. "
        "--override=config.eval.decode=beam (repeatable)",
    )
    parser.add_argument(
        "--byola_init",
        default="",
        help="initialise every run's BYOL-A encoder from this directory (e.g. the encoder/ of "
        "python -m adc_jax.pretrain); '' = random init. The default workdir_root then gets the "
        "suffix _byola, so the two initialisations' tables sit side by side",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--table_only",
        action="store_true",
        help="write the table of the finished runs without training",
    )
    args = parser.parse_args(argv)
    args.seeds = parse_list(args.seeds, int)
    args.lambdas = parse_list(args.lambdas, float)
    args.experiments = parse_list(args.experiments, str)
    unknown = sorted(set(args.experiments) - set(EXPERIMENTS))
    if unknown or not args.seeds or not args.experiments:
        parser.error(f"need >= 1 seed and experiments from {EXPERIMENTS} (unknown: {unknown})")
    args.experiments = [e for e in EXPERIMENTS if e in args.experiments]  # table order
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    try:
        compare = resolve_metrics(args.compare_metrics)
    except ValueError as e:
        parser.error(str(e))
    default_root = os.path.join("workdirs", f"ablation_{args.size}")
    if args.byola_init:
        default_root += "_byola"
        init = os.path.abspath(os.path.expanduser(args.byola_init))
        args.override = [*args.override, f"--config.model.byola_init={init}"]
    args.workdir_root = os.path.abspath(os.path.expanduser(args.workdir_root or default_root))

    runs = plan(args)
    try:
        selected = select_runs(runs, args.only)
    except ValueError as e:
        parser.error(str(e))
    if args.dry_run:
        for run in selected:
            print(shlex.join(command(run, args)))
        return 0
    num_steps = requested_steps(args)
    start = time.time()
    index = {run.key: i for i, run in enumerate(runs)}
    results: dict[int, dict[str, Any]] = {}
    try:
        for i, run in enumerate(runs):  # the whole grid: the table covers it
            record = stored_result(run, args, num_steps)
            if record is not None:
                results[i] = record
        # stored_result has checked that a started run has this invocation's settings.
        todo = [run for run in selected if index[run.key] not in results]
        part = f" ({len(selected)} selected by --only)" if args.only else ""
        print(
            f"Ablation in {args.workdir_root}: {len(runs)} runs, {len(results)} finished "
            f"(skipped), {len(todo)} to run{part}.",
            flush=True,
        )
        if todo and not args.table_only:
            machine = machine_info()
            for n, run in enumerate(todo, 1):
                execute(run, args, machine, n, len(todo))
                config = check_workdir(run, args, num_steps)
                eval_rel = _eval_paths(run, num_steps)[0]
                if config is None or not os.path.exists(os.path.join(run.workdir, eval_rel)):
                    raise AblationError(
                        f"{run.workdir} finished without {eval_rel} (was it stopped?); rerun "
                        "to resume."
                    )
                results[index[run.key]] = write_result(
                    run, args, num_steps, config, overrides(args), backfilled=False
                )
    except AblationError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    finally:
        if results:
            table, summary = make_table(runs, results, args, num_steps, compare)
            os.makedirs(args.workdir_root, exist_ok=True)
            with open(os.path.join(args.workdir_root, "ablation.md"), "w") as f:
                f.write(table)
            _write_json(os.path.join(args.workdir_root, "ablation.json"), summary)
    if not results:
        print("No finished run yet: nothing to tabulate.")
        return 0
    print(table)
    print(
        f"Wrote {args.workdir_root}/ablation.md and ablation.json "
        f"(this invocation: {_duration(time.time() - start)})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
