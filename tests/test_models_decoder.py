"""Tests of the text decoder: causality, the key/value cache, greedy decoding and beam search.

The decoder under test is trained for a few steps to caption 4 random "memories" with random
captions of 4-8 words, so greedy and beam search produce varied, non-trivial sequences (some
ending early with <eos>, some running to the maximum length) rather than one repeated token.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decoder_fitting import fit
from flax import nnx

from adc_jax.data.tokenizer import BOS, EOS, PAD
from adc_jax.models.decoder import TextDecoder, _length_penalty, beam_search, greedy_decode

V, D, L, B, S = 13, 16, 10, 4, 6
BEAM, ALPHA = 3, 0.6
TRAIN_STEPS = 15  # few enough that the decoder is still unsure, so searches disagree


@pytest.fixture(scope="module")
def setup():
    """(decoder, memory [B, S, D], memory_valid [B, S], captions [B, L])."""
    decoder = TextDecoder(V, D, 2, 32, 2, L, dropout=0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
    memory = jax.random.normal(jax.random.key(10), (B, S, D))
    valid = jnp.arange(S)[None] < jnp.array([6, 4, 3, 5])[:, None]  # some invalid frames
    rng = np.random.default_rng(0)
    captions = np.full((B, L), PAD, np.int32)
    captions[:, 0] = BOS
    for b, n in enumerate([4, 6, 8, 5]):
        captions[b, 1 : n + 1] = rng.integers(4, V, n)
        captions[b, n + 1] = EOS
    decoder = fit(decoder, captions, memory, valid, pad=PAD, lr=1e-2, steps=TRAIN_STEPS)
    return decoder, memory, valid, captions


def _jit(decoder, fn):
    """Jits fn(decoder, *args) with the decoder's state as an argument (no constant folding)."""
    graphdef, state = nnx.split(decoder)
    jitted = jax.jit(lambda st, *args: fn(nnx.merge(graphdef, st), *args))
    return functools.partial(jitted, state)


@pytest.fixture(scope="module")
def fns(setup):
    decoder = setup[0]
    return {
        "logits": _jit(decoder, lambda d, tok, mem, valid: d(tok, mem, valid, train=False)),
        "greedy_cached": _jit(decoder, functools.partial(greedy_decode, use_cache=True)),
        "greedy_uncached": _jit(decoder, functools.partial(greedy_decode, use_cache=False)),
        "beam_cached": _jit(
            decoder,
            functools.partial(beam_search, beam_size=BEAM, length_penalty=ALPHA, use_cache=True),
        ),
        "beam_uncached": _jit(
            decoder,
            functools.partial(beam_search, beam_size=BEAM, length_penalty=ALPHA, use_cache=False),
        ),
    }


