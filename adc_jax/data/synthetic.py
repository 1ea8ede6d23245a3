"""The built-in synthetic_adc dataset: procedurally synthesised audio-difference pairs.

Modelled on how AudioDiffCaps was made (Takeuchi et al., DCASE 2023) with Scaper: a scene is a
background (rain or road traffic) plus 0-2 foreground events; clip 2 is clip 1 after one edit, or
two edits in about a third of the pairs. Nothing is read from disk: every sound is synthesised in
NumPy from the pair's random generator, so the data is the same on every machine.

Sounds: backgrounds "rain" (high hiss with drop crackle) and "traffic" (low rumble with distant
swells); ten event classes (EVENT_CLASSES) that differ in spectrum and time structure: thunder,
dog barks, bird chirps, footsteps, a rain shower (a swelling roar with dripping plinks, unlike the
steady background rain), church bells, a car horn, a passing car (Doppler drop), a siren and
knocking. Each instance draws its pitch/pace/brightness ("character", in [0, 1]), rhythm and timbre
from its own seed, so a "change" is audible.

Time scales with the clip: at 10 s events last 3-5 s and start in the first 8 s as in
AudioDiffCaps; at 4 s (the quick config) they last 1.2-2 s. Levels are stated relative to the
background RMS (event level = RMS over the event's active frames; thunder gets CLASS_OFFSET_DB on
top), 0-15 dB for events that are not edited, so events are not buried (Scaper's -16...+18 dB
would hide many of these sounds); loudness edits change the level by 6-12 dB, keeping both levels
in -3...+18 dB, and moves shift an event by at least a quarter of the clip.

Edits (operation, class), with the magnitude stored per edit (clip 2 minus clip 1):
  add / remove     the event exists only in clip 2 / only in clip 1          (magnitude 0)
  louder / quieter the same event, 6-12 dB louder / quieter                    (+dB / -dB)
  change           a different instance of the class (pitch, rhythm, timbre) (magnitude 0)
  earlier / later  the same event, moved by >= clip/4                        (-s / +s)
No scene holds two events of a class and no event is edited twice, so every pair has exactly one
description up to wording. Both clips share the background instance and every untouched event.

Public API:
  generate_pair(rng, clip_seconds, ...)   one pair as float waveforms, captions and edits.
  build_synthetic(data_dir, ...)          builds (once) and returns the tfds builder.
  SyntheticAdc                            the tfds GeneratorBasedBuilder ("synthetic_adc"), one
                                          BuilderConfig per (sizes, clip length, seed, rate).
  synthesize_event / synthesize_background  single sounds, for notebooks and tests.

Pair i of split s is drawn from np.random.default_rng([seed, split_id(s), i]), so the data does not
depend on the number of build processes; records are stored in index order.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from adc_jax.data import features as features_lib
from adc_jax.data import writer as writer_lib
from adc_jax.data.captions import BACKGROUNDS, EVENT_CLASSES, OPERATIONS, make_captions

SPLITS = ("train", "validation", "eval")
# Background RMS level in dBFS (centre and +/- spread).
BACKGROUND_DBFS = -30.0
BACKGROUND_DBFS_SPREAD = 3.0
# Level of an event that is not loudness-edited, in dB above the background RMS.
EVENT_DB = (0.0, 15.0)
# Both levels of a louder/quieter event lie in this range (dB above the background).
LOUDNESS_EDIT_RANGE_DB = (-3.0, 18.0)
# Size of a louder/quieter edit in dB.
LOUDNESS_STEP_DB = (6.0, 12.0)
# Event duration as a fraction of the clip (3-5 s of a 10 s clip, as in AudioDiffCaps).
EVENT_FRACTION = (0.3, 0.5)
# Latest onset: at least this fraction of an event lies inside the clip (and onset <= 0.8 clip).
MIN_INSIDE_FRACTION = 0.6
# A moved event shifts by at least this fraction of the clip.
MIN_SHIFT_FRACTION = 0.25
# Probability that a pair has two edits (AudioDiffCaps: about a third).
TWO_EDIT_PROBABILITY = 1.0 / 3.0
# Scenes hold at most this many events in clip 1 (AudioDiffCaps: 0-2) and in clip 2.
MAX_EVENTS_CLIP1 = 2
MAX_EVENTS_CLIP2 = 3
# A "change" draws an instance whose character (pitch/rate, in [0, 1]) differs by at least this.
MIN_CHARACTER_CHANGE = 0.35
# Extra gain (dB) of classes whose energy sits where the backgrounds are loudest (thunder's
# rumble is under 400 Hz), so that every class is about equally audible at the same level_db.
CLASS_OFFSET_DB = {"thunder": 4.0}
# Peak level of the louder of the two clips after the shared gain (no clipping).
PEAK = 0.9
NUM_CAPTIONS = 5

_F32 = np.float32
_TWO_PI = 2.0 * math.pi


# ------------------------------------------------------------------------------ DSP helpers


def _band(freqs: np.ndarray, lo: float, hi: float | None, order: float = 2.0) -> np.ndarray:
    """Butterworth-like band-pass magnitude response (lo=0 or hi=None drop that edge)."""
    gain = np.ones_like(freqs)
    if lo > 0:
        gain = gain / np.sqrt(1.0 + (lo / np.maximum(freqs, 1.0)) ** (2 * order))
    if hi is not None:
        gain = gain / np.sqrt(1.0 + (freqs / hi) ** (2 * order))
    return gain


def _rfft_freqs(n: int, sr: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / sr).astype(_F32)


def _shaped_noise(
    rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Gaussian noise with magnitude response `gain(freqs)`, unit RMS: [n] float32."""
    nf = n // 2 + 1
    z = rng.standard_normal((2, nf), dtype=_F32)
    x = np.fft.irfft((z[0] + 1j * z[1]) * gain(_rfft_freqs(n, sr)), n)
    return _unit_rms(x)


