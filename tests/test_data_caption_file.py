"""Tests of adc_jax.data.caption_file and `vocab.split_captions`: a build's caption files hold
every record's text fields in order, the captions and evaluation entries read from them equal those
read from the records, and a build without them (made before they existed) is read from its
records, untouched."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest

from adc_jax.data import caption_file, clip_store
from adc_jax.data import vocab as vocab_lib
from adc_jax.data.errors import BadData
from adc_jax.data.eval_split import load_eval_split
from adc_jax.data.features import as_text, caption_tiers
from adc_jax.data.synthetic import builder as S

SPEC = S.SyntheticSpec(num_train=6, num_validation=2, num_eval=3, clip_seconds=0.5, seed=0)


def text_of(record) -> dict:
    """The caption file's fields of a record decoded by tfds (bytes and arrays -> str and lists)."""
    return {
        "key": as_text(record["key"]),
        "captions": [as_text(c) for c in record["captions"]],
        "caption_tiers": np.asarray(record["caption_tiers"]).tolist(),
        "scene": as_text(record["scene"]),
        "edit_ops": [as_text(o) for o in record["edit_ops"]],
        "edit_classes": [as_text(c) for c in record["edit_classes"]],
    }


def assert_same_stats(a: vocab_lib.CaptionStats, b: vocab_lib.CaptionStats) -> None:
    for field in dataclasses.fields(vocab_lib.CaptionStats):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, field.name
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


def assert_file_equals_records(builder, tiers=(0,)) -> None:
    """Each split's caption file holds its records' text; captions and eval entries read from
    the file equal those read from the records."""
    for split in clip_store.pair_splits(builder):
        records = clip_store.pair_source(builder, split)
        text = vocab_lib.split_captions(builder, split)
        assert isinstance(text, list)  # from the file, not the records
        assert text == [text_of(r) for r in records]
        from_file, from_records = (vocab_lib.read_captions(s, tiers, True) for s in (text, records))
        assert from_file[0] == from_records[0]
        assert_same_stats(from_file[1], from_records[1])
        a, b = load_eval_split(records, 0, tiers, text), load_eval_split(records, 0, tiers)
        assert a.source is b.source is records  # audio still comes from the records
        for field in ("keys", "references", "edits", "scenes", "records", "tiers"):
            assert getattr(a, field) == getattr(b, field), field


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return S.build_synthetic(str(tmp_path_factory.mktemp("tfds")), SPEC)


def test_each_split_has_a_caption_file_equal_to_its_records(build):
    assert_file_equals_records(build)
    assert vocab_lib.read_captions(vocab_lib.split_captions(build, "train"))[1].num_captions > 6


def _copy(build, root) -> tuple[str, str]:
    """A copy of the build's data_dir at `root`: (data_dir, the copied dataset folder)."""
    data_dir = build.data_dir.split("/synthetic_adc/")[0]
    shutil.copytree(data_dir, root)
    return str(root), build.data_dir.replace(data_dir, str(root))


def test_a_build_without_caption_files_is_read_from_its_records_and_left_as_it_is(
    build, tmp_path, caplog
):
    data_dir, folder = _copy(build, tmp_path / "old")
    for split in build.info.splits:
        caption_file.file_path(folder, split).unlink()
    files = sorted(p.name for p in (tmp_path / "old").rglob("*"))
    old = S.build_synthetic(data_dir, SPEC)
    with caplog.at_level(logging.INFO):
        for split in ("train", "eval", "train"):
            text = vocab_lib.split_captions(old, split)
            assert not isinstance(text, list) and len(text) == SPEC.split_sizes[split]
            assert [text_of(r) for r in text] == caption_file.read(build.data_dir, split)
    assert caplog.text.count("built before datasets had caption files") == 1
    assert sorted(p.name for p in (tmp_path / "old").rglob("*")) == files  # nothing written


def test_a_caption_file_of_another_length_is_refused(build, tmp_path):
    data_dir, folder = _copy(build, tmp_path / "changed")
    caption_file.write(folder, "eval", caption_file.read(folder, "eval")[:2])
    with pytest.raises(BadData, match="holds 2 entries, but the eval split has 3 records"):
        vocab_lib.split_captions(S.build_synthetic(data_dir, SPEC), "eval")


def test_tiers_and_texts_round_trip(tmp_path):
    records = [
        {
            "key": "ä/1",
            "captions": ["a dog — barks", "ein hund"],
            "caption_tiers": [1, 3],
            "scene": "acd",
            "edit_ops": [],
            "edit_classes": [],
            "recipe": "not kept",
        }
    ]
    caption_file.write(tmp_path, "train", records)
    (back,) = caption_file.read(tmp_path, "train")
    assert back == {f: records[0][f] for f in caption_file.FIELDS}
    assert caption_tiers(back).tolist() == [1, 3]
    assert caption_file.read(tmp_path, "eval") is None
