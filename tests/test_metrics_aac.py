"""Tests of the optional aac-metrics scores (adc_jax/metrics/aac.py).

Without aac-metrics (the test extra does not install it: it needs PyTorch), the scores are null
with the command that installs them and an evaluation goes on. With it installed (the command of
docs/evaluation.md, `aac.FETCH_COMMAND`), the agreement test checks that aac-metrics' CIDEr-D and BLEU, which it computes
offline in Python, equal pycocoevalcap's on the same PTB-tokenised captions, so the community's
scorer and ours rank the same numbers; FENSE/SPIDEr-FL/CLAP-sim need `aac-metrics-download` and
are checked only to be null-with-a-note or a number in range.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics import aac
from adc_jax.metrics.captioning import score_captions, tokenize_for_scoring

REFERENCES = [
    ["make the dog louder", "turn up the barking dog", "boost the dog"],
    ["remove the rain", "delete the heavy rain", "take out the downpour"],
    ["add a car horn", "insert a horn honking", "include honking"],
    ["make the siren start later", "delay the siren", "move the siren later"],
    ["there is no difference", "nothing has changed", "no change"],
]
PREDICTIONS = [
    "make the dog louder",
    "remove the heavy rain",
    "add a siren",
    "delay the siren sound",
    "no change",
]
SPLIT = EvalSplit(None, [f"k{i}" for i in range(5)], REFERENCES, [[]] * 5, [""] * 5)
BY_KEY = dict(zip(SPLIT.keys, PREDICTIONS, strict=True))


def test_names_are_checked():
    assert aac.extra_metric_names("") == ()
    assert aac.extra_metric_names(" fense, clap_sim ,fense") == ("fense", "clap_sim")
    with pytest.raises(ValueError, match="choose from fense, spider_fl, clap_sim"):
        aac.extra_metric_names("fense,bleu")


def test_absent_package_gives_null_scores_with_the_fetch_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "aac_metrics" else real(name, *a),
    )
    result = aac.extra_scores(aac.EXTRA_METRICS, BY_KEY, SPLIT)
    assert result["scores"] == {name: None for name in aac.EXTRA_METRICS}
    assert result["intervals"] == {}
    for name in aac.EXTRA_METRICS:
        assert "aac-metrics is not installed" in result["notes"][name]
        assert aac.FETCH_COMMAND in result["notes"][name]


def test_missing_downloads_are_null_with_a_note_never_an_error():
    """Installed or not, with or without its models: a number in range or null with a note."""
    result = aac.extra_scores(aac.EXTRA_METRICS, BY_KEY, SPLIT)
    for name in aac.EXTRA_METRICS:
        value = result["scores"][name]
        if value is None:
            assert aac.FETCH_COMMAND in result["notes"][name]
        else:
            lo, hi = result["intervals"][name]
            assert lo <= value <= hi


def test_aac_metrics_cider_and_bleu_agree_with_ours():
    pytest.importorskip("aac_metrics")
    from aac_metrics.functional import bleu, cider_d

    ours = score_captions(BY_KEY, dict(zip(SPLIT.keys, REFERENCES, strict=True)))
    # Both scored on the same PTB-tokenised text (aac-metrics' own tokenizer is a Java download).
    tokens, refs, _, _ = tokenize_for_scoring(PREDICTIONS, REFERENCES)
    corpus, _ = cider_d(tokens, refs, return_all_scores=True)
    np.testing.assert_allclose(float(corpus["cider_d"]), ours["CIDEr"], rtol=1e-6, atol=1e-9)
    for n in (1, 4):
        corpus, _ = bleu(tokens, refs, n=n, return_all_scores=True)
        np.testing.assert_allclose(float(corpus[f"bleu_{n}"]), ours[f"BLEU_{n}"], rtol=1e-6)
