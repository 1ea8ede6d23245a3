"""Tests of adc_jax.metrics.baseline: the most frequent caption and its cached scores."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from adc_jax.data.pipeline import EvalSplit
from adc_jax.metrics import baseline, captioning
from adc_jax.metrics.baseline import most_frequent_caption


def test_most_frequent_caption_is_deterministic():
    captions = ["b c", "a dog", "b c", "a dog", "zz", "A  Dog "]
    assert most_frequent_caption(captions) == "a dog"  # normalised: 3 x "a dog"
    tie = ["y", "x", "y", "x", "w"]
    for seed in range(5):
        random.Random(seed).shuffle(tie)
        assert most_frequent_caption(tie) == "x"  # tie between x and y -> smallest
    assert most_frequent_caption(iter(["only"])) == "only"
    with pytest.raises(ValueError):
        most_frequent_caption(["", "  "])


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")
def test_baseline_result_scores_the_caption_everywhere_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setattr(captioning, "_meteor", lambda gts, res: (0.5, [0.5] * len(gts)))
    split = EvalSplit(
        source=[],
        keys=["a", "b", "c"],
        references=[["add a dog barking"], ["remove the bells"], ["make the horn louder"]],
        edits=[[("add", "dog")], [("remove", "bells")], [("louder", "horn")]],
        scenes=["rain"] * 3,
    )
    cache = str(tmp_path / "baseline_eval.json")
    result = baseline.baseline_result(split, "add a dog barking", cache)
    assert result["caption"] == "add a dog barking"
    expected = captioning.score_captions(
        {k: "add a dog barking" for k in split.keys},
        dict(zip(split.keys, split.references, strict=True)),
    )
    assert {k: result["scores"][k] for k in captioning.METRIC_KEYS} == {
        k: expected[k] for k in captioning.METRIC_KEYS
    }
    # Exactly one of three pairs has the caption's edit: exact-set accuracy 1/3.
    assert result["difference_accuracy"]["exact_set_accuracy"] == pytest.approx(1 / 3)
    with open(cache) as f:
        assert json.load(f)["caption"] == "add a dog barking"
    # Cached: no scorer runs again for the same caption and split size ...
    monkeypatch.setattr(baseline, "score_predictions", lambda *a: pytest.fail("not cached"))
    assert baseline.baseline_result(split, "add a dog barking", cache) == json.loads(
        json.dumps(result)
    )
    # ... but another caption is scored anew.
    monkeypatch.setattr(baseline, "score_predictions", lambda p, s: {"scores": {}, "n": len(p)})
    assert baseline.baseline_result(split, "remove the bells", cache)["n"] == 3
