"""Tests of adc_jax.data.pipeline, the grain streams, on the smoke-size synthetic set and on
in-memory records.

What is checked: batches are exactly the records (padded/cropped, with their lengths) and their
captions' tokens; a resumed iterator continues the exact data order; every epoch is a new
permutation with new reference captions; processes read disjoint rows that cover the split;
evaluation covers every pair once; and each kind of bad input has its defined behaviour (crop,
pad, truncate, <unk>, counted and logged). Tiered records (ADIFF): a training caption starts with
its tier's token and is one of that tier's references; length-bucketed batches pad every caption
to its bucket (never truncating one that fits), cover every entry once per epoch but the largest
bucket's remainder, split into disjoint process rows, and resume exactly.
"""

from __future__ import annotations

import hashlib
import logging as std_logging

import numpy as np
import pytest
from absl import flags
from tiered_records import answers_of, tiered_config, tiered_records, tiered_vocab

from adc_jax import config as config_lib
from adc_jax.data import pipeline
from adc_jax.data import vocab as vocab_lib
from adc_jax.data.eval_split import load_eval_split
from adc_jax.data.features import as_text
from adc_jax.data.synthetic.builder import SyntheticSpec, build_synthetic
from adc_jax.data.tokenizer import BOS, EOS, PAD, UNK, Vocabulary, tier_token
from adc_jax.data.waveform import fit_length

