"""Tests of `adc_jax.models.byola.encoder_from_config`, the one factory of the BYOL-A encoder
that the captioner (`adc.create_model`) and pretraining (`pretrain.step.build_model`) share, and
of `ADCModel` built from its parts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax import config as config_lib
from adc_jax import train_state
from adc_jax.models import adc, byola
from adc_jax.pretrain import config as pretrain_config_lib
from adc_jax.pretrain import step as pretrain_step

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


# ------------------------------------------------------------------ ADCModel from parts


@pytest.fixture(scope="module", name="parts")
def parts_fixture():
    """The parts of a smoke captioner with SDD (late)."""
    c = config_lib.base_config("smoke")
    model = adc.create_model(c, VOCAB_SIZE, train_state.init_rngs(0))
    assert model.sdd is not None
    return dict(
        log_mel=model.log_mel_settings,
        byola=model.byola,
        encoder=model.encoder,
        sdd=model.sdd,
        decoder=model.decoder,
    )


@pytest.mark.parametrize("mode", ["early", "late"])
def test_adc_model_refuses_a_missing_sdd(parts, mode):
    with pytest.raises(ValueError, match=rf"sdd_mode='{mode}' needs an SDD module"):
        adc.ADCModel(**dict(parts, sdd=None), sdd_mode=mode)


def test_adc_model_refuses_an_sdd_when_mode_is_none(parts):
    with pytest.raises(ValueError, match=r"sdd_mode='none' needs an SDD module exactly when"):
        adc.ADCModel(**parts, sdd_mode="none")


def test_adc_model_refuses_an_unknown_mode(parts):
    with pytest.raises(ValueError, match=r"Unknown sdd mode 'middle'"):
        adc.ADCModel(**parts, sdd_mode="middle")


def test_adc_model_accepts_matching_parts(parts):
    for mode in ("early", "late"):
        model = adc.ADCModel(**parts, sdd_mode=mode)
        assert model.sdd_mode == mode and model.sdd is parts["sdd"]
    model = adc.ADCModel(**dict(parts, sdd=None), sdd_mode="none")
    assert model.sdd is None and model.hop_length == parts["log_mel"].hop_length
