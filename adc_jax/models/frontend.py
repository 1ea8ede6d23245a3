"""BYOL-A's log-mel front end in pure JAX, so it runs on the device inside the jitted step.

The host only moves waveforms; this module turns them into the normalised log-mel spectrogram
that BYOL-A was trained on:

  16 kHz mono -> centred STFT (reflect padding, periodic Hann, n_fft 1024, hop 160) -> |X|^2
  -> 64 HTK mel bins over 60-7800 Hz (triangles not area-normalised) -> ln(x + eps)
  -> (x - mean) / std with BYOL-A's published statistics.

It matches `librosa.feature.melspectrogram(..., htk=True, norm=None, center=True,
pad_mode="reflect", power=2.0)` followed by the same log and normalisation (tested to 1e-3).
librosa is only used by the test; the filterbank is computed here in NumPy.

The output is time-major, `[B, T, n_mels]`, because the BYOL-A CNN uses `[B, T, F, C]`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adc_jax.models import cpu_chunks

# Added before the log; float32 machine epsilon, as in BYOL-A.
LOG_EPS = 1.1920929e-07
# Full scale of int16 waveforms.
INT16_SCALE = 32767.0


def float_waveform(wav: jax.Array) -> jax.Array:
    """Waveforms [B, N] as float32 in [-1, 1]: int16 full scale is divided by INT16_SCALE."""
    if jnp.issubdtype(wav.dtype, jnp.integer):
        wav = wav.astype(jnp.float32) / INT16_SCALE
    return wav.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LogMelSettings:
    """The front end's settings (frozen and hashable: a jitted function can close over them).

    sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max: see `log_mel`.
    mean, std: the normalisation; mean 0 and std 1 give the raw ln(mel + eps).
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def from_config(cls, config: Any, *, normalised: bool = True) -> LogMelSettings:
        """The front end of `config.model` at `config.data.sample_rate`; with `normalised`
        False, without model.norm_mean / norm_std (the raw log-mel)."""
        m = config.model
        norm = dict(mean=m.norm_mean, std=m.norm_std) if normalised else {}
        return cls(
            sample_rate=config.data.sample_rate,
            n_fft=m.n_fft,
            win_length=m.win_length,
            hop_length=m.hop_length,
            n_mels=m.n_mels,
            f_min=m.f_min,
            f_max=m.f_max,
            **norm,
        )

    def __call__(self, wav: jax.Array) -> jax.Array:
        """float32 waveforms [B, N] in [-1, 1] -> log-mel [B, T, n_mels] float32 (`log_mel`)."""
        return log_mel(wav, **dataclasses.asdict(self))


def _hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """Triangular HTK mel filterbank without area normalisation.

    Equal to `librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
    fmax=f_max, htk=True, norm=None).T`. Computed in float64, returned as float32. The result is
    cached and shared: do not modify it in place.

    Returns:
      [n_fft // 2 + 1, n_mels] float32; column m holds the weights of mel band m.
    """
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"mel_filterbank needs 0 <= f_min < f_max <= sample_rate / 2; got f_min={f_min}, "
            f"f_max={f_max}, sample_rate={sample_rate}."
        )
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [K]
    # n_mels + 2 band edges, equally spaced on the mel scale.
    edges_mel = np.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    edges = _mel_to_hz_htk(edges_mel)  # [n_mels + 2]
    widths = np.diff(edges)  # [n_mels + 1]
    ramps = edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, K]
    rising = -ramps[:-2] / widths[:-1, None]  # [n_mels, K]
    falling = ramps[2:] / widths[1:, None]  # [n_mels, K]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, K]
    out = np.ascontiguousarray(weights.T.astype(np.float32))
    out.setflags(write=False)
    return out


def num_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT of `n_samples` samples: n_samples // hop_length + 1."""
    return n_samples // hop_length + 1


