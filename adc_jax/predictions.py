"""Every prediction of an evaluation, saved beside its references and labels (JSON Lines).

Each evaluation writes `<eval prefix>_predictions.jsonl` (one file per checkpoint and decode
setting): one JSON object per scored entry, in the split's order:

  {"key": "eval_000017", "prediction": "make the dog louder",
   "nbest": [["make the dog louder", -1.23], ...],   # beam search: every hypothesis, best first
   "references": ["turn up the barking", ...],
   "edits": [["louder", "dog"]],                      # labelled data; [] for real data
   "scene": "rain", "tier": 0,                        # tier: ADIFF's 1-3, else 0
   "swapped": "make the dog quieter",                 # the caption of (clip 2, clip 1)
   "identical": "there is no difference"}             # the caption of (clip 1, clip 1)

so any external scorer (SPICE where CoreNLP is installed, aac-metrics, human rating) can score a
run later, and `python -m adc_jax.evaluate --predictions=FILE` rescores it without the model
(`read_predictions` rebuilds the split's references and labels from the file; `read_probes` the
captions of the diagnostics' swapped and identical pairs, `adc_jax.metrics.diagnostics`, which
files written with eval.diagnostics=False or before they existed lack).
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


# The diagnostics' clip arrangements whose captions a line may hold (`pipeline.EVAL_CLIPS`).
PROBES = ("swapped", "identical")


def write_predictions(
    path: str,
    nbest: Mapping[str, Sequence[tuple[str, float]]],
    split: EvalSplit,
    probes: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Writes one line per entry of `split` (atomically: a reader never sees half a file).

    Args:
      path: the .jsonl file.
      nbest: key -> [(caption, score)], best first, for every key of the split.
      split: the scored split (references, edit labels, scenes, tiers).
      probes: arrangement ("swapped", "identical") -> key -> its best caption, stored as the
        line's field of that name.
    """
    probes = probes or {}
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"Unknown probe arrangements {sorted(unknown)}; known: {PROBES}.")
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
            for name, captions in probes.items():
                line[name] = captions[key]
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


def read_probes(path: str) -> dict[str, dict[str, str] | None]:
    """arrangement -> key -> caption of each of PROBES, or None where the file lacks it (a file
    written without the diagnostics). Read after `read_predictions` has checked the file."""
    found: dict[str, dict[str, str]] = {name: {} for name in PROBES}
    with open(path, encoding="utf-8") as f:
        for text in f:
            if not text.strip():
                continue
            line = json.loads(text)
            for name in PROBES:
                if name in line:
                    found[name][str(line["key"])] = str(line[name])
    with open(path, encoding="utf-8") as f:
        num_lines = sum(1 for text in f if text.strip())
    return {name: (v if len(v) == num_lines else None) for name, v in found.items()}
