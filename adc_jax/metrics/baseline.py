"""The most-frequent-caption baseline: what a model that learned nothing scores.

The baseline predicts the most frequent training caption for every pair; every evaluation reports
its scores beside the model's (`baseline_result`, cached per split in the run's eval folder).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable
from typing import Any

import jax

from adc_jax.data.pipeline import EvalSplit
from adc_jax.metrics.scores import score_predictions


def most_frequent_caption(captions: Iterable[str]) -> str:
    """The most frequent caption (whitespace-collapsed, lower-cased); ties -> lexicographic first."""
    counts = collections.Counter(c for c in (" ".join(s.split()).lower() for s in captions) if c)
    if not counts:
        raise ValueError("most_frequent_caption needs at least one non-empty caption.")
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def baseline_result(
    split: EvalSplit, baseline_caption: str, cache_path: str | None
) -> dict[str, Any]:
    """`score_predictions` of `baseline_caption` for every pair, plus "caption".

    The result is cached in `cache_path` (when given) and reused while the caption and the number
    of pairs are the same; process 0 writes the cache.
    """
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if cached.get("caption") == baseline_caption and cached.get("keys") == len(split.keys):
            return cached["result"]
    result = score_predictions({k: baseline_caption for k in split.keys}, split)
    result["caption"] = baseline_caption
    if cache_path and jax.process_index() == 0:
        tmp = cache_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {"caption": baseline_caption, "keys": len(split.keys), "result": result},
                f,
                indent=2,
            )
        os.replace(tmp, cache_path)
    return result
