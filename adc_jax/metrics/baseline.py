"""The most-frequent-caption baseline: what a model that learned nothing scores.

The baseline predicts the most frequent training caption for every pair; every evaluation reports
its scores beside the model's (`baseline_result`, cached per split in the run's eval folder).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax

from adc_jax.data.eval_split import EvalSplit
from adc_jax.metrics.scores import score_predictions


def most_frequent_caption(captions: Iterable[str]) -> str:
    """The most frequent caption (whitespace-collapsed, lower-cased); ties -> lexicographic first."""
    counts = collections.Counter(c for c in (" ".join(s.split()).lower() for s in captions) if c)
    if not counts:
        raise ValueError("most_frequent_caption needs at least one non-empty caption.")
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def baseline_result(
    split: EvalSplit, baseline_captions: str | Mapping[int, str], cache_path: str | None
) -> dict[str, Any]:
    """`score_predictions` of the baseline caption for every entry, plus "caption".

    baseline_captions: one caption, or tier -> caption (each entry gets its tier's; the result's
    "caption" is then that mapping with string keys). The result is cached in `cache_path` (when
    given) and reused while the captions and the number of entries are the same; process 0 writes
    the cache.
    """
    if isinstance(baseline_captions, str):
        caption: Any = baseline_captions
        predictions = {k: baseline_captions for k in split.keys}
    else:
        caption = {str(t): c for t, c in sorted(baseline_captions.items())}
        if len(caption) == 1 and set(split.tiers) <= {0}:
            caption = next(iter(caption.values()))  # untiered: the plain caption, as before
        predictions = {
            k: baseline_captions[t] for k, t in zip(split.keys, split.tiers, strict=True)
        }
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if cached.get("caption") == caption and cached.get("keys") == len(split.keys):
            return cached["result"]
    result = score_predictions(predictions, split)
    result["caption"] = caption
    if cache_path and jax.process_index() == 0:
        tmp = cache_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"caption": caption, "keys": len(split.keys), "result": result}, f, indent=2)
        os.replace(tmp, cache_path)
    return result
