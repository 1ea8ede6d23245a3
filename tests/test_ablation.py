"""Tests of tools/ablation.py: the plan of runs and --only, one real smoke run (resuming, the
table, the stored result), and with a fake trainer (FAKE_MAIN, milliseconds per run) a killed
ablation resuming without rerunning finished runs, the table rebuilt from stored results alone,
results backfilled for runs of an older version, and Welch's difference between rows. The real
run is the same 12-step late_sdd smoke run as the session's `reference_run` (tests/conftest.py),
so its compiled functions come from the cache."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.stats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location(
        "ablation_tool", os.path.join(REPO_ROOT, "tools", "ablation.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_dry_run_plans_every_system_and_seed(ablation, tmp_path, capsys):
    assert (
        ablation.main(
            [
                "--size=smoke",
                "--seeds=0,1",
                "--lambdas=0.5,2",
                "--steps=3",
                f"--workdir_root={tmp_path}",
                "--dry_run",
            ]
        )
        == 0
    )
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 2 * (4 + 2)
    for exp in ("baseline", "cac", "early_sdd", "late_sdd"):
        assert any(f"configs/{exp}.py:smoke" in c and "--config.seed=1" in c for c in commands)
    sweep = [c for c in commands if "sdd_weight" in c]
    assert len(sweep) == 4 and all("late_sdd.py:smoke" in c for c in sweep)
    assert any(
        "--config.model.sdd_weight=0.5" in c and "late_sdd_lambda0.5/seed0" in c for c in sweep
    )
    assert all("--config.train.num_steps=3" in c for c in commands)
    assert not os.listdir(tmp_path)


def test_runs_resumes_and_tabulates(
    ablation, smoke_setup, reference_run, tmp_path, capsys, monkeypatch
):
    for key, value in smoke_setup.env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    args = [
        "--size=smoke",
        "--seeds=0",
        "--experiments=late_sdd",
        "--lambdas=",
        "--steps=12",
        f"--data_dir={smoke_setup.data_dir}",
        f"--workdir_root={tmp_path}",
    ]
    assert ablation.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "1 to run" in out and "done in" in out
    assert os.path.exists(tmp_path / "late_sdd" / "seed0" / "eval" / "step_12.json")
    with open(tmp_path / "late_sdd" / "seed0" / "eval" / "step_12.json") as f:
        eval_result = json.load(f)
    with open(tmp_path / "late_sdd" / "seed0" / "ablation_result.json") as f:
        stored = json.load(f)
    assert stored["scores"] == eval_result["scores"]
    assert stored["run"]["num_steps"] == 12 and stored["wall_seconds"] > 0

    # Again: the finished run is skipped; the table is rewritten.
    assert ablation.main(args) == 0
    out = capsys.readouterr().out
    assert "1 finished (skipped), 0 to run" in out and "training in" not in out
    with open(tmp_path / "ablation.md") as f:
        table = f.read()
    for text in (
        "Machine:",
        "Total run time:",
        "| CAC + late SDD | 1/1 |",
        "most frequent caption",
        "BLEU-1",
        "SPIDEr",
        "diff. acc.",
    ):
        assert text in table
    with open(tmp_path / "ablation.json") as f:
        summary = json.load(f)
    assert summary["total_run_seconds"] > 0 and summary["machines"][0]["cpu_count"]
    assert set(summary["systems"]["late_sdd"]["per_seed"]["0"]) >= {"CIDEr", "diff. acc."}

    # A workdir made with other settings is an error, not silently reused.
    assert ablation.main([*args[:-3], "--steps=6", f"--workdir_root={tmp_path}"]) == 1
    assert "other settings" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Everything below fakes training: `command` is replaced by FAKE_MAIN, a few-millisecond stand-in
# for `python -m adc_jax.main` that takes the same flags and writes what a finished run leaves
# (config.json, a checkpoint folder, eval/step_<N>.json with intervals, the predictions file).

FAKE_MAIN = r"""
import json, os, sys, time

flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
workdir = flags["workdir"]
experiment, size = os.path.basename(flags["config"]).split(".py:")
seed = int(flags["config.seed"])
lam = float(flags.get("config.model.sdd_weight", 1.0))
steps = int(flags["config.train.num_steps"])
key = f"{experiment}:seed{seed}" + (f":lambda{lam:g}" if "config.model.sdd_weight" in flags else "")
checkpoints = os.path.join(workdir, "checkpoints")
with open(os.environ["FAKE_MAIN_LOG"], "a") as f:
    f.write(json.dumps({"run": key, "resumed": os.path.isdir(checkpoints)}) + "\n")
