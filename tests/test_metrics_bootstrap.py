"""Tests of adc_jax/metrics/bootstrap.py and tools/compare_runs.py.

Known cases: resampling every pair once gives exactly the corpus scores pycocoevalcap reports
(BLEU from summed counts, METEOR, ROUGE-L, CIDEr); an exact-match rate's interval has the width
the binomial predicts; identical predictions compare as a zero difference whose interval holds 0
(p = 1); a system better on every pair differs with p near 0.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest

from adc_jax.data.pipeline import EvalSplit
from adc_jax.metrics import bootstrap
from adc_jax.predictions import read_predictions, write_predictions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("louder", "quieter", "add", "remove")
CLASSES = ("dog", "thunder", "horn", "bells")
PHRASES = {"dog": "the dog", "thunder": "the thunder", "horn": "the horn", "bells": "the bells"}


def _caption(op: str, cls: str) -> str:
    return {
        "louder": f"make {PHRASES[cls]} louder",
        "quieter": f"make {PHRASES[cls]} quieter",
        "add": f"add {PHRASES[cls]}",
        "remove": f"remove {PHRASES[cls]}",
    }[op]


def _split(n: int, seed: int = 0):
    """n labelled pairs with 2 references each; (split, right predictions, wrong predictions)."""
    rng = np.random.default_rng(seed)
    keys, refs, edits, right, wrong = [], [], [], {}, {}
    for i in range(n):
        op, cls = OPS[rng.integers(4)], CLASSES[rng.integers(4)]
        other = OPS[(OPS.index(op) + 1) % 4]
        key = f"k{i:03d}"
        keys.append(key)
        refs.append([_caption(op, cls), _caption(op, cls) + " please"])
        edits.append([(op, cls)])
        right[key] = _caption(op, cls)
        wrong[key] = _caption(other, cls)
    split = EvalSplit(None, keys, refs, edits, ["rain"] * n, list(range(n)), [0] * n)
    return split, right, wrong


@pytest.fixture(scope="module")
def scored():
    split, right, wrong = _split(60)
    mixed = {k: (right[k] if i % 2 else wrong[k]) for i, k in enumerate(split.keys)}
    return (
        split,
        right,
        wrong,
        mixed,
        {name: bootstrap.pair_stats(p, split) for name, p in [("right", right), ("mixed", mixed)]},
    )


def test_all_pairs_once_reproduce_the_corpus_scores(scored):
    *_, stats = scored
    for scores, pair_stats in stats.values():
        full = bootstrap.full_metrics(pair_stats)
        for metric in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"):
            assert full[metric] == pytest.approx(scores[metric], rel=1e-9, abs=1e-12), metric


def test_exact_match_interval_has_the_binomial_width(scored):
    split, *_, stats = scored
    _, mixed = stats["mixed"]
    assert mixed.exact.mean() == 0.5  # every other prediction names the wrong operation
    lo, hi = bootstrap.bootstrap_intervals(mixed, num_resamples=2000)["difference_accuracy"]
    half_width = 1.96 * np.sqrt(0.25 / len(split.keys))  # normal approximation
    assert lo < 0.5 < hi
    assert (hi - lo) / 2 == pytest.approx(half_width, rel=0.15)
    _, right = stats["right"]
    assert bootstrap.bootstrap_intervals(right)["difference_accuracy"] == [1.0, 1.0]
    again = bootstrap.bootstrap_intervals(mixed, num_resamples=2000)
    assert again["difference_accuracy"] == [lo, hi]  # seeded


def test_identical_predictions_differ_by_zero(scored):
    *_, stats = scored
    _, mixed = stats["mixed"]
    result = bootstrap.paired_bootstrap(mixed, mixed, num_resamples=300)
    for metric, r in result.items():
        assert r["difference"] == 0.0 and r["lo"] <= 0.0 <= r["hi"], metric
        assert r["p_value"] == 1.0


def test_a_better_system_differs_beyond_the_noise(scored):
    *_, stats = scored
    result = bootstrap.paired_bootstrap(stats["mixed"][1], stats["right"][1], num_resamples=1000)
    acc = result["difference_accuracy"]
    assert acc["difference"] == pytest.approx(0.5)
    assert acc["lo"] > 0 and acc["p_value"] < 0.01
    assert result["CIDEr"]["lo"] > 0


def test_pairs_must_match(scored):
    *_, stats = scored
    _, a = stats["mixed"]
    b = dataclasses.replace(
        a, pairs=dataclasses.replace(a.pairs, keys=[k + "x" for k in a.pairs.keys])
    )
    with pytest.raises(ValueError, match="same pairs"):
        bootstrap.paired_bootstrap(a, b)


def test_predictions_file_round_trip_and_compare_tool(scored, tmp_path, capsys):
    split, right, _, mixed, _ = scored
    paths = {}
    for name, preds in (("mixed", mixed), ("right", right)):
        paths[name] = str(tmp_path / f"{name}_predictions.jsonl")
        write_predictions(paths[name], {k: [(v, -1.0)] for k, v in preds.items()}, split)
    loaded, loaded_split = read_predictions(paths["mixed"])
    assert loaded == mixed
    assert loaded_split.references == split.references and loaded_split.edits == split.edits
    spec = importlib.util.spec_from_file_location(
        "compare_runs", os.path.join(REPO_ROOT, "tools", "compare_runs.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    json_out = str(tmp_path / "cmp.json")
    assert (
        tool.main([paths["mixed"], paths["right"], "--resamples=200", f"--json_out={json_out}"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| difference_accuracy | 0.5000 | 1.0000 | +0.5000 * |" in out
    mixed_stats = scored[4]["mixed"][1]
    table = tool.format_table(bootstrap.paired_bootstrap(mixed_stats, mixed_stats))
    assert (
        "| difference_accuracy | 0.5000 | 0.5000 | +0.0000 | [+0.0000, +0.0000] | 1.000 |" in table
    )
    (tmp_path / "bad.jsonl").write_text('{"key": "a"}\n')
    assert tool.main([paths["mixed"], str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
