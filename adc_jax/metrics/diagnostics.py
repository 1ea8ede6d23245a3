"""Diagnostics of a difference captioner: order swaps, identical pairs and discriminability.

Caption scores say how well a model words the differences of the pairs it is shown. These say
whether it behaves like a difference model at all; every evaluation reports them (`result
["diagnostics"]`), each a number in [0, 1] over the scored entries with its 95% bootstrap
interval (the resampling of `adc_jax.metrics.bootstrap`: 500 resamples of the pairs, seed 0):

  swap_consistency     the model captions (clip 2, clip 1) of every pair; the share whose caption
                       asks for exactly the inverse of the labelled edits (add <-> remove,
                       louder <-> quieter, earlier <-> later, change stays change; a pair
                       without an edit must again be answered "no difference"), read by the
                       grammar's parser as difference accuracy is. Labelled data only
                       (synthetic_adc, clip_pairs); null with a reason otherwise.
  identical_pair_rate  the model captions (clip 1, clip 1) of every pair; the share answered
                       "no difference". On labelled data: the caption holds a no-difference
                       phrase and asks for no edit (`grammar.reads_no_difference`). On other
                       data (free text: ADIFF, AudioDiffCaps): the caption holds one of the
                       phrases of `grammar.NO_DIFFERENCE_CUES` ("no difference", "identical",
                       "are the same", ...) anywhere (`grammar.says_no_difference`) — a lenient
                       rule, since an explanation may say "the background is the same" too.
  distinct_captions    distinct predictions / entries (captions compared lower-cased with runs of
                       spaces collapsed). A model that says the same thing to every pair scores
                       1/P. Resampled as the mean of 1 / (how often the entry's caption occurs in
                       the whole split), whose mean is exactly the ratio.
  discriminability     does a prediction fit its own pair's references better than the others'?
                       In the spirit of DATE (MECAT): every entry's references (concatenated) and
                       prediction become TF-IDF vectors of their words (idf over the entries'
                       references); an entry's score is the share of the other entries whose
                       references are less cosine-similar to its prediction than its own are
                       (ties count half), and the diagnostic is the mean: 0.5 for captions that
                       carry no information about their pair (a constant caption), 1.0 when
                       every prediction is closer to its own references than to any other pair's.
                       Pairs that share an edit have similar references, so even perfect
                       captions stay below 1 on the synthetic data; compare systems on the same
                       split.

The swapped and identical captions are decoded with the evaluation's own decoder settings and
saved in its predictions file (`adc_jax.predictions`), so rescoring the file reproduces the
diagnostics exactly.

Public API:
  DIAGNOSTICS                                   the names, in table order.
  diagnostics(predictions, split, swapped=..., identical=...)   name -> {value, interval} or
                                                {value: None, reason}.
  per_entry(...)                                name -> [P] values (the means are the diagnostics).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np

from adc_jax.data.eval_split import EvalSplit
from adc_jax.data.synthetic.grammar import inverse_edits, reads_no_difference, says_no_difference
from adc_jax.data.tokenizer import words
from adc_jax.metrics import bootstrap
from adc_jax.metrics.difference import exact_matches, label_classes
from adc_jax.metrics.scores import has_edit_labels

DIAGNOSTICS = ("swap_consistency", "identical_pair_rate", "distinct_captions", "discriminability")


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def distinct_weights(predictions: list[str]) -> np.ndarray:
    """[P]: 1 / (number of entries with the same caption); the mean is distinct / P."""
    texts = [_normalised(t) for t in predictions]
    counts = collections.Counter(texts)
    return np.asarray([1.0 / counts[t] for t in texts], np.float64)


def _tfidf(documents: list[list[str]], idf: dict[str, float]) -> np.ndarray:
    """[D, V] L2-normalised TF-IDF rows over the vocabulary of `idf` (other words dropped)."""
    index = {w: i for i, w in enumerate(idf)}
    out = np.zeros((len(documents), len(index)), np.float64)
    for row, doc in enumerate(documents):
        for w, n in collections.Counter(doc).items():
            if w in index:
                out[row, index[w]] = n * idf[w]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def discriminability_scores(predictions: list[str], references: list[list[str]]) -> np.ndarray:
    """[P]: for each entry, the share of the other entries whose references are less similar to
    its prediction than its own references are (ties count half); see the module docstring."""
    n = len(predictions)
    if n < 2:
        return np.full((n,), 0.5)
    ref_docs = [[w for r in refs for w in words(r)] for refs in references]
    document_frequency = collections.Counter(w for doc in ref_docs for w in set(doc))
    idf = {w: float(np.log(n / df)) + 1.0 for w, df in sorted(document_frequency.items())}
    refs = _tfidf(ref_docs, idf)
    preds = _tfidf([words(p) for p in predictions], idf)
    sim = preds @ refs.T  # [P, P]: prediction i against the references of entry j
    own = np.diag(sim)[:, None]
    below = (sim < own - 1e-12).sum(axis=1)
    ties = (np.abs(sim - own) <= 1e-12).sum(axis=1) - 1  # minus the entry itself
    return (below + 0.5 * ties) / (n - 1)


def per_entry(
    predictions: Mapping[str, str],
    split: EvalSplit,
    *,
    swapped: Mapping[str, str] | None,
    identical: Mapping[str, str] | None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> [P] per-entry values, name -> why it is null) for the entries of `split`.

    Args:
      predictions: key -> caption of the pair as stored.
      split: the scored split (keys, references, edit labels).
      swapped: key -> caption of (clip 2, clip 1); None when not decoded.
      identical: key -> caption of (clip 1, clip 1); None when not decoded.
    """
    keys = split.keys
    values: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    labelled = has_edit_labels(split)
    classes = label_classes(split.edits) if labelled else []
    not_decoded = "not decoded (eval.diagnostics is False, or the predictions file predates it)"
    if swapped is None:
        missing["swap_consistency"] = "the swapped pairs were " + not_decoded
    elif not labelled:
        missing["swap_consistency"] = (
            "needs edit labels (synthetic_adc, clip_pairs); this split has none, so the inverse "
            "of its differences is unknown"
        )
    else:
        inverses = [sorted(inverse_edits(map(tuple, e))) for e in split.edits]
        values["swap_consistency"] = exact_matches([swapped[k] for k in keys], inverses, classes)
    if identical is None:
        missing["identical_pair_rate"] = "the identical pairs were " + not_decoded
    elif labelled:
        values["identical_pair_rate"] = np.asarray(
            [reads_no_difference(identical[k], classes) for k in keys], np.float64
        )
    else:
        values["identical_pair_rate"] = np.asarray(
            [says_no_difference(identical[k]) for k in keys], np.float64
        )
    texts = [predictions[k] for k in keys]
    values["distinct_captions"] = distinct_weights(texts)
    values["discriminability"] = discriminability_scores(texts, split.references)
    return values, missing


def diagnostics(
    predictions: Mapping[str, str],
    split: EvalSplit,
    *,
    swapped: Mapping[str, str] | None,
    identical: Mapping[str, str] | None,
    num_resamples: int = bootstrap.NUM_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """name -> {"value", "interval": [lo, hi]} (95% bootstrap over the entries), or {"value":
    None, "reason"}, for each of DIAGNOSTICS; arguments as `per_entry`."""
    values, missing = per_entry(predictions, split, swapped=swapped, identical=identical)
    indices = bootstrap.resample_indices(len(split.keys), num_resamples, seed)
    out: dict[str, Any] = {}
    for name in DIAGNOSTICS:
        if name in missing:
            out[name] = {"value": None, "reason": missing[name]}
            continue
        v = values[name]
        out[name] = {
            "value": float(v.mean()),
            "interval": bootstrap.percentile_interval(v[indices].mean(axis=1), bootstrap.LEVEL),
        }
    return out
