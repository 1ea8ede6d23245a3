"""Tests of BYOL-A's augmentations (`adc_jax.pretrain.augment`): mixup in the linear domain with
the FIFO memory, random segments and resize crops, the linear fader, the two views.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adc_jax.pretrain import augment as aug

SETTINGS = aug.AugmentSettings()  # BYOL-A's: canvas 1.5 x time, crops 0.6-1.5, fader gain 1


# ------------------------------------------------------------------------------ mixup


def test_log_mixup_exp_mixes_in_the_linear_domain():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)) * 4, jnp.float32)
    x_past = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3)) * 4, jnp.float32)
    np.testing.assert_array_equal(aug.log_mixup_exp(x, x_past, 0.0), x)
    np.testing.assert_array_equal(aug.log_mixup_exp(x, x_past, 1.0), x_past)
    # log((1 - 1/4) * 2 + 1/4 * 6) = log(3): linear-domain mixing, not (3/4) log 2 + (1/4) log 6.
    got = aug.log_mixup_exp(jnp.log(2.0), jnp.log(6.0), 0.25)
    np.testing.assert_allclose(got, np.log(3.0), rtol=1e-6)
    # Per-example lambdas, and values whose exp overflows float32, against float64.
    big = x + 85.0
    lam = jnp.asarray([0.1, 0.35], jnp.float32)[:, None, None]
    want = np.log(
        (1 - np.float64(lam)) * np.exp(np.float64(big))
        + np.float64(lam) * np.exp(np.float64(x_past))
    )
    got = aug.log_mixup_exp(big, x_past, lam)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_mixup_draws_lambda_up_to_the_ratio_from_filled_slots_only():
    batch, memory_size, filled = 64, 6, 3
    x = jnp.zeros((batch, 4, 2))
    # Slots in use hold log 2; the others NaN, so reading one would show.
    memory = jnp.full((memory_size, 4, 2), jnp.nan).at[:filled].set(jnp.log(2.0))
    out = aug.mixup(jax.random.key(0), x, memory, jnp.int32(filled), ratio=0.4)
    assert np.isfinite(out).all()
    lam = np.exp(np.asarray(out)) - 1.0  # exp(out) = (1 - lam) * 1 + lam * 2
    np.testing.assert_allclose(lam, lam[:, :1, :1] * np.ones_like(lam), atol=1e-6)
    lam = lam[:, 0, 0]
    assert lam.min() >= -1e-6 and lam.max() <= 0.4 + 1e-6
    assert lam.std() > 0.05  # one lambda per example
    # An empty memory mixes nothing.
    out = aug.mixup(jax.random.key(0), x + 1.0, memory, jnp.int32(0), ratio=0.4)
    np.testing.assert_array_equal(out, x + 1.0)


def test_push_memory_is_a_fifo_ring_buffer():
    memory, position, filled = jnp.zeros((5, 2, 1)), jnp.int32(0), jnp.int32(0)
    first = jnp.arange(1, 4, dtype=jnp.float32)[:, None, None] * jnp.ones((3, 2, 1))
    memory, position, filled = aug.push_memory(memory, position, filled, first)
    assert (int(position), int(filled)) == (3, 3)
    np.testing.assert_array_equal(memory[:, 0, 0], [1, 2, 3, 0, 0])
    memory, position, filled = aug.push_memory(memory, position, filled, first + 10)
    assert (int(position), int(filled)) == (1, 5)
    np.testing.assert_array_equal(memory[:, 0, 0], [13, 2, 3, 11, 12])  # the oldest went first
    many = jnp.arange(7, dtype=jnp.float32)[:, None, None] * jnp.ones((7, 2, 1))
    memory, position, filled = aug.push_memory(memory, position, filled, many)
    assert int(filled) == 5
    np.testing.assert_array_equal(memory[:, 0, 0], [2, 3, 4, 5, 6])  # the last 5 of the batch


# ------------------------------------------------------------------------------ random crops


def test_random_segments_take_consecutive_valid_frames():
    batch, frames, bins, length = 32, 40, 3, 12
    logmel = jnp.broadcast_to(
        jnp.arange(frames, dtype=jnp.float32)[None, :, None] + 1.0, (batch, frames, bins)
    )
    n_valid = jnp.asarray([40, 20, 12, 5] * 8, jnp.int32)
    seg = np.asarray(aug.random_segments(jax.random.key(0), logmel, n_valid, length))
    assert seg.shape == (batch, length, bins)
    for row, valid in zip(seg[:, :, 0], np.asarray(n_valid), strict=True):
        start = row[0] - 1
        if valid >= length:
            assert 0 <= start <= valid - length
            np.testing.assert_array_equal(row, start + 1 + np.arange(length))
        else:  # a short clip: its frames, then zeros
            np.testing.assert_array_equal(
                row, np.r_[np.arange(1, valid + 1), np.zeros(length - valid)]
            )
    starts = seg[n_valid == 40, 0, 0]
    assert len(set(starts.tolist())) > 3  # random positions


def test_identity_window_of_resize_crop_returns_the_input_exactly():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 96, 64)), jnp.float32)
    canvas = aug.canvas_sizes(96, 64, SETTINGS)
    assert canvas == (144, 64)
    off_t = (canvas[0] - 96) // 2
    ones = jnp.ones(3, jnp.int32)
    out = aug.resize_crop(x, off_t * ones, 96 * ones, 0 * ones, 64 * ones, canvas)
    np.testing.assert_array_equal(out, x)


def test_resize_crop_resamples_bilinearly_and_pads_with_zeros():
    # On a plane x[t, f] = 2 t + 0.5 f, bilinear resampling of a window inside the input is
    # exact: output (k, p) = plane at (t0 + k (w - 1) / 95, f0 + p (h - 1) / 63).
    t_idx, f_idx = np.meshgrid(np.arange(96), np.arange(64), indexing="ij")
    x = jnp.asarray((2.0 * t_idx + 0.5 * f_idx)[None], jnp.float32)
    canvas = aug.canvas_sizes(96, 64, SETTINGS)
    off_t = (canvas[0] - 96) // 2
    t0, w, f0, h = 10, 70, 5, 40  # input coordinates
    out = aug.resize_crop(
        x, jnp.asarray([off_t + t0]), jnp.asarray([w]), jnp.asarray([f0]), jnp.asarray([h]), canvas
    )
    k, p = np.meshgrid(np.arange(96), np.arange(64), indexing="ij")
    want = 2.0 * (t0 + k * (w - 1) / 95) + 0.5 * (f0 + p * (h - 1) / 63)
    np.testing.assert_allclose(out[0], want, rtol=1e-5, atol=1e-4)
    # A window over the canvas's empty margin (left of the input) reads zeros.
    out = aug.resize_crop(
        x, jnp.asarray([0]), jnp.asarray([off_t]), jnp.asarray([0]), jnp.asarray([64]), canvas
    )
    np.testing.assert_array_equal(out[0, :-2], 0.0)  # the last outputs touch the input's edge


@pytest.mark.parametrize("shape", [(8, 96, 64), (5, 40, 16)])
def test_random_resize_crop_keeps_the_segment_shape_for_any_window(shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    extreme = aug.AugmentSettings(
        virtual_crop_time=2.0, virtual_crop_freq=1.5, crop_scale_min=0.01, crop_scale_max=3.0
    )
    crop = jax.jit(jax.vmap(aug.random_resize_crop, in_axes=(0, None, None)), static_argnums=2)
    for settings in (SETTINGS, extreme):
        outs = crop(jax.random.split(jax.random.key(0), 4), x, settings)
        for out in outs:
            assert out.shape == shape and out.dtype == jnp.float32
            assert np.isfinite(out).all()
        assert not np.allclose(outs[0], outs[1])  # other keys, other windows
        assert not np.allclose(outs[0][0], outs[0][1])  # one window per example


def test_linear_fader_adds_a_gain_ramp_over_time():
    x = jnp.zeros((2, 11, 3))
    out = aug.linear_fader(x, jnp.asarray([-1.0, 0.5]), jnp.asarray([1.0, 0.5]))
    np.testing.assert_allclose(out[0, :, 0], np.linspace(-1, 1, 11), atol=1e-6)
    np.testing.assert_allclose(out[1], 0.5, atol=1e-7)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # the same gain for every bin
    out = aug.random_linear_fader(jax.random.key(0), jnp.zeros((256, 11, 1)), gain=0.7)
    ramps = np.asarray(out[..., 0])
    assert np.abs(ramps).max() <= 0.7 and np.abs(ramps).max() > 0.6
    np.testing.assert_allclose(np.diff(ramps, 2, axis=1), 0.0, atol=1e-6)  # linear in time
    np.testing.assert_array_equal(aug.random_linear_fader(jax.random.key(0), x, 0.0), x)


def test_views_are_standardised_and_differ():
    segments = jnp.asarray(np.random.default_rng(0).normal(size=(6, 96, 64)) * 3 + 1, jnp.float32)
    memory = jnp.asarray(np.random.default_rng(1).normal(size=(10, 96, 64)), jnp.float32)
    make_views = jax.jit(aug.make_views, static_argnums=4)
    views = make_views(jax.random.key(0), segments, memory, jnp.int32(10), SETTINGS)
    assert views.shape == (6, 2, 96, 64)
    for v in (0, 1):
        assert abs(float(views[:, v].mean())) < 1e-5
        assert abs(float(views[:, v].std()) - 1.0) < 1e-3
    assert not np.allclose(views[:, 0], views[:, 1])
