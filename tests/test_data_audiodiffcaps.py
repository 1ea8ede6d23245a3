"""Tests of the AudioDiffCaps tfds builder on a tiny fixture written in the official format.

No AudioDiffCaps file ships with adc_jax (evaluation-only licence); the fixture mimics the layout:
CSV_DIR/adc_{rain,traffic}/{dev,eval}/adc_*_{dev,eval}.csv and 44.1 kHz WAVs named by s1_fn/s2_fn.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from adc_jax.data import audiodiffcaps as adc
from adc_jax.data import clip_store, features, writer
from adc_jax.data.audio_io import AudioError, load_audio

HEADER = "key,s1_fn,s2_fn,caption_1,caption_2,caption_3,caption_4,caption_5"
FULL = ["A dog barks", "a dog starts barking", "a dog is added", "barking begins", "a dog"]
# (scene, subset) -> rows of (key, captions as five CSV fields). Key "a01" is in both scenes.
ROWS = {
    ("rain", "dev"): [
        ("a01", FULL),
        ("a02", ["  The Rain gets LOUDER ", "rain becomes louder", "", "", ""]),  # trailing empties
        ("a03", FULL),
        ("a04", ["", "", "", "", ""]),  # no caption at all: skipped
        ("a05", FULL),
        ("a06", FULL),
    ],
    ("traffic", "dev"): [("a01", FULL), ("t02", FULL), ("t03", FULL), ("t04", FULL)],
    ("rain", "eval"): [("e01", FULL), ("e02", FULL)],
    ("traffic", "eval"): [("e03", FULL)],
}
STEREO = "rain_dev_a01_s1.wav"  # the one stereo file
IN_SUBFOLDER = "traffic_dev_t02_s2.wav"  # stored in AUDIO_DIR/adc_traffic/


def _write_fixture(root: str) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    csv_dir, audio_dir = os.path.join(root, "csv"), os.path.join(root, "audio")
    for (scene, subset), rows in ROWS.items():
        lines = [HEADER]
        for key, caps in rows:
            names = [f"{scene}_{subset}_{key}_s{i}.wav" for i in (1, 2)]
            for name in names:
                channels = 2 if name == STEREO else 1
                folder = os.path.join(audio_dir, f"adc_{scene}" if name == IN_SUBFOLDER else "")
                os.makedirs(folder, exist_ok=True)
                x = (rng.standard_normal((22050, channels)) * 3000).astype(np.int16)  # 0.5 s
                sf.write(os.path.join(folder, name), x, 44100, subtype="PCM_16")
            lines.append(",".join([key, *names, *caps]))
        path = adc.csv_path(csv_dir, scene, subset)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    return csv_dir, audio_dir


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("adc_fixture"))
    csv_dir, audio_dir = _write_fixture(root)
    return root, csv_dir, audio_dir


@pytest.fixture(scope="module")
def built(fixture_dirs):
    root, csv_dir, audio_dir = fixture_dirs
    builder = adc.build_audio_diff_caps(
        os.path.join(root, "data"), audio_dir=audio_dir, csv_dir=csv_dir, validation_fraction=0.25
    )
    examples = {
        split: {features.as_text(e["key"]): e for e in clip_store.pair_source(builder, split)}
        for split in ("train", "validation", "eval")
    }
    return builder, examples


def test_splits_keys_and_sizes(built):
    builder, ex = built
    dev_keys = {"rain_a01", "a02", "a03", "a05", "a06", "traffic_a01", "t02", "t03", "t04"}
    # a04 has no caption and is skipped; a01 occurs in both scenes and is prefixed.
    assert set(ex["train"]) | set(ex["validation"]) == dev_keys
    assert not set(ex["train"]) & set(ex["validation"])
    assert len(ex["validation"]) == round(0.25 * len(dev_keys))
    assert set(ex["eval"]) == {"e01", "e02", "e03"}
    assert builder.name == "audio_diff_caps"
    assert builder.info.features.keys() == clip_store.referenced_features_dict().keys()


def test_validation_split_is_a_deterministic_function_of_the_keys(built):
    _, ex = built
    keys = list(ex["train"]) + list(ex["validation"])
    assert adc.validation_keys(keys, 0.25) == set(ex["validation"])
    assert adc.validation_keys(sorted(keys, reverse=True), 0.25) == set(ex["validation"])
    assert adc.validation_keys(keys, 0.0) == set()
    assert len(adc.validation_keys(keys, 0.01)) == 1  # at least one pair held out
    assert len(adc.validation_keys(keys, 0.99)) == len(keys) - 1  # never all of them


def test_captions_are_cleaned_and_empty_fields_dropped(built):
    _, ex = built
    a02 = ex["train"].get("a02") or ex["validation"]["a02"]
    assert [features.as_text(c) for c in a02["captions"]] == [
        "the rain gets louder",
        "rain becomes louder",
    ]
    e01 = ex["eval"]["e01"]
    assert [features.as_text(c) for c in e01["captions"]] == [c.lower() for c in FULL]


def test_audio_is_16k_mono_int16_and_scene_is_set(built, fixture_dirs):
    _, csv_dir, audio_dir = fixture_dirs
    _, ex = built
    rain_a01 = {**ex["train"], **ex["validation"]}["rain_a01"]
    assert rain_a01["audio1"].dtype == np.int16 and rain_a01["audio1"].shape == (8000,)
    assert features.as_text(rain_a01["scene"]) == "rain"
    expected = features.to_int16(load_audio(os.path.join(audio_dir, STEREO), 16000))
    np.testing.assert_array_equal(rain_a01["audio1"], expected)  # the stereo file, mixed down
    t02 = {**ex["train"], **ex["validation"]}["t02"]
    assert features.as_text(t02["scene"]) == "traffic"
    assert t02["audio2"].shape == (8000,)  # found in AUDIO_DIR/adc_traffic/
    for e in ex["eval"].values():
        assert len(e["edit_ops"]) == 0 and e["edit_magnitudes"].shape == (0,)


def test_splits_are_written_by_the_shared_writer(built, fixture_dirs, tmp_path, monkeypatch):
    """No tfds SplitBuilder (which needs TensorFlow past 1 GB): the shared writer, many shards."""
    _, csv_dir, audio_dir = fixture_dirs
    _, expected = built
    calls = []
    real = writer.write_split

    def spy(template, records, **kwargs):
        calls.append(template.split)
        return real(template, records, **{**kwargs, "shard_bytes": 50_000})  # ~2 pairs a shard

    def no_tfds_writer(*args, **kwargs):
        raise AssertionError("tfds' SplitBuilder was used")

    monkeypatch.setattr(writer, "write_split", spy)
    monkeypatch.setattr(
        tfds.core.split_builder.SplitBuilder, "submit_split_generation", no_tfds_writer
    )
    builder = adc.build_audio_diff_caps(
        str(tmp_path / "data"), audio_dir=audio_dir, csv_dir=csv_dir, validation_fraction=0.25
    )
    assert sorted(calls) == [
        "eval", "eval_clips", "train", "train_clips", "validation", "validation_clips"
    ]  # fmt: skip
    assert len(builder.info.splits["train_clips"].shard_lengths) >= 3
    rows = adc.split_rows(adc.read_rows(csv_dir), 0.25)
    for split, examples in expected.items():
        source = clip_store.pair_source(builder, split)
        # Stored in CSV order (rain before traffic).
        assert [features.as_text(e["key"]) for e in source] == [r.key for r in rows[split]]
        for e in source:
            original = examples[features.as_text(e["key"])]
            for name in ("audio1", "audio2"):
                assert e[name].dtype == np.int16
                np.testing.assert_array_equal(e[name], original[name])
            assert list(e["captions"]) == list(original["captions"])


def test_changed_csv_changes_the_fingerprint(fixture_dirs, tmp_path):
    _, csv_dir, _ = fixture_dirs
    copy = str(tmp_path / "csv")
    shutil.copytree(csv_dir, copy)
    before = adc.fingerprint(copy, 0.25, 16000)
    assert adc.fingerprint(copy, 0.25, 16000) == before
    assert adc.fingerprint(copy, 0.1, 16000) != before
    with open(adc.csv_path(copy, "traffic", "eval"), "a") as f:
        f.write("e09,x.wav,y.wav,one more caption,,,,\n")
    assert adc.fingerprint(copy, 0.25, 16000) != before


def test_missing_directories_and_csv_name_the_config_key(fixture_dirs, tmp_path):
    _, csv_dir, audio_dir = fixture_dirs
    data_dir = str(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="data.csv_dir"):
        adc.build_audio_diff_caps(data_dir, audio_dir=audio_dir, csv_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="data.audio_dir"):
        adc.build_audio_diff_caps(data_dir, audio_dir=str(tmp_path / "nope"), csv_dir=csv_dir)
    partial = str(tmp_path / "csv")
    shutil.copytree(csv_dir, partial)
    os.remove(adc.csv_path(partial, "traffic", "eval"))
    with pytest.raises(FileNotFoundError) as info:
        adc.build_audio_diff_caps(data_dir, audio_dir=audio_dir, csv_dir=partial)
    assert adc.csv_path(partial, "traffic", "eval") in str(info.value)
    assert "data.csv_dir" in str(info.value)


def _copy_audio(fixture_dirs, tmp_path) -> tuple[str, str]:
    _, csv_dir, audio_dir = fixture_dirs
    copy = str(tmp_path / "audio")
    shutil.copytree(audio_dir, copy)
    return csv_dir, copy


def test_missing_audio_file_names_key_row_and_file(fixture_dirs, tmp_path):
    csv_dir, audio_dir = _copy_audio(fixture_dirs, tmp_path)
    os.remove(os.path.join(audio_dir, "traffic_dev_t03_s1.wav"))
    with pytest.raises(FileNotFoundError) as info:
        adc.build_audio_diff_caps(str(tmp_path / "data"), audio_dir=audio_dir, csv_dir=csv_dir)
    message = str(info.value)
    assert "'t03'" in message and "traffic_dev_t03_s1.wav" in message
    assert f"{adc.csv_path(csv_dir, 'traffic', 'dev')}:4" in message  # header is line 1
    assert "data.audio_dir" in message
    version = str(adc.AudioDiffCaps.VERSION)
    assert not glob.glob(str(tmp_path / "data" / "audio_diff_caps" / "*" / version))  # not built


def test_corrupt_audio_file_names_key_row_and_file(fixture_dirs, tmp_path):
    csv_dir, audio_dir = _copy_audio(fixture_dirs, tmp_path)
    bad = os.path.join(audio_dir, "rain_eval_e02_s2.wav")
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(3).bytes(1000))
    with pytest.raises(AudioError) as info:
        adc.build_audio_diff_caps(str(tmp_path / "data"), audio_dir=audio_dir, csv_dir=csv_dir)
    message = str(info.value)
    assert "'e02'" in message and bad in message
    assert f"{adc.csv_path(csv_dir, 'rain', 'eval')}:3" in message


def test_bad_header_and_duplicate_keys_fail_clearly(fixture_dirs, tmp_path):
    _, csv_dir, _ = fixture_dirs
    copy = str(tmp_path / "csv")
    shutil.copytree(csv_dir, copy)
    path = adc.csv_path(copy, "rain", "eval")
    with open(path, "a") as f:
        f.write("e01,x.wav,y.wav,again,,,,\n")
    with pytest.raises(ValueError, match="occurs twice"):
        adc.split_rows(adc.read_rows(copy), 0.25)
    with open(path, "w") as f:
        f.write("id,first,second,text\n1,a.wav,b.wav,hello\n")
    with pytest.raises(ValueError, match="key"):
        adc.read_csv(path, "rain", "eval")


def test_a_truncated_wav_is_built_and_counted_in_one_warning(fixture_dirs, tmp_path, caplog):
    csv_dir, audio_dir = _copy_audio(fixture_dirs, tmp_path)
    cut = os.path.join(audio_dir, "rain_eval_e01_s1.wav")
    data = open(cut, "rb").read()
    with open(cut, "wb") as f:
        f.write(data[: int(len(data) * 0.6)])  # a partial download
    with caplog.at_level(logging.WARNING):
        builder = adc.build_audio_diff_caps(
            str(tmp_path / "data"), audio_dir=audio_dir, csv_dir=csv_dir
        )
    warnings = [r.getMessage() for r in caplog.records if "audio files" in r.getMessage()]
    assert len(warnings) == 1
    # 12 pairs; every fixture clip is 0.5 s, so all are short of half the nominal 10 s.
    assert "of 24 audio files, 1 are truncated" in warnings[0]
    assert "24 are shorter than 5 s" in warnings[0]
    assert f"key 'e01' (row at {adc.csv_path(csv_dir, 'rain', 'eval')}:2): {cut}" in warnings[0]
    e01 = {features.as_text(e["key"]): e for e in clip_store.pair_source(builder, "eval")}["e01"]
    expected = features.to_int16(load_audio(cut, 16000))  # the frames that are there
    assert 0 < expected.shape[0] < 8000
    np.testing.assert_array_equal(e01["audio1"], expected)


def test_a_clip_below_min_clip_fraction_fails_naming_row_and_file(fixture_dirs, tmp_path):
    csv_dir, audio_dir = _copy_audio(fixture_dirs, tmp_path)
    short = os.path.join(audio_dir, "traffic_dev_t03_s2.wav")
    for path in glob.glob(os.path.join(audio_dir, "**", "*.wav"), recursive=True):
        seconds = 2.0 if path == short else 10.0  # every other clip at its nominal length
        sf.write(path, np.zeros(int(seconds * 8000), np.int16), 8000, subtype="PCM_16")
    data_dir = str(tmp_path / "data")
    with pytest.raises(ValueError, match="data.min_clip_fraction"):
        adc.build_audio_diff_caps(
            data_dir, audio_dir=audio_dir, csv_dir=csv_dir, min_clip_fraction=1.5
        )
    with pytest.raises(AudioError) as info:
        adc.build_audio_diff_caps(
            data_dir, audio_dir=audio_dir, csv_dir=csv_dir, min_clip_fraction=0.5
        )
    message = str(info.value)
    assert "1 of 24 audio files are shorter than 5 s" in message
    assert f"key 't03' (row at {adc.csv_path(csv_dir, 'traffic', 'dev')}:4): {short}" in message
    assert "(2.00 s)" in message and "data.min_clip_fraction=0" in message
    version = str(adc.AudioDiffCaps.VERSION)
    assert not glob.glob(str(tmp_path / "data" / "audio_diff_caps" / "*" / version))  # not built


def test_a_replaced_wav_builds_anew_and_names_the_file(tmp_path, caplog):
    """A WAV replaced after the build (same name and size: only its samples and modification
    time differ) gives another build; the old one is named for deletion, never served."""
    csv_dir, audio_dir = _write_fixture(str(tmp_path))
    data_dir = str(tmp_path / "data")
    first = adc.build_audio_diff_caps(data_dir, audio_dir=audio_dir, csv_dir=csv_dir)
    again = adc.build_audio_diff_caps(data_dir, audio_dir=audio_dir, csv_dir=csv_dir)
    assert again.builder_config.name == first.builder_config.name
    name = "rain_eval_e01_s1.wav"
    path = os.path.join(audio_dir, name)
    x, rate = sf.read(path, dtype="int16")
    sf.write(path, x // 2, rate, subtype="PCM_16")
    with caplog.at_level(logging.WARNING):
        second = adc.build_audio_diff_caps(data_dir, audio_dir=audio_dir, csv_dir=csv_dir)
    assert second.builder_config.name != first.builder_config.name
    assert f"audio_dir:rain/{name} (modified)" in caplog.text
    assert f"delete {os.path.dirname(first.data_dir)}" in caplog.text


def test_each_distinct_wav_is_stored_once_per_split(built):
    """Pairs naming the same WAV share one stored clip."""
    builder, ex = built
    rows = adc.split_rows(adc.read_rows(builder.builder_config.csv_dir), 0.25)
    for split, examples in ex.items():
        files = {(r.scene, fn) for r in rows[split] for fn in (r.s1_fn, r.s2_fn)}
        stored = builder.info.splits[clip_store.clips_split(split)].num_examples
        assert stored == len(files)
        clips = {}
        for r in rows[split]:
            e = examples[r.key]
            for fn, clip in ((r.s1_fn, e["clip1"]), (r.s2_fn, e["clip2"])):
                assert clips.setdefault((r.scene, fn), int(clip)) == int(clip)


def test_a_wav_named_by_two_pairs_is_stored_once(fixture_dirs, tmp_path):
    _, csv_dir, audio_dir = fixture_dirs
    copy = str(tmp_path / "csv")
    shutil.copytree(csv_dir, copy)
    path = os.path.join(copy, "adc_rain", "eval", "adc_rain_eval.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[2][1] = rows[1][1]  # the second pair's clip 1 is the first pair's
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    builder = adc.build_audio_diff_caps(
        str(tmp_path / "data"), audio_dir=audio_dir, csv_dir=copy, validation_fraction=0.25
    )
    pairs = clip_store.pair_source(builder, "eval")
    first, second = (
        next(e for e in pairs if features.as_text(e["key"]) == row[0]) for row in rows[1:3]
    )
    assert first["clip1"] == second["clip1"]
    np.testing.assert_array_equal(first["audio1"], second["audio1"])
    assert builder.info.splits["eval_clips"].num_examples == 2 * len(pairs) - 1
