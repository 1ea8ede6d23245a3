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
