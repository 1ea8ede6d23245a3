"""Tests of adc_jax.data.waveform: the one pad/crop to the model's clip length."""

from __future__ import annotations

import numpy as np
import pytest

from adc_jax.data.waveform import fit_length


def test_fit_length_pads_3s_and_crops_30s_to_10s():
    rate, n = 16000, 160000
    short = np.linspace(-1, 1, 3 * rate, dtype=np.float32)
    padded, n_valid, cropped = fit_length(short, n)
    assert padded.shape == (n,) and padded.dtype == np.float32
    assert (n_valid, cropped) == (3 * rate, False)
    np.testing.assert_array_equal(padded[: 3 * rate], short)
    assert not padded[3 * rate :].any()

    long = np.random.default_rng(0).uniform(-1, 1, 30 * rate).astype(np.float32)
    out, n_valid, cropped = fit_length(long, n)
    assert out.shape == (n,)
    assert (n_valid, cropped) == (n, True)
    np.testing.assert_array_equal(out, long[:n])
    assert np.shares_memory(out, long)  # a view, no copy

    exact, n_valid, cropped = fit_length(long[:n], n)
    assert (exact.shape, n_valid, cropped) == ((n,), n, False)


@pytest.mark.parametrize("length", [0, 1, 99, 100, 101, 350])
def test_writing_into_a_row_gives_the_same_int16_samples(length):
    wav = np.random.default_rng(length).integers(-32768, 32767, length).astype(np.int16)
    expected, n_valid, cropped = fit_length(wav, 100)
    assert expected.dtype == np.int16
    batch = np.full((2, 100), 12345, np.int16)  # stale samples of an earlier batch
    row, row_valid, row_cropped = fit_length(wav, 100, out=batch[1])
    assert row is batch[1] or np.shares_memory(row, batch)
    assert (row_valid, row_cropped) == (n_valid, cropped) == (min(length, 100), length > 100)
    assert batch[1].tobytes() == expected.tobytes()
    assert (batch[0] == 12345).all()


def test_fit_length_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_length(np.zeros(4), -1)
    with pytest.raises(ValueError):
        fit_length(np.zeros((2, 4)), 4)
    with pytest.raises(ValueError, match="out has shape"):
        fit_length(np.zeros(4), 4, out=np.zeros(5))