NUM_TRAIN, BATCH = 32, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The smoke-size synthetic set: (builder, train source, vocabulary, record index by audio)."""
    builder = build_synthetic(
        str(tmp_path_factory.mktemp("tfds")),
        SyntheticSpec(num_train=NUM_TRAIN, num_validation=8, num_eval=8, clip_seconds=1.0, seed=0),
    )
    source = builder.as_data_source("train")
    _, stats = vocab_lib.read_captions(source)
    vocab = Vocabulary.build(stats.captions)
    by_audio = {_digest(source[i]["audio1"]): i for i in range(len(source))}
    assert len(by_audio) == NUM_TRAIN
    return builder, source, vocab, by_audio


def _digest(wav: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(wav).tobytes()).hexdigest()


def _config(**data) -> config_lib.ml_collections.ConfigDict:
    config = config_lib.base_config("smoke")
    config.train.batch_size = BATCH
    config.data.num_workers = 0
    config.data.update(data)
    return config


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    """The next n batches of an iterator (or of a new iterator of a dataset)."""
    iterator = iter(iterator)
    return [next(iterator) for _ in range(n)]


def _rows(batch: dict[str, np.ndarray], by_audio: dict[str, int]) -> list[int]:
    """The train record index of every row of a batch (found by its waveform)."""
    return [by_audio[_digest(w)] for w in batch["wav1"]]


def _tokens(vocab: Vocabulary, caption: str, max_tokens: int) -> np.ndarray:
    ids, _ = vocab.encode(caption, max_tokens)
    return np.asarray(ids + [PAD] * (max_tokens - len(ids)), np.int32)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
            assert x[k].tobytes() == y[k].tobytes(), k


# ---------------------------------------------------------------------------------- training


def test_batches_are_the_records_and_one_of_their_captions(data):
    _, source, vocab, by_audio = data
    config = _config()
    n, max_tokens = pipeline.clip_samples(config), config.data.max_caption_tokens
    batch = next(iter(pipeline.train_dataset(source, vocab, config)))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "wav1": ((BATCH, n), np.int16),
        "wav2": ((BATCH, n), np.int16),
        "wav1_len": ((BATCH,), np.int32),
        "wav2_len": ((BATCH,), np.int32),
        "tokens": ((BATCH, max_tokens), np.int32),
    }
    for row, i in enumerate(_rows(batch, by_audio)):
        record = source[i]
        np.testing.assert_array_equal(batch["wav1"][row], record["audio1"])
        np.testing.assert_array_equal(batch["wav2"][row], record["audio2"])
        assert batch["wav1_len"][row] == batch["wav2_len"][row] == n
        options = [_tokens(vocab, as_text(c), max_tokens) for c in record["captions"]]
        assert any(np.array_equal(batch["tokens"][row], t) for t in options)


def test_fast_record_path_equals_tfds_decoding(data):
    """Training parses only its fields from the serialised records; same result as tfds."""
    _, source, vocab, _ = data
    raw = pipeline.raw_records(source)
    assert raw is not None and pipeline.raw_records(list(source)) is None
    decoded = [source[i] for i in range(len(source))]
    for i, record in enumerate(decoded):
        fields = pipeline.parse_train_fields(raw[i])
        for name in ("audio1", "audio2"):
            assert fields[name].dtype == np.int16
            np.testing.assert_array_equal(fields[name], record[name])
        assert fields["captions"] == list(record["captions"]) and fields["key"] == record["key"]
    assert vocab_lib.read_captions(source)[0] == vocab_lib.read_captions(decoded)[0]
    config = _config()
    _assert_same(
        _take(iter(pipeline.train_dataset(source, vocab, config)), 5),
        _take(iter(pipeline.train_dataset(decoded, vocab, config)), 5),
    )


def test_resume_continues_the_exact_data_order(data):
    _, source, vocab, _ = data
    config = _config()
    iterator = iter(pipeline.train_dataset(source, vocab, config))
    _take(iterator, 3)
    state = iterator.get_state()
    expected = _take(iterator, 5)  # crosses the epoch boundary (4 batches per epoch)
    resumed = iter(pipeline.train_dataset(source, vocab, config))
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), expected)
    # The order is a function of config.seed alone.
    _assert_same(_take(iter(pipeline.train_dataset(source, vocab, config)), 8)[3:], expected)


def test_every_epoch_is_a_new_permutation_with_new_captions(data):
    _, source, vocab, by_audio = data
    config = _config()
    batches = _take(iter(pipeline.train_dataset(source, vocab, config)), 3 * NUM_TRAIN // BATCH)
    per_epoch = NUM_TRAIN // BATCH
    epochs = [batches[e * per_epoch : (e + 1) * per_epoch] for e in range(3)]
    orders, tokens = [], []
    for epoch in epochs:
        order = [i for b in epoch for i in _rows(b, by_audio)]
        assert sorted(order) == list(range(NUM_TRAIN))  # each pair once per epoch
        orders.append(order)
        by_pair = {
            i: t for b in epoch for i, t in zip(_rows(b, by_audio), b["tokens"], strict=True)
        }
        tokens.append(by_pair)
    assert orders[0] != orders[1] != orders[2] != orders[0]
    for a, b in ((0, 1), (1, 2)):
        changed = sum(not np.array_equal(tokens[a][i], tokens[b][i]) for i in range(NUM_TRAIN))
        assert changed >= NUM_TRAIN // 2  # 5 references: a new draw differs 80% of the time
    other_seed = _config()
    other_seed.seed = 1
    first = next(iter(pipeline.train_dataset(source, vocab, other_seed)))
    assert _rows(first, by_audio) != orders[0][:BATCH]


def test_processes_read_disjoint_rows_that_cover_the_split(data):
    _, source, vocab, by_audio = data
    config = _config()
    seen = []
    for p in range(2):
        ds = pipeline.train_dataset(source, vocab, config, process_index=p, process_count=2)
        batches = _take(iter(ds), NUM_TRAIN // BATCH)  # one epoch of this process's 16 rows
        assert all(b["wav1"].shape[0] == BATCH // 2 for b in batches)
        rows = [i for b in batches for i in _rows(b, by_audio)]
        assert sorted(rows) == list(range(p, NUM_TRAIN, 2))
        seen.append(set(rows))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_TRAIN))
    with pytest.raises(ValueError, match="divisible"):
        pipeline.train_dataset(source, vocab, config, process_count=3)


def test_worker_processes_give_the_same_batches(data):
    _, source, vocab, _ = data
    flags.FLAGS.mark_as_parsed()  # grain reads an absl flag in its workers
    expected = _take(iter(pipeline.train_dataset(source, vocab, _config())), 5)
    iterator = iter(pipeline.train_dataset(source, vocab, _config(num_workers=2)))
    got = _take(iterator, 3)
    state = iterator.get_state()
    got += _take(iterator, 2)
    _assert_same(got, expected)
    resumed = iter(pipeline.train_dataset(source, vocab, _config(num_workers=2)))
    resumed.set_state(state)
    _assert_same(_take(resumed, 2), expected[3:])


# ---------------------------------------------------------------------------------- bad input


def _record(key: str, n1: int, n2: int, captions: list[str]) -> dict:
    rng = np.random.default_rng(n1 * 7919 + n2)
    return {
        "key": key.encode(),
        "audio1": rng.integers(-3000, 3000, n1).astype(np.int16),
        "audio2": rng.integers(-3000, 3000, n2).astype(np.int16),
        "captions": [c.encode() for c in captions],
        "scene": b"rain",
        "edit_ops": [],
        "edit_classes": [],
        "edit_magnitudes": np.zeros((0,), np.float32),
    }


def _record_of_row(batch: dict, row: int, records: list[dict], n: int) -> int:
    """The index of the in-memory record whose (fitted) clip 1 is the batch row's."""
    matches = [
        j
        for j, r in enumerate(records)
        if np.array_equal(batch["wav1"][row], fit_length(r["audio1"], n)[0])
    ]
    assert len(matches) == 1
    return matches[0]


