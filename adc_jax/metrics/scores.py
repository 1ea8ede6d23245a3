"""Every score of a split's predictions: caption metrics and, on labelled data, difference accuracy.

Used for the model (`adc_jax.evaluate`), the most-frequent-caption baseline
(`adc_jax.metrics.baseline`) and rescoring; the split is an `adc_jax.data.eval_split.EvalSplit`
(keys, references, edit labels).
"""

from __future__ import annotations

from typing import Any

from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics import bootstrap
from adc_jax.metrics.captioning import score_captions
from adc_jax.metrics.difference import difference_accuracy


def has_edit_labels(split: EvalSplit) -> bool:
    """Whether the split labels its pairs' edits (the synthetic data does, real data does not)."""
    return any(split.edits)


def score_predictions(
    predictions: dict[str, str], split: EvalSplit, *, intervals: bool = False
) -> dict[str, Any]:
    """{"scores": caption metrics, "difference_accuracy": its result, or None on unlabelled data,
    and with intervals=True "intervals": metric -> [lo, hi] (95% bootstrap over the pairs,
    `adc_jax.metrics.bootstrap`, 500 resamples, seed 0)}.

    Args:
      predictions: pair key -> caption, one for every key of `split`.
      split: the scored split.
      intervals: also compute the bootstrap intervals (adds well under a second per 1,000
        pairs; the scorers run once either way).
    """
    if intervals:
        scores, stats = bootstrap.pair_stats(predictions, split)
    else:
        references = dict(zip(split.keys, split.references, strict=True))
        scores = score_captions(predictions, references)
    out: dict[str, Any] = {"scores": scores}
    if has_edit_labels(split):
        labels = dict(zip(split.keys, split.edits, strict=True))
        out["difference_accuracy"] = difference_accuracy(predictions, labels)
    else:
        out["difference_accuracy"] = None
    if intervals:
        out["intervals"] = bootstrap.bootstrap_intervals(stats)
        out["interval_settings"] = {
            "method": "percentile bootstrap over pairs",
            "level": bootstrap.LEVEL,
            "resamples": bootstrap.NUM_RESAMPLES,
            "seed": 0,
        }
    return out
