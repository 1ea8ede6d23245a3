"""Sound synthesis of the synthetic_adc dataset: two background scenes and ten event classes.

Every sound is synthesised in NumPy from its own seed, so it is the same on every machine and
nothing is read from disk.

Backgrounds (BACKGROUNDS): "rain" (high hiss with drop crackle) and "traffic" (low rumble with
distant swells). Event classes (EVENT_CLASSES) differ in spectrum and time structure: thunder,
dog barks, bird chirps, footsteps, a rain shower (a swelling roar with dripping plinks, unlike the
steady background rain), church bells, a car horn, a passing car (Doppler drop), a siren and
knocking. Each instance draws its pitch/pace/brightness ("character", in [0, 1]), rhythm and timbre
from its own seed, so two instances of a class sound different.

Public API:
  synthesize_event(cls, seed, character, duration)   one event, active RMS 1.
  synthesize_background(scene, seed, clip_seconds)   one background, RMS 1.
  active_rms(x, sr)                                  the level of an event (loud frames only).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from adc_jax.data import features as features_lib
from adc_jax.data.synthetic.grammar import BACKGROUNDS, EVENT_CLASSES

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


def active_rms(x: np.ndarray, sr: int) -> float:
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
    return (x / active_rms(x, sample_rate)).astype(_F32)


def synthesize_background(
    scene: str, seed: int, clip_seconds: float, sample_rate: int = features_lib.SAMPLE_RATE
) -> np.ndarray:
    """A background of the scene ("rain" or "traffic") with unit RMS: [N] float32."""
    n = int(round(clip_seconds * sample_rate))
    return _BACKGROUNDS[scene](np.random.default_rng(seed), n, sample_rate)
