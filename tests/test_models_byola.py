"""Tests of the BYOL-A encoder (`adc_jax.models.byola`), `load_pretrained` and
`encoder_from_config`, the one factory of the encoder that the captioner (`adc.create_model`) and
pretraining (`pretrain.step.build_model`) share."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from byola_fixture import CHANNELS, DIM, N_MELS, write_checkpoint
from flax import nnx

from adc_jax import config as config_lib
from adc_jax import train_state
from adc_jax.models import adc, byola
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain import step as pretrain_step


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path of a random official-format .pth, its state dict, converted dir)."""
    return write_checkpoint(tmp_path_factory.mktemp("byola"))


def small_model(dim: int = DIM, dtype=jnp.float32, seed: int = 0) -> byola.AudioNTT2020:
    return byola.AudioNTT2020(
        n_mels=N_MELS, channels=CHANNELS, dim=dim, dtype=dtype, rngs=nnx.Rngs(seed)
    )


# ------------------------------------------------------------- NumPy reference (PyTorch layout)


def _conv3x3_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PyTorch Conv2d(k=3, padding=1): x [B, I, H, W], w [O, I, 3, 3] -> [B, O, H, W]."""
    _, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], w.shape[0], h, wd), np.float64)
    for i in range(3):
        for j in range(3):
            out += np.einsum("bihw,oi->bohw", xp[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return out + b[None, :, None, None]


def reference_forward(sd: dict[str, np.ndarray], logmel: np.ndarray) -> np.ndarray:
    """BYOL-A's forward pass in eval mode with PyTorch semantics, on [B, 1, F, T] (NCHW).

    logmel: [B, T, F] -> [B, T // 8, d].
    """
    x = logmel.transpose(0, 2, 1)[:, None].astype(np.float64)  # [B, 1, F, T]
    for conv, bn in ((0, 1), (4, 5), (8, 9)):
        x = _conv3x3_nchw(x, sd[f"features.{conv}.weight"], sd[f"features.{conv}.bias"])
        p = f"features.{bn}."
        shape = (1, -1, 1, 1)
        x = (x - sd[p + "running_mean"].reshape(shape)) / np.sqrt(
            sd[p + "running_var"].reshape(shape) + 1e-5
        )
        x = x * sd[p + "weight"].reshape(shape) + sd[p + "bias"].reshape(shape)
        x = np.maximum(x, 0)
        b, c, h, w = x.shape
        x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max((3, 5))
    x = x.transpose(0, 3, 2, 1)  # (B, T, F, C), as PyTorch permutes before flattening
    b, t, f, c = x.shape
    x = x.reshape(b, t, f * c)
    x = np.maximum(x @ sd["fc.0.weight"].T + sd["fc.0.bias"], 0)
    return np.maximum(x @ sd["fc.3.weight"].T + sd["fc.3.bias"], 0)


# ------------------------------------------------------------------------------------------ model


# T mel frames -> frames after three 2x2 poolings that drop an odd last row: 8 -> 4 -> 2 -> 1,
# 15 -> 7 -> 3 -> 1, 23 -> 11 -> 5 -> 2, 37 -> 18 -> 9 -> 4, 101 -> 50 -> 25 -> 12.
@pytest.mark.parametrize(
    "frames, expected", [(8, 1), (9, 1), (15, 1), (16, 2), (23, 2), (37, 4), (101, 12)]
)
def test_num_output_frames_is_the_models_output_length(frames, expected):
    """`num_output_frames` (used for the valid-frame masks) equals the time length the network
    really produces, including for odd T and T not divisible by 8."""
    model = small_model()
    out = model(jnp.zeros((2, frames, N_MELS)), train=False)
    assert out.shape == (2, expected, DIM) and out.dtype == jnp.float32
    assert byola.num_output_frames(frames) == out.shape[1]


def test_fewer_than_8_frames_is_refused():
    with pytest.raises(ValueError, match="at least 8 frames"):
        small_model()(jnp.zeros((1, 7, N_MELS)), train=False)


def test_conv_block_equals_flax_conv_batchnorm_relu_maxpool():
    """The block (one-pass float32 BatchNorm statistics, pooling as reshape + max) computes the
    textbook layers, in value, gradient and running averages, in training and in eval mode."""
    rngs = nnx.Rngs(3)
    conv = nnx.Conv(4, 6, kernel_size=(3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
    bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, use_fast_variance=False, rngs=rngs)
    bn.scale[...] = jnp.array([1.0, -0.5, 2.0, -1.5, 0.7, -0.1])  # negative scales too
    bn.bias[...] = jnp.linspace(-0.3, 0.3, 6)
    bn.mean[...] = jnp.linspace(-0.1, 0.2, 6)
    bn.var[...] = jnp.linspace(0.5, 1.5, 6)
    x = jax.random.normal(jax.random.key(0), (2, 11, 9, 4)) + 0.5  # odd T and F: floors

    def ours(c, x, norm, train):
        return byola.conv_block(c, norm, x, train=train)

    def textbook(c, x, norm, train):
        y = jax.nn.relu(norm(c(x), use_running_average=not train))
        return nnx.max_pool(y, (2, 2), strides=(2, 2), padding="VALID")

    for train in (True, False):
        outs = {}
        for name, block in (("ours", ours), ("textbook", textbook)):
            norm = nnx.clone(bn)
            y = block(conv, x, norm, train)

            def loss(c, x, block=block, train=train):
                y = block(c, x, nnx.clone(bn), train)
                return (y * jnp.cos(y)).sum()

            grads = nnx.grad(loss, argnums=(0, 1))(conv, x)
            outs[name] = (y, grads, norm.mean[...], norm.var[...])
        (y1, g1, m1, v1), (y2, g2, m2, v2) = outs["ours"], outs["textbook"]
        assert y1.shape == y2.shape == (2, 5, 4, 6)
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_paper_size_shapes():
    """Paper scale (64 channels, d=2048) on a 10 s clip: 1001 frames -> 125; abstractly."""
    model = nnx.eval_shape(lambda: byola.AudioNTT2020(dim=2048, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(
        lambda s, x: nnx.merge(graphdef, s)(x, train=False),
        state,
        jax.ShapeDtypeStruct((2, 1001, 64), jnp.float32),
    )
    assert out.shape == (2, 125, 2048)
    assert state["fc1"]["kernel"].shape == (512, 2048)


def test_converted_weights_reproduce_pytorch_forward(checkpoint):
    """The NumPy NCHW reference with the PyTorch weights equals our NHWC model with the converted
    weights: checks the kernel transpose and the f * C + c feature order of the head."""
    _, sd, out_dir = checkpoint
    model = small_model()
    byola.load_pretrained(model, str(out_dir))
    logmel = np.random.default_rng(0).normal(size=(2, 37, N_MELS)).astype(np.float32)
    ours = np.asarray(model(jnp.asarray(logmel), train=False))
    ref = reference_forward(sd, logmel)
    assert ours.shape == ref.shape == (2, 4, DIM)
    assert np.abs(ref).max() > 0.1  # not vacuous
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_head_reads_features_in_f_times_c_plus_c_order(checkpoint):
    """A single non-zero flattened input f * C + c reaches the head through fc.0's column
    f * C + c: our flatten must put pooled feature (f, c) there."""
    _, sd, out_dir = checkpoint
    model = small_model()
    byola.load_pretrained(model, str(out_dir))
    pooled = np.zeros((1, 1, N_MELS // 8, CHANNELS), np.float32)  # [B, T', F', C]
    f, c = 5, 3
    pooled[0, 0, f, c] = 1.0
    flat = jnp.asarray(pooled.reshape(1, 1, -1))  # our flatten
    got = np.asarray(model.fc1(flat))[0, 0]
    np.testing.assert_allclose(
        got, sd["fc.0.weight"][:, f * CHANNELS + c] + sd["fc.0.bias"], atol=1e-6
    )


def test_batchnorm_train_uses_batch_stats_and_updates_running_averages():
    model = small_model()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(2.0, 3.0, (4, 24, N_MELS)).astype(np.float32))
    x_other = x.at[1:].set(jnp.asarray(rng.normal(-1.0, 1.0, (3, 24, N_MELS)), jnp.float32))

    # Eval: each example is processed alone; running stats untouched.
    eval_a, eval_b = model(x, train=False), model(x_other, train=False)
    np.testing.assert_allclose(eval_a[0], eval_b[0], atol=1e-6)
    np.testing.assert_array_equal(model.bn1.mean[...], 0.0)

    # Train: example 0 depends on the rest of the batch; running stats move by 0.1 x batch stats.
    conv1_out = np.asarray(model.conv1(x[..., None]), np.float64)
    train_a = model(x, train=True)
    batch_mean = conv1_out.mean(axis=(0, 1, 2))
    batch_var = conv1_out.var(axis=(0, 1, 2))
    np.testing.assert_allclose(model.bn1.mean[...], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.bn1.var[...], 0.9 + 0.1 * batch_var, rtol=1e-4)
    assert model.bn1.mean[...].dtype == jnp.float32
    train_b = model(x_other, train=True)
    assert np.abs(np.asarray(train_a[0]) - np.asarray(train_b[0])).max() > 1e-3


def test_dropout_only_in_training():
    model = byola.AudioNTT2020(
        n_mels=N_MELS, channels=CHANNELS, dim=64, dropout=0.5, rngs=nnx.Rngs(0)
    )
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, N_MELS)), jnp.float32)
    np.testing.assert_array_equal(model(x, train=False), model(x, train=False))
    nnx.reseed(model, dropout=1)
    a = model(x, train=True)
    nnx.reseed(model, dropout=2)
    b = model(x, train=True)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("shape", [(3, 11, 9), (2, 16, 12), (2, 41, 64)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("chunked", [False, True])
def test_first_block_as_phase_matmul_equals_conv_block(shape, train, chunked, monkeypatch):
    """`first_conv_block` (one matmul over pooling phases, BatchNorm statistics from the patches'
    Gram matrix) is `conv_block` on a 1-channel input: output, running statistics and gradients
    for the parameters, with odd and even T and F and negative BatchNorm scales; `chunked` runs
    the phase max one clip per loop iteration (its CPU path), else the whole batch at once."""
    windows = (shape[1] // 2) * (shape[2] // 2)
    monkeypatch.setattr(byola, "CPU_CHUNK_WINDOWS", windows if chunked else shape[0] * windows)
    assert byola._chunks(jnp.zeros((shape[0], windows, 16))).shape[0] == (
        shape[0] if chunked else 1
    )
    rngs = nnx.Rngs(5)
    conv = nnx.Conv(1, 6, kernel_size=(3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
    conv.bias[...] = jnp.linspace(-0.4, 0.6, 6)
    bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, use_fast_variance=False, rngs=rngs)
    bn.scale[...] = jnp.array([1.0, -0.5, 2.0, -1.5, 0.7, -0.1])
    bn.bias[...] = jnp.linspace(-0.3, 0.3, 6)
    bn.mean[...] = jnp.linspace(-0.1, 0.2, 6)
    bn.var[...] = jnp.linspace(0.5, 1.5, 6)
    x = 2.0 * jax.random.normal(jax.random.key(1), shape + (1,)) + 1.0
    results = {}
    for name, block in (("conv", byola.conv_block), ("phases", byola.first_conv_block)):
        norm = nnx.clone(bn)
        y = block(conv, norm, x, train=train)

        def loss(c, n, block=block):
            out = block(c, n, x, train=train)
            return (out * jnp.cos(out)).sum()

        grads = nnx.grad(loss, argnums=(0, 1))(conv, nnx.clone(bn))
        results[name] = (y, norm.mean[...], norm.var[...], grads)
    (y1, m1, v1, g1), (y2, m2, v2, g2) = results["conv"], results["phases"]
    assert y1.shape == y2.shape == (shape[0], shape[1] // 2, shape[2] // 2, 6)
    np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m2, m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v2, v1, rtol=1e-5, atol=1e-6)
    if train:  # the running statistics moved, so the comparison above says something
        assert not np.allclose(m1, bn.mean[...])
    leaves1, leaves2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
    assert len(leaves1) == len(leaves2) > 0
    # In training the conv bias gradient is ~0 (BatchNorm removes the bias): compare every leaf
    # against the largest gradient, not its own size.
    scale = max(float(np.abs(a).max()) for a in leaves1)
    for a, b in zip(leaves1, leaves2, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale)


def test_first_block_setting_gives_the_same_encoder():
    """AudioNTT2020 with first_block="phases" has the same parameters as "conv" and computes the
    same embeddings and gradients (train mode), so checkpoints move freely between the two."""
    x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 41, N_MELS)), jnp.float32)
    models = {
        impl: byola.AudioNTT2020(
            n_mels=N_MELS, channels=CHANNELS, dim=DIM, first_block=impl, rngs=nnx.Rngs(0)
        )
        for impl in ("conv", "phases")
    }
    states = {k: nnx.state(m, nnx.Param) for k, m in models.items()}
    assert jax.tree.structure(states["conv"]) == jax.tree.structure(states["phases"])
    outs, grads = {}, {}
    for impl, model in models.items():
        outs[impl] = model(x, train=False)
        grads[impl] = nnx.grad(lambda m: jnp.sum(m(x, train=True) ** 2))(model)
    np.testing.assert_allclose(outs["phases"], outs["conv"], rtol=1e-5, atol=1e-5)
    scale = max(float(np.abs(a).max()) for a in jax.tree.leaves(grads["conv"]))
    for a, b in zip(jax.tree.leaves(grads["conv"]), jax.tree.leaves(grads["phases"]), strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-5 * scale)
    with pytest.raises(ValueError, match="first_block"):
        byola.AudioNTT2020(n_mels=N_MELS, first_block="fft", rngs=nnx.Rngs(0))


def test_bfloat16_compute_with_float32_params(checkpoint):
    _, _, out_dir = checkpoint
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 40, N_MELS)), jnp.float32)
    ref_model, bf16_model = small_model(), small_model(dtype=jnp.bfloat16)
    byola.load_pretrained(ref_model, str(out_dir))
    byola.load_pretrained(bf16_model, str(out_dir))
    params = nnx.state(bf16_model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out = bf16_model(x, train=False)
    ref = ref_model(x, train=False)
    assert out.dtype == jnp.bfloat16 and out.shape == ref.shape
    np.testing.assert_allclose(
        np.asarray(out, np.float32), ref, atol=0.05 * float(jnp.abs(ref).max())
    )
    bf16_model(x, train=True)
    assert bf16_model.bn3.var[...].dtype == jnp.float32


def test_jit_train_step_with_split_merge():
    """The way the trainer calls it: pure function of (graphdef, state) under jax.jit, gradients
    by nnx.value_and_grad, BatchNorm statistics updated in the returned state."""
    model = small_model()
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, x):
        m = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x, train=True) ** 2))(m)
        return nnx.state(m), loss, grads

    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 16, N_MELS)), jnp.float32)
    new_state, loss, grads = step(state, x)
    assert np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert np.abs(grads["conv1"]["kernel"][...]).max() > 0
    assert not np.allclose(new_state["bn1"]["mean"][...], state["bn1"]["mean"][...])


# -------------------------------------------------------------------------- load_pretrained


def test_load_pretrained_errors(checkpoint, tmp_path):
    _, _, out_dir = checkpoint
    with pytest.raises(ValueError, match=r"'fc1/kernel'.*\(64, 16\).*\(64, 32\)") as err:
        byola.load_pretrained(small_model(dim=32), str(out_dir))
    assert "byola_dim" in str(err.value)
    with pytest.raises(FileNotFoundError, match="convert_byola.py"):
        byola.load_pretrained(small_model(), str(tmp_path / "nowhere"))


def test_load_pretrained_logs_file_shapes_and_mode(checkpoint, caplog):
    _, _, out_dir = checkpoint
    for frozen, mode in ((True, "frozen"), (False, "fine-tuned")):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            byola.load_pretrained(small_model(), str(out_dir), frozen=frozen)
        lines = [r.getMessage() for r in caplog.records if "BYOL-A" in r.getMessage()]
        assert len(lines) == 1, lines
        assert str(out_dir) in lines[0] and f"is {mode}" in lines[0]
        assert f"n_mels={N_MELS}, channels={CHANNELS}, dim={DIM}" in lines[0]


def test_phase_max_gradient_splits_ties_like_jnp_max(monkeypatch):
    """`phase_max`'s custom backward pass (recomputed chunk by chunk) gives the kernel and shift
    gradients of autodiff of the plain matmul + max + relu, including exact ties between phases
    (kernel columns repeated) and inactive relus, and a zero gradient for the patches."""
    monkeypatch.setattr(byola, "CPU_CHUNK_WINDOWS", 10)  # 2 clips of 5 windows per chunk
    rng = np.random.default_rng(0)
    patches = jnp.asarray(rng.normal(size=(6, 5, 16)), jnp.float32)
    half = rng.normal(size=(16, 2, 3))
    kernel = jnp.asarray(np.concatenate([half, half], axis=1).reshape(16, 12), jnp.float32)
    shift = jnp.asarray([-1.0, 0.0, 1.0], jnp.float32)
    weights = jnp.asarray(rng.normal(size=(6, 5, 3)), jnp.float32)
    assert byola._chunks(patches).shape == (3, 10, 16)

    def loss(fn):
        return lambda p, k, b: jnp.sum(fn(p, k, b) * weights)

    out = byola.phase_max(patches, kernel, shift)
    np.testing.assert_allclose(out, byola._phase_max_chunk(patches, kernel, shift), rtol=1e-6)
    assert 0 < float((out == 0).mean()) < 1  # some relus are off, so the masking is exercised
    got = jax.grad(loss(byola.phase_max), argnums=(0, 1, 2))(patches, kernel, shift)
    want = jax.grad(loss(byola._phase_max_chunk), argnums=(1, 2))(patches, kernel, shift)
    np.testing.assert_allclose(got[1], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], want[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0], np.zeros(patches.shape))  # documented: no input grad
    # With the columns repeated every max is a tie: the kernel gradient is the same in each copy.
    kernel_grad = np.asarray(got[1]).reshape(16, 4, 3)
    np.testing.assert_allclose(kernel_grad[:, :2], kernel_grad[:, 2:], rtol=1e-6)


# ------------------------------------------------------------------ encoder_from_config

VOCAB_SIZE = 20


def variables(module: nnx.Module) -> dict[str, np.ndarray]:
    """'conv1/kernel' -> value, for every Param and BatchStat of `module`."""
    flat = nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat)))
    return {"/".join(map(str, path)): np.asarray(var[...]) for path, var in flat}


def assert_same_variables(a: nnx.Module, b: nnx.Module) -> None:
    va, vb = variables(a), variables(b)
    assert va.keys() == vb.keys()
    for key in va:
        np.testing.assert_array_equal(va[key], vb[key], err_msg=key)


@pytest.fixture(name="captioner")
def captioner_fixture():
    return config_lib.base_config("smoke")


# ------------------------------------------------------------------------ config fields


def test_the_config_fields_set_the_encoder(captioner):
    m = captioner.model
    m.n_mels, m.byola_channels, m.byola_dim, m.byola_dropout = 32, 4, 24, 0.25
    encoder = byola.encoder_from_config(m, rngs=train_state.init_rngs(0))
    assert (encoder.n_mels, encoder.channels, encoder.dim) == (32, 4, 24)
    assert encoder.dropout.rate == 0.25
    shapes = {k: v.shape for k, v in variables(encoder).items()}
    assert shapes["conv1/kernel"] == (3, 3, 1, 4)
    assert shapes["conv3/kernel"] == (3, 3, 4, 4)
    assert shapes["fc1/kernel"] == (32 // 8 * 4, 24)
    assert shapes["fc2/kernel"] == (24, 24)
    assert shapes["bn1/mean"] == (4,)
    out = encoder(jnp.zeros((2, 40, 32)), train=False)
    assert out.shape == (2, 40 // 8, 24)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype_sets_the_compute_dtype_not_the_parameters(captioner, dtype):
    captioner.model.dtype = dtype
    encoder = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(0))
    want = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    assert encoder.dtype == want
    assert encoder.conv1.dtype == want and encoder.fc2.dtype == want
    assert all(v.dtype == np.float32 for v in variables(encoder).values())
    out = encoder(jnp.zeros((1, 16, captioner.model.n_mels)), train=False)
    assert out.dtype == want


@pytest.mark.parametrize(
    ("setting", "impl"),
    [
        ("auto", "phases" if jax.default_backend() == "cpu" else "conv"),
        ("conv", "conv"),
        ("phases", "phases"),
    ],
)
def test_first_block_setting(captioner, setting, impl):
    captioner.model.byola_first_block = setting
    encoder = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(0))
    assert encoder.first_block == impl


def test_first_block_changes_neither_parameters_nor_function(captioner):
    modules = {}
    for setting in ("conv", "phases"):
        captioner.model.byola_first_block = setting
        modules[setting] = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(3))
    assert_same_variables(modules["conv"], modules["phases"])
    x = jax.random.normal(jax.random.key(0), (2, 24, captioner.model.n_mels))
    np.testing.assert_allclose(
        modules["conv"](x, train=False), modules["phases"](x, train=False), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------- one encoder for every trainer


def test_seed_gives_the_same_encoder_and_another_seed_another(captioner):
    a = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(5))
    b = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(5))
    c = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(6))
    assert_same_variables(a, b)
    assert not np.array_equal(variables(a)["fc1/kernel"], variables(c)["fc1/kernel"])


def test_the_captioner_builds_byola_first_from_the_same_seed(captioner):
    """create_model draws BYOL-A's parameters before any other part's, so the captioner's
    encoder is the factory's for the same seed (what makes pretrained encoders line up)."""
    model = adc.create_model(captioner, VOCAB_SIZE, train_state.init_rngs(11))
    alone = byola.encoder_from_config(captioner.model, rngs=train_state.init_rngs(11))
    assert_same_variables(model.byola, alone)
    assert model.byola.first_block == alone.first_block and model.byola.dtype == alone.dtype


def test_pretraining_builds_the_same_encoder_as_the_captioner(captioner):
    pretraining = pretrain_config_lib.pretrain_config("smoke")
    for key in ("n_mels", "byola_channels", "byola_dim", "byola_dropout", "byola_first_block"):
        assert pretraining.model[key] == captioner.model[key]
    byol = pretrain_step.build_model(pretraining, train_state.init_rngs(11))
    model = adc.create_model(captioner, VOCAB_SIZE, train_state.init_rngs(11))
    assert_same_variables(byol.online.encoder, model.byola)
    # The target starts as a copy of the online encoder.
    assert_same_variables(byol.target.encoder, byol.online.encoder)
