"""Tests of tools/ablation.py at smoke size: the plan of runs, one real run, resuming (skipping
finished runs) and the table. The real run is the same 12-step late_sdd smoke run as the
session's `reference_run` (tests/conftest.py), so its compiled functions come from the cache."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

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