def test_clips_are_cropped_or_zero_padded_with_their_lengths():
    config = _config(clip_seconds=0.25)
    n = pipeline.clip_samples(config)  # 4000
    lengths = [(n, n), (n + 1234, 10), (1, n - 1), (3 * n, 2 * n)]
    records = [_record(f"k{i}", a, b, ["add a dog"]) for i, (a, b) in enumerate(lengths)]
    config.train.batch_size = len(records)
    batch = next(iter(pipeline.train_dataset(records, Vocabulary.build(["add a dog"]), config)))
    split = load_eval_split(records)
    evaluated = next(pipeline.eval_batches(split, config, batch_size=len(records)))
    for got, order in (
        (batch, [_record_of_row(batch, row, records, n) for row in range(len(records))]),
        (evaluated, list(range(len(records)))),
    ):
        assert sorted(order) == list(range(len(records)))
        for row, i in enumerate(order):
            for k in (1, 2):
                valid = min(lengths[i][k - 1], n)
                assert got[f"wav{k}_len"][row] == valid
                audio = records[i][f"audio{k}"]
                np.testing.assert_array_equal(got[f"wav{k}"][row, :valid], audio[:valid])
                assert not got[f"wav{k}"][row, valid:].any()  # zero padding


def test_eval_batches_swap_or_repeat_the_first_clip_for_the_diagnostics():
    config = _config(clip_seconds=0.25)
    n = pipeline.clip_samples(config)
    records = [_record(f"k{i}", n - 10 * i, n - 7 * i, ["add a dog"]) for i in range(3)]
    split = load_eval_split(records)
    batch = {
        c: next(pipeline.eval_batches(split, config, batch_size=3, clips=c))
        for c in pipeline.EVAL_CLIPS
    }
    stored, swapped, identical = batch["stored"], batch["swapped"], batch["identical"]
    for a, b in (("wav1", "wav2"), ("wav1_len", "wav2_len"), ("wav2", "wav1")):
        np.testing.assert_array_equal(swapped[a], stored[b])
    for k in ("wav1", "wav2"):
        np.testing.assert_array_equal(identical[k], stored["wav1"])
    np.testing.assert_array_equal(identical["wav2_len"], stored["wav1_len"])
    with pytest.raises(ValueError, match="clips="):
        next(pipeline.eval_batches(split, config, batch_size=3, clips="mirrored"))


def test_long_captions_keep_eos_and_unknown_words_become_unk():
    config = _config(max_caption_tokens=6, clip_seconds=0.01)
    n = pipeline.clip_samples(config)
    vocab = Vocabulary.build(["make the dog louder"])
    long = "make the dog louder and the zebra quieter"  # 8 words, 4 fit
    # Characters outside [a-z0-9'] split words ("d", "g": <unk>); 5 words: "louder" is cut.
    odd = "Make the Dóg  louder!!"
    records = [_record("long", 160, 170, [long]), _record("odd", 161, 171, [odd])]
    config.train.batch_size = 2
    batch = next(iter(pipeline.train_dataset(records, vocab, config)))
    ix = vocab.index
    expected = [
        [BOS, ix["make"], ix["the"], ix["dog"], ix["louder"], EOS],
        [BOS, ix["make"], ix["the"], UNK, UNK, EOS],
    ]
    for row in range(2):
        i = _record_of_row(batch, row, records, n)
        np.testing.assert_array_equal(batch["tokens"][row], expected[i])
    stats = vocab_lib.token_stats(vocab, [long, odd, "make the dog louder"], 6)
    assert (stats.truncated, stats.with_unknown, stats.unknown_words) == (2, 2, 5)


