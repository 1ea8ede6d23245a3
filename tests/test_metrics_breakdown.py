"""Tests of adc_jax.metrics.breakdown: subset scores per operation, reference keyword and scene
(and their Markdown tables, adc_jax.report)."""

from __future__ import annotations

import pytest
from pycocoevalcap.cider.cider import Cider

from adc_jax import report
from adc_jax.data.pipeline import EvalSplit
from adc_jax.data.synthetic.grammar import OPERATIONS
from adc_jax.metrics import breakdown as breakdown_lib
from adc_jax.metrics.captioning import tokenize_for_scoring
from adc_jax.metrics.difference import difference_accuracy


def _split(references, edits, scenes=None) -> EvalSplit:
    keys = [f"k{i}" for i in range(len(references))]
    return EvalSplit(
        source=[],
        keys=keys,
        references=references,
        edits=edits,
        scenes=scenes or ["rain"] * len(keys),
    )


def test_keyword_groups_read_free_form_references():
    groups = breakdown_lib.keyword_groups(
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
    diff = difference_accuracy(predictions, dict(zip(split.keys, edits, strict=True)))
    bd = breakdown_lib.breakdown(predictions, split, "make the dog louder", diff)

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
    preds, tok_refs, _, _ = tokenize_for_scoring([predictions[k] for k in split.keys], refs)
    total, _ = Cider().compute_score(
        dict(enumerate(tok_refs)), {i: [p] for i, p in enumerate(preds)}
    )
    scenes = bd["by_scene"]
    assert set(scenes) == {"rain", "traffic"}
    mean = (scenes["rain"]["model"]["CIDEr"] + scenes["traffic"]["model"]["CIDEr"]) / 2
    assert mean == pytest.approx(total, rel=1e-6)
    assert bd["by_keyword"]["louder"]["num_pairs"] == 2
    assert "keywords" in bd["by_keyword"]["louder"]

    table = report.breakdown_tables(bd)
    assert "| louder | 2 |" in table and "By reference keyword" in table and "By scene" in table


def test_breakdown_without_labels_has_keywords_only():
    split = _split([["the rain gets louder"], ["a dog is added"]], [[], []])
    bd = breakdown_lib.breakdown({"k0": "the rain gets louder", "k1": "rain"}, split, "rain")
    assert bd["by_operation"] is None
    assert bd["by_keyword"]["louder"]["num_pairs"] == 1
    assert bd["by_keyword"]["louder"]["model"]["CIDEr"] > 0
    assert "Per operation" not in report.breakdown_tables(bd)
