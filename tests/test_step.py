"""Tests of the jitted train step: multi-device equivalence, bf16, non-finite steps, freezing,
dropout determinism.

All tests use `configs/late_sdd.py:smoke` (every mechanism on: BYOL-A, CAC encoder, late SDD,
decoder) with a global batch of 8 pairs and warm-up switched off, so the first step already
moves the parameters (with warm-up the learning rate of step 0 is 0).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from adc_jax import sharding
from adc_jax import step as step_lib
from adc_jax.config import base_config
from adc_jax.data.random_batch import random_batch

VOCAB = 20
N_DEVICES = 8

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(repo_root: str = REPO_ROOT, **model_overrides):
    """`configs/late_sdd.py:smoke` with a batch of 8 pairs, no warm-up and model overrides."""
    path = os.path.join(repo_root, "configs", "late_sdd.py")
    spec = importlib.util.spec_from_file_location("late_sdd_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.train.batch_size = 8
    config.train.warmup_steps = 0
    config.model.update(model_overrides)
    return config


def flat(state) -> dict[str, np.ndarray]:
    """{path: host array} of every leaf of a state."""
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


# Run with 8 forced CPU devices: one train step on a 1-device and on an 8-device mesh, same
# config, batch and initial state; saves metrics and states. argv: this file, output .npz.
MULTI_DEVICE_SCRIPT = """
import importlib.util
import sys

import jax
import numpy as np

from adc_jax import sharding
from adc_jax import step as step_lib
from adc_jax.data.random_batch import random_batch

spec = importlib.util.spec_from_file_location("step_test_helpers", sys.argv[1])
helpers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(helpers)

assert len(jax.devices()) == 8, jax.devices()
config = helpers.smoke_config()
batch = random_batch(config, helpers.VOCAB, dtype="float32")
results = {}
for n in (1, 8):
    mesh = sharding.create_mesh(jax.devices()[:n])
    ts = step_lib.create_train_state(config, helpers.VOCAB, mesh)
    train_step = step_lib.jit_train_step(ts, config, mesh)
    global_batch = sharding.global_batch(batch, mesh)
    assert len(global_batch["wav1"].sharding.device_set) == n
    state, metrics = train_step(ts.rng_state, ts.state, global_batch)
    leaf = jax.tree_util.tree_leaves(state)[0]
    results[f"devices_{n}/state_devices"] = np.int32(len(leaf.sharding.device_set))
    for k, v in metrics.items():
        results[f"{n}/metric/{k}"] = np.asarray(v)
    for k, v in helpers.flat(state).items():
        results[f"{n}/state/{k}"] = v
