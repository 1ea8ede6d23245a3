"""Every prediction of an evaluation, saved beside its references and labels (JSON Lines).

Each evaluation writes `<eval prefix>_predictions.jsonl` (one file per checkpoint and decode
setting): one JSON object per scored entry, in the split's order:

  {"key": "eval_000017", "prediction": "make the dog louder",
   "nbest": [["make the dog louder", -1.23], ...],   # beam search: every hypothesis, best first
   "references": ["turn up the barking", ...],
   "edits": [["louder", "dog"]],                      # labelled data; [] for real data
   "scene": "rain", "tier": 0}                        # tier: ADIFF's 1-3, else 0

so any external scorer (SPICE where CoreNLP is installed, aac-metrics, human rating) can score a
run later, and `python -m adc_jax.evaluate --predictions=FILE` rescores it without the model
(`read_predictions` rebuilds the split's references and labels from the file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from adc_jax.data.eval_split import EvalSplit

SUFFIX = "_predictions.jsonl"


def predictions_path(out_prefix: str) -> str:
    """The predictions file of an evaluation written to `<out_prefix>.json`."""
    return out_prefix + SUFFIX


def write_predictions(
    path: str, nbest: Mapping[str, Sequence[tuple[str, float]]], split: EvalSplit
) -> None:
    """Writes one line per entry of `split` (atomically: a reader never sees half a file).

    Args:
      path: the .jsonl file.
      nbest: key -> [(caption, score)], best first, for every key of the split.
      split: the scored split (references, edit labels, scenes, tiers).
    """
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for i, key in enumerate(split.keys):
            hypotheses = [[text, float(score)] for text, score in nbest[key]]
            line = {
                "key": key,
                "prediction": hypotheses[0][0],
                "nbest": hypotheses,
                "references": list(split.references[i]),
                "edits": [list(e) for e in split.edits[i]],
                "scene": split.scenes[i],
                "tier": int(split.tiers[i]),
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class PredictionsError(ValueError):
    """A predictions file is missing fields or malformed; the message names the line."""


def read_predictions(path: str) -> tuple[dict[str, str], EvalSplit]:
    """(key -> prediction, the split it scores) from a file of `write_predictions`.

    Raises:
      FileNotFoundError: no such file.
      PredictionsError: a line is not JSON, lacks a field, or repeats a key (names the line).
    """
    predictions: dict[str, str] = {}
    keys, refs, edits, scenes, tiers = [], [], [], [], []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                key, prediction = str(line["key"]), str(line["prediction"])
                references = [str(r) for r in line["references"]]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise PredictionsError(
                    f"{path}:{number} is not a predictions line ({type(e).__name__}: {e}); "
                    "expected the JSON objects adc_jax.evaluate writes."
                ) from e
            if key in predictions:
                raise PredictionsError(f"{path}:{number}: key {key!r} occurs twice.")
            predictions[key] = prediction
            keys.append(key)
            refs.append(references)
            edits.append([tuple(e) for e in line.get("edits", [])])
            scenes.append(str(line.get("scene", "")))
            tiers.append(int(line.get("tier", 0)))
    if not keys:
        raise PredictionsError(f"{path} holds no predictions.")
    split = EvalSplit(None, keys, refs, edits, scenes, list(range(len(keys))), tiers)
    return predictions, split
