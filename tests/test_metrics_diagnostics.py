"""Tests of the evaluation diagnostics (adc_jax/metrics/diagnostics.py) and of the diagnostics'
captions in the predictions file (adc_jax/predictions.py)."""

from __future__ import annotations

import numpy as np
import pytest

from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics import diagnostics as D
from adc_jax.predictions import read_predictions, read_probes, write_predictions


def _split(edits, references=None) -> EvalSplit:
    keys = [f"k{i}" for i in range(len(edits))]
    references = references or [["make the dog louder"]] * len(edits)
    return EvalSplit(None, keys, references, edits, ["rain"] * len(edits))


LABELLED = _split(
    [[("add", "dog")], [("louder", "rain"), ("earlier", "horn")], [("change", "siren")], []],
    [
        ["add a dog"],
        ["turn up the rain and move the horn earlier"],
        ["swap the siren"],
        ["no change"],
    ],
)
SWAPPED_RIGHT = {
    "k0": "remove the dog barking",
    "k1": "make the horn start later and make the rain quieter",
    "k2": "replace the siren with a different one",
    "k3": "there is no difference",
}


def _values(predictions, split, **probes):
    return D.per_entry(
        predictions, split, swapped=probes.get("swapped"), identical=probes.get("identical")
    )


def test_swap_consistency_asks_for_the_inverse_edits():
    values, missing = _values(SWAPPED_RIGHT, LABELLED, swapped=SWAPPED_RIGHT)
    assert not missing.get("swap_consistency")
    np.testing.assert_array_equal(values["swap_consistency"], [1, 1, 1, 1])
    wrong = dict(SWAPPED_RIGHT)
    wrong["k0"] = "add a dog"  # the stored pair's edit, not its inverse
    wrong["k1"] = "make the rain quieter"  # half of the inverse
    wrong["k3"] = "the the"  # names no edit but does not say "no difference"
    values, _ = _values(SWAPPED_RIGHT, LABELLED, swapped=wrong)
    np.testing.assert_array_equal(values["swap_consistency"], [0, 0, 1, 0])


def test_identical_pair_rate_counts_no_difference_answers():
    identical = {
        "k0": "there is no difference",
        "k1": "both sounds are the same",
        "k2": "no change, but add a dog",  # asks for an edit: not a no-difference answer
        "k3": "make the dog louder",
    }
    values, _ = _values(SWAPPED_RIGHT, LABELLED, identical=identical)
    np.testing.assert_array_equal(values["identical_pair_rate"], [1, 1, 0, 0])
    # Free text (no edit labels): any no-difference phrase counts, whatever else is said.
    free = _split([[], [], [], []], [["a"], ["b"], ["c"], ["d"]])
    values, missing = _values(identical, free, identical=identical, swapped=identical)
    np.testing.assert_array_equal(values["identical_pair_rate"], [1, 1, 1, 0])
    assert "needs edit labels" in missing["swap_consistency"]


def test_distinct_captions_is_distinct_over_pairs():
    predictions = {"k0": "add a dog", "k1": "Add  a dog", "k2": "add a dog", "k3": "remove it"}
    values, _ = _values(predictions, LABELLED)
    assert values["distinct_captions"].mean() == pytest.approx(2 / 4)


def test_discriminability_is_one_half_for_a_constant_caption_and_one_for_the_references():
    references = [[f"add the {w} sound"] for w in ("dog", "bell", "horn", "siren", "rain")]
    split = _split([[("add", "x")]] * 5, references)
    constant = {k: "add the dog sound" for k in split.keys}
    assert D.per_entry(constant, split, swapped=None, identical=None)[0][
        "discriminability"
    ].mean() == pytest.approx(0.5)
    own = {k: r[0] for k, r in zip(split.keys, references, strict=True)}
    values, _ = D.per_entry(own, split, swapped=None, identical=None)
    np.testing.assert_allclose(values["discriminability"], 1.0)


def test_diagnostics_give_values_with_intervals_or_a_reason():
    result = D.diagnostics(SWAPPED_RIGHT, LABELLED, swapped=SWAPPED_RIGHT, identical=None)
    assert list(result) == list(D.DIAGNOSTICS)
    assert result["swap_consistency"]["value"] == 1.0
    assert result["swap_consistency"]["interval"] == [1.0, 1.0]
    assert result["identical_pair_rate"] == {
        "value": None,
        "reason": result["identical_pair_rate"]["reason"],
    }
    assert "not decoded" in result["identical_pair_rate"]["reason"]
    lo, hi = result["discriminability"]["interval"]
    assert lo <= result["discriminability"]["value"] <= hi


def test_predictions_file_keeps_the_probe_captions_and_reproduces_the_diagnostics(tmp_path):
    path = str(tmp_path / "p.jsonl")
    nbest = {k: [(v, -1.0)] for k, v in SWAPPED_RIGHT.items()}
    identical = {k: "nothing has changed" for k in LABELLED.keys}
    write_predictions(path, nbest, LABELLED, {"swapped": SWAPPED_RIGHT, "identical": identical})
    predictions, split = read_predictions(path)
    probes = read_probes(path)
    assert probes == {"swapped": SWAPPED_RIGHT, "identical": identical}
    again = D.diagnostics(predictions, split, **probes)
    assert again == D.diagnostics(
        SWAPPED_RIGHT, LABELLED, swapped=SWAPPED_RIGHT, identical=identical
    )
    # A file written without the diagnostics has no probes: they are null, not an error.
    write_predictions(path, nbest, LABELLED)
    assert read_probes(path) == {"swapped": None, "identical": None}
    with pytest.raises(ValueError, match="Unknown probe"):
        write_predictions(path, nbest, LABELLED, {"mirrored": identical})
