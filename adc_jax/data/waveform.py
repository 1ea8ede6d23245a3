"""Fitting a waveform to the fixed clip length N the model is compiled for.

`fit_length` is the one pad/crop of adc_jax: the input pipeline writes records straight into the
rows of a batch with it (int16 in, int16 out), and captioning fits a loaded file (float32) with it.
A longer clip loses its end; a shorter one is zero-padded and its valid length says where the
padding starts (the model masks the rest). NumPy only, so anything may import it.
"""

from __future__ import annotations

import numpy as np


def fit_length(
    wav: np.ndarray, n_samples: int, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, int, bool]:
    """Pads with zeros or crops the end so the waveform has exactly `n_samples` samples.

    Args:
      wav: [N] waveform (any dtype; the output keeps it, or takes out's).
      n_samples: target length, >= 0.
      out: optional [n_samples] array to write the result into (e.g. a row of a batch). Without
        it, a waveform of n_samples or more comes back as a view of `wav` (no copy) and a shorter
        one as a new zero-padded array.

    Returns:
      (wav [n_samples], n_valid, was_cropped): n_valid = min(N, n_samples) real samples at the
      start, the rest zeros; was_cropped is True when samples were cut off the end.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}.")
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"fit_length expects a 1-D waveform, got shape {wav.shape}.")
    n = min(wav.shape[0], n_samples)
    cropped = wav.shape[0] > n_samples
    if out is None:
        if n == n_samples:
            return wav[:n_samples], n_samples, cropped
        out = np.zeros((n_samples,), dtype=wav.dtype)
        out[:n] = wav
        return out, n, False
    if out.shape != (n_samples,):
        raise ValueError(f"out has shape {out.shape}, not ({n_samples},).")
    out[:n] = wav[:n]
    out[n:] = 0
    return out, n, cropped