def sequence_log_prob(
    logits_fn, tokens: np.ndarray, memory, valid
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced log-probability of generated tokens [N, L-1] (up to and with the first
    <eos>) and their lengths [N]."""
    n = tokens.shape[0]
    inputs = np.concatenate([np.full((n, 1), BOS, np.int32), tokens[:, :-1]], axis=1)
    logp = np.asarray(jax.nn.log_softmax(logits_fn(jnp.asarray(inputs), memory, valid)))
    token_logp = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    is_eos = tokens == EOS
    lengths = np.where(is_eos.any(1), is_eos.argmax(1) + 1, tokens.shape[1])
    mask = np.arange(tokens.shape[1])[None] < lengths[:, None]
    return (token_logp * mask).sum(1), lengths


def assert_well_formed(tokens: np.ndarray) -> None:
    """After the first <eos> only <pad>."""
    for row in tokens.reshape(-1, tokens.shape[-1]):
        ends = np.flatnonzero(row == EOS)
        if ends.size:
            assert (row[ends[0] + 1 :] == PAD).all(), row


def test_greedy_sequences_are_non_trivial(setup, fns):
    _, memory, valid, _ = setup
    tokens = np.asarray(fns["greedy_cached"](memory, valid)[0])
    lengths = np.where((tokens == EOS).any(1), (tokens == EOS).argmax(1), tokens.shape[1])
    assert (lengths > 3).all(), tokens  # every caption has at least 4 words
    assert (tokens == EOS).any(1).any(), tokens  # some stop early with <eos> ...
    assert len({tuple(r) for r in tokens}) == B  # ... and they differ between examples
    assert_well_formed(tokens)


def test_cached_greedy_equals_uncached(setup, fns):
    _, memory, valid, _ = setup
    cached_tokens, cached_score = fns["greedy_cached"](memory, valid)
    tokens, score = fns["greedy_uncached"](memory, valid)
    np.testing.assert_array_equal(cached_tokens, tokens)
    np.testing.assert_allclose(cached_score, score, rtol=1e-5, atol=1e-5)


def test_cached_beam_search_equals_uncached(setup, fns):
    _, memory, valid, _ = setup
    cached_tokens, cached_scores = fns["beam_cached"](memory, valid)
    tokens, scores = fns["beam_uncached"](memory, valid)
    assert tokens.shape == (B, BEAM, L - 1)
    np.testing.assert_array_equal(cached_tokens, tokens)
    np.testing.assert_allclose(cached_scores, scores, rtol=1e-5, atol=1e-5)
    # The beams are non-trivial: several lengths, more than one hypothesis per example.
    tokens = np.asarray(tokens)
    lengths = np.where((tokens == EOS).any(-1), (tokens == EOS).argmax(-1), L - 1)
    assert len(np.unique(lengths)) >= 3 and lengths.max() > 3
    assert_well_formed(tokens)


def test_greedy_score_is_the_log_prob_of_its_tokens(setup, fns):
    _, memory, valid, _ = setup
    tokens, score = fns["greedy_cached"](memory, valid)
    log_prob, _ = sequence_log_prob(fns["logits"], np.asarray(tokens), memory, valid)
    np.testing.assert_allclose(score, log_prob, rtol=1e-4, atol=1e-4)


def test_beam_scores_are_sorted_distinct_normalised_log_probs(setup, fns):
    _, memory, valid, _ = setup
    tokens, scores = (np.asarray(x) for x in fns["beam_cached"](memory, valid))
    assert (np.diff(scores, axis=1) <= 0).all(), scores
    for row in tokens:
        assert len({tuple(h) for h in row}) == BEAM, row
    flat = tokens.reshape(B * BEAM, L - 1)
    log_prob, lengths = sequence_log_prob(
        fns["logits"], flat, jnp.repeat(memory, BEAM, 0), jnp.repeat(valid, BEAM, 0)
    )
    expected = log_prob / np.asarray(_length_penalty(lengths.astype(np.float32), ALPHA))
    np.testing.assert_allclose(scores.reshape(-1), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, ALPHA])
def test_beam_of_one_never_scores_below_greedy(setup, fns, alpha):
    # With one beam the live hypothesis follows greedy's path, so greedy's caption always enters
    # the finished set; beam search returns it unless a hypothesis that ended earlier with
    # <eos> scores higher (greedy cannot go back to those). So beam(1) is not greedy token for
    # token, but its score is never lower. (With a larger beam even that is not guaranteed: the
    # greedy path can fall out of the beam, so nothing is asserted for beam_size > 1.)
    decoder, memory, valid, _ = setup
    beam1 = _jit(decoder, functools.partial(beam_search, beam_size=1, length_penalty=alpha))
    tokens, scores = (np.asarray(x[:, 0]) for x in beam1(memory, valid))
    greedy_tokens, greedy_log_prob = (np.asarray(x) for x in fns["greedy_cached"](memory, valid))
    _, lengths = sequence_log_prob(fns["logits"], greedy_tokens, memory, valid)
    greedy_score = greedy_log_prob / np.asarray(_length_penalty(lengths.astype(np.float32), alpha))
    same = (tokens == greedy_tokens).all(-1)
    assert same.any()
    np.testing.assert_allclose(scores[same], greedy_score[same], rtol=1e-5, atol=1e-5)
    assert (scores[~same] > greedy_score[~same]).all()


def test_teacher_forced_logits_are_causal(setup, fns):
    _, memory, valid, captions = setup
    tokens = jnp.asarray(captions[:, :-1])
    logits = fns["logits"](tokens, memory, valid)
    for t in (0, 3, 6):
        changed = tokens.at[:, t + 1].set((tokens[:, t + 1] + 5) % V)
        moved = fns["logits"](changed, memory, valid)
        np.testing.assert_array_equal(moved[:, : t + 1], logits[:, : t + 1])
        assert (np.abs(moved[:, t + 1] - logits[:, t + 1]).max(-1) > 1e-4).all()


def test_invalid_memory_frames_are_ignored(setup, fns):
    _, memory, valid, captions = setup
    tokens = jnp.asarray(captions[:, :-1])
    junk = jnp.where(valid[..., None], memory, 50.0)
    np.testing.assert_allclose(
        fns["logits"](tokens, junk, valid), fns["logits"](tokens, memory, valid), atol=1e-5, rtol=0
    )


def test_cached_step_logits_equal_full_forward(setup, fns):
    decoder, memory, valid, captions = setup
    tokens = jnp.asarray(captions[:, :-1])

    def stepwise(d, tokens, memory, valid):
        cross = d.cross_kv(memory)

        def body(cache, t):
            logits, cache = d.step(tokens[:, t], t, cache, cross, valid)
            return cache, logits

        _, logits = jax.lax.scan(body, d.init_cache(tokens.shape[0]), jnp.arange(tokens.shape[1]))
        return jnp.moveaxis(logits, 0, 1)

    step_logits = _jit(decoder, stepwise)(tokens, memory, valid)
    np.testing.assert_allclose(
        step_logits, fns["logits"](tokens, memory, valid), rtol=1e-4, atol=1e-5
    )


# ------------------------------------------------------------------------------- length penalty


@pytest.mark.parametrize(
    "length, alpha, expected",
    [
        (1.0, 0.6, 1.0),  # ((5 + 1) / 6) ** alpha = 1 for every alpha
        (7.0, 0.0, 1.0),  # alpha = 0: no penalty
        (7.0, 1.0, 2.0),  # (12 / 6) ** 1
        (7.0, 2.0, 4.0),  # (12 / 6) ** 2
        (13.0, 0.5, 1.7320508),  # (18 / 6) ** 0.5 = sqrt(3)
        (19.0, 0.5, 2.0),  # (24 / 6) ** 0.5
        (10.0, 0.6, 1.7328621),  # (15 / 6) ** 0.6 = 2.5 ** 0.6
    ],
)
def test_length_penalty_is_gnmt(length, alpha, expected):
    got = float(_length_penalty(jnp.float32(length), alpha))
    assert got == pytest.approx(expected, rel=1e-6)


class _TableDecoder:
    """A stand-in for `TextDecoder` (use_cache=False) whose next-token distribution is a table.

    After <bos>: <eos> with probability 0.55, word A with 0.45. After A: A again until three A's
    have been generated, then <eos> (probability ~1). Every other token has log-probability ~-1e9.
    So beam search has exactly two real hypotheses: "<eos>" (1 token, log-prob log 0.55) and
    "A A A <eos>" (4 tokens, log-prob log 0.45); which one wins depends only on the length penalty.
    """

    A = 4
    VOCAB = 6

    def __init__(self, max_len: int):
        self.max_len = max_len

    def __call__(self, tokens, memory, memory_valid, *, train):
        del memory, memory_valid, train
        neg = jnp.full((self.VOCAB,), -1e9)
        after_bos = neg.at[EOS].set(np.log(0.55)).at[self.A].set(np.log(0.45))
        next_a = neg.at[self.A].set(0.0)
        next_eos = neg.at[EOS].set(0.0)
        t = jnp.arange(tokens.shape[1])[None, :, None]
        prev = tokens[..., None]
        after_a = jnp.where(t < 3, next_a, next_eos)
        return jnp.where(prev == BOS, after_bos, jnp.where(prev == self.A, after_a, next_eos))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_higher_length_penalty_favours_the_longer_hypothesis(alpha):
    short = np.full(7, PAD, np.int32)
    short[0] = EOS
    long = np.full(7, PAD, np.int32)
    long[:4] = [_TableDecoder.A] * 3 + [EOS]
    short_score = np.log(0.55)  # penalty ((5 + 1) / 6) ** alpha = 1
    long_score = np.log(0.45) / 1.5**alpha  # penalty ((5 + 4) / 6) ** alpha
    # log 0.55 = -0.598 and log 0.45 = -0.799: the short caption wins up to
    # alpha = ln(0.799 / 0.598) / ln 1.5 = 0.71, the long one above.
    expect_long_first = alpha > 0.71
    tokens, scores = beam_search(
        _TableDecoder(max_len=8),
        jnp.zeros((1, 2, 4)),
        jnp.ones((1, 2), bool),
        beam_size=2,
        length_penalty=alpha,
        use_cache=False,
    )
    tokens, scores = np.asarray(tokens[0]), np.asarray(scores[0])
    expected = [(long, long_score), (short, short_score)]
    if not expect_long_first:
        expected.reverse()
    for k, (want_tokens, want_score) in enumerate(expected):
        np.testing.assert_array_equal(tokens[k], want_tokens, err_msg=f"alpha={alpha} beam {k}")
        assert scores[k] == pytest.approx(want_score, rel=1e-5), (alpha, k)


def _counting(decoder, fn):
    """fn(decoder, memory, valid) jitted, and a list that gets one entry per decoder step."""
    calls = []
    graphdef, state = nnx.split(decoder)

    def counted(st, mem, val):
        d = nnx.merge(graphdef, st)
        step = d.step

        def step_and_count(*args):
            jax.debug.callback(lambda: calls.append(1))
            return step(*args)

        d.step = step_and_count
        return fn(d, mem, val)

    jitted = jax.jit(counted)
    return (lambda mem, val: jax.block_until_ready(jitted(state, mem, val))), calls


@pytest.mark.parametrize("alpha", [0.0, ALPHA, 2.0])
def test_early_stop_gives_the_full_length_result(setup, alpha):
    """Stopping once every row is settled returns exactly what running to L_max returns, and
    (rows 0 and 3 settle early in this fixture) beam search then runs fewer steps."""
    decoder, memory, valid, _ = setup
    for rows in (slice(None), np.array([0, 3])):
        for name, fn in {
            "greedy": greedy_decode,
            "beam": functools.partial(beam_search, beam_size=BEAM, length_penalty=alpha),
        }.items():
            fast, calls = _counting(decoder, functools.partial(fn, early_stop=True))
            tokens, scores = fast(memory[rows], valid[rows])
            full = _jit(decoder, functools.partial(fn, early_stop=False))(memory[rows], valid[rows])
            np.testing.assert_array_equal(np.asarray(tokens), np.asarray(full[0]), err_msg=name)
            np.testing.assert_allclose(np.asarray(scores), np.asarray(full[1]), rtol=1e-6)
            if name == "beam" and not isinstance(rows, slice) and alpha < 2.0:
                assert len(calls) < L - 1, (alpha, len(calls))


def test_greedy_early_stop_runs_fewer_steps(setup):
    """Once every row ended, the loop stops: the decoder is called fewer than L_max - 1 times."""
    decoder, memory, valid, _ = setup
    greedy = _jit(decoder, greedy_decode)
    ended = (np.asarray(greedy(memory, valid)[0]) == EOS).any(axis=1)
    assert ended.any() and not ended.all(), (
        "the fixture must have rows that end and rows that do not"
    )
    memory, valid = memory[ended], valid[ended]  # only rows that end
    tokens = np.asarray(greedy(memory, valid)[0])
    longest = int(((tokens == EOS).argmax(axis=1)).max()) + 1
    counted, calls = _counting(decoder, greedy_decode)
    counted(memory, valid)
    assert len(calls) == longest < L - 1


def test_start_tokens_condition_the_decoder(setup, fns):
    """A per-row start token replaces <bos>: greedy from start s equals teacher-forced argmax
    decoding after s, and rows with different start tokens decode differently."""
    decoder, memory, valid, _ = setup
    start = jnp.array([BOS, 5, 6, 7], jnp.int32)
    greedy = _jit(decoder, lambda d, m, v, s: greedy_decode(d, m, v, start=s))
    tokens = np.asarray(greedy(memory, valid, start)[0])
    # Teacher-forced check: every generated token is the argmax after (start, generated prefix).
    inputs = np.concatenate([np.asarray(start)[:, None], tokens[:, :-1]], axis=1)
    logits = np.asarray(fns["logits"](jnp.asarray(inputs), memory, valid))
    for b in range(B):
        ends = np.flatnonzero(tokens[b] == EOS)
        n = ends[0] + 1 if ends.size else tokens.shape[1]
        np.testing.assert_array_equal(tokens[b, :n], logits[b, :n].argmax(-1))
    default = np.asarray(fns["greedy_cached"](memory, valid)[0])
    np.testing.assert_array_equal(tokens[0], default[0])  # start <bos> = the default
    same_memory = jnp.repeat(memory[:1], B, axis=0), jnp.repeat(valid[:1], B, axis=0)
    varied = np.asarray(greedy(*same_memory, start)[0])
    assert len({tuple(r) for r in varied}) > 1, "the start token must change the output"
    beam = _jit(
        decoder,
        lambda d, m, v, s: beam_search(d, m, v, beam_size=BEAM, length_penalty=ALPHA, start=s),
    )
    beam_tokens = np.asarray(beam(memory, valid, start)[0])
    assert beam_tokens.shape == (B, BEAM, L - 1)
    default_beam = np.asarray(fns["beam_cached"](memory, valid)[0])
    np.testing.assert_array_equal(beam_tokens[0], default_beam[0])
