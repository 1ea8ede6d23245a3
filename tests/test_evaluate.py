"""Tests of adc_jax.evaluate: the command line and `evaluate_workdir` on a smoke checkpoint (the
session's `reference_run` of tests/conftest.py, copied so it stays untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from adc_jax import evaluate
from adc_jax.data.synthetic.grammar import OPERATIONS
from adc_jax.metrics.breakdown import KEYWORD_GROUPS
from adc_jax.metrics.captioning import spice_status
from adc_jax.metrics.diagnostics import DIAGNOSTICS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def run_copy(reference_run, tmp_path_factory) -> str:
    """A copy of the session's 12-step smoke run (the CLI writes into its eval/ folder)."""
    workdir = str(tmp_path_factory.mktemp("evaluate") / "run")
    shutil.copytree(reference_run, workdir)
    return workdir


def test_cli_writes_scores_baseline_and_breakdowns(run_copy, smoke_setup):
    proc = subprocess.run(
        [sys.executable, "-m", "adc_jax.evaluate", f"--workdir={run_copy}"],
        cwd=REPO_ROOT,
        env=smoke_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    prefix = os.path.join(run_copy, "eval", "eval_12_greedy")
    with open(prefix + ".json") as f:
        result = json.load(f)
    assert {
        "step",
        "split",
        "decode",
        "num_pairs",
        "scores",
        "difference_accuracy",
        "baseline",
        "breakdown",
    } <= set(result)
    assert result["step"] == 12 and result["decode"] == "greedy" and result["num_pairs"] == 8
    for key in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "SPIDEr"):
        assert key in result["scores"] and key in result["baseline"]["scores"]
    assert isinstance(result["baseline"]["caption"], str) and result["baseline"]["caption"]
    if not spice_status()[0]:
        assert result["scores"]["SPICE"] is None and result["scores"]["SPIDEr"] is None
        assert "CoreNLP" in result["scores"]["notes"]["SPICE"]
    by_op = result["breakdown"]["by_operation"]
    assert list(by_op) == list(OPERATIONS)
    # Every synthetic pair has at least one edit, so the operation subsets cover the split.
    assert sum(g["num_pairs"] for g in by_op.values()) >= result["num_pairs"]
    assert {"model", "baseline", "precision", "recall"} <= set(by_op["add"])
    assert list(result["breakdown"]["by_keyword"]) == list(KEYWORD_GROUPS)
    with open(prefix + ".md") as f:
        markdown = f.read()
    for text in (
        "most frequent caption",
        "Per operation",
        "By reference keyword",
        "diff. acc.",
        "Diagnostics",
        "swap_consistency",
    ):
        assert text in markdown
    # The diagnostics: each a value in [0, 1] inside its interval (labelled data: all four).
    assert list(result["diagnostics"]) == list(DIAGNOSTICS)
    for name, d in result["diagnostics"].items():
        lo, hi = d["interval"]
        assert 0 <= lo <= d["value"] + 1e-9 and d["value"] - 1e-9 <= hi <= 1, name
    assert os.path.exists(prefix + "_samples.txt")
    assert "most frequent caption" in proc.stdout
    # Every prediction is saved, and rescoring the file without the model gives the same scores.
    assert result["predictions_file"] == "eval_12_greedy_predictions.jsonl"
    with open(prefix + "_predictions.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == result["num_pairs"] and all(len(x["nbest"]) == 1 for x in lines)
    assert {"key", "prediction", "references", "edits", "scene", "tier"} <= set(lines[0])
    assert {"swapped", "identical"} <= set(lines[0])  # the diagnostics' captions
    assert set(result["intervals"]) >= {"BLEU_4", "METEOR", "ROUGE_L", "CIDEr"}
    for metric, (lo, hi) in result["intervals"].items():
        value = (
            result["difference_accuracy"]["exact_set_accuracy"]
            if metric == "difference_accuracy"
            else result["scores"][metric]
        )
        assert lo <= value + 1e-9 and value - 1e-9 <= hi, metric
    rescored = subprocess.run(
        [sys.executable, "-m", "adc_jax.evaluate", f"--predictions={prefix}_predictions.jsonl"],
        cwd=REPO_ROOT,
        env=smoke_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rescored.returncode == 0, rescored.stderr[-3000:]
    with open(prefix + "_predictions.jsonl.rescored.json") as f:
        again = json.load(f)
    assert again["scores"] == result["scores"]
    assert again["difference_accuracy"] == result["difference_accuracy"]
    assert again["intervals"] == result["intervals"]
    assert again["diagnostics"] == result["diagnostics"]


def test_cli_error_names_a_workdir_without_config(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "adc_jax.evaluate", f"--workdir={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and str(tmp_path) in last and "config.json" in last


def test_workdir_without_checkpoint_or_step_is_a_clear_error(run_copy, tmp_path):
    for name in ("config.json", "vocab.json"):
        shutil.copy(os.path.join(run_copy, name), tmp_path / name)
    with pytest.raises(FileNotFoundError, match="No checkpoints in"):
        evaluate.evaluate_workdir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"No checkpoint for step 999 .*available"):
        evaluate.evaluate_workdir(run_copy, checkpoint_step=999)
    with pytest.raises(evaluate.EvaluateError, match="beam_size"):
        evaluate.evaluate_workdir(run_copy, beam_size=0)
