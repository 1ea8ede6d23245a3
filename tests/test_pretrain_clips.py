"""Tests of the pretraining clip datasets and their grain pipeline (adc_jax.pretrain.clips).

What is checked: synthetic_clips is deterministic, stored in index order and labelled with the
classes each clip holds; synthetic_events holds one event per clip, of the class its index names,
mixed at the drawn signal-to-background ratio; audio_folder cuts every file of a folder tree (WAV/FLAC at 44.1 kHz,
random lengths) into clips of the stated count and lengths, resampled to 16 kHz, labelled by
folder, with a validation split disjoint by file, and a fingerprint that follows the files;
exclude_held_out leaves out clip_sources' eval recordings (folders and ESC-50) in a build of its
own and refuses a folder without a layout; an
unreadable file fails the build naming it, a truncated one is warned about; `clip_batches`
resumes exactly, reshuffles every epoch, gives disjoint process shards, reads the same from its
fast record path as from tfds' decoding, and from worker processes.
"""

from __future__ import annotations

import hashlib
import logging as std_logging
import os

import clip_fixtures
import ml_collections
import numpy as np
import pytest
import soundfile as sf
from absl import flags

from adc_jax.data import clip_sources
from adc_jax.data.audio_io import AudioError, load_audio
from adc_jax.data.synthetic import scenes
from adc_jax.data.synthetic.grammar import BACKGROUNDS, EVENT_CLASSES
from adc_jax.data.synthetic.sounds import active_rms, synthesize_event
from adc_jax.pretrain import clips

SR_IN, SR = 44100, 16000
NUM_TRAIN, BATCH = 24, 8


