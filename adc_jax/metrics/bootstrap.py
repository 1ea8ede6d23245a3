"""Bootstrap confidence intervals over pairs, and paired comparisons of two systems.

The scores of a split are corpus statistics of its pairs. A resample draws P pairs with
replacement (the same draw for every metric) and recomputes each metric from per-pair quantities
(`captioning.PairScores`), so a few hundred resamples cost milliseconds, not scorer runs:

  BLEU-1..4   exactly pycocoevalcap's corpus BLEU of the resampled pairs (summed clipped n-gram
              matches, candidate n-grams and lengths, brevity penalty on the sums);
  ROUGE-L     the mean of the per-pair scores (as pycocoevalcap's corpus score is);
  CIDEr       the mean of the per-pair CIDEr-D scores, with the idf of the whole scored set kept
              fixed (the idf describes the reference corpus, not the sample);
  METEOR      corpus METEOR is not a mean of the per-pair scores (it pools the statistics), so
              its resamples are the corpus score shifted by (mean of the resampled per-pair
              scores - mean of all per-pair scores);
  SPICE       the mean of the per-pair scores, when SPICE ran; SPIDEr = (CIDEr + SPICE) / 2;
  difference accuracy  the mean of the per-pair exact-set matches, on labelled data.

Intervals are percentile intervals (default 95%, 500 resamples, seed 0). A paired comparison
resamples the pairs once for both systems (they must score the same pairs with the same
references) and reports B - A, its percentile interval and a two-sided p-value: twice the share
of resampled differences on the other side of zero from the observed one (capped at 1; 1 when
every difference is 0).

Public API:
  PairStats                         PairScores plus the exact-set matches.
  pair_stats(predictions, split)    -> (scores, PairStats) of a split's predictions.
  metrics_of(stats, indices)        metric -> values for resamples indices [R, P].
  bootstrap_intervals(stats, ...)   metric -> [lo, hi].
  resample_indices, percentile_interval   the resampling and interval of them all.
  paired_bootstrap(a, b, ...)       metric -> {a, b, difference, lo, hi, p_value}.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics.captioning import PairScores, score_captions_per_pair
from adc_jax.metrics.difference import exact_matches

NUM_RESAMPLES = 500
LEVEL = 0.95
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap BLEU's smoothing constants
# The metrics intervals are given for, in table order.
METRICS = (
    "BLEU_1",
    "BLEU_4",
    "METEOR",
    "ROUGE_L",
    "CIDEr",
    "SPICE",
    "SPIDEr",
    "difference_accuracy",
)


@dataclasses.dataclass
class PairStats:
    """Per-pair quantities of a scored split: caption metrics and, on labelled data, exact
    matches [P] (1.0 when the caption parses to exactly the labelled edits), else None."""

    pairs: PairScores
    exact: np.ndarray | None
    corpus_meteor: float

    @property
    def num_pairs(self) -> int:
        return len(self.pairs.keys)


def pair_stats(predictions: dict[str, str], split: EvalSplit) -> tuple[dict[str, Any], PairStats]:
    """Scores `predictions` on `split` (as `score_predictions` does) and returns the per-pair
    quantities for resampling: (caption scores, PairStats)."""
    references = dict(zip(split.keys, split.references, strict=True))
    scores, pairs = score_captions_per_pair(predictions, references)
    exact = None
    if any(split.edits):  # labelled data (synthetic, clip_pairs)
        labels = dict(zip(split.keys, split.edits, strict=True))
        exact = exact_matches([predictions[k] for k in pairs.keys], [labels[k] for k in pairs.keys])
    return scores, PairStats(pairs, exact, float(scores["METEOR"]))


def metrics_of(stats: PairStats, indices: np.ndarray) -> dict[str, np.ndarray]:
    """metric -> [R] values of the resamples `indices` [R, P] (rows of pair indices)."""
    p = stats.pairs
    out: dict[str, np.ndarray] = {}
    correct = p.bleu_correct[indices].sum(axis=1)  # [R, 4]
    guess = p.bleu_guess[indices].sum(axis=1)
    testlen = p.bleu_testlen[indices].sum(axis=1)
    reflen = p.bleu_reflen[indices].sum(axis=1)
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1.0)), 1.0)
    product = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)
    for n in (1, 4):
        out[f"BLEU_{n}"] = product[:, n - 1] ** (1.0 / n) * brevity
    out["METEOR"] = stats.corpus_meteor + p.meteor[indices].mean(axis=1) - p.meteor.mean()
    out["ROUGE_L"] = p.rouge_l[indices].mean(axis=1)
    out["CIDEr"] = p.cider[indices].mean(axis=1)
    if p.spice is not None:
        out["SPICE"] = p.spice[indices].mean(axis=1)
        out["SPIDEr"] = (out["CIDEr"] + out["SPICE"]) / 2
    if stats.exact is not None:
        out["difference_accuracy"] = stats.exact[indices].mean(axis=1)
    return out


def resample_indices(num_pairs: int, num_resamples: int, seed: int) -> np.ndarray:
    """[R, P] pair indices drawn with replacement (deterministic from the seed)."""
    if num_pairs < 1 or num_resamples < 1:
        raise ValueError(f"Need >= 1 pair and resample, got {num_pairs} and {num_resamples}.")
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_pairs, size=(num_resamples, num_pairs))


def percentile_interval(values: np.ndarray, level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def bootstrap_intervals(
    stats: PairStats,
    *,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, list[float]]:
    """metric -> [lo, hi], the percentile interval of the metric over resamples of the pairs."""
    values = metrics_of(stats, resample_indices(stats.num_pairs, num_resamples, seed))
    return {m: percentile_interval(v, level) for m, v in values.items()}


def full_metrics(stats: PairStats) -> dict[str, float]:
    """metric -> its value on all pairs (equals the corpus scores; a check of `metrics_of`)."""
    everything = np.arange(stats.num_pairs)[None]
    return {m: float(v[0]) for m, v in metrics_of(stats, everything).items()}


def paired_bootstrap(
    a: PairStats,
    b: PairStats,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, dict[str, float]]:
    """metric -> {a, b, difference (b - a), lo, hi, p_value} over paired resamples of the pairs.

    Raises:
      ValueError: the two systems did not score the same pairs (in the same order).
    """
    if a.pairs.keys != b.pairs.keys:
        only_a = sorted(set(a.pairs.keys) - set(b.pairs.keys))[:3]
        only_b = sorted(set(b.pairs.keys) - set(a.pairs.keys))[:3]
        raise ValueError(
            "The two prediction sets do not cover the same pairs in the same order "
            f"(only in A: {only_a}, only in B: {only_b}); compare runs on the same split."
        )
    indices = resample_indices(a.num_pairs, num_resamples, seed)
    value_a, value_b = full_metrics(a), full_metrics(b)
    res_a, res_b = metrics_of(a, indices), metrics_of(b, indices)
    out = {}
    for metric in res_a:
        if metric not in res_b:
            continue
        diffs = res_b[metric] - res_a[metric]
        observed = value_b[metric] - value_a[metric]
        if np.all(diffs == 0):
            p_value = 1.0
        elif observed >= 0:
            p_value = min(1.0, 2 * float(np.mean(diffs <= 0)))
        else:
            p_value = min(1.0, 2 * float(np.mean(diffs >= 0)))
        lo, hi = percentile_interval(diffs, level)
        out[metric] = {
            "a": value_a[metric],
            "b": value_b[metric],
            "difference": observed,
            "lo": lo,
            "hi": hi,
            "p_value": p_value,
        }
    return out
