"""The paper's ablation: baseline, CAC, early SDD, late SDD (+ a lambda sweep) over seeds, one table.

  python tools/ablation.py --size=quick --seeds=0,1 --lambdas=0.5,2.0
  python tools/ablation.py --size=smoke --seeds=0 --lambdas= --steps=2 --workdir_root=/tmp/abl
  python tools/ablation.py --size=quick --table_only          # the table of what has finished
  python tools/ablation.py --size=paper --seeds=0,1,2 --data_dir=/data/adc --dry_run

Every run is `python -m adc_jax.main --config=configs/<experiment>.py:<size>` in its own process
(as a user would run it) with `--config.seed=S`, and for the sweep of late_sdd (run when late_sdd
is among --experiments) `--config.model.sdd_weight=L`;
all runs read the same dataset (the data seed is `data.synth_seed`, not `seed`). Workdirs are
`<workdir_root>/<run>/seed<S>`; a run whose final evaluation (`eval/step_<num_steps>.json`) exists
is skipped and an unfinished one resumes from its last checkpoint, so rerunning the same command
continues an interrupted ablation. A workdir made with other settings (steps, seed, lambda) is an
error rather than being silently reused.

At the end (and with --table_only at any time) it writes `<workdir_root>/ablation.md`: one row per
system with the mean ± sample standard deviation over seeds of BLEU-1, BLEU-4, METEOR, ROUGE-L,
CIDEr, SPIDEr and difference accuracy, plus the most-frequent-caption baseline; the header gives
the machine (platform, CPU count, JAX devices) and the total run time (the sum of every run's
wall-clock time, kept across resumed invocations in each workdir's `ablation_time.json`).
`<workdir_root>/ablation.json` holds the per-run numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ("baseline", "cac", "early_sdd", "late_sdd")
# Row labels of the table.
DESCRIPTIONS = {
    "baseline": "baseline (full attention, no SDD)",
    "cac": "CAC (cross attention, no SDD)",
    "early_sdd": "CAC + early SDD",
    "late_sdd": "CAC + late SDD",
}
# (column header, where the value is in an evaluation JSON).
COLUMNS = (
    ("BLEU-1", ("scores", "BLEU_1")),
    ("BLEU-4", ("scores", "BLEU_4")),
    ("METEOR", ("scores", "METEOR")),
    ("ROUGE-L", ("scores", "ROUGE_L")),
    ("CIDEr", ("scores", "CIDEr")),
    ("SPIDEr", ("scores", "SPIDEr")),
    ("diff. acc.", ("difference_accuracy", "exact_set_accuracy")),
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

    def label(self) -> str:
        if self.sdd_weight is None:
            return DESCRIPTIONS.get(self.name, self.name)
        return f"{DESCRIPTIONS[self.experiment]}, \u03bb = {self.sdd_weight:g}"


def parse_list(text: str, kind: type) -> list:
    """ "0,1" -> [0, 1]; "" -> []."""
    return [kind(x) for x in text.split(",") if x.strip()]


def plan(args: argparse.Namespace) -> list[Run]:
    """Every run of the ablation, seed by seed (a full table row set exists after each seed)."""
    runs = []
    for seed in args.seeds:
        for exp in args.experiments:
            runs.append(
                Run(exp, exp, seed, None, os.path.join(args.workdir_root, exp, f"seed{seed}"))
            )
        if "late_sdd" in args.experiments:
            for lam in args.lambdas:
                name = f"late_sdd_lambda{lam:g}"
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
    cmd += [o if o.startswith("--") else f"--{o}" for o in args.override]
    return cmd


def requested_steps(args: argparse.Namespace) -> int:
    if args.steps is not None:
        return args.steps
    sys.path.insert(0, REPO_ROOT)
    from adc_jax.config import base_config

    return int(base_config(args.size).train.num_steps)


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def final_result(run: Run, num_steps: int) -> dict[str, Any] | None:
    """The run's final evaluation JSON, or None when it has not finished.

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
    if run.sdd_weight is not None:
        found["model.sdd_weight"] = config["model"]["sdd_weight"]
        wanted["model.sdd_weight"] = run.sdd_weight
    diffs = [f"{k}={found[k]!r} (wanted {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if diffs:
        raise AblationError(
            f"{run.workdir} holds a run with other settings: {', '.join(diffs)}. "
            "Use another --workdir_root or delete that workdir."
        )
    path = os.path.join(run.workdir, "eval", f"step_{num_steps}.json")
    return _read_json(path) if os.path.exists(path) else None


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


def _time_record_path(run: Run) -> str:
    return os.path.join(run.workdir, "ablation_time.json")


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
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-15:])
        raise AblationError(
            f"{run.name} seed {run.seed} failed (exit {proc.returncode}) after "
            f"{seconds:.0f} s; last lines of {log_path}:\n{tail}\nFix the cause "
            "and rerun the same command to resume."
        )
    print(f"[{index}/{total}] {run.name} seed {run.seed}: done in {seconds:.0f} s", flush=True)


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