def _filter(x: np.ndarray, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filtering of x by magnitude response `gain(freqs)` (circular, via the FFT)."""
    n = x.shape[0]
    return np.fft.irfft(np.fft.rfft(x) * gain(_rfft_freqs(n, sr)), n).astype(_F32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.sqrt(np.mean(np.square(x)))), 1e-12)).astype(_F32)


def _times(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=_F32) / _F32(sr)


def _fade(n: int, sr: int, fade_in: float, fade_out: float) -> np.ndarray:
    """Raised-cosine fade-in and fade-out envelope (seconds): [n] float32."""
    env = np.ones(n, _F32)
    m_in = min(n, max(1, int(fade_in * sr)))
    m_out = min(n, max(1, int(fade_out * sr)))
    env[:m_in] *= 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, m_in, dtype=_F32))
    env[n - m_out :] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, math.pi, m_out, dtype=_F32))
    return env


def _bump(t: np.ndarray, t0: float, width: float) -> np.ndarray:
    """Attack-decay bump x*exp(1-x), x=(t-t0)/width, peak 1 at t0+width, 0 before t0."""
    x = np.maximum((t - t0) / width, 0.0)
    return (x * np.exp(1.0 - x)).astype(_F32)


_TABLE_SIZE = 4096


def _wavetable(weights: np.ndarray, phases: np.ndarray | None = None) -> np.ndarray:
    """One period of sum_k weights[k-1] * sin(k*phi + phases[k-1]), unit RMS: [_TABLE_SIZE]."""
    k = np.arange(1, len(weights) + 1, dtype=np.float64)[:, None]
    phi = np.arange(_TABLE_SIZE, dtype=np.float64)[None, :] * (_TWO_PI / _TABLE_SIZE)
    offs = np.zeros((len(weights), 1)) if phases is None else np.asarray(phases)[:, None]
    return _unit_rms((np.asarray(weights)[:, None] * np.sin(k * phi + offs)).sum(0))


def _oscillate(
    table: np.ndarray, freq: np.ndarray | float, n: int, sr: int, phase0: float = 0.0
) -> np.ndarray:
    """Wavetable oscillator following `freq` (Hz, scalar or [n]): [n] float32."""
    if np.isscalar(freq):
        cycles = phase0 + np.arange(n, dtype=np.float64) * (float(freq) / sr)
    else:
        cycles = phase0 + np.cumsum(np.asarray(freq, np.float64) / sr)
    idx = ((cycles - np.floor(cycles)) * _TABLE_SIZE).astype(np.int32)
    return table[np.minimum(idx, _TABLE_SIZE - 1)]


def _harmonic_weights(
    f_max: float, sr: int, shape: Callable[[np.ndarray], np.ndarray], max_harmonics: int = 60
) -> np.ndarray:
    """Weights of harmonics k=1..K with K*f_max below 0.45*sr, weight shape(k)."""
    count = int(max(1, min(max_harmonics, 0.45 * sr // max(f_max, 1.0))))
    return shape(np.arange(1, count + 1, dtype=np.float64))


def _scatter(n: int, starts: np.ndarray, grains: np.ndarray) -> np.ndarray:
    """Sums grains [G, L] into a signal of length n at sample offsets `starts` (cropped)."""
    g, length = grains.shape
    idx = (np.asarray(starts, np.int64)[:, None] + np.arange(length)[None, :]).ravel()
    keep = (idx >= 0) & (idx < n)
    return np.bincount(idx[keep], weights=grains.ravel()[keep], minlength=n).astype(_F32)


def _schedule(
    rng: np.random.Generator,
    duration: float,
    first: tuple[float, float],
    gap: Callable[[], float],
    min_tail: float,
) -> list[float]:
    """Onset times (s) of repeated units: first in `first`, then separated by gap() seconds."""
    t = rng.uniform(*first)
    times: list[float] = []
    while t + min_tail <= duration or not times:
        times.append(min(t, max(0.0, duration - min_tail)))
        t += gap()
    return times


# ------------------------------------------------------------------------------ backgrounds


def _rain_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Steady light rain: high-frequency hiss with fine random drop crackle."""
    lo = rng.uniform(900.0, 2200.0)
    hi = rng.uniform(5500.0, 8000.0)
    tilt = rng.uniform(-0.4, 0.3)
    x = rng.standard_normal(n, dtype=_F32)
    count = int(rng.uniform(300.0, 1200.0) * n / sr)
    pos = rng.integers(0, n, count)
    np.add.at(x, pos, rng.lognormal(1.0, 0.6, count).astype(_F32) * rng.choice([-1, 1], count))
    x = _filter(x, sr, lambda f: _band(f, lo, hi, 1.5) * (np.maximum(f, 50.0) / 2000.0) ** tilt)
    t = _times(n, sr)
    gust = 1.0 + 0.15 * np.sin(_TWO_PI * t / rng.uniform(3.0, 9.0) + rng.uniform(0, _TWO_PI))
    return _unit_rms(x * gust)


def _traffic_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Distant road traffic: low rumble plus tyre noise swelling as far-away cars pass."""
    fc = rng.uniform(120.0, 350.0)
    hi = rng.uniform(1200.0, 2500.0)
    rumble = _shaped_noise(rng, n, sr, lambda f: _band(f, 25.0, fc, 2))
    tyres = _shaped_noise(rng, n, sr, lambda f: _band(f, 250.0, hi, 1.5))
    t = _times(n, sr)
    dur = n / sr
    env = np.full(n, rng.uniform(0.3, 0.6), _F32)
    for _ in range(rng.integers(1, 3 + int(dur / 3))):
        c = rng.uniform(-1.0, dur + 1.0)
        w = rng.uniform(0.8, 2.5)
        env += rng.uniform(0.3, 1.0) * np.exp(-0.5 * ((t - c) / w) ** 2).astype(_F32)
    mix = rng.uniform(0.3, 0.7)
    return _unit_rms(rumble + mix * tyres * env / env.max())


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "rain": _rain_background,
    "traffic": _traffic_background,
}


# ------------------------------------------------------------------------------ foreground events
# Each event synthesiser takes (rng, n, sr, p): p in [0, 1] is the instance's main character
# (pitch, pace or brightness); the rng draws everything else (rhythm, timbre, detuning).


def _thunder(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """A crack of broadband crackle followed by rolling low rumbles."""
    t = _times(n, sr)
    dur = n / sr
    rumble = _shaped_noise(rng, n, sr, lambda f: _band(f, 25.0, 100.0 + 300.0 * p, 2))
    env = np.zeros(n, _F32)
    for i in range(rng.integers(2, 5)):
        t0 = rng.uniform(0.0, 0.05 * dur) if i == 0 else rng.uniform(0.0, 0.5 * dur)
        env += rng.uniform(0.4, 1.0) * _bump(t, t0, rng.uniform(0.08, 0.3) * dur)
    env *= _fade(n, sr, 0.005, 0.3 * dur)
    m = min(n, int(0.8 * sr))
    crack = _shaped_noise(rng, m, sr, lambda f: _band(f, rng.uniform(400.0, 1200.0), 7000.0, 1))
    tc = t[:m]
    crack_env = np.zeros(m, _F32)
    for _ in range(rng.integers(2, 6)):
        t0 = rng.uniform(0.0, 0.25 * min(dur, 0.8))
        crack_env += rng.uniform(0.3, 1.0) * np.where(
            tc >= t0, np.exp(-(tc - t0) / rng.uniform(0.02, 0.08)), 0.0
        ).astype(_F32)
    out = 1.3 * _unit_rms(rumble * env)
    out[:m] += rng.uniform(0.6, 1.2) * crack * crack_env
    return out


def _dog(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """Barks: short harmonic calls with a rise-fall pitch contour and a formant, plus breath."""
    dur = n / sr
    f0 = 280.0 * 2.0 ** (1.3 * p)
    formant = rng.uniform(900.0, 1800.0)
    weights = _harmonic_weights(
        1.3 * f0, sr, lambda k: np.exp(-0.5 * ((k * f0 - formant) / 600.0) ** 2) + 0.25 / k
    )
    table = _wavetable(weights)
    bark = rng.uniform(0.12, 0.22)
    gaps = (rng.uniform(0.2, 0.6), rng.uniform(0.06, 0.14))
    times = _schedule(
        rng,
        dur,
        (0.0, 0.1 * dur),
        lambda: bark + (gaps[1] if rng.random() < 0.35 else gaps[0] * rng.uniform(0.8, 1.25)),
        min_tail=0.08,
    )
    freq = np.full(n, f0, _F32)
    env = np.zeros(n, _F32)
    for start in times:
        a = int(start * sr)
        m = min(n - a, int(bark * rng.uniform(0.85, 1.15) * sr))
        if m <= 8:
            continue
        x = np.linspace(0.0, 1.0, m, dtype=_F32)
        freq[a : a + m] = (
            f0 * rng.uniform(0.95, 1.05) * (1.0 + 0.25 * np.sin(math.pi * x) - 0.15 * x)
        )
        env[a : a + m] = rng.uniform(0.7, 1.0) * (1.0 - np.exp(-x / 0.04)) * np.exp(-2.5 * x)
    tone = _oscillate(table, freq, n, sr) * env
    breath = _shaped_noise(rng, n, sr, lambda f: _band(f, 400.0, 4000.0, 1)) * env
    return tone + 0.35 * breath


def _birds(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """One or two birds singing phrases of fast frequency-swept chirps."""
    dur = n / sr
    out = np.zeros(n, _F32)
    for b in range(1 if rng.random() < 0.5 else 2):
        fc = 2200.0 * 2.0 ** (1.4 * p) * (1.0 if b == 0 else rng.uniform(0.7, 0.85))
        shape = rng.integers(3)
        chirp = rng.uniform(0.04, 0.12)
        gap = rng.uniform(0.03, 0.12)
        per_phrase = rng.integers(3, 9)
        pause = rng.uniform(0.2, 0.7)
        freq = np.full(n, fc, _F32)
        env = np.zeros(n, _F32)
        t = rng.uniform(0.0, 0.15 * dur)
        i = 0
        while t < dur - 0.03:
            a = int(t * sr)
            m = min(n - a, int(chirp * rng.uniform(0.85, 1.15) * sr))
            x = np.linspace(0.0, 1.0, m, dtype=_F32)
            f = fc * rng.uniform(0.93, 1.07)
            if shape == 0:
                freq[a : a + m] = f * (0.75 + 0.5 * x)
            elif shape == 1:
                freq[a : a + m] = f * (1.25 - 0.5 * x)
            else:
                freq[a : a + m] = f * (0.85 + 0.3 * np.sin(math.pi * x))
            env[a : a + m] = np.sin(math.pi * x) ** 2
            i += 1
            t += chirp + (pause if i % per_phrase == 0 else gap)
        phase = np.cumsum(freq.astype(np.float64) * (_TWO_PI / sr)).astype(_F32)
        out += env * (np.sin(phase) + 0.15 * np.sin(2.0 * phase))
    return out


def _footsteps(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """Walking on gravel: regular heel-toe crunches with a low thump."""
    dur = n / sr
    interval = rng.uniform(0.42, 0.65)
    times = _schedule(
        rng, dur, (0.0, 0.15 * dur), lambda: interval * rng.uniform(0.95, 1.05), min_tail=0.05
    )
    starts, amps = [], []
    for s in times:
        toe = rng.uniform(0.03, 0.07)
        starts += [s, s + toe]
        a = rng.uniform(0.7, 1.0)
        amps += [a, a * rng.uniform(0.4, 0.7)]
    length = int(0.12 * sr)
    tt = _times(length, sr)[None, :]
    tau = rng.uniform(0.012, 0.03)
    grains = rng.standard_normal((len(starts), length), dtype=_F32) * np.exp(-tt / tau)
    thump = np.sin(_TWO_PI * rng.uniform(60.0, 110.0) * tt) * np.exp(-tt / 0.02)
    grains = (grains + 1.5 * thump) * np.asarray(amps, _F32)[:, None]
    x = _scatter(n, (np.asarray(starts) * sr).astype(np.int64), grains)
    lo, hi = 120.0 + 300.0 * p, 1500.0 + 4500.0 * p
    return _filter(x, sr, lambda f: _band(f, lo, hi, 1.5) + 0.5 * _band(f, 40.0, 140.0, 2))


def _rain_shower(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """A heavy shower: a swelling roar of mid-frequency noise with dripping plinks on top."""
    t = _times(n, sr)
    dur = n / sr
    lo, hi = 150.0 + 350.0 * p, 2500.0 + 3500.0 * p
    roar = _shaped_noise(rng, n, sr, lambda f: _band(f, lo, hi, 1.5))
    rise = rng.uniform(0.15, 0.35) * dur
    fall = rng.uniform(0.15, 0.35) * dur
    env = _fade(n, sr, rise, fall)
    env *= 1.0 + 0.2 * np.sin(_TWO_PI * t / rng.uniform(0.5, 1.5) + rng.uniform(0, _TWO_PI))
    count = max(1, int(rng.uniform(15.0, 40.0) * dur))
    length = int(0.03 * sr)
    tt = _times(length, sr)[None, :]
    f = rng.uniform(1200.0, 3500.0, (count, 1)).astype(_F32)
    grains = np.sin(_TWO_PI * f * tt * (1.0 + 6.0 * tt)) * np.exp(-tt / rng.uniform(0.004, 0.01))
    starts = rng.integers(0, max(1, n - length), count)
    grains *= (rng.lognormal(0.0, 0.4, (count, 1)) * env[starts][:, None]).astype(_F32)
    plinks = _scatter(n, starts, grains.astype(_F32))
    return roar * env + 0.6 * _unit_rms(plinks)


_BELL_RATIOS = np.array([0.5, 1.0, 1.2, 1.5, 2.0, 2.5, 2.67, 3.0, 4.0])
_BELL_AMPS = np.array([0.6, 1.0, 0.5, 0.4, 0.8, 0.3, 0.25, 0.2, 0.1])
_BELL_TAUS = np.array([3.0, 2.0, 1.5, 1.2, 1.0, 0.7, 0.6, 0.5, 0.35])


def _bells(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """Church bells: inharmonic partials with long decays, struck in turn by one or two bells."""
    dur = n / sr
    f = 220.0 * 2.0 ** (2.0 * p)
    pitches = [f] if rng.random() < 0.5 else [f, f * rng.choice([0.75, 0.84, 1.12, 1.26])]
    length = min(n, int(2.5 * sr))
    tt = _times(length, sr)[None, :]
    decay = rng.uniform(0.6, 1.4)
    templates = []
    for pitch in pitches:
        fr = (pitch * _BELL_RATIOS * rng.uniform(0.99, 1.01, len(_BELL_RATIOS)))[:, None]
        parts = (
            _BELL_AMPS[:, None]
            * np.sin(_TWO_PI * fr * tt + rng.uniform(0, _TWO_PI, (9, 1)))
            * np.exp(-tt / (_BELL_TAUS[:, None] * decay))
        )
        templates.append((parts.sum(0) * (1.0 - np.exp(-tt[0] / 0.002))).astype(_F32))
    interval = rng.uniform(0.6, 1.3)
    times = _schedule(
        rng, dur, (0.0, 0.1 * dur), lambda: interval * rng.uniform(0.97, 1.03), min_tail=0.15
    )
    out = np.zeros(n, _F32)
    for i, s in enumerate(times):
        a = int(s * sr)
        m = min(length, n - a)
        out[a : a + m] += rng.uniform(0.8, 1.0) * templates[i % len(templates)][:m]
    return out


def _horn(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """A car horn: one to three honks of two buzzy tones a third apart."""
    dur = n / sr
    f1 = 330.0 * 2.0 ** (0.6 * p)
    f2 = f1 * rng.choice([1.19, 1.26])
    centre = rng.uniform(1800.0, 3000.0)
    weights = _harmonic_weights(
        f2, sr, lambda k: k**-0.8 * (1.0 + 2.0 * np.exp(-0.5 * ((k * f1 - centre) / 1000.0) ** 2))
    )
    table = _wavetable(weights)
    honk = rng.uniform(0.25, 0.9)
    times = _schedule(
        rng,
        dur,
        (0.0, 0.1 * dur),
        lambda: honk * rng.uniform(1.0, 1.2) + rng.uniform(0.12, 0.4),
        min_tail=0.1,
    )
    env = np.zeros(n, _F32)
    for s in times:
        a = int(s * sr)
        m = min(n - a, int(honk * rng.uniform(0.8, 1.2) * sr))
        env[a : a + m] = _fade(m, sr, 0.01, 0.02)
    tone = _oscillate(table, f1, n, sr, rng.random()) + _oscillate(table, f2, n, sr, rng.random())
    return tone * env


def _car(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """A car driving past: engine harmonics with a Doppler drop and tyre noise, loudest mid-way."""
    t = _times(n, sr).astype(np.float64)
    dur = n / sr
    v = rng.uniform(12.0, 25.0)
    d = rng.uniform(3.0, 10.0)
    t0 = rng.uniform(0.4, 0.6) * dur
    x = v * (t - t0)
    r = np.sqrt(x * x + d * d)
    doppler = 343.0 / (343.0 + v * x / r)
    amp = (d / r).astype(_F32)
    fe = 55.0 + 60.0 * p
    weights = _harmonic_weights(
        fe * 1.1, sr, lambda k: k**-0.6 * rng.uniform(0.5, 1.0, len(k)), max_harmonics=40
    )
    engine = _unit_rms(_oscillate(_wavetable(weights), fe * doppler, n, sr))
    tyres = _shaped_noise(rng, n, sr, lambda f: _band(f, 200.0, 2500.0 + 2500.0 * p, 1.5))
    out = (rng.uniform(0.4, 0.8) * engine * amp + tyres * amp**1.5) * amp
    return out * _fade(n, sr, 0.1 * dur, 0.1 * dur)


_SIREN_WEIGHTS = np.array([1.0, 0.1, 0.35, 0.05, 0.2, 0.0, 0.1])


def _siren(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """An emergency siren: a slow wail, a fast yelp or a two-tone hi-lo."""
    t = _times(n, sr).astype(np.float64)
    base = 600.0 * 2.0 ** (0.8 * p)
    kind = rng.integers(3)
    phase = rng.uniform(0, _TWO_PI)
    if kind == 0:  # wail
        freq = base * (
            1.0 + 0.8 * (0.5 - 0.5 * np.cos(_TWO_PI * t / rng.uniform(1.5, 3.5) + phase))
        )
    elif kind == 1:  # yelp
        freq = base * (
            1.0 + 0.7 * (0.5 - 0.5 * np.cos(_TWO_PI * t / rng.uniform(0.15, 0.35) + phase))
        )
    else:  # hi-lo
        period = rng.uniform(0.8, 1.3)
        square = np.sin(_TWO_PI * t / period + phase) > 0
        freq = base * np.where(square, rng.choice([1.26, 1.33, 1.41]), 1.0)
    table = _wavetable(_SIREN_WEIGHTS)
    return _oscillate(table, freq, n, sr) * _fade(n, sr, 0.05, 0.1)


def _knocking(rng: np.random.Generator, n: int, sr: int, p: float) -> np.ndarray:
    """Knocks on a wooden door: quick groups of resonant low-mid impacts."""
    dur = n / sr
    fr = 140.0 * 2.0 ** (1.3 * p)
    length = int(0.12 * sr)
    tt = _times(length, sr)
    modes = fr * np.array([1.0, 2.1, 3.7]) * rng.uniform(0.97, 1.03, 3)
    taus = np.array([0.04, 0.025, 0.015]) * rng.uniform(0.7, 1.3)
    amps = np.array([1.0, 0.6, 0.35])
    template = (
        amps[:, None]
        * np.sin(_TWO_PI * modes[:, None] * tt[None, :])
        * np.exp(-tt[None, :] / taus[:, None])
    ).sum(0)
    click = rng.standard_normal(length).astype(_F32) * np.exp(-tt / 0.002)
    template = (template + 0.5 * np.diff(click, prepend=0.0)).astype(_F32)
    spacing = rng.uniform(0.12, 0.22)
    group_gap = rng.uniform(0.5, 1.0)
    per_group = rng.integers(2, 6)
    starts, t, i = [], rng.uniform(0.0, 0.1 * dur), 0
    while t < dur - 0.05 or not starts:
        starts.append(min(t, max(0.0, dur - 0.05)))
        i += 1
        t += group_gap if i % per_group == 0 else spacing * rng.uniform(0.95, 1.05)
    grains = template[None, :] * rng.uniform(0.7, 1.0, (len(starts), 1)).astype(_F32)
    return _scatter(n, (np.asarray(starts) * sr).astype(np.int64), grains)


_EVENTS: dict[str, Callable[[np.random.Generator, int, int, float], np.ndarray]] = {
    "thunder": _thunder,
    "dog": _dog,
    "birds": _birds,
    "footsteps": _footsteps,
    "rain": _rain_shower,
    "bells": _bells,
    "horn": _horn,
    "car": _car,
    "siren": _siren,
    "knocking": _knocking,
}
assert tuple(_EVENTS) == EVENT_CLASSES and tuple(_BACKGROUNDS) == BACKGROUNDS


def _active_rms(x: np.ndarray, sr: int) -> float:
    """RMS over the frames (20 ms) within 20 dB of the loudest one: the level of an event."""
    hop = max(1, sr // 50)
    m = max(1, x.shape[0] // hop)
    energy = (
        np.mean(np.square(x[: m * hop].reshape(m, hop)), axis=1)
        if x.shape[0] >= hop
        else np.mean(np.square(x), keepdims=True)
    )
    active = energy[energy >= 0.01 * energy.max()]
    return max(float(np.sqrt(np.mean(active))), 1e-12)


def synthesize_event(
    cls: str,
    seed: int,
    character: float,
    duration: float,
    sample_rate: int = features_lib.SAMPLE_RATE,
) -> np.ndarray:
    """One instance of an event class, scaled to active RMS 1: [round(duration*sr)] float32.

    Args:
      cls: one of EVENT_CLASSES.
      seed: instance seed; the same (seed, character, duration) gives the same sound.
      character: in [0, 1], the instance's main character (pitch, pace or brightness).
      duration: length in seconds.
      sample_rate: Hz.
    """
    n = max(16, int(round(duration * sample_rate)))
    x = _EVENTS[cls](np.random.default_rng(seed), n, sample_rate, float(character))
    return (x / _active_rms(x, sample_rate)).astype(_F32)


def synthesize_background(
    scene: str, seed: int, clip_seconds: float, sample_rate: int = features_lib.SAMPLE_RATE
) -> np.ndarray:
    """A background of the scene ("rain" or "traffic") with unit RMS: [N] float32."""
    n = int(round(clip_seconds * sample_rate))
    return _BACKGROUNDS[scene](np.random.default_rng(seed), n, sample_rate)


# ------------------------------------------------------------------------------ scenes and edits


@dataclasses.dataclass(frozen=True)
class Event:
    """A foreground event placed in a clip.

    cls: event class; seed/character: which instance; onset/duration: seconds;
    level_db: active RMS in dB above the background RMS.
    """

    cls: str
    seed: int
    character: float
    onset: float
    duration: float
    level_db: float


def _new_event(
    rng: np.random.Generator,
    cls: str,
    clip_seconds: float,
    onset_range: tuple[float, float] | None = None,
    level_db: float | None = None,
    duration: float | None = None,
) -> Event:
    if duration is None:
        duration = float(rng.uniform(*EVENT_FRACTION) * clip_seconds)
    lo, hi = onset_range if onset_range is not None else (0.0, _max_onset(duration, clip_seconds))
    return Event(
        cls=cls,
        seed=int(rng.integers(2**62)),
        character=float(rng.random()),
        onset=float(rng.uniform(lo, hi)),
        duration=duration,
        level_db=float(rng.uniform(*EVENT_DB)) if level_db is None else level_db,
    )


def _max_onset(duration: float, clip_seconds: float) -> float:
    return max(0.0, min(0.8 * clip_seconds, clip_seconds - MIN_INSIDE_FRACTION * duration))


def _plan(
    rng: np.random.Generator, clip_seconds: float, num_edits: int | None
) -> tuple[list[Event], list[Event], list[tuple[str, str, float]]]:
    """Draws clip 1's events, the edits, and clip 2's events.

    Returns (events1, events2, edits) with edits as (operation, class, magnitude).
    """
    if num_edits is None:
        num_edits = 2 if rng.random() < TWO_EDIT_PROBABILITY else 1
    if num_edits not in (1, 2):
        raise ValueError(f"num_edits must be 1, 2 or None, not {num_edits!r}.")
    ops = [OPERATIONS[i] for i in rng.integers(len(OPERATIONS), size=num_edits)]
    n_add = ops.count("add")
    n_mod = num_edits - n_add
    max_extra = min(MAX_EVENTS_CLIP1 - n_mod, MAX_EVENTS_CLIP2 - n_mod - n_add)
    n_extra = int(rng.integers(0, max_extra + 1))
    classes = [
        EVENT_CLASSES[i] for i in rng.choice(len(EVENT_CLASSES), num_edits + n_extra, replace=False)
    ]
    T = clip_seconds
    min_shift = MIN_SHIFT_FRACTION * T
    events1: list[Event] = []
    events2: list[Event] = []
    edits: list[tuple[str, str, float]] = []
    for op, cls in zip(ops, classes[:num_edits], strict=True):
        magnitude = 0.0
        if op == "add":
            events2.append(_new_event(rng, cls, T))
        elif op == "remove":
            events1.append(_new_event(rng, cls, T))
        elif op in ("louder", "quieter"):
            step = float(rng.uniform(*LOUDNESS_STEP_DB))
            lo_db = float(rng.uniform(LOUDNESS_EDIT_RANGE_DB[0], LOUDNESS_EDIT_RANGE_DB[1] - step))
            first, second = (lo_db, lo_db + step) if op == "louder" else (lo_db + step, lo_db)
            e1 = _new_event(rng, cls, T, level_db=first)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, level_db=second))
            magnitude = second - first
        elif op == "change":
            e1 = _new_event(rng, cls, T)
            character = e1.character
            while abs(character - e1.character) < MIN_CHARACTER_CHANGE:
                character = float(rng.random())
            events1.append(e1)
            events2.append(
                dataclasses.replace(e1, seed=int(rng.integers(2**62)), character=character)
            )
        else:  # earlier / later: the later position is at least min_shift after the earlier one
            duration = float(rng.uniform(*EVENT_FRACTION) * T)
            latest = _max_onset(duration, T)  # >= 0.7 T > min_shift for any clip length
            early = float(rng.uniform(0.0, latest - min_shift))
            late = float(rng.uniform(early + min_shift, latest))
            first, second = (late, early) if op == "earlier" else (early, late)
            e1 = _new_event(rng, cls, T, onset_range=(first, first), duration=duration)
            events1.append(e1)
            events2.append(dataclasses.replace(e1, onset=second))
            magnitude = second - first
        edits.append((op, cls, magnitude))
    for cls in classes[num_edits:]:
        e = _new_event(rng, cls, T)
        events1.append(e)
        events2.append(e)
    return events1, events2, edits


def _place(out: np.ndarray, wav: np.ndarray, onset: float, gain: float, sr: int) -> np.ndarray:
    """Adds gain*wav into out starting at onset seconds (cropped at the end); returns the stem."""
    stem = np.zeros_like(out)
    a = int(round(onset * sr))
    m = min(wav.shape[0], out.shape[0] - a)
    if m > 0:
        stem[a : a + m] = gain * wav[:m]
        out += stem
    return stem


def generate_pair(
    rng: np.random.Generator,
    clip_seconds: float,
    sample_rate: int = features_lib.SAMPLE_RATE,
    num_edits: int | None = None,
    *,
    return_stems: bool = False,
) -> dict[str, Any]:
    """Synthesises one difference pair.

    Args:
      rng: the pair's generator (the result is a function of its state only).
      clip_seconds: length of both clips.
      sample_rate: Hz.
      num_edits: 1 or 2 edits; None draws 2 with probability TWO_EDIT_PROBABILITY.
      return_stems: also return the scaled background and per-event signals of both clips.

    Returns:
      dict with audio1, audio2 ([N] float32 in [-1, 1]), captions (5 distinct str), scene,
      edits ([(op, class)]), edit_ops, edit_classes, edit_magnitudes (list of float: dB for
      louder/quieter, seconds for earlier/later, 0 otherwise; clip 2 minus clip 1), events1,
      events2 (lists of `Event`) and, with return_stems, background ([N]) and stems1/stems2
      ({class: [N]}), which sum to audio1/audio2.
    """
    sr = sample_rate
    scene = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg_gain = 10.0 ** ((BACKGROUND_DBFS + rng.uniform(-1, 1) * BACKGROUND_DBFS_SPREAD) / 20.0)
    background = bg_gain * synthesize_background(scene, int(rng.integers(2**62)), clip_seconds, sr)
    events1, events2, edits = _plan(rng, clip_seconds, num_edits)
    captions = make_captions([(op, cls) for op, cls, _ in edits], rng, NUM_CAPTIONS)

    cache: dict[tuple, np.ndarray] = {}
    clips, stems = [], []
    for events in (events1, events2):
        clip = background.copy()
        clip_stems = {}
        for e in events:
            key = (e.cls, e.seed, e.character, e.duration)
            if key not in cache:
                cache[key] = synthesize_event(e.cls, e.seed, e.character, e.duration, sr)
            gain = bg_gain * 10.0 ** ((e.level_db + CLASS_OFFSET_DB.get(e.cls, 0.0)) / 20.0)
            clip_stems[e.cls] = _place(clip, cache[key], e.onset, gain, sr)
        clips.append(clip)
        stems.append(clip_stems)
    peak = max(float(np.abs(c).max()) for c in clips)
    scale = min(1.0, PEAK / max(peak, 1e-9))
    out = {
        "audio1": (clips[0] * scale).astype(_F32),
        "audio2": (clips[1] * scale).astype(_F32),
        "captions": captions,
        "scene": scene,
        "edits": [(op, cls) for op, cls, _ in edits],
        "edit_ops": [op for op, _, _ in edits],
        "edit_classes": [cls for _, cls, _ in edits],
        "edit_magnitudes": [float(m) for _, _, m in edits],
        "events1": events1,
        "events2": events2,
    }
    if return_stems:
        out["background"] = (background * scale).astype(_F32)
        out["stems1"] = {k: (v * scale).astype(_F32) for k, v in stems[0].items()}
        out["stems2"] = {k: (v * scale).astype(_F32) for k, v in stems[1].items()}
    return out


# ------------------------------------------------------------------------------ tfds builder


def config_name(
    num_train: int,
    num_validation: int,
    num_eval: int,
    clip_seconds: float,
    seed: int,
    sample_rate: int = features_lib.SAMPLE_RATE,
) -> str:
    """Name of the builder config for these parameters, e.g. "n6000-300-600_10s_seed0"."""
    clip = f"{clip_seconds:g}".replace(".", "p")
    name = f"n{num_train}-{num_validation}-{num_eval}_{clip}s_seed{seed}"
    return name if sample_rate == features_lib.SAMPLE_RATE else f"{name}_sr{sample_rate}"


def params_from_config(data_config: Any) -> dict[str, Any]:
    """The build_synthetic keyword arguments of a `config.data` section."""
    return {
        "num_train": data_config.num_train,
        "num_validation": data_config.num_validation,
        "num_eval": data_config.num_eval,
        "clip_seconds": data_config.clip_seconds,
        "seed": data_config.synth_seed,
        "sample_rate": data_config.sample_rate,
    }


@dataclasses.dataclass(eq=False)
class SyntheticAdcConfig(tfds.core.BuilderConfig):
    """Sizes, clip length and seed of a synthetic_adc variant (the name is derived from them).

    num_workers only sets the build parallelism; the data does not depend on it.
    """

    num_train: int = 6000
    num_validation: int = 300
    num_eval: int = 600
    clip_seconds: float = 10.0
    seed: int = 0
    sample_rate: int = features_lib.SAMPLE_RATE
    num_workers: int | None = None

    @classmethod
    def make(
        cls,
        *,
        num_train: int,
        num_validation: int,
        num_eval: int,
        clip_seconds: float,
        seed: int,
        sample_rate: int = features_lib.SAMPLE_RATE,
        num_workers: int | None = None,
    ) -> SyntheticAdcConfig:
        for key, value in (
            ("num_train", num_train),
            ("num_validation", num_validation),
            ("num_eval", num_eval),
        ):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{key}={value!r}: every split needs a positive number of pairs.")
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f"seed={seed!r} must be an integer >= 0.")
        if not clip_seconds > 0:
            raise ValueError(f"clip_seconds={clip_seconds!r} must be positive.")
        name = config_name(num_train, num_validation, num_eval, clip_seconds, seed, sample_rate)
        return cls(
            name=name,
            num_train=num_train,
            num_validation=num_validation,
            num_eval=num_eval,
            clip_seconds=float(clip_seconds),
            seed=seed,
            sample_rate=sample_rate,
            num_workers=num_workers,
            description=f"{num_train}/{num_validation}/{num_eval} pairs of "
            f"{clip_seconds:g} s at {sample_rate} Hz, seed {seed}.",
        )


def _preset_configs() -> list[SyntheticAdcConfig]:
    """One config per size of `adc_jax.config` (paper, quick, smoke)."""
    from adc_jax import config as config_lib

    return [
        SyntheticAdcConfig.make(**params_from_config(config_lib.base_config(size).data))
        for size in config_lib.SIZES
    ]


def _example(args: tuple[int, str, int, float, int]) -> tuple[str, dict[str, Any]]:
    """The stored example `index` of `split` as (key, feature dict)."""
    seed, split, index, clip_seconds, sample_rate = args
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    pair = generate_pair(rng, clip_seconds, sample_rate)
    key = f"{split}_{index:06d}"
    return key, {
        "key": key,
        "audio1": features_lib.to_int16(pair["audio1"]),
        "audio2": features_lib.to_int16(pair["audio2"]),
        "captions": pair["captions"],
        "scene": pair["scene"],
        "edit_ops": pair["edit_ops"],
        "edit_classes": pair["edit_classes"],
        "edit_magnitudes": np.asarray(pair["edit_magnitudes"], np.float32),
    }


def _serialized_example(args: tuple[int, str, int, float, int]) -> bytes:
    """The stored record of example `index` of `split` (top level: worker processes run it)."""
    return writer_lib.serialize_example(_example(args)[1])


class SyntheticAdc(tfds.core.GeneratorBasedBuilder):
    """tfds builder of the synthetic audio-difference-captioning pairs (see module docstring).

    Records are stored in index order: record i of a split is the pair with key
    "<split>_<i:06d>", drawn from default_rng([seed, split_id, i]).
    """

    name = "synthetic_adc"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "10 event classes, 2 backgrounds, 7 edit operations.",
        "2.0.0": "audio1/audio2 stored as raw int16 bytes (Encoding.BYTES) in uncompressed "
        "array_record shards (adc_jax.data.writer): 100x faster to serialise, several times "
        "cheaper to read; the same samples.",
    }
    BUILDER_CONFIGS = _preset_configs()

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default resolves the package with importlib_resources, which editable installs
        # without that package fail on; the answer is simply this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: dataset_info_from_configs() looks for a package directory of metadata.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic audio difference captioning pairs: a rain or traffic "
            "background with 0-2 foreground events; clip 2 is clip 1 after 1-2 "
            "edits, described by 5 reference captions.",
            features=features_lib.features_dict(),
            homepage="https://arxiv.org/abs/2308.11923",
        )

    def _split_sizes(self) -> dict[str, int]:
        c = self.builder_config
        return {"train": c.num_train, "validation": c.num_validation, "eval": c.num_eval}

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(split, num) for split, num in self._split_sizes().items()
        }

    def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """tfds' standard example stream, in one process.

        `_generate_splits` writes the same examples without it (see there); this stream stays as
        the reference the tests compare the written records with.
        """
        c = self.builder_config
        for i in range(num):
            yield _example((c.seed, split, i, c.clip_seconds, c.sample_rate))

    def _generate_splits(self, dl_manager: Any, download_config: Any) -> list[tfds.core.SplitInfo]:
        """Writes every split's array_record shards with the shared writer; returns SplitInfos.

        Replaces tfds' writer, which needs TensorFlow once a split exceeds 1 GB (see
        `adc_jax.data.writer`): worker processes generate and serialise pairs and the main process
        writes them in index order, inside tfds' temporary build folder.
        """
        del dl_manager, download_config
        c = self.builder_config
        return writer_lib.generate_splits(
            self,
            {
                split: (
                    _serialized_example,
                    [(c.seed, split, i, c.clip_seconds, c.sample_rate) for i in range(num)],
                )
                for split, num in self._split_sizes().items()
            },
            num_workers=c.num_workers,
        )


def _remove_stale_builds(config_dir: str, min_age_s: float = 600.0) -> None:
    """Deletes tfds' temporary build folders (incomplete.*) left by interrupted builds.

    Folders touched in the last `min_age_s` seconds are kept: another process may be building.
    """
    if not os.path.isdir(config_dir):
        return
    for entry in os.scandir(config_dir):
        if entry.name.startswith("incomplete.") and entry.is_dir():
            age = time.time() - entry.stat().st_mtime
            if age >= min_age_s:
                logging.warning(
                    "Removing %s, left by an interrupted synthetic_adc build.", entry.path
                )
                shutil.rmtree(entry.path, ignore_errors=True)


def build_synthetic(
    data_dir: str,
    *,
    num_train: int,
    num_validation: int,
    num_eval: int,
    clip_seconds: float,
    seed: int,
    sample_rate: int = features_lib.SAMPLE_RATE,
    num_workers: int | None = None,
) -> tfds.core.DatasetBuilder:
    """Returns the prepared synthetic_adc builder for these parameters, building it if missing.

    Variants co-exist in one data_dir under synthetic_adc/<config name>/<version>. tfds writes a
    build into a temporary incomplete.* folder and renames it when every split is written, so an
    interrupted build is never read back: the next call builds again (and removes the leftovers).

    Args:
      data_dir: root directory of tfds datasets ("~" is expanded).
      num_train, num_validation, num_eval: pairs per split.
      clip_seconds: length of each clip.
      seed: data seed; pair i of a split comes from default_rng([seed, split_id, i]).
      sample_rate: Hz.
      num_workers: generation processes (default: all CPUs); does not change the data.

    Returns:
      The builder; read a split with `builder.as_data_source(split)`.
    """
    data_dir = os.path.expanduser(data_dir)
    config = SyntheticAdcConfig.make(
        num_train=num_train,
        num_validation=num_validation,
        num_eval=num_eval,
        clip_seconds=clip_seconds,
        seed=seed,
        sample_rate=sample_rate,
        num_workers=num_workers,
    )
    preset = SyntheticAdc.builder_configs.get(config.name)
    if preset is not None:  # tfds requires the class's own object for a listed name
        preset.num_workers = num_workers
        config = preset
    builder = SyntheticAdc(config=config, data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    config_dir = os.path.dirname(builder.data_dir)
    os.makedirs(config_dir, exist_ok=True)
    # Processes that build the same variant at once (several hosts on a shared file system)
    # take turns: the first builds, the others find it prepared.
    with open(os.path.join(config_dir, ".build.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # file systems without locks: build without one
            logging.warning("Could not lock %s (%s); building without a lock.", lock.name, e)
        if builder.is_prepared():
            logging.info("synthetic_adc/%s was built by another process.", config.name)
            # A new builder reads the split metadata that this one was created without.
            return SyntheticAdc(config=config, data_dir=data_dir, file_format="array_record")
        if os.path.exists(builder.data_dir):
            logging.warning(
                "%s is not a complete build; removing it and building again.", builder.data_dir
            )
            shutil.rmtree(builder.data_dir)
        _remove_stale_builds(config_dir)
        logging.info("Building synthetic_adc/%s in %s.", config.name, builder.data_dir)
        start = time.perf_counter()
        builder.download_and_prepare(
            download_dir=os.path.join(data_dir, "downloads"),
            download_config=tfds.download.DownloadConfig(
                download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
            ),
        )
        elapsed = time.perf_counter() - start
    total = num_train + num_validation + num_eval
    logging.info(
        "Built synthetic_adc/%s: %d pairs in %.1f s (%.1f pairs/s).",
        config.name,
        total,
        elapsed,
        total / max(elapsed, 1e-9),
    )
    return builder
