"""Tests of the shared array_record split writer used by both tfds builders."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
import writer_workers  # tests/ is on sys.path; spawned workers import it the same way
from array_record.python.array_record_data_source import ArrayRecordDataSource

from adc_jax.data import caption_file, writer
from adc_jax.data import features as features_lib
from adc_jax.pretrain import clips


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


class _Builder:
    """What `writer.generate_splits` uses of a tfds builder: name, config, schema, templates."""

    def __init__(self, folder, features):
        self.folder, self.name, self.builder_config = folder, "toy", None
        self.info = types.SimpleNamespace(features=features)

    def _get_filename_template(self, split_name: str) -> tfds.core.ShardedFileTemplate:
        return _template(self.folder, split_name)


def _pair(i: int) -> dict:
    """Pair i of a toy split: pair 1 has no caption, pair 2 is tiered."""
    return {
        "key": f"pair_{i}",
        "audio1": np.full((100 + i,), i, np.int16),
        "audio2": np.zeros((50,), np.int16),
        "captions": [[], ["a dog barks"], ["a dog", "ein hund bellt, laut."]][i % 3],
        "scene": "rain",
        "caption_tiers": np.asarray([[], [], [1, 3]][i % 3], np.int32),
        "recipe": "{}",
        "edit_ops": ["add"] * (i % 2),
        "edit_classes": ["dog"] * (i % 2),
        "edit_magnitudes": np.zeros((i % 2,), np.float32),
    }


def test_pair_splits_get_a_caption_file_of_their_text_fields(tmp_path):
    """Record i of the caption file is the text of record i of the split; every split has one."""
    builder = _Builder(tmp_path, features_lib.features_dict())
    jobs = {
        "train": (writer.serialize_example, [_pair(i) for i in range(5)]),
        "eval": (writer.serialize_example, [_pair(i) for i in (2, 0)]),
    }
    writer.generate_splits(builder, jobs, num_workers=1)
    for split, (_, examples) in jobs.items():
        expected = [
            {
                "key": e["key"],
                "captions": e["captions"],
                "caption_tiers": e["caption_tiers"].tolist(),
                "scene": e["scene"],
                "edit_ops": e["edit_ops"],
                "edit_classes": e["edit_classes"],
            }
            for e in examples
        ]
        assert caption_file.read(tmp_path, split) == expected


def test_a_schema_without_captions_gets_no_caption_file(tmp_path):
    builder = _Builder(tmp_path, clips.clip_features())
    examples = [{"key": "c0", "audio": np.zeros((10,), np.int16), "label": "dog"}]
    writer.generate_splits(builder, {"train": (clips.serialize_clip, examples)}, num_workers=1)
    assert caption_file.read(tmp_path, "train") is None
    assert [p.name for p in tmp_path.iterdir()] == ["toy-train.array_record-00000-of-00001"]


def test_map_in_order_keeps_the_order_in_worker_processes():
    items = list(range(-300, 0))
    with writer.map_in_order(abs, items, num_workers=2) as results:
        assert list(results) == [abs(i) for i in items]
    assert writer.resolve_workers(None, 10) == 1  # small splits stay in-process
    assert writer.resolve_workers(3, 1000) == 3


def _run_with_deadline(body, seconds: float = 60.0):
    """body() in a daemon thread; fails the test if it takes longer than `seconds` (a hang)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = body()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"map_in_order did not return within {seconds} s: it hangs")
    return outcome, time.monotonic() - start


def _assert_no_workers_left(before: set) -> None:
    """No child process started since `before` still runs (each may be reaped by another thread
    of the executor, which multiprocessing sees only when that thread records its exit)."""
    for _ in range(100):
        alive = [p for p in multiprocessing.active_children() if p not in before]
        if not any(os.path.exists(f"/proc/{p.pid}") for p in alive):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker processes still running: {alive}")


def _consume(fn, items, chunksize=4):
    with writer.map_in_order(fn, items, num_workers=2, chunksize=chunksize) as results:
        return list(results)


def test_map_in_order_many_items_equal_the_serial_map():
    items = list(range(1003))  # not a multiple of the chunk size
    with writer.map_in_order(writer_workers.square, items, num_workers=2, chunksize=7) as results:
        got = list(results)
    assert got == [writer_workers.square(i) for i in items]
    with writer.map_in_order(writer_workers.square, items, num_workers=1) as results:
        assert list(results) == got


@pytest.mark.parametrize(
    "fn, status",
    [
        (writer_workers.exit_on_17, "exit code 3"),
        (writer_workers.kill_on_17, "killed by signal 9 (SIGKILL)"),
    ],
)
def test_a_dying_worker_raises_naming_the_item_instead_of_hanging(fn, status):
    items = list(range(64))
    outcome, _ = _run_with_deadline(lambda: _consume(fn, items))
    error = outcome.get("error")
    assert isinstance(error, writer.BuildWorkerDied), outcome
    assert isinstance(error, RuntimeError)
    message = str(error)
    assert f"item {writer_workers.FATAL_ITEM} of 64: {writer_workers.FATAL_ITEM}" in message
    assert status in message
    assert "out of memory" in message and "num_workers, 2 here" in message
    assert message.count("while making") == 1  # the survivors, terminated after it, are not named
    _assert_no_workers_left(set())


def test_long_item_reprs_are_shortened_in_the_message():
    items = [("x" * 5000, i) for i in range(3)]
    error = writer._worker_died_error([], [0, 0], items, 0, 4, 2)
    assert "x" * 100 in str(error) and "x" * 400 not in str(error)


def test_an_exception_in_fn_keeps_its_type_and_message():
    with pytest.raises(writer_workers.Unlucky, match="item 5 is unlucky"):
        _consume(writer_workers.raise_on_5, list(range(40)))


def test_leaving_the_loop_early_does_not_wait_for_queued_work():
    """Items from 4 on take 60 s each: a pool that waited for them would take minutes."""
    before = set(multiprocessing.active_children())

    def body():
        with writer.map_in_order(
            writer_workers.slow_after_3, list(range(200)), num_workers=2, chunksize=1
        ) as results:
            for value in results:
                if value == 2:
                    break
        return value

    outcome, elapsed = _run_with_deadline(body, seconds=50.0)
    assert outcome == {"value": 2}
    assert elapsed < 30.0
    _assert_no_workers_left(before)
