"""A split loaded for evaluation: its keys, references and labels, entry by entry.

`load_eval_split` reads only the text fields of (the first max_examples pairs of) a split, in
stored order, from its caption file when given (`vocab.split_captions`), else from its records:
one entry per pair, or, for tiered data (ADIFF), one per pair and tier it has references of,
keyed `vocab.tier_key(key, tier)`. Evaluation decodes the entries' audio in batches
(`pipeline.eval_batches`) and scores the predictions against the references; the metrics read
the edit labels and scenes.

Public API:
  EvalSplit                                           the entries; `subset`, `by_tier`.
  load_eval_split(source, max_examples, tiers, text)  -> EvalSplit
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from adc_jax.data.features import as_text
from adc_jax.data.vocab import tier_captions, tier_key


@dataclasses.dataclass
class EvalSplit:
    """A split loaded for evaluation: one entry per pair (and tier, for tiered data), in stored
    order (tier by tier), with keys, references and labels.

    records[i] is the source record of entry i and tiers[i] its tier (0 for untiered data).
    """

    source: Sequence[dict[str, Any]]
    keys: list[str]
    references: list[list[str]]
    edits: list[list[tuple[str, str]]]
    scenes: list[str]
    records: list[int] = dataclasses.field(default_factory=list)
    tiers: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.records:
            self.records = list(range(len(self.keys)))
        if not self.tiers:
            self.tiers = [0] * len(self.keys)

    def subset(self, indices: Sequence[int]) -> EvalSplit:
        """The entries `indices` of this split, as a split of their own (e.g. one tier)."""
        pick = lambda xs: [xs[int(i)] for i in indices]  # noqa: E731
        return EvalSplit(
            self.source,
            pick(self.keys),
            pick(self.references),
            pick(self.edits),
            pick(self.scenes),
            pick(self.records),
            pick(self.tiers),
        )

    def by_tier(self) -> dict[int, EvalSplit]:
        """tier -> the split's entries of that tier."""
        return {
            t: self.subset([i for i, u in enumerate(self.tiers) if u == t])
            for t in sorted(set(self.tiers))
        }


def load_eval_split(
    source: Sequence[dict[str, Any]],
    max_examples: int = 0,
    tiers: Sequence[int] = (0,),
    text: Sequence[dict[str, Any]] | None = None,
) -> EvalSplit:
    """Reads the metadata of (the first max_examples pairs of) a split.

    The text fields come from `text` (the split's `vocab.split_captions`, record for record)
    when given, else from `source`, whose audio evaluation reads either way.

    With tiers other than (0,) (ADIFF), every pair gives one entry per tier it has references
    of, tier by tier, keyed `tier_key(key, tier)`. A key that repeats gets "#2", "#3", ...
    appended so predictions stay one per entry.
    """
    n = len(source) if not max_examples else min(max_examples, len(source))
    keys, refs, edits, scenes, records, entry_tiers = [], [], [], [], [], []
    seen: collections.Counter[str] = collections.Counter()
    # Only the text fields are kept: a decoded record's waveforms are views of its bytes, and a
    # split's audio (gigabytes for ADIFF) must not stay in memory.
    text_fields = ("key", "captions", "caption_tiers", "edit_ops", "edit_classes", "scene")
    text = source if text is None else text
    metadata = []
    for i in range(n):
        record = text[i]
        metadata.append({f: record[f] for f in text_fields if f in record})
    for tier in tiers:
        for i, r in enumerate(metadata):
            captions = tier_captions(r, tier)
            if tier and not captions:
                continue  # this pair has no reference of this tier
            key = tier_key(as_text(r["key"]), tier)
            seen[key] += 1
            keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
            refs.append(captions)
            edits.append(
                [
                    (as_text(o), as_text(c))
                    for o, c in zip(r["edit_ops"], r["edit_classes"], strict=True)
                ]
            )
            scenes.append(as_text(r["scene"]))
            records.append(i)
            entry_tiers.append(int(tier))
    return EvalSplit(source, keys, refs, edits, scenes, records, entry_tiers)
