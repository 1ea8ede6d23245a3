"""Difference accuracy: does a generated caption ask for the edits that made clip 2?

Captioning scores (BLEU, CIDEr, ...) reward wording; on the synthetic data we know the edits, so a
caption can be checked for meaning. Each prediction is parsed into a set of (operation, event
class) edits by `adc_jax.data.synthetic.grammar.parse_caption` and compared with the labelled set:

  exact_set_accuracy: fraction of pairs whose parsed set equals the labelled set.
  edit_precision / edit_recall / edit_f1: micro-averaged over all (operation, class) edits.
  per_operation[op]: precision, recall, f1 and support (labelled edits) of the edits with that op.
  class_accuracy: fraction of labelled edits whose class the prediction names (with any op).
  operation_accuracy: fraction of labelled edits whose op the prediction uses (on any class).
  no_difference: precision, recall, f1 and support (pairs labelled without an edit) of the
    "no difference" answers (`grammar.reads_no_difference`).

A pair without a difference (an empty edit set) is matched exactly by a caption that says so and
asks for no edit ("there is no difference"); a caption that names nothing without saying so
(garbled text, an empty string) matches no pair.

Pairs without a prediction count as predicting nothing. All values are plain Python floats/ints.
The parser reads the synthetic classes and, on clip_pairs data, the label classes of the labels
(e.g. "crying_baby"), so a caption is only credited with classes that the scored split holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from adc_jax.data.synthetic.grammar import (
    OPERATIONS,
    is_class_name,
    parse_caption,
    reads_no_difference,
)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def label_classes(labels: Iterable[Iterable[tuple[str, str]]]) -> list[str]:
    """The distinct event classes of some pairs' edit labels that captions can name, sorted
    (the `classes` argument of `parse_caption`)."""
    return sorted({str(c) for edits in labels for _, c in edits if is_class_name(str(c))})


def is_exact(prediction: str, truth: frozenset, classes: Sequence[str]) -> bool:
    """Whether a caption asks for exactly the labelled edits (for no edit: says "no difference")."""
    if not truth:
        return reads_no_difference(prediction, classes)
    return parse_caption(prediction, classes) == truth


def exact_matches(
    texts: Sequence[str], edits: Sequence[Iterable[tuple[str, str]]], classes=None
) -> np.ndarray:
    """[P] float64: 1.0 where texts[i] asks for exactly the edits[i] (`is_exact`); `classes` as
    in `difference_accuracy` (None: those of `edits`)."""
    edits = [frozenset((str(o), str(c)) for o, c in e) for e in edits]
    if classes is None:
        classes = label_classes(edits)
    return np.asarray(
        [is_exact(t, e, classes) for t, e in zip(texts, edits, strict=True)], np.float64
    )


def difference_accuracy(
    predictions: Mapping[str, str],
    labels: Mapping[str, Iterable[tuple[str, str]]],
    classes: Sequence[str] | None = None,
) -> dict:
    """Scores predicted captions against the labelled edits.

    Args:
      predictions: pair key -> generated caption. Keys missing here predict no edit; keys not in
        `labels` are ignored.
      labels: pair key -> the (operation, event class) edits that turn clip 1 into clip 2.
      classes: the event classes the parser reads beyond the synthetic ones (clip_pairs' label
        classes); None takes those of `labels`.

    Returns:
      A JSON-serialisable dict: exact_set_accuracy, edit_precision, edit_recall, edit_f1,
      class_accuracy, operation_accuracy, per_operation {op: {precision, recall, f1, support}},
      no_difference {precision, recall, f1, support}, num_examples, num_missing (labelled pairs
      without a prediction) and num_unparsed (pairs whose prediction names no edit).
    """
    exact = 0
    num_missing = 0
    num_unparsed = 0
    class_hits = 0
    op_hits = 0
    num_labelled_edits = 0
    counts = {op: {"tp": 0, "fp": 0, "fn": 0} for op in OPERATIONS}
    same = {"tp": 0, "fp": 0, "fn": 0}  # "no difference" answers vs pairs without an edit
    labels = {key: list(edits) for key, edits in labels.items()}
    if classes is None:
        classes = label_classes(labels.values())
    for key, label_edits in labels.items():
        truth = frozenset((str(op), str(cls)) for op, cls in label_edits)
        text = predictions.get(key)
        if text is None:
            num_missing += 1
        predicted = parse_caption(text, classes) if text is not None else frozenset()
        says_same = text is not None and reads_no_difference(text, classes)
        if not predicted:
            num_unparsed += 1
        exact += is_exact(text, truth, classes) if text is not None else False
        if says_same or not truth:
            same["tp" if says_same and not truth else "fp" if says_same else "fn"] += 1
        predicted_classes = {cls for _, cls in predicted}
        predicted_ops = {op for op, _ in predicted}
        for op, cls in truth:
            num_labelled_edits += 1
            class_hits += cls in predicted_classes
            op_hits += op in predicted_ops
        for op, cls in truth | predicted:
            if op not in counts:  # labels with an operation the parser does not know
                counts[op] = {"tp": 0, "fp": 0, "fn": 0}
            if (op, cls) in truth and (op, cls) in predicted:
                counts[op]["tp"] += 1
            elif (op, cls) in predicted:
                counts[op]["fp"] += 1
            else:
                counts[op]["fn"] += 1

    per_operation = {}
    for op, c in counts.items():
        precision, recall, f1 = _prf(c["tp"], c["fp"], c["fn"])
        per_operation[op] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(c["tp"] + c["fn"]),
        }
    total = {k: sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn")}
    precision, recall, f1 = _prf(total["tp"], total["fp"], total["fn"])
    n = len(labels)
    same_precision, same_recall, same_f1 = _prf(same["tp"], same["fp"], same["fn"])
    return {
        "exact_set_accuracy": float(exact / n) if n else 0.0,
        "edit_precision": precision,
        "edit_recall": recall,
        "edit_f1": f1,
        "class_accuracy": float(class_hits / num_labelled_edits) if num_labelled_edits else 0.0,
        "operation_accuracy": float(op_hits / num_labelled_edits) if num_labelled_edits else 0.0,
        "per_operation": per_operation,
        "no_difference": {
            "precision": same_precision,
            "recall": same_recall,
            "f1": same_f1,
            "support": int(same["tp"] + same["fn"]),
        },
        "num_examples": int(n),
        "num_missing": int(num_missing),
        "num_unparsed": int(num_unparsed),
    }