def _config(**data) -> ml_collections.ConfigDict:
    """The fields of a pretraining config that the clip datasets and batches read."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        dict(
            name="synthetic_clips",
            data_dir="",
            audio_dir="",
            clip_seconds=0.5,
            sample_rate=SR,
            num_train=NUM_TRAIN,
            num_validation=4,
            synth_seed=0,
            prefetch=2,
            num_workers=0,
        )
    )
    c.data.update(data)
    c.train = ml_collections.ConfigDict(dict(batch_size=BATCH))
    return c


def _digest(wav: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(wav).tobytes()).hexdigest()


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
    return [next(iterator) for _ in range(n)]


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() == {"wav", "wav_len"}
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
            assert x[k].tobytes() == y[k].tobytes(), k


def _assert_stored_as_made(builder, spec, make) -> None:
    """Every stored record of every split equals `make(spec, split, i)`: count, key, int16 audio
    of 0.5 s, label."""
    for split, num in spec.split_sizes.items():
        stored = builder.as_data_source(split)
        assert len(stored) == num
        for i in range(num):
            made = make(spec, split, i)
            assert stored[i]["key"].decode() == made["key"] == f"{split}_{i:06d}"
            assert stored[i]["audio"].dtype == np.int16
            assert stored[i]["audio"].shape == (int(0.5 * SR),)
            assert np.array_equal(stored[i]["audio"], made["audio"])
            assert stored[i]["label"].decode() == made["label"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(config, builder, train source, record index by audio digest) of a small synthetic set."""
    config = _config(data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder = clips.load_clip_source(config)
    source = builder.as_data_source("train")
    by_audio = {_digest(source[i]["audio"]): i for i in range(len(source))}
    assert len(by_audio) == NUM_TRAIN  # every clip differs, so a digest names its record
    return config, builder, source, by_audio


# ----------------------------------------------------------------------------- synthetic_clips


def test_synthetic_clips_are_deterministic_and_labelled_by_their_classes(synthetic, tmp_path):
    config, builder, source, _ = synthetic
    spec = clips.SyntheticClipsSpec.from_config(config.data)
    assert builder.builder_config.name == "n24-4_0p5s_seed0"
    _assert_stored_as_made(builder, spec, clips.synthetic_clip)
    labels = [source[i]["label"].decode() for i in range(len(source))]
    assert all(set(lb.split(",")) <= set(EVENT_CLASSES) for lb in labels if lb)
    assert any(labels)  # most clips hold an event
    # The two clips of a pair share a background but differ by the pair's edits.
    assert not np.array_equal(source[0]["audio"], source[1]["audio"])
    # Another build of the same spec is the same bytes; another seed is other data.
    again = clips.load_clip_source(_config(data_dir=str(tmp_path)))
    assert all(
        np.array_equal(again.as_data_source("train")[i]["audio"], source[i]["audio"])
        for i in range(NUM_TRAIN)
    )
    other = clips.synthetic_clip(clips.SyntheticClipsSpec(24, 4, 0.5, seed=1), "train", 0)
    assert not np.array_equal(other["audio"], source[0]["audio"])


def test_synthetic_events_are_single_labelled_events_at_the_stated_snr(tmp_path):
    config = _config(name="synthetic_events", data_dir=str(tmp_path), num_train=20)
    builder = clips.load_clip_source(config)
    spec = clips.SyntheticClipsSpec.from_config(config.data)
    assert spec.kind == "events"
    # Its own variant beside synthetic_clips' one of the same sizes.
    assert builder.builder_config.name == "n20-4_0p5s_seed0_events"
    _assert_stored_as_made(builder, spec, clips.event_clip)
    for split in spec.split_sizes:
        stored = builder.as_data_source(split)
        # Classes in turn: the label is the one event's class.
        for i in range(len(stored)):
            assert stored[i]["label"].decode() == EVENT_CLASSES[i % len(EVENT_CLASSES)]
    train = builder.as_data_source("train")
    digests = {_digest(train[i]["audio"]) for i in range(len(train))}
    assert len(digests) == len(train)  # a new instance and crop in every clip
    scenes_clip = clips.synthetic_clip(clips.SyntheticClipsSpec(20, 4, 0.5), "train", 0)
    assert not np.array_equal(scenes_clip["audio"], train[0]["audio"])


def test_single_event_clip_mixes_at_the_drawn_ratio_and_never_clips():
    rng = np.random.default_rng(0)
    event = synthesize_event("dog", 3, 0.5, 2.0, SR)
    ratios = []
    for k in range(6):
        # A loud event (+30 dB) would clip without the peak scaling.
        snr = (-12.0, 6.0) if k < 5 else (30.0, 30.0)
        clip = scenes.single_event_clip(rng, event, 1.0, snr, SR)
        assert clip["wav"].shape == clip["event"].shape == (SR,)
        np.testing.assert_allclose(clip["wav"], clip["event"] + clip["background"], atol=1e-6)
        bg_rms = np.sqrt(np.mean(np.square(clip["background"], dtype=np.float64)))
        measured = 20 * np.log10(active_rms(clip["event"], SR) / bg_rms)
        assert measured == pytest.approx(clip["snr_db"], abs=1e-3)
        assert snr[0] <= clip["snr_db"] <= snr[1]
        assert np.abs(clip["wav"]).max() <= scenes.PEAK + 1e-6
        assert clip["scene"] in BACKGROUNDS
        ratios.append(clip["snr_db"])
    assert len(set(ratios[:5])) == 5
    with pytest.raises(ValueError, match="fewer than the clip's"):
        scenes.single_event_clip(rng, event[: SR // 2], 1.0, (0.0, 0.0), SR)


def test_unknown_dataset_and_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="synthetic_clips, synthetic_events, audio_folder"):
        clips.load_clip_source(_config(name="audio_diff_caps", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="num_validation"):
        clips.SyntheticClipsSpec(num_train=4, num_validation=0, clip_seconds=1.0)
    with pytest.raises(ValueError, match="kind='pairs' must be one of scenes, events"):
        clips.SyntheticClipsSpec(num_train=4, num_validation=2, clip_seconds=1.0, kind="pairs")
    with pytest.raises(ValueError, match="audio_dir"):
        clips.load_clip_source(_config(name="audio_folder", data_dir=str(tmp_path)))


# ------------------------------------------------------------------------------- audio_folder


def _tone(seconds: float, freq: float, sr: int = SR_IN) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_tree(root) -> dict[str, tuple[float, float]]:
    """Files of random lengths at 44.1 kHz in folders (and one at the top); path -> (s, Hz)."""
    rng = np.random.default_rng(7)
    layout = {}
    for folder, ext in (("dog", ".wav"), ("rain", ".flac"), ("deep/birds", ".wav")):
        for j in range(4):
            layout[f"{folder}/{folder.split('/')[-1]}_{j}{ext}"] = (
                float(rng.uniform(0.2, 3.7)),
                float(rng.uniform(300, 3000)),
            )
    layout["top.flac"] = (2.6, 1000.0)
    for rel, (seconds, freq) in layout.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, _tone(seconds, freq), SR_IN, subtype="PCM_16")
    os.makedirs(os.path.join(root, ".hidden"))
    sf.write(os.path.join(root, ".hidden", "skip.wav"), _tone(1.0, 500.0), SR_IN)
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not audio")
    return layout


def test_audio_folder_cuts_resamples_labels_and_splits_by_file(tmp_path):
    root = tmp_path / "audio"
    layout = _write_tree(str(root))
    config = _config(
        name="audio_folder",
        audio_dir=str(root),
        clip_seconds=1.0,
        data_dir=str(tmp_path / "tfds"),
        validation_fraction=0.3,
    )
    builder = clips.load_clip_source(config)
    stored = {s: builder.as_data_source(s) for s in clips.SPLITS}
    by_file: dict[str, dict[str, list]] = {}
    for split, source in stored.items():
        for i in range(len(source)):
            r = source[i]
            rel, index = r["key"].decode().rsplit("@", 1)
            by_file.setdefault(rel, {"splits": set(), "clips": []})
            by_file[rel]["splits"].add(split)
            by_file[rel]["clips"].append((int(index), r["audio"], r["label"].decode()))
    assert sorted(by_file) == sorted(layout)  # hidden folders and non-audio files skipped
    for rel, (seconds, freq) in layout.items():
        got = by_file[rel]
        assert len(got["splits"]) == 1  # a file's clips are all in one split
        assert got["splits"] == {clips.folder_split(rel, 0.3)}
        n = load_audio(str(root / rel), SR).shape[0]  # samples after resampling
        assert abs(n - int(round(seconds * SR_IN)) * SR / SR_IN) <= 1
        full, rest = divmod(n, SR)
        expected = full + (1 if rest >= SR // 2 or full == 0 else 0)
        lengths = [len(a) for _, a, _ in sorted(got["clips"], key=lambda c: c[0])]
        assert [i for i, _, _ in sorted(got["clips"], key=lambda c: c[0])] == list(range(expected))
        assert lengths == [SR] * full + ([rest] if len(lengths) > full else [])
        assert all(lb == os.path.basename(os.path.dirname(rel)) for _, _, lb in got["clips"])
        # Resampled to 16 kHz: the tone's frequency is where the stored spectrum peaks.
        audio = np.concatenate([a for _, a, _ in sorted(got["clips"], key=lambda c: c[0])])
        spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
        assert abs(np.argmax(spectrum) * SR / len(audio) - freq) < 2 * SR / len(audio) + 1
    assert {lb for f in by_file.values() for _, _, lb in f["clips"]} == {"dog", "rain", "birds", ""}
    assert all(len(s) for s in stored.values())
    # Built once: the same files give the same build; a changed file gives a new one.
    assert clips.load_clip_source(config).data_dir == builder.data_dir
    path = root / "dog" / "dog_0.wav"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert clips.load_clip_source(config).data_dir != builder.data_dir


def _built_files(builder) -> set[str]:
    """The relative paths of the files whose clips a clip build holds (both splits)."""
    return {
        source[i]["key"].decode().rsplit("@", 1)[0]
        for source in (builder.as_data_source(s) for s in clips.SPLITS)
        for i in range(len(source))
    }


def test_exclude_held_out_leaves_out_the_eval_recordings_of_each_layout(tmp_path):
    """Pretraining on a collection with exclude_held_out hears none of the recordings that
    clip_pairs evaluates on and the linear probe tests on (clip_sources' eval split)."""
    folders, esc50 = tmp_path / "folders", tmp_path / "esc50"
    clip_fixtures.write_folders(str(folders), ["cow", "door", "siren"], per_class=8, seconds=0.6)
    clip_fixtures.write_esc50(str(esc50), ["cow", "door"], per_fold=1, seconds=0.6)
    for root in (folders, esc50):
        index = clip_sources.index_sources(str(root))
        held = {r.path.replace(os.sep, "/") for r in index.recordings if r.split == "eval"}
        every = {f.path for f in clips.list_audio_files(str(root))}
        assert clips.held_out_recordings(str(root)) == held
        data = dict(name="audio_folder", audio_dir=str(root), clip_seconds=0.5)
        data["data_dir"] = str(tmp_path / "tfds")
        whole = clips.load_clip_source(_config(**data))
        kept = clips.load_clip_source(_config(**data, exclude_held_out=True))
        assert _built_files(whole) == every
        assert _built_files(kept) == every - held
        assert kept.data_dir != whole.data_dir  # its own build, never the whole folder's
    # 2 of each class folder's 8 files; ESC-50's fold 5 (one clip per class here).
    assert len(clips.held_out_recordings(str(folders))) == 3 * 2
    assert clips.held_out_recordings(str(esc50)) == {
        "audio/5-100050-A-0.wav",
        "audio/5-101050-A-1.wav",
    }
    flat = tmp_path / "flat"
    flat.mkdir()
    for j in range(3):
        sf.write(flat / f"{j}.wav", _tone(1.0, 440.0), SR_IN)
    flat_config = _config(name="audio_folder", audio_dir=str(flat), exclude_held_out=True)
    with pytest.raises(FileNotFoundError, match="exclude_held_out=False"):
        clips.load_clip_source(flat_config)


def test_validation_takes_a_file_when_the_fraction_picks_none(tmp_path):
    files = [clips.AudioFile(f"a/{i}.wav", 1, 1) for i in range(4)]
    splits = clips._assign_splits(files, 1e-9)
    lowest = min(files, key=lambda f: clips._hash_position(f.path))
    assert splits["validation"] == [lowest] and len(splits["train"]) == 3
    splits = clips._assign_splits(files, 1 - 1e-12)
    assert len(splits["train"]) == 1 and len(splits["validation"]) == 3


def test_unreadable_file_fails_naming_it_and_truncated_files_are_warned(tmp_path, caplog):
    root = tmp_path / "audio"
    (root / "ok").mkdir(parents=True)
    for j in range(3):
        sf.write(root / "ok" / f"{j}.wav", _tone(1.5, 440.0), SR_IN, subtype="PCM_16")
    data = (root / "ok" / "2.wav").read_bytes()
    (root / "ok" / "2.wav").write_bytes(data[: len(data) // 2])  # a partial copy
    config = _config(
        name="audio_folder", audio_dir=str(root), clip_seconds=1.0, data_dir=str(tmp_path / "d")
    )
    with caplog.at_level(std_logging.WARNING):
        builder = clips.load_clip_source(config)
    assert "truncated" in caplog.text and "2.wav" in caplog.text
    assert sum(len(builder.as_data_source(s)) for s in clips.SPLITS) == 2 + 2 + 1
    # Replaced with the complete file, as the warning advises: never served from the old build.
    (root / "ok" / "2.wav").write_bytes(data)
    caplog.clear()
    with caplog.at_level(std_logging.WARNING):
        rebuilt = clips.load_clip_source(config)
    assert rebuilt.data_dir != builder.data_dir
    assert sum(len(rebuilt.as_data_source(s)) for s in clips.SPLITS) == 2 + 2 + 2
    assert f"ok/2.wav (size {len(data) // 2} -> {len(data)} bytes)" in caplog.text
    assert f"delete {os.path.dirname(builder.data_dir)}" in caplog.text
    (root / "ok" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    with pytest.raises(AudioError, match="broken.wav"):
        clips.load_clip_source(config)
    single = tmp_path / "single"
    single.mkdir()
    sf.write(single / "only.wav", _tone(3.0, 440.0), SR_IN)
    with pytest.raises(ValueError, match="two or more"):
        clips.load_clip_source(_config(name="audio_folder", audio_dir=str(single)))
    with pytest.raises(FileNotFoundError, match="no audio file"):
        clips.load_clip_source(_config(name="audio_folder", audio_dir=str(tmp_path / "d")))


# ---------------------------------------------------------------------------- clip_batches


def _rows(batch: dict[str, np.ndarray], by_audio: dict[str, int]) -> list[int]:
    return [by_audio[_digest(w[:n])] for w, n in zip(batch["wav"], batch["wav_len"], strict=True)]


def test_batches_are_the_clips_and_every_epoch_a_new_permutation(synthetic):
    config, _, source, by_audio = synthetic
    per_epoch = NUM_TRAIN // BATCH
    batches = _take(iter(clips.clip_batches(source, config)), 3 * per_epoch)
    assert batches[0]["wav"].shape == (BATCH, int(0.5 * SR)) and batches[0]["wav"].dtype == np.int16
    assert batches[0]["wav_len"].dtype == np.int32
    orders = []
    for e in range(3):
        order = [
            i for b in batches[e * per_epoch : (e + 1) * per_epoch] for i in _rows(b, by_audio)
        ]
        assert sorted(order) == list(range(NUM_TRAIN))
        orders.append(order)
    assert orders[0] != orders[1] != orders[2] != orders[0]
    other = _config(data_dir=config.data.data_dir)
    other.seed = 1
    assert _rows(next(iter(clips.clip_batches(source, other))), by_audio) != orders[0][:BATCH]
    # The fast path (raw records) reads what tfds decodes.
    decoded = [source[i] for i in range(len(source))]
    _assert_same(
        _take(iter(clips.clip_batches(decoded, config)), 4),
        _take(iter(clips.clip_batches(source, config)), 4),
    )


def test_short_and_long_clips_are_padded_and_cropped_with_their_lengths():
    records = [{"audio": np.arange(1, n + 1, dtype=np.int16)} for n in (3, 10, 25)]
    config = _config(clip_seconds=10 / SR)
    config.train.batch_size = 3
    batch = next(iter(clips.clip_batches(records, config)))
    rows = sorted(zip(batch["wav_len"].tolist(), batch["wav"].tolist(), strict=True))
    assert rows == [(3, [1, 2, 3] + [0] * 7), (10, list(range(1, 11))), (10, list(range(1, 11)))]


def test_resume_continues_the_exact_order(synthetic):
    config, _, source, _ = synthetic
    iterator = iter(clips.clip_batches(source, config))
    _take(iterator, 2)
    state = iterator.get_state()
    expected = _take(iterator, 4)  # crosses the epoch boundary (3 batches per epoch)
    resumed = iter(clips.clip_batches(source, config))
    resumed.set_state(state)
    _assert_same(_take(resumed, 4), expected)
    _assert_same(_take(iter(clips.clip_batches(source, config)), 6)[2:], expected)


def test_processes_read_disjoint_shards(synthetic):
    config, _, source, by_audio = synthetic
    seen = []
    for p in range(2):
        ds = clips.clip_batches(source, config, process_index=p, process_count=2)
        batches = _take(iter(ds), NUM_TRAIN // BATCH)  # one epoch of this process's 12 clips
        assert all(b["wav"].shape[0] == BATCH // 2 for b in batches)
        rows = [i for b in batches for i in _rows(b, by_audio)]
        assert sorted(rows) == list(range(p, NUM_TRAIN, 2))
        seen.append(set(rows))
    assert not seen[0] & seen[1]
    with pytest.raises(ValueError, match="divisible"):
        clips.clip_batches(source, config, process_count=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        clips.clip_batches([source[0]] * 3, config)


def test_worker_processes_give_the_same_batches(synthetic):
    config, _, source, _ = synthetic
    flags.FLAGS.mark_as_parsed()  # grain reads an absl flag in its workers
    expected = _take(iter(clips.clip_batches(source, config)), 4)
    workers = _config(data_dir=config.data.data_dir, num_workers=2)
    iterator = iter(clips.clip_batches(source, workers))
    got = _take(iterator, 2)
    state = iterator.get_state()
    got += _take(iterator, 2)
    _assert_same(got, expected)
    resumed = iter(clips.clip_batches(source, workers))
    resumed.set_state(state)
    _assert_same(_take(resumed, 2), expected[2:])
