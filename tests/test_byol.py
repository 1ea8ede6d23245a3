"""Tests of BYOL-A pretraining's parts: the networks and loss (`adc_jax.models.byol`), the
augmentations (`adc_jax.pretrain.augment`) and the step (`adc_jax.pretrain.step`): the EMA update,
the stop-gradient to the target, BatchNorm statistics, mixup in the linear domain, resize-crop
shapes, the loss's symmetry, the mixup memory and non-finite steps.

The step tests compile `configs/byola_pretrain.py:smoke` once (module fixture) and run it from
fresh copies of one initial state.
"""

from __future__ import annotations

import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax import checkpointing, sharding
from adc_jax.models import byol, byola
from adc_jax.pretrain import augment as aug
from adc_jax.pretrain import config as pretrain_config
from adc_jax.pretrain import step as pretrain_step

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = aug.AugmentSettings()  # BYOL-A's: canvas 1.5 x time, crops 0.6-1.5, fader gain 1


def smoke_config():
    path = os.path.join(REPO_ROOT, "configs", "byola_pretrain.py")
    spec = importlib.util.spec_from_file_location("byola_pretrain_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def clip_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """Tones + noise as int16; row 3 is 0.4 s long (fewer valid frames than a segment)."""
    rng = np.random.default_rng(seed)
    b, n = config.train.batch_size, int(config.data.clip_seconds * config.data.sample_rate)
    t = np.arange(n) / config.data.sample_rate
    wav = 3000 * np.sin(2 * np.pi * rng.uniform(200, 3000, (b, 1)) * t)
    wav += 800 * rng.normal(size=(b, n))
    lengths = np.full(b, n, np.int32)
    lengths[3] = int(0.4 * config.data.sample_rate)
    wav[3, lengths[3] :] = 0
    return {"wav": np.round(wav).astype(np.int16), "wav_len": lengths}


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


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


# ------------------------------------------------------------------------------ the loss


def test_byol_loss_is_symmetric_and_zero_for_matching_predictions():
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(7, 16)), jnp.float32) for _ in range(4))
    loss = byol.byol_loss(p1, p2, z1, z2)
    assert float(byol.byol_loss(p2, p1, z2, z1)) == float(loss)  # the views swapped
    assert 0.0 < float(loss) < 8.0
    # Predictions equal to (positive multiples of) the other view's projections: loss 0.
    assert abs(float(byol.byol_loss(3.0 * z2, 0.5 * z1, z1, z2))) < 1e-6
    # Orthogonal: 2 per term; opposite: 4 per term.
    e1, e2 = jnp.eye(16)[:1], jnp.eye(16)[1:2]
    assert float(byol.byol_loss(e1, e1, e2, e2)) == pytest.approx(4.0)
    assert float(byol.byol_loss(e1, -e2, e2, -e1)) == pytest.approx(8.0)


class _Identity(nnx.Module):
    def __call__(self, x, *, train):
        return x


def _jitted_loss(online, target, *, train: bool, grads: bool = False):
    """compute_loss(online, target, views) jitted: views -> loss, or with `grads` the gradients
    with respect to both networks' parameters, as (online, target) states."""
    graphdef, params, rest = nnx.split((online, target), nnx.Param, ...)

    def loss(params, views):
        o, t = nnx.merge(graphdef, params, rest, copy=True)
        return pretrain_step.compute_loss(o, t, views, train=train)[0]

    if grads:
        return jax.jit(lambda views: jax.grad(loss)(params, views))
    return jax.jit(lambda views: loss(params, views))


def test_network_loss_is_zero_for_identical_networks_and_views_and_symmetric():
    config = smoke_config()
    model = pretrain_step.build_model(config, nnx.Rngs(0))
    # The online network with an identity predictor and a target with the same weights: the
    # prediction of a view equals the target projection of an identical view.
    online = byol.OnlineNetwork(model.online.encoder, model.online.projector, _Identity())
    target = byol.TargetNetwork(model.online.encoder, model.online.projector)
    seg = jnp.asarray(np.random.default_rng(0).normal(size=(4, 96, 64)), jnp.float32)
    same = jnp.stack([seg, seg], axis=1)
    assert abs(float(_jitted_loss(online, target, train=False)(same))) < 1e-5
    views = jnp.stack([seg, seg[::-1] * 0.5], axis=1)
    loss_fn = _jitted_loss(model.online, model.target, train=False)
    loss, swapped = float(loss_fn(views)), float(loss_fn(views[:, ::-1]))
    assert loss > 1e-3
    np.testing.assert_allclose(swapped, loss, rtol=1e-6)


def test_loss_has_no_gradient_with_respect_to_the_target():
    config = smoke_config()
    model = pretrain_step.build_model(config, nnx.Rngs(0))
    views = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 96, 64)), jnp.float32)
    grads = _jitted_loss(model.online, model.target, train=True, grads=True)(views)
    g_online, g_target = grads[0], grads[1]  # a State keyed by the position in the tuple
    target_grads = jax.tree.leaves(g_target)
    assert len(target_grads) == 16 + 6  # every parameter of the encoder and the projector
    assert all(not np.any(np.asarray(g)) for g in target_grads)
    online_grads = [np.abs(np.asarray(g)).max() for g in jax.tree.leaves(g_online)]
    assert sum(g > 0 for g in online_grads) > 0.8 * len(online_grads)


