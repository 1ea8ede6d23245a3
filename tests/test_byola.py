"""Tests of the BYOL-A encoder, the torch-free checkpoint reader and the converter."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax.models import byola

REPO = Path(__file__).resolve().parents[1]
# Small but with every structural feature of the real net (64 mels, 3 blocks, 2-layer head).
CHANNELS, DIM, N_MELS = 8, 16, 64


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_tool = _load_tool("make_byola_fixture")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path of a random official-format .pth, its state dict, converted dir)."""
    root = tmp_path_factory.mktemp("byola")
    sd = fixture_tool.random_state_dict(dim=DIM, channels=CHANNELS, n_mels=N_MELS, seed=0)
    pth = root / "AudioNTT2020-test.pth"
    fixture_tool.save_torch_state_dict(str(pth), sd)
    out = root / "converted"
    byola.convert_checkpoint(str(pth), str(out))
    return pth, sd, out


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


@pytest.mark.parametrize("frames", [8, 9, 15, 37, 101])
def test_output_shape_and_frame_count(frames):
    model = small_model()
    out = model(jnp.zeros((2, frames, N_MELS)), train=False)
    assert byola.num_output_frames(frames) == frames // 8
    assert out.shape == (2, frames // 8, DIM) and out.dtype == jnp.float32


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


# ---------------------------------------------------------------------- checkpoints and converter


def test_reader_round_trips_the_fixture(checkpoint):
    pth, sd, _ = checkpoint
    read = byola.read_torch_state_dict(str(pth))
    assert list(read) == list(sd)
    for key, value in sd.items():
        assert read[key].shape == value.shape and read[key].dtype == value.dtype, key
        np.testing.assert_array_equal(read[key], value)
    assert read["features.1.num_batches_tracked"].shape == ()


def test_convert_and_load_round_trip(checkpoint):
    pth, sd, out_dir = checkpoint
    meta = json.loads((out_dir / "meta.json").read_text())
    assert (meta["dim"], meta["channels"], meta["n_mels"]) == (DIM, CHANNELS, N_MELS)
    assert len(meta["source_sha256"]) == 64 and "fc.0.weight" in meta["source_keys"]
    model = small_model(seed=7)
    byola.load_pretrained(model, str(out_dir))
    expected = {
        "conv1/kernel": sd["features.0.weight"].transpose(3, 2, 1, 0),
        "conv3/bias": sd["features.8.bias"],
        "bn2/scale": sd["features.5.weight"],
        "bn2/bias": sd["features.5.bias"],
        "bn2/mean": sd["features.5.running_mean"],
        "bn3/var": sd["features.9.running_var"],
        "fc1/kernel": sd["fc.0.weight"].T,
        "fc2/kernel": sd["fc.3.weight"].T,
        "fc2/bias": sd["fc.3.bias"],
    }
    for name, value in expected.items():
        module_name, attr = name.split("/")
        np.testing.assert_array_equal(getattr(getattr(model, module_name), attr)[...], value)


def test_prefixed_state_dict_converts_the_same(checkpoint):
    _, sd, out_dir = checkpoint
    plain = byola.convert_state_dict(sd)
    for prefix in ("module.", "state_dict.module."):
        prefixed = {prefix + k: v for k, v in sd.items()}
        converted = byola.convert_state_dict(prefixed)
        assert converted.keys() == plain.keys()
        for k in plain:
            np.testing.assert_array_equal(converted[k], plain[k])
    with pytest.raises(ValueError, match="several BYOL-A encoders"):
        byola.convert_state_dict({**{"a." + k: v for k, v in sd.items()}, **sd})
    with pytest.raises(ValueError, match="does not use"):
        byola.convert_state_dict({**sd, "fc.6.weight": np.zeros(3)})


def test_converter_cli(checkpoint, tmp_path):
    pth, _, out_dir = checkpoint
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_byola.py"), "--input", str(pth),
         "--output", str(tmp_path / "cli")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"byola_dim={DIM}" in result.stdout
    with np.load(tmp_path / "cli" / "params.npz") as a, np.load(out_dir / "params.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_restricted_unpickler_refuses_code_execution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
        zf.writestr("evil/version", "3\n")
    with pytest.raises(byola.UnsafeCheckpointError, match=r"system"):
        byola.read_torch_state_dict(str(path))
    assert not (tmp_path / "pwned_by_checkpoint").exists()
    # The same for a builtins.eval reduce at the top level.
    payload = pickle.dumps(_EvalPayload(), protocol=4)
    with zipfile.ZipFile(path) as archive, pytest.raises(byola.UnsafeCheckpointError, match="eval"):
        byola.unpickle_torch(payload, archive)


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_non_zip_checkpoint_fails_clearly(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="legacy format"):
        byola.read_torch_state_dict(str(legacy))
    with pytest.raises(FileNotFoundError):
        byola.read_torch_state_dict(str(tmp_path / "missing.pth"))


def test_load_pretrained_errors(checkpoint, tmp_path):
    _, _, out_dir = checkpoint
    with pytest.raises(ValueError, match=r"'fc1/kernel'.*\(64, 16\).*\(64, 32\)") as err:
        byola.load_pretrained(small_model(dim=32), str(out_dir))
    assert "byola_dim" in str(err.value)
    with pytest.raises(FileNotFoundError, match="convert_byola.py"):
        byola.load_pretrained(small_model(), str(tmp_path / "nowhere"))


def test_fixture_pickle_uses_torch_opcodes(checkpoint):
    """Globals in the fixture are exactly the ones torch.save writes for a state dict."""
    import pickletools

    pth, _, _ = checkpoint
    with zipfile.ZipFile(pth) as zf:
        names = zf.namelist()
        data = zf.read(names[0])
    assert names[0] == "AudioNTT2020-test/data.pkl"
    globals_ = {arg for op, arg, _ in pickletools.genops(io.BytesIO(data)) if op.name == "GLOBAL"}
    assert globals_ == {
        "collections OrderedDict",
        "torch._utils _rebuild_tensor_v2",
        "torch FloatStorage",
        "torch LongStorage",
    }


def test_pool_first_equals_plain_order_in_value_and_gradient():
    """Max-pooling before the BatchNorm affine + ReLU is exact (monotone per channel)."""
    from adc_jax.models.byola import conv_block

    rngs = nnx.Rngs(3)
    conv = nnx.Conv(4, 6, kernel_size=(3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
    bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, rngs=rngs)
    # Negative scales on some channels exercise the min-pool branch.
    bn.scale[...] = jnp.array([1.0, -0.5, 2.0, -1.5, 0.7, -0.1])
    bn.bias[...] = jnp.linspace(-0.3, 0.3, 6)
    x = jax.random.normal(jax.random.key(0), (2, 11, 9, 4))

    def run(pool_first, train):
        def f(conv, x):
            return conv_block(conv, nnx.clone(bn), x, train=train, pool_first=pool_first)

        y = f(conv, x)
        grads = nnx.grad(lambda c, x: (f(c, x) * jnp.cos(f(c, x))).sum(), argnums=(0, 1))(conv, x)
        return y, grads

    for train in (True, False):
        y_fast, (g_conv_fast, g_x_fast) = run(True, train)
        y_plain, (g_conv_plain, g_x_plain) = run(False, train)
        assert y_fast.shape == (2, 5, 4, 6)
        np.testing.assert_allclose(y_fast, y_plain, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g_x_fast, g_x_plain, rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(g_conv_fast), jax.tree.leaves(g_conv_plain), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_first_block_with_folded_batchnorm_equals_plain_block():
    """BatchNorm statistics from the input's patch moments give the plain block's values/grads."""
    from adc_jax.models.byola import conv_block, first_conv_block

    rngs = nnx.Rngs(5)
    conv = nnx.Conv(1, 6, kernel_size=(3, 3), padding=((1, 1), (1, 1)), rngs=rngs)
    bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, rngs=rngs)
    bn.scale[...] = jnp.array([1.0, -0.5, 2.0, -1.5, 0.7, -0.1])
    bn.bias[...] = jnp.linspace(-0.3, 0.3, 6)
    bn.mean[...] = jnp.linspace(-0.1, 0.2, 6)
    bn.var[...] = jnp.linspace(0.5, 1.5, 6)
    x = jax.random.normal(jax.random.key(1), (3, 13, 8, 1)) * 2.0 + 0.5

    for train in (True, False):
        outs = {}
        for name, block in (("folded", first_conv_block), ("plain", conv_block)):
            norm = nnx.clone(bn)
            kwargs = {} if name == "folded" else {"pool_first": False}

            def loss(c, x, block=block, norm=norm, kwargs=kwargs, train=train):
                y = block(c, norm, x, train=train, **kwargs)
                return (y * jnp.sin(y)).sum(), y

            (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(conv, x)
            outs[name] = (y, grads, norm.mean[...], norm.var[...])
        (y1, g1, m1, v1), (y2, g2, m2, v2) = outs["folded"], outs["plain"]
        assert y1.shape == (3, 6, 4, 6)
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
