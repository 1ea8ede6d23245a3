"""Tests of difference accuracy (adc_jax/metrics/difference.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adc_jax.data.synthetic.grammar import OPERATIONS, make_captions
from adc_jax.metrics.difference import difference_accuracy

LABELS = {
    "a": [("louder", "dog")],
    "b": [("remove", "bells"), ("add", "thunder")],
    "c": [("later", "siren")],
}


def test_references_score_one():
    rng = np.random.default_rng(0)
    for j in range(5):
        predictions = {k: make_captions(v, rng)[j] for k, v in LABELS.items()}
        result = difference_accuracy(predictions, LABELS)
        assert result["exact_set_accuracy"] == 1.0
        assert result["edit_f1"] == 1.0 and result["class_accuracy"] == 1.0
        for op in ("louder", "remove", "add", "later"):
            assert result["per_operation"][op]["f1"] == 1.0
        assert result["per_operation"]["quieter"]["support"] == 0


def test_wrong_and_partial_captions():
    predictions = {
        "a": "make the dog quieter",  # wrong operation, right class
        "b": "remove the bells",  # one of two edits
        "c": "make the siren start later",  # right
    }
    result = difference_accuracy(predictions, LABELS)
    assert result["exact_set_accuracy"] == pytest.approx(1 / 3)
    assert result["edit_precision"] == pytest.approx(2 / 3)
    assert result["edit_recall"] == pytest.approx(2 / 4)
    assert result["class_accuracy"] == pytest.approx(3 / 4)
    assert result["operation_accuracy"] == pytest.approx(2 / 4)
    per_op = result["per_operation"]
    assert per_op["louder"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_op["quieter"]["precision"] == 0.0 and per_op["quieter"]["support"] == 0
    assert per_op["add"]["recall"] == 0.0 and per_op["remove"]["f1"] == 1.0
    assert result["num_unparsed"] == 0


def test_missing_and_empty_predictions():
    result = difference_accuracy({"a": "", "zzz": "add a dog"}, LABELS)
    assert result["exact_set_accuracy"] == 0.0
    assert result["num_examples"] == 3
    assert result["num_missing"] == 2 and result["num_unparsed"] == 3
    assert set(result["per_operation"]) == set(OPERATIONS)
    json.dumps(result)  # plain floats and ints


def test_no_labels():
    result = difference_accuracy({}, {})
    assert result["exact_set_accuracy"] == 0.0 and result["num_examples"] == 0
    json.dumps(result)


def test_a_pair_without_edits_is_matched_only_by_a_no_difference_answer():
    labels = {"same": [], "a": [("louder", "dog")]}
    right = difference_accuracy({"same": "there is no difference", "a": "turn up the dog"}, labels)
    assert right["exact_set_accuracy"] == 1.0
    assert right["no_difference"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # Garbled or empty text names no edit but does not say "no difference" either.
    for text in ("", "the the the", "no change but add a dog"):
        wrong = difference_accuracy({"same": text, "a": "turn up the dog"}, labels)
        assert wrong["exact_set_accuracy"] == 0.5, text
        assert wrong["no_difference"]["recall"] == 0.0, text
    # Answering "no difference" to a pair that has an edit is a false "no difference".
    false = difference_accuracy({"same": "nothing has changed", "a": "no change"}, labels)
    assert false["exact_set_accuracy"] == 0.5
    assert false["no_difference"]["precision"] == 0.5 and false["no_difference"]["support"] == 1
