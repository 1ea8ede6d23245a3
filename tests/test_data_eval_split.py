"""Tests of adc_jax.data.eval_split: a split loaded for evaluation, entry by entry.

Tiered data has one entry per pair and tier with references, keyed per tier, with that tier's
references (and start token in the eval batches); untiered data has one entry per pair, keyed by
the pair.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiered_records import answers_of, tiered_config, tiered_records, tiered_vocab

from adc_jax.data import pipeline
from adc_jax.data.eval_split import load_eval_split
from adc_jax.data.vocab import read_captions


@pytest.fixture(scope="module")
def records():
    return tiered_records()


def test_eval_split_has_one_entry_per_pair_and_tier(records):
    config = tiered_config()
    _, stats = read_captions(records, (1, 3), punctuation=True)
    vocab = tiered_vocab(stats)
    split = load_eval_split(records, 0, (1, 3))
    assert len(split.keys) == 72 and split.tiers == [1] * 40 + [3] * 32
    assert split.keys[0] == "pair0@tier1" and split.keys[40] == "pair1@tier3"
    for key, refs, record, tier in zip(
        split.keys, split.references, split.records, split.tiers, strict=True
    ):
        assert set(refs) == answers_of(records[record], tier)
        assert key.startswith(f"pair{record}@tier{tier}")
    by_tier = split.by_tier()
    assert len(by_tier[3].keys) == 32 and set(by_tier[3].tiers) == {3}
    starts = np.concatenate(
        [
            b["start"][b["valid"]]
            for b in pipeline.eval_batches(split, config, batch_size=16, vocab=vocab)
        ]
    )
    np.testing.assert_array_equal(starts, [vocab.start_id(t) for t in split.tiers])
    with pytest.raises(ValueError, match="needs the run's vocabulary"):
        next(pipeline.eval_batches(split, config, batch_size=16))


def test_untiered_data_is_unchanged_by_tiers(records):
    """Untiered records read as tier 0: one entry per pair, <bos> starts, plain keys."""
    plain = [{k: v for k, v in r.items() if k != "caption_tiers"} for r in records[:8]]
    _, stats = read_captions(plain)
    assert stats.entries.tolist() == [[i, 0] for i in range(8)]
    split = load_eval_split(plain)
    assert split.keys == [f"pair{i}" for i in range(8)] and split.tiers == [0] * 8
    assert all(len(r) == len(plain[i]["captions"]) for i, r in enumerate(split.references))


def test_repeated_keys_are_numbered_and_max_examples_cuts_the_split(records):
    twice = [records[0], records[1], records[0]]
    split = load_eval_split(twice, 0, (1,))
    assert split.keys == ["pair0@tier1", "pair1@tier1", "pair0@tier1#2"]
    assert load_eval_split(records, 5, (1, 3)).records == [0, 1, 2, 3, 4, 1, 2, 3, 4]
