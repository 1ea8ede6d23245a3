"""Tests of BYOL-A pretraining's step (`adc_jax.pretrain.step`): the loss of the online and target
networks (symmetry, the stop-gradient to the target), the EMA update, BatchNorm statistics, the
mixup memory, randomness from the step, non-finite steps, bfloat16, the EMA schedule and the
encoder export.

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
from adc_jax.models import byol, byola, frontend
from adc_jax.pretrain import augment as aug
from adc_jax.pretrain import config as pretrain_config
from adc_jax.pretrain import step as pretrain_step

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ------------------------------------------------------------------------------ the loss


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


def test_norm_stats_are_the_mean_and_std_of_valid_log_mel_frames():
    config = smoke_config()
    rng = np.random.default_rng(0)
    n = int(config.data.clip_seconds * config.data.sample_rate)
    batches = []
    for _ in range(2):
        wav = (2000 * rng.normal(size=(8, n))).astype(np.int16)
        lengths = rng.integers(n // 4, n + 1, 8).astype(np.int32)
        wav[np.arange(n)[None] >= lengths[:, None]] = 0
        batches.append({"wav": wav, "wav_len": lengths})
    mesh = sharding.create_mesh(jax.devices()[:1])
    mean, std = pretrain_step.estimate_norm_stats(
        iter(sharding.global_batch(b, mesh) for b in batches), config, mesh, 2
    )
    frames = []
    for b in batches:
        x = np.asarray(frontend.log_mel(b["wav"].astype(np.float32) / 32767.0, mean=0.0, std=1.0))
        for row, length in zip(x, b["wav_len"], strict=True):
            frames.append(row[: length // config.model.hop_length + 1])
    frames = np.concatenate(frames).astype(np.float64)
    assert mean == pytest.approx(frames.mean(), rel=1e-4)
    assert std == pytest.approx(frames.std(), rel=1e-4)
