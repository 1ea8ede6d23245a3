"""Tests of the difference encoder: the CAC attention mask and what it implies for the outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax.models.encoder import DifferenceEncoder, encoder_attention_mask

B, T, D, HEADS = 2, 5, 16, 2


def make_encoder(attention: str, num_layers: int = 1) -> DifferenceEncoder:
    return DifferenceEncoder(
        8,
        D,
        HEADS,
        32,
        num_layers,
        attention=attention,
        dropout=0.0,
        dtype=jnp.float32,
        rngs=nnx.Rngs(0),
    )


@pytest.fixture(scope="module")
def encoders():
    """Jitted eval-mode encoders: {(attention, layers): fn(p1, v1, p2, v2) -> encoder outputs}."""
    out = {}
    for attention, layers in (("cross", 1), ("full", 1), ("cross", 2)):
        encoder = make_encoder(attention, layers)

        @jax.jit
        def run(p1, v1, p2, v2, encoder=encoder):
            memory, valid, weights = encoder(p1, v1, p2, v2, train=False)
            return memory, valid, weights

        out[attention, layers] = run
    return out


@pytest.fixture(scope="module")
def inputs():
    k1, k2 = jax.random.split(jax.random.key(1))
    p1 = jax.random.normal(k1, (B, T, D))
    p2 = jax.random.normal(k2, (B, T, D))
    valid = jnp.ones((B, T), bool)
    return p1, valid, p2, valid


def reference_mask(segment_ids: np.ndarray, valid: np.ndarray, attention: str) -> np.ndarray:
    batch, length = segment_ids.shape
    out = np.zeros((batch, 1, length, length), bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                other = segment_ids[b, i] != segment_ids[b, j]
                out[b, 0, i, j] = valid[b, j] and (other or attention == "full")
    return out


@pytest.mark.parametrize("attention", ["cross", "full"])
def test_mask_matches_definition(attention):
    segment_ids = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    valid = np.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    mask = np.asarray(
        encoder_attention_mask(jnp.asarray(segment_ids), jnp.asarray(valid), attention)
    )
    assert mask.shape == (2, 1, 6, 6)
    np.testing.assert_array_equal(mask, reference_mask(segment_ids, valid, attention))
    # Padding keys are never attended to, whatever the query.
    assert not mask[0, 0, :, 2].any() and not mask[1, 0, :, 4:].any()
    if attention == "cross":
        # Clip-1 queries see only clip-2 keys and vice versa.
        assert not mask[:, 0, :3, :3].any() and not mask[:, 0, 3:, 3:].any()
    else:
        assert mask[0, 0, :, :2].all()


def test_mask_rejects_unknown_mode():
    with pytest.raises(ValueError, match="sparse"):
        encoder_attention_mask(jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool), "sparse")


def _perturb_clip1_frame(p1: jax.Array, j: int) -> jax.Array:
    return p1.at[:, j].add(3.0 * jax.random.normal(jax.random.key(7), (B, D)))


def test_cac_clip1_frames_are_not_influenced_by_other_clip1_frames(encoders, inputs):
    p1, v1, p2, v2 = inputs
    run = encoders["cross", 1]
    memory, _, _ = run(p1, v1, p2, v2)
    j = 2
    moved, _, _ = run(_perturb_clip1_frame(p1, j), v1, p2, v2)
    others = [i for i in range(T) if i != j]
    np.testing.assert_allclose(moved[:, others], memory[:, others], atol=1e-6, rtol=0)
    # The perturbation did reach the model: frame j itself and every clip-2 frame moved.
    assert np.abs(moved[:, j] - memory[:, j]).max() > 1e-2
    assert np.abs(moved[:, T:] - memory[:, T:]).min(axis=-1).max() > 0
    assert (np.abs(moved[:, T:] - memory[:, T:]).max(axis=-1) > 1e-4).all()


def test_full_attention_clip1_frames_see_each_other(encoders, inputs):
    p1, v1, p2, v2 = inputs
    run = encoders["full", 1]
    memory, _, _ = run(p1, v1, p2, v2)
    moved, _, _ = run(_perturb_clip1_frame(p1, 2), v1, p2, v2)
    others = [i for i in range(T) if i != 2]
    assert (np.abs(moved[:, others] - memory[:, others]).max(axis=-1) > 1e-4).all()


def test_two_cac_layers_mix_clip1_frames_through_clip2(encoders, inputs):
    # The one-layer property is specific to one layer: in the second layer clip-1 frames attend
    # to clip-2 frames that have already seen frame j.
    p1, v1, p2, v2 = inputs
    run = encoders["cross", 2]
    memory, _, _ = run(p1, v1, p2, v2)
    moved, _, _ = run(_perturb_clip1_frame(p1, 2), v1, p2, v2)
    others = [i for i in range(T) if i != 2]
    assert (np.abs(moved[:, others] - memory[:, others]).max(axis=-1) > 1e-4).all()


def test_cac_weights_put_no_mass_on_same_clip(encoders, inputs):
    (weights,) = encoders["cross", 1](*inputs)[2]
    weights = np.asarray(weights)
    assert weights.shape == (B, HEADS, 2 * T, 2 * T)
    assert (weights[:, :, :T, :T] == 0).all() and (weights[:, :, T:, T:] == 0).all()
    np.testing.assert_allclose(weights[:, :, :T, T:].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(weights[:, :, T:, :T].sum(-1), 1.0, rtol=1e-5)


def test_full_attention_weights_use_both_clips(encoders, inputs):
    (weights,) = encoders["full", 1](*inputs)[2]
    weights = np.asarray(weights)
    same_clip = weights[:, :, :T, :T].sum(-1) + weights[:, :, T:, T:].sum(-1)
    assert (same_clip > 1e-3).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("attention", ["cross", "full"])
def test_padded_frames_get_no_attention_and_do_not_leak(encoders, inputs, attention):
    p1, _, p2, _ = inputs
    v1 = jnp.array([[True] * T, [True, True, True, False, False]])
    v2 = jnp.array([[True] * 3 + [False] * 2, [True] * T])
    run = encoders[attention, 1]
    memory, valid, (weights,) = run(p1, v1, p2, v2)
    np.testing.assert_array_equal(valid, np.concatenate([v1, v2], axis=1))
    weights = np.asarray(weights)
    assert (weights[0, :, :, T + 3 :] == 0).all()  # clip-2 padding of row 0
    assert (weights[1, :, :, 3:T] == 0).all()  # clip-1 padding of row 1
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    # Whatever padding frames contain, the valid frames' outputs are the same.
    noise = 10.0 * jax.random.normal(jax.random.key(3), p1.shape)
    p1_junk = jnp.where(v1[..., None], p1, noise)
    p2_junk = jnp.where(v2[..., None], p2, -noise)
    junk_memory, _, _ = run(p1_junk, v1, p2_junk, v2)
    keep = np.asarray(valid)
    np.testing.assert_allclose(
        np.asarray(junk_memory)[keep], np.asarray(memory)[keep], atol=1e-5, rtol=0
    )


def test_segment_embedding_tells_the_clips_apart(encoders, inputs):
    # Identical clips with positions restarting at 0 differ only through the segment embedding.
    p1, valid, _, _ = inputs
    memory, _, _ = encoders["cross", 1](p1, valid, p1, valid)
    assert np.abs(memory[:, :T] - memory[:, T:]).max() > 1e-3


def test_cac_as_two_cross_attentions_equals_the_masked_joint_attention():
    """A CAC layer computed as two cross-attentions (clip 1 -> clip 2, clip 2 -> clip 1) gives
    the same output, gradients and 2T x 2T weights as masked self-attention over both clips with
    the CAC mask (the general path), with padding in both clips."""
    from adc_jax.models.encoder import EncoderLayer

    layer = EncoderLayer(
        D, HEADS, 32, attention="cross", dropout=0.0, dtype=jnp.float32, rngs=nnx.Rngs(1)
    )
    x = jax.random.normal(jax.random.key(2), (B, 2 * T, D))
    valid = jnp.ones((B, 2 * T), bool).at[0, T - 2 : T].set(False).at[1, 2 * T - 1].set(False)
    segment_ids = jnp.repeat(jnp.array([[0, 1]]), T, axis=1).repeat(B, axis=0)
    cac_mask = encoder_attention_mask(segment_ids, valid, "cross")

    def run(mode):
        def loss(layer):
            layer.attention_mode = mode
            mask = None if mode == "cross" else cac_mask
            out, weights = layer(x, valid, mask, train=False)
            return jnp.sum(out * jnp.sin(out)), (out, weights)

        (_, (out, weights)), grads = nnx.value_and_grad(loss, has_aux=True)(nnx.clone(layer))
        return out, weights, grads

    out_fast, w_fast, g_fast = run("cross")
    out_ref, w_ref, g_ref = run("full")  # the joint path, here with the CAC mask
    np.testing.assert_allclose(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w_fast, w_ref, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(w_fast[:, :, :T, :T]).max()) == 0.0  # no clip 1 -> clip 1 weight
    assert float(jnp.abs(w_fast[:, :, :T, T:]).max()) > 0.0
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_fast), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
