"""Tests of tiered captions (ADIFF) and length-bucketed batches in the input pipeline.

In-memory records with `caption_tiers`: training entries are one per pair and selected tier with
references; a training caption starts with its tier's token and is one of that tier's
references; bucketed batches pad every caption to its bucket (never truncating one that fits),
cover every entry once per epoch but the largest bucket's remainder, split into disjoint process
rows, and resume exactly; evaluation has one entry per pair and tier, with that tier's
references and start token.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from adc_jax import config as config_lib
from adc_jax.data import pipeline
from adc_jax.data.tokenizer import EOS, Vocabulary, tier_token

WORDS = ["dog", "bark", "rain", "car", "louder", "quieter", "and", "the"]


def _record(i: int, answers: dict[int, list[str]]) -> dict:
    rng = np.random.default_rng(i)
    captions = [a for t in sorted(answers) for a in answers[t]]
    tiers = [t for t in sorted(answers) for _ in answers[t]]
    return {
        "key": f"pair{i}".encode(),
        "audio1": rng.integers(-3000, 3000, 1600 + i).astype(np.int16),
        "audio2": rng.integers(-3000, 3000, 1700 + i).astype(np.int16),
        "captions": [c.encode() for c in captions],
        "caption_tiers": np.asarray(tiers, np.int32),
        "scene": b"acd",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def _answer(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, n_words)) + "."


@pytest.fixture(scope="module")
def records():
    """40 pairs: tier 1 answers of 2-6 words, tier 3 of 20-40; every 5th pair lacks tier 3."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(40):
        answers = {1: [_answer(rng, int(rng.integers(2, 7))) for _ in range(2)]}
        if i % 5:
            answers[3] = [_answer(rng, int(rng.integers(20, 41)))]
        out.append(_record(i, answers))
    return out


def _config(**data):
    config = config_lib.base_config("smoke")
    config.data.name = "adiff"
    config.data.adiff_tiers = "1,3"
    config.data.punctuation_tokens = True
    config.data.max_caption_tokens = 48
    config.data.clip_seconds = 0.25  # longer than every clip: lengths identify records
    config.data.num_workers = 0
    config.train.batch_size = 8
    config.data.update(data)
    return config


def _vocab(stats) -> Vocabulary:
    return Vocabulary.build(
        stats.captions, punctuation=True, extra_tokens=[tier_token(1), tier_token(3)]
    )


def _answers_of(record, tier):
    return {
        c.decode()
        for c, t in zip(record["captions"], record["caption_tiers"], strict=True)
        if t == tier
    }


def test_entries_are_one_per_pair_and_tier_with_references(records):
    _, stats = pipeline.read_captions(records, (1, 3), punctuation=True)
    tiers = collections.Counter(stats.entries[:, 1].tolist())
    assert tiers == {1: 40, 3: 32}
    assert len(stats.by_tier[1]) == 80 and len(stats.by_tier[3]) == 32
    for (record, tier), tokens in zip(stats.entries, stats.entry_tokens, strict=True):
        longest = max(len(pipeline.words(a, True)) for a in _answers_of(records[record], tier))
        assert tokens == longest + 2
    _, only_one = pipeline.read_captions(records, (1,), punctuation=True)
    assert set(only_one.entries[:, 1].tolist()) == {1} and only_one.num_captions == 80


def _decode_rows(batch, vocab):
    """(tier, caption text) of every row, from its tokens."""
    tier_of = {vocab.index[tier_token(t)]: t for t in (1, 3)}
    return [(tier_of[int(row[0])], vocab.decode(row[1:])) for row in batch["tokens"]]


def _record_of(batch, row, records):
    n = batch["wav1_len"][row]
    return [i for i, r in enumerate(records) if len(r["audio1"]) == n][0]


def test_training_captions_start_with_their_tier_token(records):
    config = _config()
    _, stats = pipeline.read_captions(records, (1, 3), punctuation=True)
    vocab = _vocab(stats)
    iterator = iter(pipeline.train_dataset(records, vocab, config, stats=stats))
    seen_tiers = set()
    for _ in range(6):
        batch = next(iterator)
        assert batch["tokens"].shape == (8, 48)
        for row, (tier, text) in enumerate(_decode_rows(batch, vocab)):
            record = records[_record_of(batch, row, records)]
            assert text in {
                vocab.decode(vocab.encode(a, 48)[0][1:]) for a in _answers_of(record, tier)
            }
            seen_tiers.add(tier)
    assert seen_tiers == {1, 3}