def make_table(
    runs: list[Run], results: dict[int, dict[str, Any]], args: argparse.Namespace, num_steps: int
) -> tuple[str, dict[str, Any]]:
    """The Markdown table and the JSON summary of the finished runs."""
    rows: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        rows.setdefault(run.name, []).append(i)
    machines, total_seconds = [], 0.0
    for run in runs:
        path = _time_record_path(run)
        if os.path.exists(path):
            for attempt in _read_json(path)["attempts"]:
                total_seconds += attempt["seconds"]
                if attempt["machine"] not in machines:
                    machines.append(attempt["machine"])
    header = ["system", "seeds", *[c for c, _ in COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary: dict[str, Any] = {
        "size": args.size,
        "num_steps": num_steps,
        "seeds": args.seeds,
        "machines": machines,
        "total_run_seconds": round(total_seconds, 1),
        "systems": {},
    }
    for name, indices in rows.items():
        done = [i for i in indices if i in results]
        label = runs[indices[0]].label()
        per_seed = {runs[i].seed: {c: _get(results[i], w) for c, w in COLUMNS} for i in done}
        summary["systems"][name] = {"label": label, "per_seed": per_seed}
        cells = [label, f"{len(done)}/{len(indices)}"]
        cells += [
            _mean_std([per_seed[runs[i].seed][c] for i in done]) if done else "not run"
            for c, _ in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    baseline = next((results[i]["baseline"] for i in sorted(results)), None)
    if baseline is not None:
        cells = [f"most frequent caption: \u201c{baseline['caption']}\u201d", "-"]
        cells += [_mean_std([_get(baseline, w)]) for _, w in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
        summary["most_frequent_caption"] = {
            "caption": baseline["caption"],
            **{c: _get(baseline, w) for c, w in COLUMNS},
        }
    any_result = next((results[i] for i in sorted(results)), None)
    machine_lines = [
        f"{m.get('platform')}, {m.get('cpu_count')} x {m.get('cpu', 'CPU')}, "
        f"JAX {m.get('jax', '?')} "
        f"on {m.get('devices')}"
        for m in machines
    ] or ["(no run recorded)"]
    notes = [
        f"# Ablation ({args.size} size, {num_steps} steps, seeds "
        f"{', '.join(map(str, args.seeds))})",
        "",
        f"- Machine: {'; '.join(machine_lines)}",
        f"- Total run time: {_duration(total_seconds)} (sum of the runs' wall-clock times)",
        f"- Workdirs: {args.workdir_root}/<system>/seed<S>",
    ]
    if any_result is not None:
        notes.append(
            f"- Split: {any_result['split']} of {any_result['dataset']} "
            f"({any_result['num_pairs']} pairs), {any_result['decode']} decoding"
        )
        spice_note = any_result["scores"].get("notes", {}).get("SPICE")
        if any_result["scores"].get("SPICE") is None and spice_note:
            notes.append(f"- SPIDEr n/a: {spice_note}")
    notes += [
        '- Cells: mean ± sample standard deviation over seeds; "seeds" counts finished runs.',
        "",
    ]
    return "\n".join(notes + lines) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="quick", choices=("paper", "quick", "smoke"))
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument(
        "--lambdas", default="0.5,2.0", help="sdd_weight values of the late_sdd sweep ('' for none)"
    )
    parser.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help="comma-separated subset of " + ",".join(EXPERIMENTS),
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
    args.workdir_root = os.path.abspath(
        os.path.expanduser(args.workdir_root or os.path.join("workdirs", f"ablation_{args.size}"))
    )

    num_steps = requested_steps(args)
    runs = plan(args)
    if args.dry_run:
        for run in runs:
            print(shlex.join(command(run, args)))
        return 0
    start = time.time()
    results: dict[int, dict[str, Any]] = {}
    try:
        todo = []
        for i, run in enumerate(runs):
            result = final_result(run, num_steps)
            if result is None:
                todo.append(i)
            else:
                results[i] = result
        print(
            f"Ablation in {args.workdir_root}: {len(runs)} runs, {len(results)} finished "
            f"(skipped), {len(todo)} to run.",
            flush=True,
        )
        if todo and not args.table_only:
            machine = machine_info()
            for n, i in enumerate(todo, 1):
                execute(runs[i], args, machine, n, len(todo))
                result = final_result(runs[i], num_steps)
                if result is None:
                    raise AblationError(
                        f"{runs[i].workdir} finished without "
                        f"eval/step_{num_steps}.json (was it stopped?); rerun "
                        "to resume."
                    )
                results[i] = result
    except AblationError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    finally:
        if results:
            table, summary = make_table(runs, results, args, num_steps)
            os.makedirs(args.workdir_root, exist_ok=True)
            with open(os.path.join(args.workdir_root, "ablation.md"), "w") as f:
                f.write(table)
            with open(os.path.join(args.workdir_root, "ablation.json"), "w") as f:
                json.dump(summary, f, indent=2)
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