os.makedirs(checkpoints, exist_ok=True)
config = {"name": experiment, "seed": seed, "size": size,
          "train": {"num_steps": steps}, "model": {"sdd_weight": lam}}
with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
if os.environ.get("FAKE_MAIN_HANG") == key:
    time.sleep(600)  # killed here, mid-run, with a checkpoint on disk
cider = {"baseline": 0.50, "cac": 0.60, "early_sdd": 0.65, "late_sdd": 0.70}[experiment]
cider += {"baseline": 0.02, "cac": 0.06}.get(experiment, 0.03) * seed
accuracy = round(cider / 4, 6)
result = {
    "step": steps, "split": "eval", "dataset": "synthetic_adc", "decode": "greedy",
    "beam_size": 1, "num_pairs": 8, "config_name": experiment,
    "scores": {"BLEU_1": 0.4, "BLEU_4": 0.1, "METEOR": 0.2, "ROUGE_L": 0.3, "CIDEr": cider,
               "SPICE": None, "SPIDEr": None, "notes": {"SPICE": "CoreNLP not installed"}},
    "difference_accuracy": {"exact_set_accuracy": accuracy},
    "intervals": {"CIDEr": [cider - 0.1, cider + 0.1]},
    "diagnostics": {
        "swap_consistency": {"value": accuracy / 2, "interval": [0.0, accuracy]},
        "identical_pair_rate": {"value": 0.5, "interval": [0.25, 0.75]},
        "distinct_captions": {"value": 0.25, "interval": [0.125, 0.5]},
        "discriminability": {"value": None, "reason": "not decoded"},
    },
    "baseline": {"caption": "add a dog barking", "scores": {"CIDEr": 0.08},
                 "difference_accuracy": {"exact_set_accuracy": 0.01}},
}
os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
with open(os.path.join(workdir, "eval", f"step_{steps}_predictions.jsonl"), "w") as f:
    f.write(json.dumps({"key": "eval_0", "prediction": "add a dog barking"}) + "\n")
with open(os.path.join(workdir, "eval", f"step_{steps}.json"), "w") as f:
    json.dump(result, f)
"""

# Runs tools/ablation.py with FAKE_MAIN as the trainer: python DRIVER TOOL FAKE_MAIN ARGS...
DRIVER = r"""
import importlib.util, sys

