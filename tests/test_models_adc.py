"""Tests of the full model (`adc_jax/models/adc.py`): which BYOL-A frames count as valid, and
that the loss depends on the real samples of a clip only (those before wav_len), and that the
model built from its parts refuses an SDD module that does not match its SDD mode.

All tests use a fresh `:smoke` model (CAC encoder, late SDD) in eval mode (no dropout, BatchNorm
running statistics), 1 s clips at 16 kHz, hop 160, n_fft 1024.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from adc_jax import config as config_lib
from adc_jax import step as step_lib
from adc_jax import train_state
from adc_jax.config import base_config
from adc_jax.data.random_batch import random_batch
from adc_jax.models import adc

VOCAB = 20
B = 4
# Valid samples of clip 1 and clip 2 of each pair (of N = 16000).
LEN1 = np.array([16000, 6000, 9000, 12000], np.int32)
LEN2 = np.array([3000, 16000, 8000, 5000], np.int32)


@pytest.fixture(scope="module")
def setup():
    """(config, jitted encode(wav1, len1, wav2, len2), jitted eval-mode loss terms(batch))."""
    config = base_config("smoke")
    config.train.batch_size = B
    model = step_lib.build_model_and_optimizer(config, VOCAB)[0]
    graphdef, state = nnx.split(model)
    loss_config = step_lib.LossConfig.from_config(config)

    @jax.jit
    def encode(wav1, len1, wav2, len2):
        out = nnx.merge(graphdef, state).encode(wav1, len1, wav2, len2, train=False)
        return out["memory_valid"]

    @jax.jit
    def loss_terms(batch):
        model = nnx.merge(graphdef, state)
        return step_lib.compute_loss(model, batch, loss_config, train=False)[1]

    return config, encode, loss_terms


def test_memory_valid_marks_the_frames_of_the_real_samples(setup):
    config, encode, _ = setup
    assert (config.model.hop_length, config.data.sample_rate) == (160, 16000)
    n = 16000
    wav = random_batch(config, VOCAB)["wav1"]
    # 16000 samples: 101 mel frames, 12 after three floor-poolings by 2 (101 // 8). The valid
    # frames of a clip of wav_len samples: (wav_len // 160 + 1) // 8, by hand:
    #   16000 -> 101 // 8 = 12,  4000 -> 26 // 8 = 3,  1120 -> 8 // 8 = 1,  1119 -> 7 // 8 = 0.
    len1 = np.array([n, 4000, 1120, 1119], np.int32)
    len2 = np.array([1120, n, 4000, n], np.int32)
    expected1, expected2 = [12, 3, 1, 0], [1, 12, 3, 12]
    valid = np.asarray(encode(wav, len1, wav, len2))
    frames = 12
    assert valid.shape == (B, 2 * frames)  # [clip 1 frames, clip 2 frames]
    steps = np.arange(frames)[None]
    np.testing.assert_array_equal(valid[:, :frames], steps < np.array(expected1)[:, None])
    np.testing.assert_array_equal(valid[:, frames:], steps < np.array(expected2)[:, None])


def _zero_padded_batch(config) -> dict[str, np.ndarray]:
    """A batch of clips of LEN1 / LEN2 valid samples, zero after them as the pipeline pads."""
    batch = random_batch(config, VOCAB)
    n = batch["wav1"].shape[1]
    for key, lengths in (("wav1", LEN1), ("wav2", LEN2)):
        batch[key] = np.where(np.arange(n)[None] < lengths[:, None], batch[key], 0)
        batch[f"{key}_len"] = lengths
    return batch


def _replaced(batch, key: str, start, stop=None, *, seed: int) -> dict[str, np.ndarray]:
    """A copy of batch whose `key` samples start[b] <= i < stop[b] (default: to the end) are
    loud random noise."""
    out = dict(batch)
    n = batch[key].shape[1]
    stop = np.full(len(start), n) if stop is None else stop
    noise = np.random.default_rng(seed).integers(-20000, 20000, batch[key].shape, np.int16)
    i = np.arange(n)[None]
    out[key] = np.where((i >= start[:, None]) & (i < stop[:, None]), noise, batch[key])
    return out


def test_loss_ignores_every_sample_past_wav_len(setup):
    config, _, loss_terms = setup
    batch = _zero_padded_batch(config)
    want = {k: float(v) for k, v in loss_terms(batch).items()}
    # The last valid frames see a few hops past a clip's end (centred STFT, 3x3 convs), so the
    # model must mask the samples themselves, not only the frames.
    start1, start2 = LEN1, LEN2
    noisy = _replaced(_replaced(batch, "wav1", start1, seed=1), "wav2", start2, seed=2)
    assert (noisy["wav1"] != batch["wav1"]).sum() > 10_000
    got = {k: float(v) for k, v in loss_terms(noisy).items()}
    # The same computation on the same valid frames: equal to the last bit.
    assert got == want
    # The check can fail: the same noise on real samples (the first 1000 of each clip 1)
    # changes every term.
    inside = _replaced(batch, "wav1", np.zeros(B, int), np.full(B, 1000), seed=3)
    changed = {k: float(v) for k, v in loss_terms(inside).items()}
    for key in ("loss", "caption_loss", "similar_loss", "discrepant_loss"):
        assert changed[key] != want[key], key


# ------------------------------------------------------------------ ADCModel from parts


@pytest.fixture(scope="module", name="parts")
def parts_fixture():
    """The parts of a smoke captioner with SDD (late)."""
    c = config_lib.base_config("smoke")
    model = adc.create_model(c, VOCAB, train_state.init_rngs(0))
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