np.savez(sys.argv[2], **results)
"""


@pytest.fixture(scope="module")
def multi_device_run(tmp_path_factory):
    """Starts the 8-device comparison in a subprocess at once (it runs while the other tests
    compile) and returns a function that waits for its results."""
    out_dir = tmp_path_factory.mktemp("multi_device")
    script = out_dir / "compare.py"
    script.write_text(MULTI_DEVICE_SCRIPT)
    out_path = out_dir / "results.npz"
    flags = f"--xla_force_host_platform_device_count={N_DEVICES}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    proc = subprocess.Popen(
        [sys.executable, str(script), os.path.abspath(__file__), str(out_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def wait():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-5000:]
        return dict(np.load(out_path))

    yield wait
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class Run:
    """A config's train state on one device, its jitted step and a fresh-state factory."""

    def __init__(self, batch, **model_overrides):
        self.config = smoke_config(**model_overrides)
        self.mesh = sharding.create_mesh(jax.devices()[:1])
        self.ts = step_lib.create_train_state(self.config, VOCAB, self.mesh)
        self.host_state = jax.device_get(self.ts.state)
        self.initial = flat(self.host_state)
        jitted = step_lib.jit_train_step(self.ts, self.config, self.mesh)
        self.train_step = jitted.lower(
            self.ts.rng_state, self.ts.state, sharding.global_batch(batch, self.mesh)
        ).compile()

    def state(self, step: int = 0):
        """A fresh copy of the initial state (the step donates its input), at `step`."""
        host = self.host_state
        if step:
            host = jax.tree.map(np.array, host)  # a copy: host arrays are mutable NumPy arrays
            counter = host["optimizer"]["step"]
            counter.set_value(np.asarray(step, counter.dtype))
        return sharding.put_state(host, self.ts.shardings)

    def __call__(self, batch, step: int = 0):
        """(new state as {path: array}, metrics as floats) of one step from the initial state."""
        new_state, metrics = self.train_step(
            self.ts.rng_state, self.state(step), sharding.global_batch(batch, self.mesh)
        )
        return flat(new_state), {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def batch():
    """Float waveforms (so that a test can inject a NaN); clip 2 of rows 0, 3, 6 half-length."""
    return random_batch(smoke_config(), VOCAB, dtype="float32")


@pytest.fixture(scope="module")
def f32(multi_device_run, batch):
    del multi_device_run  # started first so that it overlaps with this module's compilations
    return Run(batch)


@pytest.fixture(scope="module")
def f32_step(f32, batch):
    return f32(batch)


STEP_KEY = "['optimizer']['step'].value"


def test_step_reports_every_term_and_moves_params(f32, f32_step):
    state, metrics = f32_step
    for key in (
        "loss",
        "caption_loss",
        "similar_loss",
        "discrepant_loss",
        "sdd_loss",
        "token_accuracy",
        "grad_norm",
        "learning_rate",
        "finite",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["finite"] == 1.0
    np.testing.assert_allclose(
        metrics["sdd_loss"], metrics["similar_loss"] + metrics["discrepant_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        metrics["loss"],
        metrics["caption_loss"] + f32.config.model.sdd_weight * metrics["sdd_loss"],
        rtol=1e-6,
    )
    assert metrics["learning_rate"] == pytest.approx(f32.config.train.learning_rate)
    assert state[STEP_KEY] == 1
    # Every parameter (BYOL-A, encoder, SDD nets, decoder) and BatchNorm statistic moves.
    model = [k for k in state if k.startswith("['model']")]
    assert {k.split("]")[1] + "]" for k in model} == {
        "['byola']",
        "['encoder']",
        "['sdd']",
        "['decoder']",
    }
    still = [k for k in model if np.array_equal(state[k], f32.initial[k])]
    assert not still


def test_dropout_depends_only_on_the_step(f32, batch, f32_step):
    _, metrics = f32_step
    _, again = f32(batch)
    assert again["loss"] == metrics["loss"]  # same state, same step: same dropout masks
    _, later = f32(batch, step=5)
    assert later["loss"] != metrics["loss"]  # another step number draws other masks
    assert abs(later["loss"] - metrics["loss"]) < 0.5 * metrics["loss"]


def test_nonfinite_loss_leaves_state_unchanged_but_counts_the_step(f32, batch):
    bad = {k: v.copy() for k, v in batch.items()}
    bad["wav1"][3, 100] = np.nan
    state, metrics = f32(bad)
    # XLA:CPU's max (max-pooling, ReLU) may drop a NaN, so the loss can stay finite; the NaN
    # still reaches the BatchNorm statistics and through them the gradient norm.
    assert not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]))
    assert metrics["finite"] == 0.0
    assert state[STEP_KEY] == 1
    for key, value in state.items():
        if key != STEP_KEY:
            np.testing.assert_array_equal(value, f32.initial[key], err_msg=key)


def eval_loss(config, batch):
    """Eval-mode (no dropout, BatchNorm running stats) loss terms of a fresh model of config."""
    model = step_lib.build_model_and_optimizer(config, VOCAB)[0]
    graphdef, state = nnx.split(model)
    loss_config = step_lib.LossConfig.from_config(config)

    @jax.jit
    def run(state, batch):
        return step_lib.compute_loss(nnx.merge(graphdef, state), batch, loss_config, train=False)[1]

    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {k: float(v) for k, v in run(state, batch).items()}, params


