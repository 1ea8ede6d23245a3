"""Tests of the synthetic_adc data: sounds, scenes, edits, captions and the tfds build."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest

from adc_jax.data import features as features_lib
from adc_jax.data import synthetic as S
from adc_jax.data.captions import BACKGROUNDS, EVENT_CLASSES, OPERATIONS, parse_caption

SR = 16000
CLIP = 2.0


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    """A modest sample of pairs (with stems) shared by the property tests."""
    return [
        S.generate_pair(np.random.default_rng([7, i]), CLIP, return_stems=True) for i in range(300)
    ]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ---------------------------------------------------------------------------------- pairs


def test_same_seed_same_pair_and_other_seed_differs():
    a = S.generate_pair(np.random.default_rng([1, 2, 3]), CLIP)
    b = S.generate_pair(np.random.default_rng([1, 2, 3]), CLIP)
    c = S.generate_pair(np.random.default_rng([1, 2, 4]), CLIP)
    for key in ("audio1", "audio2"):
        assert a[key].dtype == np.float32 and a[key].shape == (int(CLIP * SR),)
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    assert a["captions"] == b["captions"] and a["edits"] == b["edits"]


def test_sample_covers_every_operation_class_and_scene(pairs):
    ops = collections.Counter(op for p in pairs for op in p["edit_ops"])
    classes = collections.Counter(cls for p in pairs for cls in p["edit_classes"])
    assert set(ops) == set(OPERATIONS) and min(ops.values()) >= 20
    assert set(classes) == set(EVENT_CLASSES) and min(classes.values()) >= 15
    assert {p["scene"] for p in pairs} == set(BACKGROUNDS)
    two = np.mean([len(p["edits"]) == 2 for p in pairs])
    assert 0.2 < two < 0.45  # about a third of the pairs have two edits


def test_five_distinct_captions_that_parse_back_to_the_labels(pairs):
    for p in pairs:
        assert len(p["captions"]) == 5 and len(set(p["captions"])) == 5
        for caption in p["captions"]:
            assert parse_caption(caption) == set(p["edits"]), caption


def test_scenes_are_unambiguous(pairs):
    for p in pairs:
        for events in (p["events1"], p["events2"]):
            classes = [e.cls for e in events]
            assert len(classes) == len(set(classes))
        assert len(p["events1"]) <= S.MAX_EVENTS_CLIP1 and len(p["events2"]) <= S.MAX_EVENTS_CLIP2
        assert len(set(p["edit_classes"])) == len(p["edit_classes"])  # no event edited twice


def test_stems_sum_to_the_clips_and_share_the_background(pairs):
    for p in pairs[:60]:
        for audio, stems in ((p["audio1"], p["stems1"]), (p["audio2"], p["stems2"])):
            rebuilt = p["background"] + sum(stems.values(), np.zeros_like(audio))
            np.testing.assert_allclose(audio, rebuilt, atol=1e-5)
            assert np.abs(audio).max() <= S.PEAK + 1e-6
        edited = set(p["edit_classes"])
        for cls in set(p["stems1"]) & set(p["stems2"]) - edited:  # untouched events
            np.testing.assert_array_equal(p["stems1"][cls], p["stems2"][cls])


def test_events_are_not_buried(pairs):
    """Active level of every event >= (lowest level of its range) relative to the background."""
    for p in pairs[:100]:
        bg = _rms(p["background"])
        for stems in (p["stems1"], p["stems2"]):
            for stem in stems.values():
                level = 20 * np.log10(S._active_rms(stem[stem != 0], SR) / bg)
                assert level >= S.LOUDNESS_EDIT_RANGE_DB[0] - 1.5


def _first_nonzero(x: np.ndarray) -> int:
    return int(np.flatnonzero(x)[0])


def test_edits_are_real(pairs):
    """Each operation changes its event as stated, by audible amounts."""
    seen = set()
    for p in pairs:
        for op, cls, magnitude in zip(
            p["edit_ops"], p["edit_classes"], p["edit_magnitudes"], strict=True
        ):
            seen.add(op)
            s1, s2 = p["stems1"].get(cls), p["stems2"].get(cls)
            if op in ("add", "remove"):
                # The event's waveform is fully in one clip and absent from the other.
                stem, present, absent = (
                    (s2, p["audio2"], p["audio1"])
                    if op == "add"
                    else (s1, p["audio1"], p["audio2"])
                )
                assert (s1 if op == "add" else s2) is None and magnitude == 0
                energy = float(np.dot(stem, stem))
                assert np.dot(present, stem) / energy > 0.8
                assert abs(np.dot(absent, stem)) / energy < 0.2
            elif op in ("louder", "quieter"):
                gain_db = 20 * np.log10(_rms(s2) / _rms(s1))
                assert gain_db == pytest.approx(magnitude, abs=0.01)
                assert (gain_db >= 6.0) if op == "louder" else (gain_db <= -6.0)
            elif op == "change":
                e1 = next(e for e in p["events1"] if e.cls == cls)
                e2 = next(e for e in p["events2"] if e.cls == cls)
                assert (e1.onset, e1.duration, e1.level_db) == (e2.onset, e2.duration, e2.level_db)
                assert abs(e1.character - e2.character) >= S.MIN_CHARACTER_CHANGE
                corr = np.dot(s1, s2) / (np.linalg.norm(s1) * np.linalg.norm(s2))
                assert abs(corr) < 0.5
            else:  # earlier / later: the same waveform, shifted by >= a quarter of the clip
                shift = (_first_nonzero(s2) - _first_nonzero(s1)) / SR
                assert shift == pytest.approx(magnitude, abs=2 / SR)
                assert (
                    (shift <= -0.25 * CLIP + 1e-3)
                    if op == "earlier"
                    else (shift >= 0.25 * CLIP - 1e-3)
                )
                a, b = _first_nonzero(s1), _first_nonzero(s2)
                m = min(len(s1) - a, len(s2) - b)
                np.testing.assert_allclose(s1[a : a + m], s2[b : b + m], atol=1e-6)
    assert seen == set(OPERATIONS)


def test_short_and_long_clips():
    for clip, edits in ((1.0, 2), (10.0, 1)):
        for i in range(10):
            p = S.generate_pair(np.random.default_rng([3, i]), clip, num_edits=edits)
            assert p["audio1"].shape == p["audio2"].shape == (int(clip * SR),)
            assert len(p["edits"]) == edits
            for op, m in zip(p["edit_ops"], p["edit_magnitudes"], strict=True):
                if op in ("earlier", "later"):
                    assert abs(m) >= 0.25 * clip - 1e-6


def test_classes_are_distinguishable_from_simple_features():
    """A nearest-centroid classifier on log band energies tells isolated events apart."""
    edges = np.geomspace(60.0, 7800.0, 25)

    def feature(x):
        n = 512
        frames = x[: len(x) // n * n].reshape(-1, n) * np.hanning(n)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        f = np.fft.rfftfreq(n, 1 / SR)
        bands = np.stack(
            [
                power[:, (f >= lo) & (f < hi)].sum(1)
                for lo, hi in zip(edges[:-1], edges[1:], strict=True)
            ],
            1,
        )
        log = np.log(bands + 1e-6)
        return np.concatenate([log.mean(0), log.std(0), np.abs(np.diff(log, axis=0)).mean(0)])

    feats = {
        c: np.stack([feature(S.synthesize_event(c, s, (s * 0.37) % 1.0, 1.6)) for s in range(16)])
        for c in EVENT_CLASSES
    }
    centroids = {c: v[:8].mean(0) for c, v in feats.items()}
    scale = np.concatenate([v[:8] for v in feats.values()]).std(0) + 1e-6
    hits = [
        min(centroids, key=lambda k: np.sum(((x - centroids[k]) / scale) ** 2)) == c
        for c, v in feats.items()
        for x in v[8:]
    ]
    assert np.mean(hits) >= 0.9


def test_instances_of_a_class_differ():
    for cls in EVENT_CLASSES:
        a = S.synthesize_event(cls, 1, 0.1, 1.5)
        b = S.synthesize_event(cls, 2, 0.8, 1.5)
        np.testing.assert_array_equal(a, S.synthesize_event(cls, 1, 0.1, 1.5))
        assert abs(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) < 0.5, cls


# ---------------------------------------------------------------------------------- tfds build

SMALL = {"num_train": 6, "num_validation": 2, "num_eval": 2, "clip_seconds": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, S.build_synthetic(data_dir, **SMALL)


def test_build_reads_back_with_the_schema(small_build):
    _, builder = small_build
    assert builder.name == "synthetic_adc"
    assert builder.builder_config.name == "n6-2-2_1s_seed0"
    assert set(builder.info.features.keys()) == set(features_lib.features_dict().keys())
    for split, num in (("train", 6), ("validation", 2), ("eval", 2)):
        source = builder.as_data_source(split)
        assert len(source) == num
        for i in range(num):
            ex = source[i]
            key, expected = S._example((0, split, i, 1.0, SR))
            assert features_lib.as_text(ex["key"]) == key == f"{split}_{i:06d}"
            for name in ("audio1", "audio2"):
                assert ex[name].dtype == np.int16
                np.testing.assert_array_equal(ex[name], expected[name])
            assert [features_lib.as_text(c) for c in ex["captions"]] == expected["captions"]
            assert features_lib.as_text(ex["scene"]) == expected["scene"]
            assert [features_lib.as_text(o) for o in ex["edit_ops"]] == expected["edit_ops"]
            assert [features_lib.as_text(c) for c in ex["edit_classes"]] == expected["edit_classes"]
            assert ex["edit_magnitudes"].dtype == np.float32
            np.testing.assert_array_equal(ex["edit_magnitudes"], expected["edit_magnitudes"])


def test_build_is_reused_and_variants_coexist(small_build):
    data_dir, builder = small_build
    stamp = os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json"))
    again = S.build_synthetic(data_dir, **SMALL)
    assert again.data_dir == builder.data_dir
    assert os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json")) == stamp
    other = S.build_synthetic(data_dir, **{**SMALL, "seed": 1})
    assert other.data_dir != builder.data_dir
    a, b = builder.as_data_source("train")[0], other.as_data_source("train")[0]
    assert not np.array_equal(a["audio1"], b["audio1"])
    assert len(builder.as_data_source("train")) == 6  # the first variant is untouched


def test_generated_records_match_tfds_standard_example_stream(small_build):
    _, builder = small_build
    stream = list(builder._generate_examples("validation", 2))
    source = builder.as_data_source("validation")
    for i, (key, ex) in enumerate(stream):
        assert features_lib.as_text(source[i]["key"]) == key
        np.testing.assert_array_equal(source[i]["audio2"], ex["audio2"])


def test_interrupted_build_is_not_read_back(tmp_path, monkeypatch):
    data_dir = str(tmp_path)
    params = {**SMALL, "seed": 5}
    calls = {"n": 0}
    real = S._serialized_example

    def failing(args):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt("simulated interruption")
        return real(args)

    monkeypatch.setattr(S, "_serialized_example", failing)
    with pytest.raises(KeyboardInterrupt):
        S.build_synthetic(data_dir, **params)
    name = S.config_name(6, 2, 2, 1.0, 5)
    config_dir = os.path.join(data_dir, "synthetic_adc", name)
    version = str(S.SyntheticAdc.VERSION)
    assert not os.path.exists(os.path.join(config_dir, version))
    # A hard kill leaves tfds' temporary folder, and a partial final folder may exist.
    stale = os.path.join(config_dir, f"incomplete.ABCDEF_{version}")
    os.makedirs(stale)
    os.utime(stale, (0, 0))
    os.makedirs(os.path.join(config_dir, version))
    monkeypatch.setattr(S, "_serialized_example", real)
    builder = S.build_synthetic(data_dir, **params)
    assert len(builder.as_data_source("train")) == 6
    assert not os.path.exists(stale)


def test_worker_processes_write_the_same_bytes(tmp_path):
    """Data is a function of (seed, split, index): the process count does not matter."""
    params = {"num_train": 64, "num_validation": 1, "num_eval": 1, "clip_seconds": 0.5, "seed": 3}
    one = S.build_synthetic(str(tmp_path / "one"), **params, num_workers=1)
    two = S.build_synthetic(str(tmp_path / "two"), **params, num_workers=2)
    a, b = one.as_data_source("train"), two.as_data_source("train")
    for i in (0, 31, 63):
        np.testing.assert_array_equal(a[i]["audio1"], b[i]["audio1"])
        assert a[i]["captions"] == b[i]["captions"]


def test_config_names():
    assert S.config_name(6000, 300, 600, 10.0, 0) == "n6000-300-600_10s_seed0"
    assert S.config_name(3000, 100, 200, 4.0, 0) == "n3000-100-200_4s_seed0"
    assert S.config_name(8, 8, 8, 2.5, 1, 8000) == "n8-8-8_2p5s_seed1_sr8000"
    with pytest.raises(ValueError, match="positive number of pairs"):
        S.build_synthetic(
            "/nonexistent", num_train=0, num_validation=1, num_eval=1, clip_seconds=1.0, seed=0
        )
