"""Tests of the recordings behind the clip_pairs dataset (adc_jax/data/clip_sources.py): the
three layouts are told apart, labels match whatever their case and separators, and the splits
never share a recording. Recordings are generated in each layout by tests/clip_fixtures.py; the
errors on bad metadata and missing files are checked through the build, in
tests/test_data_clip_pairs.py."""

from __future__ import annotations

import collections
import os
import shutil

import pytest
from clip_fixtures import FOLDER_CLASSES, write_roots

from adc_jax.data import clip_sources as CS
from adc_jax.data.errors import MissingData


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    return write_roots(str(tmp_path_factory.mktemp("recordings")))


def test_detects_each_layout_and_names_the_accepted_ones(roots, tmp_path):
    assert CS.detect_layout(roots["esc"]) == "esc50"
    assert CS.detect_layout(roots["fsd"]) == "fsd50k"
    assert CS.detect_layout(roots["folders"]) == "folders"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match="ESC-50.*FSD50K.*sub-folder") as e:
        CS.detect_layout(str(tmp_path))
    assert str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CS.detect_layout(str(tmp_path / "missing"))


def test_labels_match_whatever_the_case_and_separators(roots):
    assert CS.normalize_label("Car horn") == CS.normalize_label("car_horn") == "car_horn"
    assert CS.normalize_label(" CAR-Horn ") == "car_horn"
    index = CS.index_sources(roots["esc"])
    chosen = CS.select_classes(index, ["Church Bells", "DOG"], role="foreground", min_per_split=2)
    assert set(chosen) == {"Church Bells", "DOG"}
    assert all(r.labels == ("church_bells",) for rs in chosen["Church Bells"].values() for r in rs)


def test_splits_share_no_recording(roots, tmp_path):
    for name in ("esc", "fsd", "folders"):
        index = CS.index_sources(roots[name])
        splits = collections.defaultdict(set)
        for r in index.recordings:
            splits[r.path].add(r.split)
        assert all(len(s) == 1 for s in splits.values()), name
        assert {r.split for r in index.recordings} == set(CS.SPLITS)
    esc = CS.index_sources(roots["esc"])
    for r in esc.recordings:  # ESC-50 file names start with the fold
        fold = int(os.path.basename(r.path).split("-")[0])
        assert r.split == {1: "train", 2: "train", 3: "train", 4: "validation", 5: "eval"}[fold]
    fsd = CS.index_sources(roots["fsd"])
    assert all(
        r.path.startswith("FSD50K.eval_audio") == (r.split == "eval") for r in fsd.recordings
    )
    assert collections.Counter(r.split for r in fsd.recordings) == {
        "train": 4,
        "validation": 2,
        "eval": 2,
    }
    # Folder layout: 2 of 8 files in validation and 2 in eval, by a hash of the path only.
    folders = CS.index_sources(roots["folders"])
    for cls in FOLDER_CLASSES:
        counts = collections.Counter(r.split for r in folders.recordings if r.labels == (cls,))
        assert counts == {"train": 4, "validation": 2, "eval": 2}
    copy = tmp_path / "copy"
    for r in reversed(folders.recordings):  # the same files, created in the other order
        os.makedirs(copy / os.path.dirname(r.path), exist_ok=True)
        shutil.copy(os.path.join(roots["folders"], r.path), copy / r.path)
    again = CS.index_sources(str(copy))
    assert {r.path: r.split for r in again.recordings} == {
        r.path: r.split for r in folders.recordings
    }


def _partial(roots, name: str, tmp_path, removed: list[str]) -> CS.SourceIndex:
    """A copy of a layout with `removed` (relative paths) deleted: a partial download."""
    root = str(tmp_path / name)
    shutil.copytree(roots[name], root)
    for rel in removed:
        os.remove(os.path.join(root, rel))
    return CS.index_sources(root)


def test_a_partial_esc50_download_is_used_when_every_split_keeps_every_class(
    roots, tmp_path, caplog
):
    # Fold 1 (train) loses one dog and one church_bells clip; every split keeps both classes.
    index = _partial(roots, "esc", tmp_path, ["audio/1-100010-A-0.wav", "audio/1-101011-A-1.wav"])
    with caplog.at_level("WARNING"):
        chosen = CS.select_classes(
            index, ["dog", "church_bells"], role="foreground", min_per_split=2
        )
    assert [len(chosen["dog"][s]) for s in CS.SPLITS] == [5, 2, 2]
    assert all(
        os.path.isfile(os.path.join(index.root, r.path))
        for splits in chosen.values()
        for rs in splits.values()
        for r in rs
    )
    message = caplog.text
    assert "2 of the 20 foreground recordings its metadata lists for the requested classes" in (
        message
    )
    assert "train 2 of 12, validation 0 of 4, eval 0 of 4 per split" in message
    assert "the build uses the 18 that are there" in message


def test_a_partial_download_that_loses_a_class_in_a_split_names_what_is_absent(roots, tmp_path):
    # ESC-50's fold 4 (validation) holds 2 dog clips; one is missing, and a split needs 2.
    index = _partial(roots, "esc", tmp_path, ["audio/4-100040-A-0.wav", "audio/1-100010-A-0.wav"])
    with pytest.raises(MissingData) as e:
        CS.select_classes(index, ["dog", "church_bells"], role="foreground", min_per_split=2)
    message = str(e.value)
    assert "2 of the 20 foreground recordings" in message
    assert "train 1 of 12, validation 1 of 4, eval 0 of 4 per split" in message
    assert "Too few are left of 'dog' in validation (1 of 2 present)" in message
    assert "esc50.csv line" in message and "Download the missing files" in message
    # FSD50K: the eval clip of Rain is missing; backgrounds need 1 per split.
    fsd = CS.index_sources(roots["fsd"])
    rain_eval = next(r.path for r in fsd.recordings if "Rain" in r.labels and r.split == "eval")
    index = _partial(roots, "fsd", tmp_path, [rain_eval])
    with pytest.raises(MissingData, match=r"'Rain' in eval \(0 of 1 present\)"):
        CS.select_classes(index, ["Rain", "Car_passing_by"], role="background", min_per_split=1)
