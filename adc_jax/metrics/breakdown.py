"""Scores of the model and the baseline on subsets of a split: per operation, keyword and scene.

Breakdowns (`breakdown(...)`, stored as `result["breakdown"]` by `adc_jax.evaluate`):
  by_operation  synthetic data: for each edit operation (add, remove, louder, quieter, change,
                earlier, later), the pairs whose labelled edits contain it: their BLEU-4, CIDEr
                and exact-set accuracy, and the operation's edit precision/recall/F1 over the
                whole split (from difference accuracy); "no_difference" for the pairs without
                an edit, if any. None on unlabelled data.
  by_keyword    any data (meant for AudioDiffCaps, which has no labels): the pairs whose
                references use one of a group's words (`KEYWORD_GROUPS`: "louder", "increase",
                ... for louder), the same caption scores.
  by_scene      the pairs of each background scene (rain, traffic).
A pair can be in several groups (two edits, or references worded differently). Subset BLEU-4 is
the corpus BLEU-4 of the subset; subset CIDEr is the mean per-pair CIDEr computed with the idf of
the whole split, so the mean over a partition equals the split's CIDEr (CIDEr of a subset alone
would use the subset's own idf and be 0 for a single pair).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from adc_jax.data.eval_split import EvalSplit
from adc_jax.data.synthetic.grammar import OPERATIONS
from adc_jax.data.tokenizer import words
from adc_jax.metrics.captioning import tokenize_for_scoring
from adc_jax.metrics.difference import exact_matches
from adc_jax.metrics.scores import has_edit_labels

# Scores computed on every subset of a breakdown.
SUBSET_SCORES = ("BLEU_4", "CIDEr")
# Words (or two-word phrases) of the references that put a pair into a keyword group. Written for
# AudioDiffCaps' free-form captions ("a dog barking is added", "the rain becomes louder") and the
# synthetic grammar; ambiguous words ("up", "before", "start") are left out on purpose.
KEYWORD_GROUPS: dict[str, tuple[str, ...]] = {
    "add": (
        "add",
        "adds",
        "added",
        "adding",
        "appear",
        "appears",
        "appeared",
        "insert",
        "inserted",
        "include",
        "included",
        "introduce",
        "introduced",
    ),
    "remove": (
        "remove",
        "removes",
        "removed",
        "removing",
        "disappear",
        "disappears",
        "disappeared",
        "delete",
        "deleted",
        "eliminate",
        "eliminated",
        "gone",
        "vanish",
        "vanishes",
        "vanished",
        "rid",
        "take out",
    ),
    "louder": (
        "louder",
        "increase",
        "increases",
        "increased",
        "raise",
        "raised",
        "boost",
        "boosted",
        "amplify",
        "amplified",
        "stronger",
        "turn up",
    ),
    "quieter": (
        "quieter",
        "softer",
        "decrease",
        "decreases",
        "decreased",
        "lower",
        "lowered",
        "reduce",
        "reduced",
        "weaker",
        "fainter",
        "turn down",
    ),
    "change": (
        "change",
        "changes",
        "changed",
        "replace",
        "replaced",
        "different",
        "swap",
        "swapped",
        "substitute",
        "substituted",
    ),
    "earlier": ("earlier", "sooner"),
    "later": ("later", "delay", "delayed"),
}


def _words(text: str) -> str:
    """Lower-cased words joined by single spaces, padded with spaces for phrase matching."""
    return " " + " ".join(words(text)) + " "


def keyword_groups(references: list[list[str]]) -> dict[str, list[int]]:
    """Indices of the pairs whose references use a word of each `KEYWORD_GROUPS` group."""
    texts = [" ".join(_words(r) for r in refs) for refs in references]
    return {
        group: [i for i, t in enumerate(texts) if any(f" {w} " in t for w in keywords)]
        for group, keywords in KEYWORD_GROUPS.items()
    }


# The group of the pairs labelled without an edit in `operation_groups`.
NO_DIFFERENCE_GROUP = "no_difference"


def operation_groups(edits: list[list[tuple[str, str]]]) -> dict[str, list[int]]:
    """Indices of the pairs whose labelled edits contain each operation (synthetic data), and
    under NO_DIFFERENCE_GROUP those without an edit when the split has any."""
    groups = {
        op: [i for i, e in enumerate(edits) if any(o == op for o, _ in e)] for op in OPERATIONS
    }
    unchanged = [i for i, e in enumerate(edits) if not e]
    if unchanged:
        groups[NO_DIFFERENCE_GROUP] = unchanged
    return groups


class _SubsetScorer:
    """BLEU-4 and CIDEr of the model and the baseline on subsets of a split (one JVM call).

    Captions are PTB-tokenised once, exactly as `score_captions` does; per-pair CIDEr uses the idf
    of the whole split (see the module docstring).
    """

    def __init__(self, predictions: dict[str, str], split: EvalSplit, baseline_caption: str):
        # The same tokenisation and empty-caption rules as the headline scores, so subset scores
        # are comparable with them.
        preds = [predictions.get(k, "") for k in split.keys]
        tokens, refs, _, _ = tokenize_for_scoring(
            preds + [baseline_caption], [list(r) for r in split.references] + [[baseline_caption]]
        )
        self.refs = refs[:-1]
        self.hyps = {"model": tokens[:-1], "baseline": [tokens[-1]] * len(preds)}
        self.exact = {
            name: self._exact(texts, split)
            for name, texts in (("model", preds), ("baseline", [baseline_caption] * len(preds)))
        }
        gts = dict(enumerate(self.refs))
        self.cider = {
            name: np.asarray(
                Cider().compute_score(gts, {i: [h] for i, h in enumerate(hyps)})[1], np.float64
            )
            for name, hyps in self.hyps.items()
        }

    @staticmethod
    def _exact(texts: list[str], split: EvalSplit) -> np.ndarray | None:
        if not has_edit_labels(split):
            return None
        return exact_matches(texts, split.edits)  # clip_pairs: its label classes too

    def scores(self, indices: list[int]) -> dict[str, Any]:
        """{"num_pairs", "model": {...}, "baseline": {...}} for the pairs at `indices`."""
        out: dict[str, Any] = {"num_pairs": len(indices)}
        for name, hyps in self.hyps.items():
            if not indices:
                out[name] = {k: None for k in SUBSET_SCORES}
                continue
            bleu, _ = Bleu(4).compute_score(
                {i: self.refs[i] for i in indices}, {i: [hyps[i]] for i in indices}, verbose=0
            )
            out[name] = {"BLEU_4": float(bleu[3]), "CIDEr": float(self.cider[name][indices].mean())}
            if self.exact[name] is not None:
                out[name]["exact_set_accuracy"] = float(self.exact[name][indices].mean())
        return out


def breakdown(
    predictions: dict[str, str],
    split: EvalSplit,
    baseline_caption: str,
    difference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of the model and the baseline per operation, per reference keyword and per scene.

    Args:
      predictions: pair key -> the model's caption.
      split: the scored split (keys, references and, on synthetic data, edit labels).
      baseline_caption: the most frequent training caption.
      difference: the model's `difference_accuracy` result, whose per-operation precision, recall
        and F1 are copied into `by_operation` (None on unlabelled data).

    Returns:
      {"by_operation": {op: group} or None, "by_keyword": {group: {... , "keywords": [...]}},
       "by_scene": {scene: group}} where a group is {"num_pairs", "model": {"BLEU_4", "CIDEr"
       [, "exact_set_accuracy"]}, "baseline": {...}} (+ "precision", "recall", "f1",
       "support" per operation).
    """
    scorer = _SubsetScorer(predictions, split, baseline_caption)
    out: dict[str, Any] = {"by_operation": None}
    if has_edit_labels(split):
        out["by_operation"] = {}
        per_op = dict((difference or {}).get("per_operation", {}))
        per_op[NO_DIFFERENCE_GROUP] = (difference or {}).get("no_difference", {})
        for op, indices in operation_groups(split.edits).items():
            entry = scorer.scores(indices)
            prf = per_op.get(op, {})
            entry.update({k: prf.get(k) for k in ("precision", "recall", "f1", "support")})
            out["by_operation"][op] = entry
    out["by_keyword"] = {}
    for group, indices in keyword_groups(split.references).items():
        out["by_keyword"][group] = {
            **scorer.scores(indices),
            "keywords": list(KEYWORD_GROUPS[group]),
        }
    scenes = sorted({s for s in split.scenes if s})
    out["by_scene"] = {
        scene: scorer.scores([i for i, s in enumerate(split.scenes) if s == scene])
        for scene in scenes
    }
    return out