def test_bfloat16_loss_close_to_float32(f32, batch):
    bf16_config = smoke_config(dtype="bfloat16")
    metrics16, params16 = eval_loss(bf16_config, batch)
    metrics32, params32 = eval_loss(f32.config, batch)
    # Same seed, same float32 parameters whatever the compute dtype.
    for (path, p16), (_, p32) in zip(params16, params32, strict=True):
        assert p16.dtype == jnp.float32, path
        np.testing.assert_array_equal(p16[...], p32[...], err_msg=str(path))
    # bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 2e-3 per operation); through the
    # front end's CNN, the encoder, the LSTMs and the decoder the losses stay within 2% of
    # float32 (the losses and softmaxes themselves are computed in float32).
    for key in ("loss", "caption_loss", "similar_loss", "discrepant_loss"):
        assert abs(metrics16[key] - metrics32[key]) < 2e-2 * max(1.0, abs(metrics32[key])), key
    assert metrics16["loss"] != metrics32["loss"]  # bfloat16 really was used


def test_bfloat16_step_keeps_params_and_optimizer_state_float32(batch):
    config = smoke_config(dtype="bfloat16")
    mesh = sharding.create_mesh(jax.devices()[:1])
    ts = step_lib.create_train_state(config, VOCAB, mesh)
    train_step = functools.partial(
        step_lib.train_step,
        ts.graphdef,
        step_lib.LossConfig.from_config(config),
        step_lib.learning_rate_schedule(config),
        step_lib.dropout_seed_key(config),
    )
    # Shapes and dtypes of the step's outputs, traced without compiling.
    new_state, metrics = jax.eval_shape(train_step, ts.rng_state, ts.state, batch)
    before = jax.tree_util.tree_flatten_with_path(ts.state)[0]
    after = jax.tree_util.tree_leaves(new_state)
    assert len(before) == len(after)
    floats = 0
    for (path, old), new in zip(before, after, strict=True):
        assert new.dtype == old.dtype and new.shape == old.shape, path
        floats += jnp.issubdtype(new.dtype, jnp.floating)
        assert new.dtype != jnp.bfloat16, path
    assert floats > 100
    assert all(m.dtype == jnp.float32 for m in metrics.values())


def test_frozen_byola_does_not_change(batch):
    frozen = Run(batch, byola_freeze=True)
    state, metrics = frozen(batch)
    assert metrics["finite"] == 1.0
    byola = [k for k in state if k.startswith("['model']['byola']")]
    assert any("['mean']" in k for k in byola) and any("['kernel']" in k for k in byola)
    for key in byola:  # parameters and BatchNorm statistics
        np.testing.assert_array_equal(state[key], frozen.initial[key], err_msg=key)
    rest = [k for k in state if k.startswith("['model']") and k not in byola]
    assert len(rest) > 50
    still = [k for k in rest if np.array_equal(state[k], frozen.initial[k])]
    assert not still  # the encoder, SDD nets and decoder still train


def test_optimizer_clips_the_global_gradient_norm():
    # Adam's first update ignores the gradient's scale, so one step from the initial state cannot
    # tell a clipped gradient from an unclipped one; over several steps with different gradient
    # scales it can. Gradients far above train.grad_clip must move the parameters exactly as the
    # same gradients rescaled to global norm grad_clip do (BYOL-A and the rest alike).
    config = smoke_config()
    clip = config.train.grad_clip
    tx = step_lib.make_optimizer(config)
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    params = {
        "byola": {"kernel": normal(3, 4)},
        "decoder": {"kernel": normal(4, 5), "bias": normal(5)},
    }
    grads = [
        jax.tree.map(lambda p, s=scale: s * normal(*p.shape), params) for scale in (100, 1000, 30)
    ]
    clipped = [jax.tree.map(lambda x, g=g: x * (clip / optax.tree.norm(g)), g) for g in grads]
    assert all(float(optax.tree.norm(g)) > 50 * clip for g in grads)

    def trajectory(gradients):
        p, opt_state = params, tx.init(params)
        out = []
        for g in gradients:
            updates, opt_state = tx.update(g, opt_state, p)
            p = optax.apply_updates(p, updates)
            out.append(flat(p))
        return out

    for step, (got, want) in enumerate(zip(trajectory(grads), trajectory(clipped), strict=True)):
        for key in want:
            assert not np.array_equal(want[key], flat(params)[key]), (step, key)
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=f"{step} {key}")