# ------------------------------------------------------------------------------ the step


class StepRun:
    """The smoke config's compiled step on one device, run from fresh copies of one state."""

    def __init__(self):
        self.config = smoke_config()
        self.mesh = sharding.create_mesh(jax.devices()[:1])
        self.ts = pretrain_step.create_pretrain_state(self.config, self.mesh)
        self.host = jax.device_get(self.ts.state)
        self.initial = flat(self.host)
        self.batch = clip_batch(self.config)
        self.step = pretrain_step.jit_pretrain_step(self.ts, self.config, self.mesh)

    def state(self, step: int = 0):
        host = jax.tree.map(np.array, self.host)  # a copy: the step donates its input
        if step:
            counter = host["optimizer"]["step"]
            counter.set_value(np.asarray(step, counter.dtype))
        return sharding.put_state(host, self.ts.shardings)

    def __call__(self, batch=None, step: int = 0):
        batch = self.batch if batch is None else batch
        new, metrics = self.step(
            self.ts.rng_state, self.state(step), sharding.global_batch(batch, self.mesh)
        )
        return flat(new), {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def run():
    return StepRun()


@pytest.fixture(scope="module")
def first_step(run):
    return run()


STEP_KEY = "['optimizer']['step'].value"


def _leaves(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_step_metrics_and_the_online_network_moves(run, first_step):
    state, metrics = first_step
    assert metrics["finite"] == 1.0
    assert 0.0 < metrics["loss"] < 8.0 and metrics["grad_norm"] > 0
    assert metrics["learning_rate"] == pytest.approx(run.config.train.learning_rate)
    assert metrics["ema_decay"] == pytest.approx(0.99)
    assert state[STEP_KEY] == 1
    online = _leaves(state, "['model']['online']")
    still = [
        k for k, v in online.items() if np.array_equal(v, run.initial["['model']['online']" + k])
    ]
    # A conv bias before BatchNorm has no gradient (the batch mean removes it): Adam leaves it.
    assert all(re.fullmatch(r"\['encoder'\]\['conv\d'\]\['bias'\]\.value", k) for k in still), still
    assert len(online) - len(still) > 30


def test_target_is_the_ema_of_the_online_parameters_after_one_step(run, first_step):
    state, _ = first_step
    tau = np.float32(run.config.pretrain.ema_decay)
    target_params = [
        k
        for k in state
        if k.startswith("['model']['target']")
        and k.endswith("].value")
        and ("kernel" in k or "bias" in k or "scale" in k)
    ]
    # Encoder: conv1-3 and bn1-3 (2 each), fc1-2 (2 each); projector: fc1, bn, fc2 (2 each).
    assert len(target_params) == 16 + 6
    for key in target_params:
        online_key = key.replace("['target']", "['online']")
        want = tau * run.initial[key] + (np.float32(1) - tau) * state[online_key]
        try:  # exact up to the last bit (XLA may fuse the multiply-add, rounding once)
            np.testing.assert_array_max_ulp(state[key], want, maxulp=1)
        except AssertionError as e:
            raise AssertionError(f"{key}: {e}") from None
    # The target is not the online network: it moved only (1 - tau) of the way.
    kernel = "['model']['target']['encoder']['fc1']['kernel'].value"
    moved_target = np.abs(state[kernel] - run.initial[kernel]).max()
    online = kernel.replace("['target']", "['online']")
    moved_online = np.abs(state[online] - run.initial[online]).max()
    assert 0 < moved_target < 0.05 * moved_online


def test_optimizer_holds_the_online_network_only(run):
    opt_paths = [k for k in run.initial if k.startswith("['optimizer']") and "mu" in k]
    online = [k for k in run.initial if k.startswith("['model']['online']") and "kernel" in k]
    assert opt_paths and online
    assert not any("target" in k for k in run.initial if k.startswith("['optimizer']"))
    kernels_in_opt = [k for k in opt_paths if "kernel" in k]
    assert len(kernels_in_opt) == len(online)


def test_target_batchnorm_statistics_come_from_its_own_forward_pass(run, first_step):
    # Online and target start equal and see the same views, so after one step the target's
    # encoder BatchNorm statistics equal the online ones (an EMA of them would be 1% of the way).
    state, _ = first_step
    stats = [
        k
        for k in state
        if k.startswith("['model']['target']['encoder']['bn")
        and ("['mean']" in k or "['var']" in k)
    ]
    assert len(stats) == 6
    for key in stats:
        online = state[key.replace("['target']", "['online']")]
        assert not np.allclose(state[key], run.initial[key]), key
        np.testing.assert_allclose(state[key], online, rtol=1e-5, atol=1e-6, err_msg=key)


def test_step_fills_the_mixup_memory_with_the_segments(run, first_step):
    state, metrics = first_step
    batch = run.config.train.batch_size
    memory = state["['buffers']['memory'].value"]
    assert memory.shape == (run.config.pretrain.mixup_memory, 96, 64)
    assert state["['buffers']['filled'].value"] == batch == metrics["memory_filled"]
    assert state["['buffers']['position'].value"] == batch % memory.shape[0]
    assert np.all(memory[batch:] == 0) and np.isfinite(memory).all()
    assert all(np.std(memory[i]) > 0.1 for i in range(batch))
    assert np.all(memory[3, 41:] == 0)  # row 3 has 0.4 s = 41 valid frames: the rest is padding


def test_randomness_depends_only_on_the_step(run, first_step):
    _, metrics = first_step
    assert run()[1]["loss"] == metrics["loss"]
    assert run(step=5)[1]["loss"] != metrics["loss"]


def test_nonfinite_step_leaves_the_state_unchanged_but_counts_it(run):
    # A normalisation std of 0 turns the log-mel into +-inf, the views and the loss into NaN.
    host = jax.tree.map(np.array, run.host)
    host["buffers"]["norm_std"].set_value(np.float32(0.0))
    poisoned = flat(host)
    new, metrics = run.step(
        run.ts.rng_state,
        sharding.put_state(host, run.ts.shardings),
        sharding.global_batch(run.batch, run.mesh),
    )
    state = flat(new)
    assert float(metrics["finite"]) == 0.0
    assert not np.isfinite(float(metrics["loss"]))
    assert state[STEP_KEY] == 1
    for key, value in state.items():
        if key != STEP_KEY:
            np.testing.assert_array_equal(value, poisoned[key], err_msg=key)


def test_bfloat16_step_keeps_state_float32(run):
    config = smoke_config()
    config.model.dtype = "bfloat16"
    ts = pretrain_step.create_pretrain_state(config, run.mesh)
    fn = jax.jit(
        lambda rng, state, batch: pretrain_step.pretrain_step(
            ts.graphdef,
            pretrain_step.StepSettings.from_config(config),
            pretrain_step.learning_rate_schedule(config),
            pretrain_step.ema_decay_schedule(config),
            pretrain_step.seed_key(config),
            rng,
            state,
            batch,
        )
    )
    new_state, metrics = jax.eval_shape(fn, ts.rng_state, ts.state, run.batch)
    before = jax.tree_util.tree_flatten_with_path(ts.state)[0]
    after = jax.tree_util.tree_leaves(new_state)
    assert len(before) == len(after) > 50
    for (path, old), new in zip(before, after, strict=True):
        assert new.dtype == old.dtype and new.shape == old.shape, path
        assert new.dtype != jnp.bfloat16, path
    assert all(m.dtype == jnp.float32 for m in metrics.values())


def test_cosine_ema_schedule_rises_from_tau_to_one():
    config = smoke_config()
    config.pretrain.ema_schedule = "cosine"
    config.train.num_steps = 100
    tau = pretrain_step.ema_decay_schedule(config)
    assert float(tau(0)) == pytest.approx(0.99)
    assert float(tau(50)) == pytest.approx(0.995, abs=1e-6)
    assert float(tau(100)) == pytest.approx(1.0)


def test_export_encoder_of_a_model_writes_what_load_pretrained_reads(tmp_path):
    config = smoke_config()
    model = pretrain_step.build_model(config, nnx.Rngs(3))
    meta = pretrain_step.export_encoder(model, config, str(tmp_path / "encoder"), step=7)
    assert (meta["n_mels"], meta["channels"], meta["dim"], meta["step"]) == (64, 8, 32, 7)
    assert meta["norm_mean"] == pytest.approx(config.model.norm_mean)  # no state: the config's
    module = byola.AudioNTT2020(n_mels=64, channels=8, dim=32, rngs=nnx.Rngs(0))
    byola.load_pretrained(module, str(tmp_path / "encoder"))
    want = nnx.to_flat_state(nnx.state(model.online.encoder, (nnx.Param, nnx.BatchStat)))
    got = dict(nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat))))
    assert len(want) == len(got) == 22
    for path, var in want:
        np.testing.assert_array_equal(got[path].get_value(), var.get_value(), err_msg=str(path))
    config.model.byola_dim = 64  # another config than the model's
    with pytest.raises(ValueError, match="pass the config the model was built with"):
        pretrain_step.export_encoder(model, config, str(tmp_path / "other"))