@functools.lru_cache(maxsize=16)
def _window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window of `win_length`, zero-padded at both ends to [n_fft] float32."""
    n = np.arange(win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft, np.float64)
    out[left : left + win_length] = window
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


def _frames_by_slices(padded: jax.Array, n_frames: int, n_fft: int, hop_length: int) -> jax.Array:
    """Overlapping frames by strided reshapes and slices only (no gather).

    The signal is cut into hop-sized chunks; frame t is chunks t, t+1, ..., t+k-1 laid end to end
    (k = ceil(n_fft / hop)) and cut to n_fft samples. On accelerators this lowers to a copy
    that XLA fuses with the window multiply, avoiding a [T, n_fft] index gather.

    Args:
      padded: [B, L] float32 signal, already centre-padded.
    Returns:
      [B, n_frames, n_fft] float32 where frame t is padded[:, t * hop : t * hop + n_fft].
    """
    k = -(-n_fft // hop_length)
    n_chunks = n_frames + k - 1
    length = padded.shape[1]
    # Samples past L are never inside a frame (the last frame ends at L); zeros fill the
    # last chunk. The slice drops samples that no frame uses.
    need = n_chunks * hop_length
    if need > length:
        padded = jnp.pad(padded, ((0, 0), (0, need - length)))
    chunks = padded[:, :need].reshape(padded.shape[0], n_chunks, hop_length)  # [B, M, hop]
    frames = jnp.concatenate([chunks[:, i : i + n_frames] for i in range(k)], axis=-1)
    return frames[..., :n_fft]


def _frames_by_gather(padded: jax.Array, n_frames: int, n_fft: int, hop_length: int) -> jax.Array:
    """The same frames as `_frames_by_slices`, by one gather with a constant [T, n_fft] index.

    On CPUs the gather is faster: at the `:quick` size (64 clips of 4 s, 2-core AMD EPYC) framing
    and windowing took 83 ms against 167 ms for the slices, the whole front end 238 against 262.
    """
    index = np.arange(n_frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    return padded[:, index]


def _frames(padded: jax.Array, n_frames: int, n_fft: int, hop_length: int) -> jax.Array:
    """[B, L] -> [B, n_frames, n_fft]: the gather on CPU, slices elsewhere (chosen when traced)."""
    frames = _frames_by_gather if jax.default_backend() == "cpu" else _frames_by_slices
    return frames(padded, n_frames, n_fft, hop_length)


# On CPUs the front end runs over chunks of clips of about this many frames in all (4,096 frames
# of 1,024 float32 samples are 16 MB), so each chunk's frames, spectrum and power stay in cache:
# at the `:quick` size (64 clips of 4 s, 401 frames each; 2-core AMD EPYC) 66 ms in chunks of
# 8 clips against 162 ms for the whole batch at once. Accelerators take the whole batch.
CPU_CHUNK_FRAMES = 4096


def clips_per_chunk(n_clips: int, n_frames: int) -> int:
    """Clips per front-end chunk (`cpu_chunks.items_per_chunk` with CPU_CHUNK_FRAMES)."""
    return cpu_chunks.items_per_chunk(n_clips, n_frames, CPU_CHUNK_FRAMES)


def log_mel(
    wav: jax.Array,
    *,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    win_length: int = 1024,
    hop_length: int = 160,
    n_mels: int = 64,
    f_min: float = 60.0,
    f_max: float = 7800.0,
    mean: float = -5.4919195,
    std: float = 5.0389895,
) -> jax.Array:
    """Normalised log-mel spectrogram of a batch of waveforms (BYOL-A's input).

    Always computed in float32, whatever the input dtype. Jit-friendly; all sizes are static.
    On one CPU device the batch is processed in chunks of clips (`clips_per_chunk`), which gives
    the same values faster.

    Args:
      wav: [B, N] float waveforms in [-1, 1] at `sample_rate`. N must exceed n_fft // 2
        (reflect padding needs it).
      sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max: STFT and mel settings;
        `win_length <= n_fft` (the periodic Hann window is centred in the FFT frame).
      mean, std: normalisation statistics of the log-mel.

    Returns:
      [B, T, n_mels] float32, T = N // hop_length + 1 (time-major).
    """
    if wav.ndim != 2:
        raise ValueError(f"log_mel expects wav of shape [B, N]; got shape {wav.shape}.")
    n_samples = wav.shape[1]
    pad = n_fft // 2
    if n_samples <= pad:
        raise ValueError(
            f"log_mel needs more than n_fft // 2 = {pad} samples for reflect padding; got "
            f"{n_samples}. Pad the clip or use a shorter n_fft."
        )
    if not 0 < win_length <= n_fft:
        raise ValueError(f"win_length={win_length} must be in [1, n_fft={n_fft}].")
    n_frames = num_frames(n_samples, hop_length)
    settings = dict(
        sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
        n_mels=n_mels, f_min=f_min, f_max=f_max, mean=mean, std=std,
    )  # fmt: skip
    x = jnp.asarray(wav, jnp.float32)
    n_clips = x.shape[0]
    chunk = clips_per_chunk(n_clips, n_frames)
    if chunk == n_clips:
        return _log_mel(x, **settings)
    chunks = x.reshape(n_clips // chunk, chunk, n_samples)
    out = jax.lax.map(lambda c: _log_mel(c, **settings), chunks)
    return out.reshape(n_clips, n_frames, n_mels)


def _log_mel(
    x: jax.Array,
    *,
    sample_rate: int,
    n_fft: int,
    win_length: int,
    hop_length: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    mean: float,
    std: float,
) -> jax.Array:
    """`log_mel` of float32 x [B, N] in one piece (arguments checked by `log_mel`)."""
    x = jnp.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")  # [B, N + n_fft]
    n_frames = num_frames(x.shape[1] - 2 * (n_fft // 2), hop_length)
    frames = _frames(x, n_frames, n_fft, hop_length)  # [B, T, n_fft]
    frames = frames * jnp.asarray(_window(win_length, n_fft))
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # [B, T, n_fft // 2 + 1] complex64
    power = jnp.square(spec.real) + jnp.square(spec.imag)
    fbank = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))
    mel = jnp.matmul(power, fbank, precision=jax.lax.Precision.HIGHEST)  # [B, T, n_mels]
    return (jnp.log(mel + LOG_EPS) - mean) / std