# Parameters whose gradient is zero in exact arithmetic: a bias before BatchNorm (the batch mean
# removes it) and attention key biases (softmax ignores a constant added to every logit). Their
# float gradients are rounding noise (~1e-9) that Adam's first step turns into updates of up to
# the learning rate in either direction, so 1 and 8 devices may move them differently.
ZERO_GRADIENT = re.compile(r"\['byola'\]\['conv\d'\]\['bias'\]|\['key'\]\['bias'\]")


def test_eight_devices_match_one_device(multi_device_run, f32):
    results = multi_device_run()
    assert results["devices_1/state_devices"] == 1 and results["devices_8/state_devices"] == 8
    metrics = sorted(k.split("/", 2)[2] for k in results if k.startswith("1/metric/"))
    assert {"loss", "caption_loss", "similar_loss", "discrepant_loss", "grad_norm"} <= set(metrics)
    for name in metrics:
        np.testing.assert_allclose(
            results[f"8/metric/{name}"],
            results[f"1/metric/{name}"],
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )
    state_keys = [k.split("/", 2)[2] for k in results if k.startswith("1/state/")]
    assert len(state_keys) > 50
    lr = f32.config.train.learning_rate
    noisy = 0
    for key in state_keys:
        one, eight = results[f"1/state/{key}"], results[f"8/state/{key}"]
        if key.startswith("['model']") and ZERO_GRADIENT.search(key):
            noisy += 1
            np.testing.assert_array_less(np.abs(eight - one), 2.01 * lr, err_msg=key)
            continue
        scale = max(1.0, float(np.abs(one).max(initial=0)))
        np.testing.assert_allclose(eight, one, rtol=0, atol=1e-5 * scale, err_msg=key)
    assert noisy == 3 + 3  # conv1-3 biases; key biases of the encoder layer and 2 decoder ones


def test_remat_cnn_gives_the_same_loss_and_gradient_norm():
    """`model.remat_cnn` recomputes the CNN in the backward pass: same function, same gradients."""
    mesh = sharding.create_mesh(jax.devices()[:1])
    results = []
    for remat in (False, True):
        config = base_config("smoke")
        config.model.remat_cnn = remat
        ts = step_lib.create_train_state(config, 50, mesh)
        batch = sharding.global_batch(random_batch(config, 50, batch_size=8), mesh)
        _, metrics = step_lib.jit_train_step(ts, config, mesh)(ts.rng_state, ts.state, batch)
        results.append((float(metrics["loss"]), float(metrics["grad_norm"])))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_caption_loss_equals_cross_entropy_with_smoothed_one_hot_labels(batch, alpha):
    """The loss skips building [B, L, V] one-hot labels; it must equal optax's cross-entropy
    against optax.smooth_labels(one_hot) over the non-padding tokens."""
    config = smoke_config()
    model = step_lib.build_model_and_optimizer(config, VOCAB)[0]
    loss_config = step_lib.LossConfig(sdd_weight=0.0, label_smoothing=alpha)
    _, metrics = step_lib.compute_loss(model, batch, loss_config, train=False)
    tokens = jnp.asarray(batch["tokens"])
    out = model(
        jnp.asarray(batch["wav1"]),
        jnp.asarray(batch["wav1_len"]),
        jnp.asarray(batch["wav2"]),
        jnp.asarray(batch["wav2_len"]),
        tokens[:, :-1],
        train=False,
    )
    labels = optax.smooth_labels(jax.nn.one_hot(tokens[:, 1:], VOCAB), alpha)
    ce = optax.softmax_cross_entropy(out["logits"], labels)
    weights = (tokens[:, 1:] != 0).astype(jnp.float32)
    expected = jnp.sum(ce * weights) / weights.sum()
    np.testing.assert_allclose(float(metrics["caption_loss"]), float(expected), rtol=1e-5)