def test_pairs_without_captions_are_counted_logged_and_kept(caplog):
    records = [_record("a", 100, 100, ["add a dog"]), _record("b", 100, 100, [])]
    with caplog.at_level(std_logging.INFO):
        per_pair, stats = vocab_lib.read_captions(records)
    assert per_pair == [["add a dog"], []]
    assert (stats.num_pairs, stats.num_captions, stats.pairs_without_captions) == (2, 1, 1)
    assert stats.keys_without_captions == ["b"]
    assert "1 pair(s) have no reference caption" in caplog.text and ": b." in caplog.text
    config = _config(clip_seconds=0.01)
    config.train.batch_size = 2
    vocab = Vocabulary.build(["add a dog"])
    batch = next(iter(pipeline.train_dataset(records, vocab, config)))
    assert sorted(batch["tokens"][:, :2].tolist()) == [[BOS, EOS], [BOS, vocab.index["add"]]]


# ---------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("batch_size,process_count", [(3, 1), (8, 1), (4, 2)])
def test_eval_batches_cover_every_pair_once(data, batch_size, process_count):
    builder, _, _, _ = data
    source = builder.as_data_source("validation")
    split = load_eval_split(source)
    config = _config()
    valid_rows = []
    for p in range(process_count):
        for batch in pipeline.eval_batches(
            split, config, batch_size=batch_size, process_index=p, process_count=process_count
        ):
            assert batch["wav1"].shape == (batch_size // process_count, 16000)
            for row, (i, ok) in enumerate(zip(batch["index"], batch["valid"], strict=True)):
                np.testing.assert_array_equal(batch["wav2"][row], source[int(i)]["audio2"])
                if ok:
                    valid_rows.append(int(i))
                else:
                    assert i == len(source) - 1  # padding repeats the last pair
    assert sorted(valid_rows) == list(range(len(source)))
    assert split.keys == [f"validation_{i:06d}" for i in range(len(source))]
    assert all(len(refs) == 5 for refs in split.references)


# ---------------------------------------------------------------------------------- tiers


@pytest.fixture(scope="module")
def records():
    return tiered_records()


def _decode_rows(batch, vocab):
    """(tier, caption text) of every row, from its tokens."""
    tier_of = {vocab.index[tier_token(t)]: t for t in (1, 3)}
    return [(tier_of[int(row[0])], vocab.decode(row[1:])) for row in batch["tokens"]]


def _record_of(batch, row, records):
    n = batch["wav1_len"][row]
    return [i for i, r in enumerate(records) if len(r["audio1"]) == n][0]


def test_training_captions_start_with_their_tier_token(records):
    config = tiered_config()
    _, stats = vocab_lib.read_captions(records, (1, 3), punctuation=True)
    vocab = tiered_vocab(stats)
    iterator = iter(pipeline.train_dataset(records, vocab, config, stats=stats))
    seen_tiers = set()
    for _ in range(6):
        batch = next(iterator)
        assert batch["tokens"].shape == (8, 48)
        for row, (tier, text) in enumerate(_decode_rows(batch, vocab)):
            record = records[_record_of(batch, row, records)]
            assert text in {
                vocab.decode(vocab.encode(a, 48)[0][1:]) for a in answers_of(record, tier)
            }
            seen_tiers.add(tier)
    assert seen_tiers == {1, 3}


# ---------------------------------------------------------------------------------- buckets


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
    config = tiered_config(token_buckets="16,48")
    _, stats = vocab_lib.read_captions(records, (1, 3), punctuation=True)
    vocab = tiered_vocab(stats)
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
