"""Tests of adc_jax.train: the `:smoke` run end to end (train -> checkpoint -> Ctrl-C -> resume ->
eval) through `python -m adc_jax.main` and the real pipeline, and the metrics log.

The subprocess runs share the session's smoke dataset and compile cache (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from adc_jax.metrics.captioning import METRIC_KEYS, spice_status

SCORE_KEYS = (*METRIC_KEYS, "SPICE", "SPIDEr", "notes")


@pytest.fixture(scope="module")
def ctrl_c_run(smoke_setup):
    """A run stopped by Ctrl-C (SIGINT) halfway, then the same command again to the end."""
    workdir = smoke_setup.workdir("ctrl_c")
    first = smoke_setup.start(workdir, hooks={"ADC_TEST_STEP_SLEEP": "0.3"})
    first.wait_until(lambda: smoke_setup.last_train_step(workdir) >= 4)
    first.send(signal.SIGINT)
    first_rc = first.finish()
    checkpoints_after_stop = smoke_setup.checkpoint_steps(workdir)
    second = smoke_setup.start(workdir)
    second_rc = second.finish()
    return {
        "workdir": workdir,
        "first": first,
        "first_rc": first_rc,
        "second": second,
        "second_rc": second_rc,
        "checkpoints_after_stop": checkpoints_after_stop,
    }


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(ctrl_c_run):
    run = ctrl_c_run
    assert run["first_rc"] == 0, run["first"].output[-3000:]
    out = run["first"].output
    assert "SIGINT received" in out
    stopped = int(out.split("Stopped by SIGINT at step ")[1].split(";")[0])
    assert 4 <= stopped < 12
    assert max(run["checkpoints_after_stop"]) == stopped
    assert "Run the same command again to resume" in out


def test_rerun_resumes_from_the_last_checkpoint_not_step_0(ctrl_c_run, smoke_setup):
    run = ctrl_c_run
    assert run["second_rc"] == 0, run["second"].output[-3000:]
    stopped = max(run["checkpoints_after_stop"])
    assert f"Resuming from step {stopped}" in run["second"].output
    assert smoke_setup.checkpoint_steps(run["workdir"])[-1] == 12


def test_resumed_run_equals_uninterrupted_run(ctrl_c_run, smoke_setup, reference_run):
    assert ctrl_c_run["second_rc"] == 0
    smoke_setup.assert_same_run(ctrl_c_run["workdir"], reference_run)


def test_final_eval_json_schema(ctrl_c_run, smoke_setup):
    workdir = ctrl_c_run["workdir"]
    assert "Final eval (eval, step 12)" in ctrl_c_run["second"].output
    with open(os.path.join(workdir, "eval", "step_12.json")) as f:
        result = json.load(f)
    for key in (
        "step",
        "split",
        "dataset",
        "decode",
        "num_pairs",
        "scores",
        "difference_accuracy",
        "baseline",
    ):
        assert key in result, key
    assert (result["step"], result["split"], result["dataset"]) == (12, "eval", "synthetic_adc")
    assert result["decode"] == "greedy" and result["num_pairs"] == 8
    spice_available, spice_reason = spice_status()  # the run's environment is this one
    for scores in (result["scores"], result["baseline"]["scores"]):
        assert set(SCORE_KEYS) <= set(scores)
        assert all(isinstance(scores[k], float) and np.isfinite(scores[k]) for k in METRIC_KEYS)
        # SPICE (and SPIDEr) are null with the reason unless the CoreNLP jars are installed.
        if spice_available:
            assert isinstance(scores["SPICE"], float) and 0.0 <= scores["SPICE"] <= 1.0
            assert scores["SPIDEr"] == pytest.approx((scores["CIDEr"] + scores["SPICE"]) / 2)
        else:
            assert scores["SPICE"] is None and scores["SPIDEr"] is None
            assert scores["notes"]["SPICE"] == spice_reason
    assert isinstance(result["baseline"]["caption"], str) and result["baseline"]["caption"]
    assert 0.0 <= result["difference_accuracy"]["exact_set_accuracy"] <= 1.0
    evals = [r for r in smoke_setup.metrics(workdir) if "eval/CIDEr" in r]
    assert [r["step"] for r in evals] == [12]
    assert os.path.exists(os.path.join(workdir, "eval", "step_12.md"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["num_steps"] == 12
