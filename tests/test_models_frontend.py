"""Tests of the JAX log-mel front end against librosa (the reference BYOL-A's pipeline matches)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from adc_jax.models import frontend

SR = 16000
MEAN, STD = -5.4919195, 5.0389895


def librosa_log_mel(wav: np.ndarray, **overrides) -> np.ndarray:
    """Reference: [B, N] float32 -> normalised log-mel [B, T, 64] (time-major) via librosa."""
    kwargs = dict(
        sr=SR,
        n_fft=1024,
        win_length=1024,
        hop_length=160,
        n_mels=64,
        fmin=60,
        fmax=7800,
        htk=True,
        norm=None,
        center=True,
        pad_mode="reflect",
        power=2.0,
    )
    kwargs.update(overrides)
    mel = np.stack([librosa.feature.melspectrogram(y=y, **kwargs) for y in wav])  # [B, M, T]
    return ((np.log(mel + frontend.LOG_EPS) - MEAN) / STD).transpose(0, 2, 1)


@pytest.fixture(scope="module")
def jit_log_mel():
    """One jitted front end shared by the tests (recompiles per input shape only)."""
    return jax.jit(frontend.log_mel)


@pytest.mark.parametrize("n_samples", [16000, 40000, 16003])
def test_matches_librosa_on_noise(jit_log_mel, n_samples):
    wav = np.random.default_rng(n_samples).uniform(-1, 1, (2, n_samples)).astype(np.float32)
    out = np.asarray(jit_log_mel(jnp.asarray(wav)))
    ref = librosa_log_mel(wav)
    assert out.shape == ref.shape == (2, frontend.num_frames(n_samples, 160), 64)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)


def test_matches_librosa_on_sine(jit_log_mel):
    # A pure tone leaves most mel bands near the log floor: tests the low-energy end too.
    t = np.arange(2 * SR) / SR
    wav = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None]
    out = np.asarray(jit_log_mel(jnp.asarray(wav)))
    ref = librosa_log_mel(wav)
    assert ref.max() - ref.min() > 3.0  # a wide dynamic range is really being compared
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)


def test_short_window_is_centred_like_librosa():
    wav = np.random.default_rng(1).normal(0, 0.3, (1, 8000)).astype(np.float32)
    out = np.asarray(frontend.log_mel(jnp.asarray(wav), win_length=800))
    np.testing.assert_allclose(out, librosa_log_mel(wav, win_length=800), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, f_min, f_max",
    [
        (16000, 1024, 64, 60.0, 7800.0),
        (22050, 2048, 128, 0.0, 11025.0),
        (16000, 512, 40, 125.0, 7500.0),
    ],
)
def test_filterbank_equals_librosa(sr, n_fft, n_mels, f_min, f_max):
    ours = frontend.mel_filterbank(sr, n_fft, n_mels, f_min, f_max)
    ref = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=True, norm=None
    ).T
    assert ours.shape == (n_fft // 2 + 1, n_mels) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def test_ten_second_clip_shape():
    assert frontend.num_frames(160000, 160) == 1001
    out = jax.eval_shape(frontend.log_mel, jax.ShapeDtypeStruct((3, 160000), jnp.float32))
    assert out.shape == (3, 1001, 64) and out.dtype == jnp.float32


def test_computes_in_float32_for_any_input_dtype(jit_log_mel):
    wav = np.random.default_rng(2).uniform(-1, 1, (2, 16000)).astype(np.float32)
    ref = np.asarray(jit_log_mel(jnp.asarray(wav)))
    for dtype in (jnp.bfloat16, jnp.float16):
        x = jnp.asarray(wav, dtype)
        out = frontend.log_mel(x)
        assert out.dtype == jnp.float32
        # Same as the float32 path on the (rounded) input values.
        np.testing.assert_allclose(
            np.asarray(out), np.asarray(jit_log_mel(x.astype(jnp.float32))), atol=1e-5
        )
    assert np.abs(np.asarray(frontend.log_mel(jnp.asarray(wav, jnp.bfloat16))) - ref).max() < 0.5


def test_frames_are_independent_across_batch_and_local_in_time(jit_log_mel):
    """A change at one sample only moves the frames whose windows cover it, in that clip only."""
    wav = np.random.default_rng(3).uniform(-1, 1, (2, 16000)).astype(np.float32)
    base = np.asarray(jit_log_mel(jnp.asarray(wav)))
    changed = wav.copy()
    changed[1, 8000] += 0.5
    out = np.asarray(jit_log_mel(jnp.asarray(changed)))
    diff = np.abs(out - base).max(axis=-1)  # [B, T]
    assert diff[0].max() == 0.0
    moved = np.flatnonzero(diff[1] > 0)
    # Frame t covers samples [t * 160 - 512, t * 160 + 512).
    expected = [t for t in range(base.shape[1]) if t * 160 - 512 <= 8000 < t * 160 + 512]
    assert moved.tolist() == expected


def test_too_short_input_fails_clearly():
    with pytest.raises(ValueError, match="reflect padding"):
        frontend.log_mel(jnp.zeros((1, 400)))


@pytest.mark.parametrize(
    "n_samples, n_fft, hop", [(16000, 1024, 160), (1000, 400, 160), (777, 256, 100)]
)
def test_frames_by_gather_equal_frames_by_slices(n_samples, n_fft, hop):
    """The CPU framing (one gather) and the accelerator framing (shifted slices) cut the same
    frames: frame t is padded[t * hop : t * hop + n_fft]."""
    rng = np.random.default_rng(0)
    padded = jnp.asarray(rng.normal(size=(2, n_samples + n_fft)), jnp.float32)
    n_frames = frontend.num_frames(n_samples, hop)
    by_slices = frontend._frames_by_slices(padded, n_frames, n_fft, hop)
    by_gather = frontend._frames_by_gather(padded, n_frames, n_fft, hop)
    assert by_slices.shape == by_gather.shape == (2, n_frames, n_fft)
    np.testing.assert_array_equal(by_gather, by_slices)
    np.testing.assert_array_equal(by_gather[:, 3], padded[:, 3 * hop : 3 * hop + n_fft])


def test_clips_per_chunk_divides_the_batch_within_the_frame_budget():
    # One CPU device here: the largest divisor of the batch whose frames fit the budget.
    budget = frontend.CPU_CHUNK_FRAMES
    assert frontend.clips_per_chunk(64, 401) == 8  # 10 clips would fit; 8 is the divisor
    assert frontend.clips_per_chunk(64, 1001) == 4
    assert frontend.clips_per_chunk(7, 401) == 7  # 7 * 401 <= budget
    assert frontend.clips_per_chunk(13, 401) == 1  # prime and too many frames: one at a time
    assert frontend.clips_per_chunk(3, budget + 1) == 1
    for n in (1, 6, 32, 100):
        c = frontend.clips_per_chunk(n, 401)
        assert n % c == 0 and (c * 401 <= budget or c == 1)


def test_chunked_front_end_equals_the_whole_batch_at_once(monkeypatch):
    rng = np.random.default_rng(3)
    wav = jnp.asarray(rng.uniform(-0.5, 0.5, (6, 4000)).astype(np.float32))
    n_frames = frontend.num_frames(4000, 160)
    monkeypatch.setattr(frontend, "CPU_CHUNK_FRAMES", 2 * n_frames)  # chunks of 2 clips
    assert frontend.clips_per_chunk(6, n_frames) == 2
    chunked = jax.jit(frontend.log_mel)(wav)
    monkeypatch.setattr(frontend, "CPU_CHUNK_FRAMES", 6 * n_frames)  # the whole batch
    assert frontend.clips_per_chunk(6, n_frames) == 6
    whole = jax.jit(frontend.log_mel)(wav)
    assert chunked.shape == (6, n_frames, 64)
    np.testing.assert_array_equal(np.asarray(chunked), np.asarray(whole))
