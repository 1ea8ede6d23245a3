"""Tests of similarity-discrepancy disentanglement: the losses, their gradients, the grouped LSTM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from adc_jax.models.sdd import SDD, info_nce, mean_cosine, reverse_valid, split_parts

B, T, D, SIMILAR, UNITS = 4, 6, 12, 5, 4
TEMPERATURE = 0.1


@pytest.fixture(scope="module")
def sdd():
    return SDD(D, SIMILAR, UNITS, temperature=TEMPERATURE, dtype=jnp.float32, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def sdd_fn(sdd):
    """Pure (latent1, valid1, latent2, valid2) -> SDD outputs dict, to jit or differentiate."""
    graphdef, state = nnx.split(sdd)
    return lambda *args: nnx.merge(graphdef, state)(*args)


@pytest.fixture(scope="module")
def losses(sdd_fn):
    return jax.jit(sdd_fn)


@pytest.fixture(scope="module")
def embed(sdd):
    """Jitted (similar, discrepant, lengths) -> (e_similar, e_discrepant)."""
    graphdef, state = nnx.split(sdd.nets)
    return jax.jit(lambda s, d, n: nnx.merge(graphdef, state)(s, d, n))


@pytest.fixture(scope="module")
def latents():
    k1, k2 = jax.random.split(jax.random.key(0))
    latent1 = jax.random.normal(k1, (B, T, D))
    latent2 = jax.random.normal(k2, (B, T, D))
    lengths = jnp.array([6, 4, 5, 3])
    valid = jnp.arange(T)[None, :] < lengths[:, None]
    return latent1, valid, latent2, valid


def with_parts(similar: jax.Array, discrepant: jax.Array) -> jax.Array:
    return jnp.concatenate([similar, discrepant], axis=-1)


# ------------------------------------------------------------------------------ loss behaviour


def test_similar_loss_lower_for_matched_pairs_than_shuffled(losses, latents):
    latent1, valid, latent2, _ = latents
    s1, _ = split_parts(latent1, SIMILAR)
    _, d2 = split_parts(latent2, SIMILAR)
    matched = with_parts(s1, d2)  # clip 2's similar part is clip 1's
    # The same similar parts assigned to the wrong pairs (a derangement over the batch; the
    # lengths are permuted with them so every clip keeps its own frames).
    perm = jnp.array([1, 2, 3, 0])
    shuffled = with_parts(s1[perm], d2)
    l_matched = losses(latent1, valid, matched, valid)["similar_loss"]
    l_shuffled = losses(latent1, valid, shuffled, valid[perm])["similar_loss"]
    l_random = losses(latent1, valid, latent2, valid)["similar_loss"]
    assert l_matched < l_shuffled - 1.0
    assert l_matched < l_random
    # Matched pairs have identical embeddings: the diagonal holds the largest possible logits.
    out = losses(latent1, valid, matched, valid)
    np.testing.assert_allclose(out["e_similar1"], out["e_similar2"], atol=1e-6)


def test_discrepant_loss_falls_when_discrepant_parts_are_pushed_apart(sdd_fn, losses, latents):
    latent1, valid, latent2, _ = latents
    s1, d1 = split_parts(latent1, SIMILAR)
    _, d2 = split_parts(latent2, SIMILAR)
    same = losses(latent1, valid, with_parts(s1, d1), valid)["discrepant_loss"]
    independent = losses(latent1, valid, with_parts(s1, d2), valid)["discrepant_loss"]
    np.testing.assert_allclose(same, 1.0, atol=1e-5)  # identical parts: cosine 1, the maximum
    assert independent < same - 1e-3

    # Gradient descent on clip 2's discrepant part pushes it away from clip 1's and L_D falls.
    def l_d(d):
        return sdd_fn(latent1, valid, with_parts(s1, d), valid)["discrepant_loss"]

    value_and_grad = jax.jit(jax.value_and_grad(l_d))
    d = d2
    history = []
    for _ in range(6):
        value, grad = value_and_grad(d)
        history.append(float(value))
        d = d - 2.0 * grad
    assert all(b < a for a, b in zip(history, history[1:], strict=False)), history


def test_each_loss_only_has_gradients_through_its_own_part(sdd_fn, latents):
    latent1, valid, latent2, _ = latents

    def grads(name):
        def loss(l1, l2):
            return sdd_fn(l1, valid, l2, valid)[name]

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(latent1, latent2)

    for name, own, other in (
        ("similar_loss", slice(0, SIMILAR), slice(SIMILAR, D)),
        ("discrepant_loss", slice(SIMILAR, D), slice(0, SIMILAR)),
    ):
        for g in grads(name):
            g = np.asarray(g)
            assert np.abs(g[..., own]).max() > 1e-4, name
            assert np.all(g[..., other] == 0), name
            # Padding frames (beyond each clip's length) get no gradient either.
            assert np.all(g[~np.asarray(valid)] == 0), name


def test_each_loss_trains_its_own_embedding_net(sdd, latents):
    latent1, valid, latent2, _ = latents
    graphdef, params = nnx.split(sdd)

    def grads(name):
        def loss(p):
            return nnx.merge(graphdef, p)(latent1, valid, latent2, valid)[name]

        return jax.jit(jax.grad(loss))(params)["nets"]

    g_s, g_d = grads("similar_loss"), grads("discrepant_loss")
    # The four LSTMs are stacked similar-fwd, similar-bwd, discrepant-fwd, discrepant-bwd.
    for g, own, other, own_input, other_input in (
        (g_s, [0, 1], [2, 3], "similar_input", "discrepant_input"),
        (g_d, [2, 3], [0, 1], "discrepant_input", "similar_input"),
    ):
        for name in ("recurrent", "bias"):
            value = np.asarray(g[name][...])
            assert (np.abs(value[own]).reshape(2, -1).max(-1) > 1e-6).all()
            assert np.all(value[other] == 0)
        assert (np.abs(np.asarray(g[own_input][...])).reshape(2, -1).max(-1) > 1e-6).all()
        assert np.all(np.asarray(g[other_input][...]) == 0)


# ------------------------------------------------------------------------------ grouped BiLSTM


def test_reverse_valid_reverses_within_length_only():
    x = jnp.arange(2 * 5 * 3).reshape(2, 5, 3)
    lengths = jnp.array([3, 5])
    out = np.asarray(reverse_valid(x, lengths))
    xn = np.asarray(x)
    np.testing.assert_array_equal(out[0, :3], xn[0, 2::-1])
    np.testing.assert_array_equal(out[0, 3:], xn[0, 3:])
    np.testing.assert_array_equal(out[1], xn[1, ::-1])
    # Reversing twice gives the input back; a length of 0 leaves the sequence as it is.
    np.testing.assert_array_equal(reverse_valid(reverse_valid(x, lengths), lengths), xn)
    np.testing.assert_array_equal(reverse_valid(x, jnp.array([0, 1])), xn)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_lstm_mean(x: np.ndarray, w_in, w_rec, bias) -> np.ndarray:
    """One LSTM (gates i, f, g, o) over x [L, F], mean of its hidden states: [U]."""
    units = w_rec.shape[0]
    h, c = np.zeros(units), np.zeros(units)
    outputs = []
    for x_t in x:
        i, f, g, o = np.split(x_t @ w_in + h @ w_rec + bias, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.mean(outputs, axis=0)


def reference_embeddings(nets, similar, discrepant, lengths):
    """Per-sequence BiLSTM + mean pooling in NumPy float64 with the module's parameters."""
    p = {
        k: np.asarray(getattr(nets, k)[...], np.float64)
        for k in ("similar_input", "discrepant_input", "recurrent", "bias")
    }
    e_s, e_d = [], []
    for n, length in enumerate(lengths):
        for part, w_in, groups, out in (
            (similar, p["similar_input"], (0, 1), e_s),
            (discrepant, p["discrepant_input"], (2, 3), e_d),
        ):
            x = np.asarray(part[n, :length], np.float64)
            forward = reference_lstm_mean(
                x, w_in[0], p["recurrent"][groups[0]], p["bias"][groups[0]]
            )
            backward = reference_lstm_mean(
                x[::-1], w_in[1], p["recurrent"][groups[1]], p["bias"][groups[1]]
            )
            out.append(np.concatenate([forward, backward]))
    return np.stack(e_s), np.stack(e_d)