def test_bucket_plan_covers_each_entry_once_per_epoch_and_never_truncates():
    rng = np.random.default_rng(1)
    tokens = np.concatenate([rng.integers(3, 12, 37), rng.integers(13, 40, 22), [48, 48, 48]])
    plan = pipeline.BucketPlan(tokens, (12, 24, 48), global_batch=8, seed=3)
    for epoch in range(3):
        batches = plan.epoch_batches(epoch)
        assert len(batches) == plan.batches_per_epoch == len(tokens) // 8
        used = np.concatenate([b for b, _ in batches])
        assert len(set(used.tolist())) == len(used)  # no entry twice in an epoch
        for entries, length in batches:
            assert (tokens[entries] <= length).all()  # every caption fits its batch
        # Only the largest bucket's leftovers (fewer than a batch) wait for another epoch.
        left = np.setdiff1d(np.arange(len(tokens)), used)
        assert len(left) < 8
        short = [length for entries, length in batches if (tokens[entries] <= 12).all()]
        assert short.count(12) >= 3  # short captions are not padded to 48
    orders = [np.concatenate([b for b, _ in plan.epoch_batches(e)]) for e in range(2)]
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch
    element = plan[plan.batches_per_epoch + 2]
    assert element[0] == 1 and np.array_equal(element[1], plan.epoch_batches(1)[2][0])


def test_bucket_plan_moves_small_buckets_up():
    tokens = np.array([4] * 3 + [20] * 6 + [40] * 8)  # bucket 12 holds less than a batch
    plan = pipeline.BucketPlan(tokens, (12, 24, 48), global_batch=8, seed=0)
    batches = plan.epoch_batches(0)
    used = np.concatenate([b for b, _ in batches])
    assert set(np.flatnonzero(tokens == 4)) <= set(used.tolist())
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.BucketPlan(tokens[:5], (12, 48), global_batch=8, seed=0)


def test_bucketed_batches_pad_to_their_bucket_split_processes_and_resume(records):
    config = _config(token_buckets="16,48")
    _, stats = pipeline.read_captions(records, (1, 3), punctuation=True)
    vocab = _vocab(stats)
    full = list(_take(pipeline.train_dataset(records, vocab, config, stats=stats), 8))
    lengths = {b["tokens"].shape[1] for b in full}
    assert lengths == {16, 48}
    for batch in full:
        ends = (batch["tokens"] == EOS).argmax(axis=1)
        assert (batch["tokens"] == EOS).any(axis=1).all()  # nothing truncated away
        if batch["tokens"].shape[1] == 16:
            assert {t for t, _ in _decode_rows(batch, vocab)} == {1}
        assert (ends < batch["tokens"].shape[1]).all()
    # Two processes: disjoint halves of the same global batches.
    halves = [
        list(
            _take(
                pipeline.train_dataset(
                    records, vocab, config, stats=stats, process_index=p, process_count=2
                ),
                8,
            )
        )
        for p in range(2)
    ]
    for b, h0, h1 in zip(full, *halves, strict=True):
        np.testing.assert_array_equal(np.concatenate([h0["tokens"], h1["tokens"]]), b["tokens"])
        np.testing.assert_array_equal(np.concatenate([h0["wav1"], h1["wav1"]]), b["wav1"])
    # Resume from a saved iterator state continues the exact sequence.
    iterator = iter(pipeline.train_dataset(records, vocab, config, stats=stats))
    _take(iterator, 3)
    state = iterator.get_state()
    resumed = iter(pipeline.train_dataset(records, vocab, config, stats=stats))
    resumed.set_state(state)
    for want, got in zip(full[3:], _take(resumed, 5), strict=True):
        for k in want:
            np.testing.assert_array_equal(want[k], got[k])


def _take(dataset_or_iterator, n):
    iterator = iter(dataset_or_iterator)
    return [next(iterator) for _ in range(n)]


def test_eval_split_has_one_entry_per_pair_and_tier(records):
    config = _config()
    _, stats = pipeline.read_captions(records, (1, 3), punctuation=True)
    vocab = _vocab(stats)
    split = pipeline.load_eval_split(records, 0, (1, 3))
    assert len(split.keys) == 72 and split.tiers == [1] * 40 + [3] * 32
    assert split.keys[0] == "pair0@tier1" and split.keys[40] == "pair1@tier3"
    for key, refs, record, tier in zip(
        split.keys, split.references, split.records, split.tiers, strict=True
    ):
        assert set(refs) == _answers_of(records[record], tier)
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
    _, stats = pipeline.read_captions(plain)
    assert stats.entries.tolist() == [[i, 0] for i in range(8)]
    split = pipeline.load_eval_split(plain)
    assert split.keys == [f"pair{i}" for i in range(8)] and split.tiers == [0] * 8
    assert all(len(r) == len(plain[i]["captions"]) for i, r in enumerate(split.references))
