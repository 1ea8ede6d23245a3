"""Tests of the shared array_record split writer used by both tfds builders."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python.array_record_data_source import ArrayRecordDataSource

from adc_jax.data import features as features_lib
from adc_jax.data import writer


def _template(tmp_path, split: str = "train") -> tfds.core.ShardedFileTemplate:
    return tfds.core.ShardedFileTemplate(
        data_dir=tmp_path, dataset_name="toy", split=split, filetype_suffix="array_record"
    )


def _records(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [rng.bytes(int(rng.integers(1, 400))) + f"#{i}".encode() for i in range(n)]


def test_many_records_roll_over_into_shards_read_back_in_order(tmp_path):
    records = _records(1000)
    template = _template(tmp_path)
    info = writer.write_split(template, iter(records), num_records=1000, shard_bytes=20_000)
    assert info.name == "train" and sum(info.shard_lengths) == 1000
    assert info.num_bytes == sum(len(r) for r in records)
    assert len(info.shard_lengths) == pytest.approx(info.num_bytes / 20_000, abs=1)
    paths = template.sharded_filepaths(len(info.shard_lengths))
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths)  # no temporary files
    for path, length in zip(paths, info.shard_lengths, strict=True):
        assert len(ArrayRecordDataSource([os.fspath(path)])) == length
    source = ArrayRecordDataSource([os.fspath(p) for p in paths])
    assert [source[i] for i in range(1000)] == records


def test_one_shard_by_default_and_an_unknown_count(tmp_path):
    info = writer.write_split(_template(tmp_path), (r for r in _records(10)))
    assert info.shard_lengths == [10]


def test_empty_split_and_wrong_count_fail(tmp_path):
    with pytest.raises(ValueError, match="No examples"):
        writer.write_split(_template(tmp_path, "eval"), [])
    with pytest.raises(RuntimeError, match="Wrote 10 of 11"):
        writer.write_split(_template(tmp_path), _records(10), num_records=11)


def test_waveforms_read_back_identical_as_int16(tmp_path):
    """Encoding.BYTES round trip: every int16 value, an empty clip, and the other fields."""
    features = features_lib.features_dict()
    full_range = np.arange(-32768, 32768, dtype=np.int16)
    examples = [
        {
            "key": f"k{i}",
            "audio1": full_range[i:],
            "audio2": np.zeros((0,), np.int16) if i == 1 else full_range[::-1][: 1000 + i],
            "captions": ["add a dog", "a dog barks"][: 2 - i],
            "scene": "rain",
            "caption_tiers": np.zeros((0,), np.int32),
            "recipe": "",
            "edit_ops": ["add"],
            "edit_classes": ["dog"],
            "edit_magnitudes": np.asarray([0.5], np.float32),
        }
        for i in range(2)
    ]
    template = _template(tmp_path)
    info = writer.write_split(template, map(writer.serialize_example, examples), num_records=2)
    source = ArrayRecordDataSource(
        [os.fspath(p) for p in template.sharded_filepaths(len(info.shard_lengths))]
    )
    for i, expected in enumerate(examples):
        got = features.deserialize_example_np(source[i])
        for name in ("audio1", "audio2"):
            assert got[name].dtype == np.int16
            np.testing.assert_array_equal(got[name], expected[name])
        assert [c.decode() for c in got["captions"]] == expected["captions"]
        assert got["key"].decode() == expected["key"]
        np.testing.assert_array_equal(got["edit_magnitudes"], expected["edit_magnitudes"])


def test_map_in_order_keeps_the_order_in_worker_processes():
    items = list(range(-300, 0))
    with writer.map_in_order(abs, items, num_workers=2) as results:
        assert list(results) == [abs(i) for i in items]
    assert writer.resolve_workers(None, 10) == 1  # small splits stay in-process
    assert writer.resolve_workers(3, 1000) == 3
