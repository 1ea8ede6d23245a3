"""Reading audio files into the waveforms every adc_jax dataset and tool works with.

`load_audio` turns any file libsndfile can read (WAV int/float, FLAC, OGG, ...) at any sample rate
and channel count into one float32 mono waveform in [-1, 1] at the requested rate:
  * channels are mixed down by their mean;
  * the sample rate is changed with soxr (quality "HQ");
  * samples are clipped to [-1, 1] (float files may exceed full scale, and so may a resampled
    signal by a hair); integer files are already scaled to [-1, 1) by soundfile.
Every failure (missing, empty, unreadable or non-finite file) raises `AudioError`, whose message
names the file (and the dataset key when given) and what to do about it.

Padding or cropping to the model's clip length is `adc_jax.data.waveform.fit_length`.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """An audio file is missing or cannot be used; the message names the file and the fix."""


def _where(path: str, key: str | None) -> str:
    return f"{path!r} (key {key!r})" if key is not None else repr(path)


def load_audio(path: str, sample_rate: int = 16000, *, key: str | None = None) -> np.ndarray:
    """Reads an audio file as a float32 mono waveform at `sample_rate`.

    Args:
      path: an audio file in any format libsndfile reads (WAV, FLAC, OGG, ...).
      sample_rate: the output sample rate in Hz; the file is resampled with soxr if it differs.
      key: optional dataset key of the example, named in error messages.

    Returns:
      wav: [N] float32 in [-1, 1], N >= 1.

    Raises:
      AudioError: the file is missing, empty (0 samples), unreadable/corrupt, or holds NaN/Inf.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    where = _where(path, key)
    if not os.path.exists(path):
        raise AudioError(
            f"Audio file {where} does not exist; check the path (and the "
            "data.audio_dir setting for datasets)."
        )
    if not os.path.isfile(path):
        raise AudioError(f"Audio path {where} is not a file.")
    if os.path.getsize(path) == 0:
        raise AudioError(
            f"Audio file {where} is empty (0 bytes); replace it with the original recording."
        )
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(
            f"Cannot read audio file {where} ({str(e).rstrip('.')}). The file is corrupt or not an "
            "audio format libsndfile reads (WAV, FLAC, OGG, ...); re-download or "
            "re-encode it."
        ) from e
    if data.shape[0] == 0:
        raise AudioError(
            f"Audio file {where} is empty (0 samples); replace it with the original recording."
        )
    if not np.all(np.isfinite(data)):
        raise AudioError(
            f"Audio file {where} contains NaN or Inf samples; the file is corrupt, replace it."
        )
    wav = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if file_rate != sample_rate:
        wav = soxr.resample(wav, file_rate, sample_rate, quality="HQ")
        if wav.shape[0] == 0:
            raise AudioError(
                f"Audio file {where} is too short to resample from {file_rate} Hz "
                f"to {sample_rate} Hz (no samples left)."
            )
    return np.clip(np.ascontiguousarray(wav, dtype=np.float32), -1.0, 1.0)
