"""Tests of adc_jax.evaluate: the breakdowns, the Markdown tables and the command line on a smoke
checkpoint (the session's `reference_run` of tests/conftest.py, copied so it stays untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from adc_jax import evaluate
from adc_jax.data.captions import OPERATIONS
from adc_jax.data.pipeline import EvalSplit
from adc_jax.metrics.captioning import spice_status

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _split(references, edits, scenes=None) -> EvalSplit:
    keys = [f"k{i}" for i in range(len(references))]
    return EvalSplit(
        source=[],
        keys=keys,
        references=references,
        edits=edits,
        scenes=scenes or ["rain"] * len(keys),
    )


# ------------------------------------------------------------------------------------ unit tests


def test_keyword_groups_read_free_form_references():
    groups = evaluate.keyword_groups(
        [
            ["a dog barking is added", "the dog appears"],
            ["the rain becomes louder"],
            ["the horn disappeared and the car is quieter"],
            ["turn up the siren"],
            ["make the thunder start earlier"],  # "start" is not an "add" cue
        ]
    )
    assert groups["add"] == [0]
    assert groups["louder"] == [1, 3]
    assert groups["remove"] == [2]
    assert groups["quieter"] == [2]
    assert groups["earlier"] == [4]
    assert groups["later"] == [] and groups["change"] == []


def test_breakdown_per_operation_model_vs_baseline():
    refs = [
        ["make the dog louder", "turn up the dog"],
        ["remove the bells", "delete the bells"],
        ["make the dog louder", "boost the barking"],
        ["add a siren", "insert a siren"],
    ]
    edits = [[("louder", "dog")], [("remove", "bells")], [("louder", "dog")], [("add", "siren")]]
    split = _split(refs, edits, scenes=["rain", "rain", "traffic", "traffic"])
    predictions = {
        "k0": "make the dog louder",
        "k1": "remove the bells",
        "k2": "make the dog louder",
        "k3": "remove the bells",
    }
    from adc_jax.metrics.difference import difference_accuracy

    diff = difference_accuracy(predictions, dict(zip(split.keys, edits, strict=True)))
    bd = evaluate.breakdown(predictions, split, "make the dog louder", diff)

    ops = bd["by_operation"]
    assert list(ops) == list(OPERATIONS)
    assert [ops[o]["num_pairs"] for o in ("louder", "remove", "add", "later")] == [2, 1, 1, 0]
    assert ops["louder"]["model"]["exact_set_accuracy"] == 1.0
    assert ops["add"]["model"]["exact_set_accuracy"] == 0.0
    # The baseline predicts "make the dog louder" everywhere: right on louder, wrong elsewhere.
    assert ops["louder"]["baseline"]["exact_set_accuracy"] == 1.0
    assert ops["remove"]["baseline"]["exact_set_accuracy"] == 0.0
    assert ops["remove"]["model"]["CIDEr"] > ops["remove"]["baseline"]["CIDEr"]
    assert ops["louder"]["precision"] == diff["per_operation"]["louder"]["precision"] == 1.0
    assert ops["later"]["model"]["CIDEr"] is None
    # Per-pair CIDEr uses the split's idf: the mean over a partition is the split's CIDEr.
    from pycocoevalcap.cider.cider import Cider

    from adc_jax.metrics.captioning import _tokenize

    preds, tok_refs, _, _ = _tokenize([predictions[k] for k in split.keys], refs)
    total, _ = Cider().compute_score(
        dict(enumerate(tok_refs)), {i: [p] for i, p in enumerate(preds)}
    )
    scenes = bd["by_scene"]
    assert set(scenes) == {"rain", "traffic"}
    mean = (scenes["rain"]["model"]["CIDEr"] + scenes["traffic"]["model"]["CIDEr"]) / 2
    assert mean == pytest.approx(total, rel=1e-6)
    assert bd["by_keyword"]["louder"]["num_pairs"] == 2
    assert "keywords" in bd["by_keyword"]["louder"]

    table = evaluate.breakdown_tables(bd)
    assert "| louder | 2 |" in table and "By reference keyword" in table and "By scene" in table


def test_breakdown_without_labels_has_keywords_only():
    split = _split([["the rain gets louder"], ["a dog is added"]], [[], []])
    bd = evaluate.breakdown({"k0": "the rain gets louder", "k1": "rain"}, split, "rain")
    assert bd["by_operation"] is None
    assert bd["by_keyword"]["louder"]["num_pairs"] == 1
    assert bd["by_keyword"]["louder"]["model"]["CIDEr"] > 0
    assert "Per operation" not in evaluate.breakdown_tables(bd)


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
    assert list(result["breakdown"]["by_keyword"]) == list(evaluate.KEYWORD_GROUPS)
    with open(prefix + ".md") as f:
        markdown = f.read()
    for text in ("most frequent caption", "Per operation", "By reference keyword", "diff. acc."):
        assert text in markdown
    assert os.path.exists(prefix + "_samples.txt")
    assert "most frequent caption" in proc.stdout


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


def test_old_config_json_gets_new_fields_with_defaults():
    from adc_jax.config import base_config
    from adc_jax.restore import fill_config_defaults

    config = base_config("smoke")
    del config.model["n_mels"]
    del config["eval"]
    assert sorted(fill_config_defaults(config)) == ["eval", "model.n_mels"]
    assert config.model.n_mels == 64 and config.eval.beam_size == 2
    assert fill_config_defaults(config) == []
