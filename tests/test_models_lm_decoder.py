"""Tests of the GPT-2 caption decoder: the id mapping, zero-gated cross-attention at init, and
cached = uncached greedy and beam decoding for both conditionings (with tier prompts).

Each decoder is the fixture GPT-2 (tests/gpt2_fixture, see test_models_gpt2.py) trained for a few
steps on random captions of 4 "memories", so the searches produce varied sequences, some ending
early with <eos>; rows start from <bos> or from tier tokens whose prompts differ in length.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decoder_fitting import fit
from flax import nnx

from adc_jax.data.tokenizer import BOS, EOS, PAD
from adc_jax.models import gpt2
from adc_jax.models.decoder import beam_search, greedy_decode
from adc_jax.models.lm_decoder import LMDecoder

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2_fixture")
B, S, DM, L = 4, 6, 24, 10
OFFSET = 6  # <pad> <bos> <eos> <unk> <tier1> <tier2>
PROMPTS = ((), (11, 12), (13, 14, 15))  # <bos>: none; tier 1: 2 tokens; tier 2: 3 tokens
START = np.array([BOS, 4, 5, BOS], np.int32)
TRAIN_STEPS = 15


def _decoder(conditioning: str) -> LMDecoder:
    rngs = nnx.Rngs(0)
    lm = gpt2.GPT2(
        gpt2.GPT2Config.from_directory(FIXTURE), cross_attention=conditioning == "cross", rngs=rngs
    )
    gpt2.load_weights(lm, FIXTURE)
    return LMDecoder(
        lm,
        memory_dim=DM,
        conditioning=conditioning,
        prefix_len=3,
        pool_heads=2,
        prompts=PROMPTS,
        id_offset=OFFSET,
        max_len=L,
        dropout=0.0,
        dtype=jnp.float32,
        rngs=rngs,
    )


def _data():
    memory = jax.random.normal(jax.random.key(10), (B, S, DM))
    valid = jnp.arange(S)[None] < jnp.array([6, 4, 3, 5])[:, None]
    rng = np.random.default_rng(0)
    captions = np.full((B, L), PAD, np.int32)
    captions[:, 0] = START
    for b, n in enumerate([4, 6, 8, 5]):
        captions[b, 1 : n + 1] = rng.integers(OFFSET + 1, OFFSET + 60, n)
        captions[b, n + 1] = EOS
    return memory, valid, captions


@pytest.fixture(scope="module", params=["prefix", "cross"])
def trained(request):
    """(decoder, memory, valid, captions) after a few Adam steps."""
    decoder = _decoder(request.param)
    memory, valid, captions = _data()
    decoder = fit(decoder, captions, memory, valid, pad=PAD, lr=3e-2, steps=TRAIN_STEPS)
    return decoder, memory, valid, captions


def _jit(decoder, fn):
    """fn(decoder, memory, valid, start=start) jitted with the decoder's state as an argument."""
    graphdef, state = nnx.split(decoder)
    jitted = jax.jit(
        lambda st, mem, valid, start: fn(nnx.merge(graphdef, st), mem, valid, start=start)
    )
    return functools.partial(jitted, state)


def test_ids_below_the_offset_are_never_predicted_and_eos_is_the_lms_end_of_text():
    decoder = _decoder("prefix")
    memory, valid, captions = _data()
    logits = np.asarray(decoder(jnp.asarray(captions), memory, valid, train=False))
    assert logits.shape == (B, L, OFFSET + 384)
    never = [PAD, BOS, 3, 4, 5, OFFSET + decoder.eos_lm]
    assert (logits[..., never] < -1e8).all()
    assert (logits[..., EOS] > -1e3).all()


def test_cross_conditioning_is_the_plain_lm_at_init():
    decoder = _decoder("cross")
    plain = gpt2.from_pretrained(FIXTURE)
    memory, valid, captions = _data()
    captions[:, 0] = BOS  # no prompt
    logits = decoder(jnp.asarray(captions), memory, valid, train=False)
    lm_ids = np.where(captions >= OFFSET, captions - OFFSET, decoder.eos_lm)
    expected = np.asarray(plain(jnp.asarray(lm_ids)))
    eos = decoder.eos_lm
    np.testing.assert_allclose(np.asarray(logits[..., EOS]), expected[..., eos], atol=1e-5)
    body = np.delete(np.asarray(logits[..., OFFSET:]), eos, axis=-1)
    np.testing.assert_allclose(body, np.delete(expected, eos, axis=-1), atol=1e-5)


def test_cached_greedy_equals_uncached(trained):
    decoder, memory, valid, _ = trained
    start = jnp.asarray(START)
    outs = [
        _jit(decoder, functools.partial(greedy_decode, use_cache=c, early_stop=e))(
            memory, valid, start
        )
        for c, e in ((True, True), (False, True), (True, False))
    ]
    for tokens, score in outs[1:]:
        np.testing.assert_array_equal(outs[0][0], tokens)
        np.testing.assert_allclose(outs[0][1], score, atol=1e-4)
    tokens = np.asarray(outs[0][0])
    assert len({tuple(r) for r in tokens}) > 1  # varied, not one repeated row
    # the cached step's logits equal teacher forcing on the decoded sequence
    seqs = np.concatenate([START[:, None], tokens], axis=1)
    logits = np.asarray(decoder(jnp.asarray(seqs[:, :-1]), memory, valid, train=False))
    for b in range(B):
        for t in range(L - 1):
            if t == 0 or seqs[b, t] not in (EOS, PAD):
                assert logits[b, t].argmax() == seqs[b, t + 1]
            else:
                break


def test_cached_beam_search_equals_uncached(trained):
    decoder, memory, valid, _ = trained
    start = jnp.asarray(START)
    cached = _jit(
        decoder, functools.partial(beam_search, beam_size=3, length_penalty=0.6, use_cache=True)
    )(memory, valid, start)
    uncached = _jit(
        decoder, functools.partial(beam_search, beam_size=3, length_penalty=0.6, use_cache=False)
    )(memory, valid, start)
    np.testing.assert_array_equal(cached[0], uncached[0])
    np.testing.assert_allclose(cached[1], uncached[1], atol=1e-4)
    assert cached[0].shape == (B, 3, L - 1)
