"""Tests of adc_jax.metrics.captioning (pycocoevalcap scores, SPICE detection).

METEOR starts a JVM (~6 s), so the real scoring runs happen once per module in fixtures; the SPICE
tests replace METEOR by a stub. SPICE detection is pointed at temporary folders so the tests do
not depend on whether the CoreNLP jars are installed on this machine.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from adc_jax.metrics import captioning as cap

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java")

REFERENCES = {
    "p1": ["a dog starts barking", "a dog barks in the background", "barking is added"],
    "p2": ["the rain becomes louder", "rain gets heavier", "the rain is louder"],
    "p3": ["a car passes by", "a vehicle drives past", "a car is added"],
    "p4": ["a bird chirps", "birds start to sing", "a bird is added"],
    "p5": ["the horn is removed", "a car horn stops", "no more horn"],
    "p6": ["people talk", "a man speaks", "voices are added"],
}
GOOD = {k: refs[0] for k, refs in REFERENCES.items()}
# The same pairs with degenerate predictions and one pair whose references are all punctuation.
BAD_REFERENCES = {**REFERENCES, "p7": ["...", "!!", "?"]}
BAD = {
    "p1": "",
    "p2": "?!",
    "p3": "zxqv blorf",
    "p4": "a bird chirps",
    "p5": "   ",
    "p6": "a dog barks",
    "p7": "a car passes by",
}


def _spice_dir_without_jars(tmp_path) -> str:
    os.makedirs(tmp_path / "lib", exist_ok=True)
    return str(tmp_path)


def _spice_dir_with_fake_jars(tmp_path) -> str:
    """Looks installed (jars present) but Java fails: the jar is not a zip file."""
    os.makedirs(tmp_path / "lib", exist_ok=True)
    for jar in cap.CORENLP_JARS:
        (tmp_path / "lib" / jar).write_bytes(b"")
    (tmp_path / cap.SPICE_JAR).write_bytes(b"not a jar")
    return str(tmp_path)


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """One real scoring call of the good and the degenerate predictions (SPICE not installed)."""
    spice_dir = _spice_dir_without_jars(tmp_path_factory.mktemp("spice"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cap, "_spice_dir", lambda: spice_dir)
        good = cap.score_captions(GOOD, REFERENCES)
        bad = cap.score_captions(BAD, BAD_REFERENCES)
    return good, bad


def test_identical_predictions_score_high(scores):
    good, _ = scores
    assert good["BLEU_1"] == pytest.approx(1.0, abs=1e-6)
    assert good["BLEU_4"] > 0.9 and good["ROUGE_L"] > 0.9 and good["METEOR"] > 0.5
    assert good["CIDEr"] > 1.0
    assert good["num_pairs"] == 6 and good["num_empty_predictions"] == 0


def test_degenerate_predictions_still_score_and_lower(scores):
    good, bad = scores
    for name in cap.METRIC_KEYS:
        assert isinstance(bad[name], float) and math.isfinite(bad[name]), name
        assert bad[name] < good[name], name
    # "", "?!" and "   " are empty after tokenisation; p7's references are all punctuation.
    assert bad["num_empty_predictions"] == 3
    assert bad["num_empty_references"] == 1
    assert bad["num_pairs"] == 7


def test_result_is_json_and_spice_is_null_with_reason(scores):
    for result in scores:
        assert json.loads(json.dumps(result)) == result
        assert result["SPICE"] is None and result["SPIDEr"] is None
        assert "tools/get_spice_models.sh" in result["notes"]["SPICE"]


def test_spice_status_follows_the_jars(monkeypatch, tmp_path):
    monkeypatch.setattr(cap, "_spice_dir", lambda: _spice_dir_without_jars(tmp_path / "a"))
    available, reason = cap.spice_status()
    assert not available and "stanford-corenlp-3.6.0" in reason
    assert "tools/get_spice_models.sh" in reason
    monkeypatch.setattr(cap, "_spice_dir", lambda: _spice_dir_with_fake_jars(tmp_path / "b"))
    assert cap.spice_status()[0]


def test_installed_spice_whose_java_fails_gives_null_and_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(cap, "_spice_dir", lambda: _spice_dir_with_fake_jars(tmp_path))
    monkeypatch.setattr(cap, "_meteor", lambda gts, res: (0.5, [0.5] * len(gts)))
    result = cap.score_captions(GOOD, REFERENCES)
    assert result["SPICE"] is None and result["SPIDEr"] is None
    assert "SPICE failed" in result["notes"]["SPICE"]
    assert not os.path.exists(tmp_path / "tmp") and not os.path.exists(tmp_path / "cache")


def test_spider_is_mean_of_cider_and_spice(monkeypatch, tmp_path):
    monkeypatch.setattr(cap, "_spice_dir", lambda: _spice_dir_with_fake_jars(tmp_path))
    monkeypatch.setattr(cap, "_meteor", lambda gts, res: (0.5, [0.5] * len(gts)))
    seen = {}

    def fake_spice(gts, res):
        seen.update(gts=gts, res=res)
        return 0.25, "computed", [0.25] * len(gts)

    monkeypatch.setattr(cap, "_run_spice", fake_spice)
    result = cap.score_captions(GOOD, REFERENCES)
    assert result["SPICE"] == 0.25
    assert result["SPIDEr"] == pytest.approx((result["CIDEr"] + 0.25) / 2)
    assert len(seen["gts"]) == len(seen["res"]) == 6  # SPICE sees the tokenised captions


def test_spice_modes(monkeypatch, tmp_path):
    monkeypatch.setattr(cap, "_spice_dir", lambda: _spice_dir_without_jars(tmp_path))
    with pytest.raises(RuntimeError, match="get_spice_models"):
        cap.score_captions(GOOD, REFERENCES, spice=True)
    with pytest.raises(ValueError, match="spice"):
        cap.score_captions(GOOD, REFERENCES, spice="yes")


def test_key_mismatch_and_bad_references_are_errors():
    with pytest.raises(ValueError, match="only in predictions"):
        cap.score_captions({**GOOD, "extra": "x"}, REFERENCES)
    with pytest.raises(ValueError, match="only in references"):
        cap.score_captions({"p1": "x"}, REFERENCES)
    with pytest.raises(ValueError, match="No pairs"):
        cap.score_captions({}, {})
    with pytest.raises(ValueError, match="non-empty list"):
        cap.score_captions({"p1": "x"}, {"p1": []})