def test_grouped_bilstm_matches_per_sequence_reference(sdd, embed, latents):
    latent1, _, _, _ = latents
    similar, discrepant = split_parts(latent1, SIMILAR)
    lengths = np.array([6, 2, 5, 1])
    e_s, e_d = embed(similar, discrepant, jnp.asarray(lengths))
    ref_s, ref_d = reference_embeddings(sdd.nets, similar, discrepant, lengths)
    assert e_s.shape == e_d.shape == (B, 2 * UNITS)
    np.testing.assert_allclose(e_s, ref_s, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(e_d, ref_d, atol=2e-5, rtol=1e-4)


def test_padding_frames_do_not_change_embeddings(embed, latents):
    latent1, valid, _, _ = latents
    lengths = valid.sum(-1)
    junk = jnp.where(
        valid[..., None], latent1, 100.0 * jax.random.normal(jax.random.key(9), latent1.shape)
    )
    clean = embed(*split_parts(latent1, SIMILAR), lengths)
    noisy = embed(*split_parts(junk, SIMILAR), lengths)
    for a, b in zip(clean, noisy, strict=True):
        np.testing.assert_array_equal(a, b)
    # Sanity: a valid frame does change them.
    moved = embed(*split_parts(latent1.at[:, 0].add(1.0), SIMILAR), lengths)
    assert all(np.abs(a - b).min(-1).max() > 0 for a, b in zip(clean, moved, strict=True))


# ------------------------------------------------------------------------------ loss functions


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    z1 = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    z2 = e2 / np.linalg.norm(e2, axis=1, keepdims=True)
    logits = z1 @ z2.T / 0.2
    row = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    col = logits - np.log(np.exp(logits).sum(0, keepdims=True))
    expected = -0.5 * (np.mean(np.diag(row)) + np.mean(np.diag(col)))
    np.testing.assert_allclose(info_nce(jnp.asarray(e1), jnp.asarray(e2), 0.2), expected, rtol=1e-5)
    # Symmetric in its arguments and invariant to the embeddings' scale.
    np.testing.assert_allclose(info_nce(jnp.asarray(e2), jnp.asarray(e1), 0.2), expected, rtol=1e-5)
    np.testing.assert_allclose(
        info_nce(jnp.asarray(3 * e1), jnp.asarray(e2), 0.2), expected, rtol=1e-5
    )


def test_mean_cosine_matches_numpy():
    rng = np.random.default_rng(1)
    e1, e2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    expected = np.mean(np.sum(e1 * e2, 1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1))
    np.testing.assert_allclose(mean_cosine(jnp.asarray(e1), jnp.asarray(e2)), expected, rtol=1e-5)
    np.testing.assert_allclose(mean_cosine(jnp.asarray(e1), -jnp.asarray(e1)), -1.0, rtol=1e-5)
