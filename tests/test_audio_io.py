"""Tests of adc_jax.data.audio_io: decoding, mixing, resampling and failures."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from adc_jax.data.audio_io import AudioError, load_audio


def _sine(freq: float, seconds: float, rate: int, amp: float) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k1_int16_becomes_16k_mono_of_right_length(tmp_path):
    # Left: 440 Hz at 0.5 full scale; right: silence. The mono mix is the sine at 0.25.
    left = _sine(440.0, 0.5, 44100, 0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, np.round(stereo * 32767).astype(np.int16), 44100, subtype="PCM_16")

    wav = load_audio(path, 16000)

    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.shape[0] == 8000  # 0.5 s at 16 kHz
    assert np.all(np.abs(wav) <= 1.0)
    expected = _sine(440.0, 0.5, 16000, 0.25)
    # Compare away from the edges, where the resampling filter has no full support.
    np.testing.assert_allclose(wav[200:-200], expected[200:-200], atol=5e-3)


def test_same_rate_float_flac_passes_through(tmp_path):
    x = _sine(1000.0, 0.25, 16000, 0.9)
    wav_path, flac_path = str(tmp_path / "f.wav"), str(tmp_path / "f.flac")
    sf.write(wav_path, x, 16000, subtype="FLOAT")
    sf.write(flac_path, x, 16000, subtype="PCM_24")
    np.testing.assert_array_equal(load_audio(wav_path, 16000), x)
    np.testing.assert_allclose(load_audio(flac_path, 16000), x, atol=1e-6)


def test_float_file_above_full_scale_is_clipped(tmp_path):
    path = str(tmp_path / "loud.wav")
    sf.write(path, np.array([0.5, 1.5, -2.0], np.float32), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), [0.5, 1.0, -1.0])


def _write_nan(path: str) -> None:
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


def _write_corrupt(path: str) -> None:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(1).bytes(4096))


def _write_zero_bytes(path: str) -> None:
    open(path, "wb").close()


def _write_zero_samples(path: str) -> None:
    sf.write(path, np.zeros((0, 1), np.float32), 44100)


@pytest.mark.parametrize(
    "writer, reason",
    [
        (None, "does not exist"),
        (_write_zero_bytes, "empty"),
        (_write_zero_samples, "empty"),
        (_write_corrupt, "Cannot read"),
        (_write_nan, "NaN"),
    ],
)
def test_bad_files_raise_audio_error_naming_path_and_key(tmp_path, writer, reason):
    path = str(tmp_path / "bad.wav")
    if writer is not None:
        writer(path)
    with pytest.raises(AudioError) as info:
        load_audio(path, 16000, key="pair_007")
    message = str(info.value)
    assert path in message and "pair_007" in message and reason in message
    assert isinstance(info.value, ValueError)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        load_audio(str(tmp_path))
    assert os.path.isdir(tmp_path)