def test_mixup_off_mixes_nothing_and_the_state_still_checkpoints(tmp_path):
    config = smoke_config()
    config.pretrain.mixup_memory = 0  # "0 = no mixup"
    assert aug.AugmentSettings.from_config(config).mixup_ratio == 0.0
    mesh = sharding.create_mesh(jax.devices()[:1])
    ts = pretrain_step.create_pretrain_state(config, mesh)
    step = pretrain_step.jit_pretrain_step(ts, config, mesh)
    state, metrics = step(ts.rng_state, ts.state, sharding.global_batch(clip_batch(config), mesh))
    assert float(metrics["finite"]) == 1.0 and float(metrics["memory_filled"]) == 0.0
    assert not np.any(np.asarray(state["buffers"]["memory"][...]))  # nothing was pushed
    # Orbax refuses empty arrays: the state of a run without mixup must still save and restore.
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=1, async_save=False)
    meta = {"model": pretrain_config.model_fields(config)}
    checkpointer.save(1, state, {}, meta)
    checkpointer.wait()
    restored, _, step_restored, _ = checkpointing.restore_or_init(checkpointer, state, meta)
    assert step_restored == 1
    np.testing.assert_array_equal(
        np.asarray(restored["buffers"]["memory"][...]), np.asarray(state["buffers"]["memory"][...])
    )