spec = importlib.util.spec_from_file_location("ablation_tool", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
real_command = module.command
module.command = lambda run, args: [sys.executable, sys.argv[2], *real_command(run, args)[3:]]
module.machine_info = lambda: {"platform": "test", "cpu": "fake CPU", "cpu_count": 1,
                               "jax": "0", "devices": "1 x fake (cpu)"}
sys.exit(module.main(sys.argv[3:]))
"""

FAKE_MACHINE = {
    "platform": "test",
    "cpu": "fake CPU",
    "cpu_count": 1,
    "jax": "0",
    "devices": "1 x fake (cpu)",
}


def fake_cider(experiment: str, seed: int) -> float:
    """The CIDEr FAKE_MAIN writes for a run."""
    base = {"baseline": 0.50, "cac": 0.60, "early_sdd": 0.65, "late_sdd": 0.70}[experiment]
    return base + {"baseline": 0.02, "cac": 0.06}.get(experiment, 0.03) * seed


@pytest.fixture
def fake_main(tmp_path, monkeypatch, ablation):
    """Makes `ablation.command` run FAKE_MAIN; returns (its path, the invocations so far)."""
    path = tmp_path / "fake_main.py"
    path.write_text(FAKE_MAIN)
    log = tmp_path / "fake_main_log.jsonl"
    monkeypatch.setenv("FAKE_MAIN_LOG", str(log))
    monkeypatch.delenv("FAKE_MAIN_HANG", raising=False)
    real_command = ablation.command
    monkeypatch.setattr(
        ablation,
        "command",
        lambda run, args: [sys.executable, str(path), *real_command(run, args)[3:]],
    )
    monkeypatch.setattr(ablation, "machine_info", lambda: dict(FAKE_MACHINE))

    def invocations() -> list[dict]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return path, invocations


def _grid_args(root, *extra: str) -> list[str]:
    return [
        "--size=smoke",
        "--steps=5",
        f"--workdir_root={root}",
        "--override=config.eval.num_samples=3",
        *extra,
    ]


def _dry_run(ablation, capsys, *extra: str) -> list[str]:
    assert (
        ablation.main(
            ["--size=smoke", "--steps=3", "--workdir_root=/nonexistent", *extra, "--dry_run"]
        )
        == 0
    )
    return capsys.readouterr().out.strip().splitlines()


def test_default_grid_is_four_systems_and_two_lambdas_over_four_seeds(ablation, capsys):
    commands = _dry_run(ablation, capsys)
    assert len(commands) == 4 * (4 + 2)
    for seed in range(4):
        assert sum(f"--config.seed={seed}" in c for c in commands) == 6
    assert sum("--config.model.sdd_weight=0.5" in c for c in commands) == 4
    assert sum("--config.model.sdd_weight=2.0" in c for c in commands) == 4


def test_only_selects_exactly_the_matching_runs(ablation, capsys):
    commands = _dry_run(ablation, capsys, "--only=late_sdd")
    assert len(commands) == 4
    assert all("late_sdd.py:smoke" in c and "sdd_weight" not in c for c in commands)
    assert sorted(c.split("--config.seed=")[1][0] for c in commands) == ["0", "1", "2", "3"]

    (command,) = _dry_run(ablation, capsys, "--only=late_sdd:seed2")
    assert "late_sdd/seed2" in command and "--config.seed=2" in command

    commands = _dry_run(ablation, capsys, "--only=late_sdd_lambda0.5:seed0,cac:seed3")
    assert len(commands) == 2
    assert "late_sdd_lambda0.5/seed0" in commands[0] and "sdd_weight=0.5" in commands[0]
    assert "cac/seed3" in commands[1] and "--config.seed=3" in commands[1]

    commands = _dry_run(ablation, capsys, "--only=seed1")
    assert len(commands) == 6 and all("--config.seed=1" in c for c in commands)

    # λ spelled another way, overlapping patterns: each run once.
    commands = _dry_run(ablation, capsys, "--only=late_sdd_lambda2.0,late_sdd_lambda2:seed1")
    assert len(commands) == 4 and all("late_sdd_lambda2/seed" in c for c in commands)


@pytest.mark.parametrize(
    "pattern, why",
    [
        ("late", "unknown row 'late'"),
        ("cac:seed9", "seed 9 is not in --seeds"),
        ("seed7", "seed 7 is not in --seeds"),
        ("cac:2", "is not a seed like 'seed2'"),
    ],
)
def test_only_rejects_unknown_patterns_listing_the_rows(ablation, capsys, pattern, why):
    with pytest.raises(SystemExit) as exit_info:
        _dry_run(ablation, capsys, f"--only={pattern}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert why in err
    assert "rows: baseline, cac, early_sdd, late_sdd, late_sdd_lambda0.5, late_sdd_lambda2" in err


def test_killed_ablation_resumes_without_rerunning_finished_runs(
    ablation, fake_main, tmp_path, capsys, monkeypatch
):
    fake_path, invocations = fake_main
    root = tmp_path / "abl"
    args = _grid_args(root, "--experiments=baseline,cac", "--seeds=0,1", "--lambdas=")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    tool = os.path.join(REPO_ROOT, "tools", "ablation.py")
    env = dict(os.environ, FAKE_MAIN_HANG="baseline:seed1")  # the third run of four
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(driver), tool, str(fake_path), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 120
        while len(invocations()) < 3:
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.time() < deadline, "the third run never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tool and the run it is in
        proc.wait()
    assert [i["run"] for i in invocations()] == ["baseline:seed0", "cac:seed0", "baseline:seed1"]
    for done in ("baseline/seed0", "cac/seed0"):
        assert (root / done / "ablation_result.json").exists()
    assert not (root / "baseline/seed1/ablation_result.json").exists()
    assert (root / "baseline/seed1/checkpoints").is_dir()

    # The table of what has finished: one seed per row, so no comparison yet.
    assert ablation.main([*args, "--table_only"]) == 0
    out = capsys.readouterr().out
    assert "2 finished (skipped), 2 to run" in out
    assert "| baseline (full attention, no SDD) | 1/2 |" in out
    assert (
        "| CAC vs baseline | adjacent; claim 1: CAC beats full attention | n/a (1 and 1 seeds)"
        in out
    )
    assert len(invocations()) == 3

    # Rerun: only the two unfinished runs execute, the killed one resumed from its checkpoint.
    assert ablation.main(args) == 0
    out = capsys.readouterr().out
    assert "2 finished (skipped), 2 to run" in out
    assert invocations()[3:] == [
        {"run": "baseline:seed1", "resumed": True},
        {"run": "cac:seed1", "resumed": False},
    ]
    table = (root / "ablation.md").read_text()
    base = [fake_cider("baseline", s) for s in (0, 1)]
    cac = [fake_cider("cac", s) for s in (0, 1)]
    assert "| baseline (full attention, no SDD) | 2/2 |" in table
    assert "| CAC (cross attention, no SDD) | 2/2 |" in table
    assert f"{np.mean(cac):.3f} ± {np.std(cac, ddof=1):.3f}" in table
    d = ablation.welch_difference(cac, base)
    assert (
        f"| CAC vs baseline | adjacent; claim 1: CAC beats full attention | {d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        in table
    )
    summary = json.loads((root / "ablation.json").read_text())
    (comparison,) = [c for c in summary["comparisons"] if c["metric"] == "CIDEr"]
    assert comparison["delta"] == pytest.approx(np.mean(cac) - np.mean(base))
    assert comparison["p_value"] == pytest.approx(
        scipy.stats.ttest_ind(cac, base, equal_var=False).pvalue
    )

    # A third run executes nothing.
    assert ablation.main(args) == 0
    assert "4 finished (skipped), 0 to run" in capsys.readouterr().out
    assert len(invocations()) == 5


def test_stored_results_hold_the_run_and_alone_rebuild_the_table(
    ablation, fake_main, tmp_path, capsys, monkeypatch
):
    _, invocations = fake_main
    root = tmp_path / "abl"
    args = _grid_args(root, "--experiments=late_sdd", "--seeds=0,1", "--lambdas=0.5")
    assert ablation.main(args) == 0
    capsys.readouterr()
    assert len(invocations()) == 4
    record = json.loads(
        (root / "late_sdd_lambda0.5" / "seed1" / "ablation_result.json").read_text()
    )
    assert record["run"] == {
        "name": "late_sdd_lambda0.5",
        "experiment": "late_sdd",
        "seed": 1,
        "lambda": 0.5,
        "size": "smoke",
        "num_steps": 5,
        "overrides": ["--config.eval.num_samples=3"],
    }
    assert record["scores"]["CIDEr"] == pytest.approx(fake_cider("late_sdd", 1))
    assert record["difference_accuracy"]["exact_set_accuracy"] == pytest.approx(
        fake_cider("late_sdd", 1) / 4
    )
    assert record["intervals"]["CIDEr"] == pytest.approx(
        [fake_cider("late_sdd", 1) - 0.1, fake_cider("late_sdd", 1) + 0.1]
    )
    assert record["diagnostics"] == {
        "swap_consistency": pytest.approx(fake_cider("late_sdd", 1) / 8),
        "identical_pair_rate": 0.5,
        "distinct_captions": 0.25,
        "discriminability": None,
    }
    assert record["diagnostic_intervals"]["identical_pair_rate"] == [0.25, 0.75]
    assert record["eval_json"] == "eval/step_5.json"
    assert record["predictions"] == "eval/step_5_predictions.jsonl"
    assert record["machine"] == FAKE_MACHINE and record["wall_seconds"] >= 0
    assert record["eval"]["num_pairs"] == 8 and not record["backfilled"]
    table = (root / "ablation.md").read_text()
    assert "| late SDD λ=0.5 vs late SDD | adjacent |" in table
    # The diagnostics are columns of the table (n/a where an evaluation did not compute one).
    assert "| swap cons. | identical → none | distinct | discrim. |" in table
    assert "| 0.500 ± 0.000 | 0.250 ± 0.000 | n/a |" in table

    # Only the stored results left (as if copied from other machines): the same table.
    for workdir in (
        root / row / f"seed{s}" for row in ("late_sdd", "late_sdd_lambda0.5") for s in (0, 1)
    ):
        for name in os.listdir(workdir):
            if name != "ablation_result.json":
                path = workdir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / "ablation.md").unlink()

    def no_training(*unused):
        raise AssertionError("nothing should run")

    monkeypatch.setattr(ablation, "execute", no_training)
    assert ablation.main([*args, "--table_only"]) == 0
    assert (root / "ablation.md").read_text() == table
    assert ablation.main(args) == 0  # all finished: nothing runs
    assert "4 finished (skipped), 0 to run" in capsys.readouterr().out

    # Stored results made with other settings are an error, not silently mixed in.
    assert ablation.main([*args[:1], "--steps=6", *args[2:], "--table_only"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert ablation.main([*args[:3], *args[4:], "--table_only"]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "overrides" in err


def test_run_of_an_older_version_gets_its_result_when_the_table_is_made(
    ablation, fake_main, tmp_path, capsys
):
    root = tmp_path / "abl"
    args = _grid_args(root, "--experiments=cac", "--seeds=0,1", "--lambdas=")
    assert ablation.main([*args, "--only=cac:seed0"]) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 finished (skipped), 1 to run (1 selected by --only)" in out
    assert "| CAC (cross attention, no SDD) | 1/2 |" in out
    path = root / "cac" / "seed0" / "ablation_result.json"
    written = json.loads(path.read_text())
    path.unlink()  # what an older version of the tool left: eval JSON, no stored result

    assert ablation.main([*args, "--table_only"]) == 0
    backfilled = json.loads(path.read_text())
    assert backfilled["backfilled"] and not written["backfilled"]
    for key in ("run", "scores", "difference_accuracy", "intervals", "eval", "eval_json"):
        assert backfilled[key] == written[key], key
    assert backfilled["machine"] == FAKE_MACHINE
    assert backfilled["wall_seconds"] == written["wall_seconds"]
    assert "| CAC (cross attention, no SDD) | 1/2 |" in capsys.readouterr().out


def test_welch_difference_matches_scipy(ablation):
    a, b = [0.91, 0.95, 1.02, 0.88], [0.80, 0.86, 0.79, 0.84, 0.90]
    d = ablation.welch_difference(a, b)
    want = scipy.stats.ttest_ind(a, b, equal_var=False)
    ci = want.confidence_interval(0.95)
    assert d.delta == pytest.approx(np.mean(a) - np.mean(b))
    assert d.p_value == pytest.approx(want.pvalue)
    assert d.df == pytest.approx(want.df)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.excludes_zero and d.p_value < 0.05
    # By hand: Welch–Satterthwaite degrees of freedom and a t interval around the difference.
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    half = scipy.stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert (d.low, d.high) == pytest.approx((d.delta - half, d.delta + half))

    # A difference inside the noise: the interval contains 0.
    d = ablation.welch_difference([0.5, 0.9, 0.6], [0.6, 0.7, 0.5])
    assert d.low < 0 < d.high and not d.excludes_zero and d.p_value > 0.5


@pytest.mark.parametrize("values", [[0.7, 0.7, 0.7, 0.7], [0.5, 0.6, 0.8, 0.9]])
def test_welch_difference_of_identical_rows_is_zero(ablation, values):
    d = ablation.welch_difference(values, list(values))
    assert d.delta == 0.0 and d.low <= 0.0 <= d.high
    assert d.p_value == 1.0 and not d.excludes_zero


def test_welch_difference_needs_two_seeds_and_constant_rows_that_differ(ablation):
    with pytest.raises(ValueError, match=">= 2 values"):
        ablation.welch_difference([0.5], [0.4, 0.6])
    d = ablation.welch_difference([0.7, 0.7], [0.5, 0.5])
    assert d.delta == pytest.approx(0.2) and (d.low, d.high) == pytest.approx((0.2, 0.2))
    assert d.p_value == 0.0 and d.excludes_zero


def test_comparisons_are_adjacent_rows_plus_the_papers_claims(ablation):
    rows = ["baseline", "cac", "early_sdd", "late_sdd", "late_sdd_lambda0.5", "late_sdd_lambda2"]
    pairs = ablation.comparison_pairs(rows)
    assert [(a, b) for a, b, _ in pairs] == [
        ("cac", "baseline"),
        ("early_sdd", "cac"),
        ("late_sdd", "early_sdd"),
        ("late_sdd_lambda0.5", "late_sdd"),
        ("late_sdd_lambda2", "late_sdd_lambda0.5"),
        ("late_sdd", "cac"),
    ]
    why = {(a, b): w for a, b, w in pairs}
    assert why[("cac", "baseline")] == "adjacent; claim 1: CAC beats full attention"
    assert why[("late_sdd", "cac")] == "claim 2: SDD helps"
    assert why[("late_sdd", "early_sdd")] == "adjacent; claim 3: late SDD beats early"
    assert ablation.comparison_pairs(["cac", "late_sdd"]) == [
        ("late_sdd", "cac", "adjacent; claim 2: SDD helps")
    ]
    assert ablation.resolve_metrics("cider,DIFF_ACC,bleu4,exact_set_accuracy") == [
        "CIDEr",
        "diff. acc.",
        "BLEU-4",
    ]
    with pytest.raises(ValueError, match="choose from BLEU-1"):
        ablation.resolve_metrics("SPICE")


def test_byola_init_switch_adds_the_override_and_its_own_root(
    ablation, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    encoder = tmp_path / "pre" / "encoder"
    assert (
        ablation.main(
            ["--size=smoke", "--seeds=0", "--lambdas=", f"--byola_init={encoder}", "--dry_run"]
        )
        == 0
    )
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 4
    assert all(f"--config.model.byola_init={encoder}" in c for c in commands)
    assert all(os.path.join("workdirs", "ablation_smoke_byola") in c for c in commands)
