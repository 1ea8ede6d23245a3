"""Tests of adc_jax.data.synthetic.sounds: the synthesised backgrounds and event classes."""

from __future__ import annotations

import numpy as np
import pytest

from adc_jax.data.synthetic import sounds
from adc_jax.data.synthetic.grammar import BACKGROUNDS, EVENT_CLASSES

SR = 16000


def _centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(np.sum(np.fft.rfftfreq(len(x), 1 / SR) * power) / np.sum(power))


@pytest.mark.parametrize("scene", BACKGROUNDS)
def test_backgrounds_have_unit_rms_and_depend_on_their_seed_only(scene):
    a = sounds.synthesize_background(scene, 3, 1.5)
    assert a.dtype == np.float32 and a.shape == (int(1.5 * SR),)
    assert np.sqrt(np.mean(np.square(a, dtype=np.float64))) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(a, sounds.synthesize_background(scene, 3, 1.5))
    assert not np.array_equal(a, sounds.synthesize_background(scene, 4, 1.5))


def test_rain_is_brighter_than_traffic():
    rain = [_centroid(sounds.synthesize_background("rain", s, 1.0)) for s in range(5)]
    traffic = [_centroid(sounds.synthesize_background("traffic", s, 1.0)) for s in range(5)]
    assert min(rain) > 2 * max(traffic)


@pytest.mark.parametrize("cls", EVENT_CLASSES)
def test_events_have_their_duration_and_unit_active_level(cls):
    x = sounds.synthesize_event(cls, 5, 0.5, 1.25)
    assert x.dtype == np.float32 and x.shape == (20000,)
    assert np.all(np.isfinite(x))
    assert sounds.active_rms(x, SR) == pytest.approx(1.0, rel=1e-4)


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
        c: np.stack(
            [feature(sounds.synthesize_event(c, s, (s * 0.37) % 1.0, 1.6)) for s in range(16)]
        )
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
        a = sounds.synthesize_event(cls, 1, 0.1, 1.5)
        b = sounds.synthesize_event(cls, 2, 0.8, 1.5)
        np.testing.assert_array_equal(a, sounds.synthesize_event(cls, 1, 0.1, 1.5))
        assert abs(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) < 0.5, cls
