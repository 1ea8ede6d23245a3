"""Autoregressive transformer text decoder with a key/value cache, greedy and beam search.

Pre-LayerNorm decoder layers: causal self-attention, cross-attention to every valid encoder frame,
GELU feed-forward. Input and output embeddings are tied; positions are sinusoidal.

Decoding is batched and runs fully inside `jax.jit` (`lax.fori_loop` over positions). Each search
takes a `use_cache` switch: with the cache, one step costs one token's worth of compute; without,
every step re-runs the decoder over the whole prefix. Both must give the same tokens (tested).

Shapes: B batch, L token positions, S encoder frames, D d_model, V vocabulary, K beam size,
N = B*K flattened beams, H heads, E head size.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from adc_jax.data.tokenizer import BOS, EOS, PAD
from adc_jax.models.layers import (
    Dropout,
    FeedForward,
    MultiHeadAttention,
    layer_norm,
    sinusoidal_positions,
)

Cache = dict[str, jax.Array]


class DecoderLayer(nnx.Module):
    """Pre-LN layer: causal self-attention, cross-attention, feed-forward."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, *, dropout: float, dtype, rngs: nnx.Rngs
    ):
        self.self_norm = layer_norm(d_model, dtype, rngs)
        self.self_attention = MultiHeadAttention(
            d_model, num_heads, dropout=dropout, dtype=dtype, rngs=rngs
        )
        self.cross_norm = layer_norm(d_model, dtype, rngs)
        self.cross_attention = MultiHeadAttention(
            d_model, num_heads, dropout=dropout, dtype=dtype, rngs=rngs
        )
        self.ffn_norm = layer_norm(d_model, dtype, rngs)
        self.ffn = FeedForward(d_model, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        self_kv: tuple[jax.Array, jax.Array] | None,
        self_mask: jax.Array,
        cross_kv: tuple[jax.Array, jax.Array],
        cross_mask: jax.Array,
        *,
        train: bool,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array]:
        """One layer.

        Args:
          x: [B, L, D] token states (L=1 when stepping with a cache).
          self_kv: cached keys/values [B, L_max, H, E], or None to use x's own.
          self_mask: [B, 1, L, L or L_max] bool, causal (and cache-validity) mask.
          cross_kv: encoder keys/values [B, S, H, E]; cross_mask: [B, 1, 1, S] bool.
        Returns:
          x [B, L, D], this step's self-attention keys/values [B, L, H, E], cross weights
          [B, H, L, S].
        """
        y = self.self_norm(x)
        new_kv = self.self_attention.project_kv(y)
        keys, values = new_kv if self_kv is None else self_kv
        y, _ = self.self_attention.attend(y, keys, values, self_mask, train=train)
        x = x + self.dropout(y, deterministic=not train)
        y, cross_weights = self.cross_attention.attend(
            self.cross_norm(x), *cross_kv, cross_mask, train=train
        )
        x = x + self.dropout(y, deterministic=not train)
        x = x + self.dropout(self.ffn(self.ffn_norm(x), train=train), deterministic=not train)
        return x, new_kv, cross_weights


class TextDecoder(nnx.Module):
    """Transformer decoder over word tokens, attending to the difference encoder's memory."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        max_len: int,
        *,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.d_model = d_model
        self.max_len = max_len
        self.dtype = dtype
        self.embedding = nnx.Embed(
            vocab_size,
            d_model,
            dtype=dtype,
            param_dtype=jnp.float32,
            embedding_init=nnx.initializers.normal(d_model**-0.5),
            rngs=rngs,
        )
        self.input_dropout = Dropout(dropout, rngs=rngs)
        self.layers = nnx.List(
            [
                DecoderLayer(d_model, num_heads, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
                for _ in range(num_layers)
            ]
        )
        self.final_norm = layer_norm(d_model, dtype, rngs)

    def _embed(self, tokens: jax.Array, positions: jax.Array, *, train: bool) -> jax.Array:
        """tokens [B, L] int, positions [L] int -> [B, L, D]."""
        table = jnp.asarray(sinusoidal_positions(self.max_len, self.d_model), self.dtype)
        x = self.embedding(tokens) * jnp.asarray(self.d_model**0.5, self.dtype)
        return self.input_dropout(x + table[positions][None], deterministic=not train)

    def _logits(self, x: jax.Array) -> jax.Array:
        """Tied output projection: [B, L, D] -> [B, L, V] float32."""
        return self.embedding.attend(self.final_norm(x)).astype(jnp.float32)

    def cross_kv(self, memory: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Each layer's cross-attention keys/values of memory [B, S, D]: [B, S, H, E] each."""
        return [layer.cross_attention.project_kv(memory) for layer in self.layers]

    def __call__(
        self, tokens: jax.Array, memory: jax.Array, memory_valid: jax.Array, *, train: bool
    ) -> jax.Array:
        """Teacher-forced logits.

        Args:
          tokens: [B, L] int input tokens (<bos> first).
          memory: [B, S, D] encoder output; memory_valid: [B, S] bool.
        Returns:
          [B, L, V] float32 logits for the next token at every position.
        """
        length = tokens.shape[1]
        x = self._embed(tokens, jnp.arange(length), train=train)
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        cross_mask = memory_valid[:, None, None, :]
        for layer, kv in zip(self.layers, self.cross_kv(memory), strict=True):
            x, _, _ = layer(x, None, causal, kv, cross_mask, train=train)
        return self._logits(x)

    def prefill(
        self, memory: jax.Array, memory_valid: jax.Array, start: jax.Array
    ) -> tuple[list[tuple[jax.Array, jax.Array]], Cache]:
        """What cached decoding starts from: the cross-attention keys/values of memory [N, S, D]
        and an empty cache (the start tokens [N] need nothing here; `LMDecoder`'s prompts do)."""
        del memory_valid, start
        return self.cross_kv(memory), self.init_cache(memory.shape[0])

    def init_cache(self, batch: int) -> Cache:
        """Empty self-attention cache: keys/values [layers, B, L_max, H, E] in the compute dtype."""
        first = self.layers[0].self_attention
        shape = (len(self.layers), batch, self.max_len, first.num_heads, first.head_dim)
        return {"keys": jnp.zeros(shape, self.dtype), "values": jnp.zeros(shape, self.dtype)}

    def step(
        self,
        token: jax.Array,
        position: jax.Array,
        cache: Cache,
        cross_kv: list[tuple[jax.Array, jax.Array]],
        memory_valid: jax.Array,
    ) -> tuple[jax.Array, Cache]:
        """One cached decoding step (inference only).

        Args:
          token: [N] int token at `position`; position: scalar int.
          cache: from `init_cache(N)` or a previous step; cross_kv: from `cross_kv(memory)`.
          memory_valid: [N, S] bool.
        Returns:
          logits [N, V] float32 for the token at position + 1, and the updated cache.
        """
        x = self._embed(token[:, None], position[None], train=False)
        self_mask = (jnp.arange(self.max_len) <= position)[None, None, None, :]
        cross_mask = memory_valid[:, None, None, :]
        keys, values = cache["keys"], cache["values"]
        for i, layer in enumerate(self.layers):
            k_new, v_new = layer.self_attention.project_kv(layer.self_norm(x))
            layer_keys = jax.lax.dynamic_update_slice_in_dim(keys[i], k_new, position, axis=1)
            layer_values = jax.lax.dynamic_update_slice_in_dim(values[i], v_new, position, axis=1)
            keys = keys.at[i].set(layer_keys)
            values = values.at[i].set(layer_values)
            x, _, _ = layer(
                x, (layer_keys, layer_values), self_mask, cross_kv[i], cross_mask, train=False
            )
        return self._logits(x)[:, 0], {"keys": keys, "values": values}


# ------------------------------------------------------------------------------------ searches

StepFn = Callable[[jax.Array, jax.Array, object], tuple[jax.Array, object]]


def _step_fn(
    decoder: TextDecoder,
    memory: jax.Array,
    memory_valid: jax.Array,
    start: jax.Array,
    use_cache: bool,
) -> tuple[StepFn, object]:
    """Returns step(seqs [N, L], t, cache) -> (logits [N, V] for position t+1, cache), cache0.

    start: [N] int32 each row's start token. Any decoder with `__call__`, `prefill` and `step`
    works (`TextDecoder`, `adc_jax.models.lm_decoder.LMDecoder`).
    """
    if use_cache:
        context, cache0 = decoder.prefill(memory, memory_valid, start)

        def step(seqs, t, cache):
            return decoder.step(seqs[:, t], t, cache, context, memory_valid)

        return step, cache0

    def step_uncached(seqs, t, cache):
        logits = decoder(seqs, memory, memory_valid, train=False)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False), cache

    return step_uncached, {}


def _start_sequences(start: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    """[*shape] int32 <pad> everywhere but position 0 of the last axis: start (default <bos>).

    start: None, or [B] int32 per-example first tokens (e.g. ADIFF's tier tokens); shape[0] = B.
    """
    first = (
        BOS if start is None else start.astype(jnp.int32).reshape((-1,) + (1,) * (len(shape) - 2))
    )
    return jnp.full(shape, PAD, jnp.int32).at[..., 0].set(first)


def greedy_decode(
    decoder: TextDecoder,
    memory: jax.Array,
    memory_valid: jax.Array,
    *,
    start: jax.Array | None = None,
    use_cache: bool = True,
    early_stop: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Greedy decoding; stops as soon as every row has produced <eos> (unless early_stop=False,
    the reference that always runs to L_max).

    Args:
      memory: [B, S, D]; memory_valid: [B, S] bool.
      start: [B] int32 first token of each row (default: <bos> for all).
    Returns:
      tokens [B, L_max - 1] int32 (after the start token; <eos> then <pad>), and their summed
      log-probabilities [B] float32.
    """
    batch, length = memory.shape[0], decoder.max_len
    seqs = _start_sequences(start, (batch, length))
    step, cache = _step_fn(decoder, memory, memory_valid, seqs[:, 0], use_cache)

    def cond(state):
        t, _, _, done, _ = state
        return (t < length - 1) & ~(early_stop & jnp.all(done))

    def body(state):
        t, seqs, cache, done, score = state
        logits, cache = step(seqs, t, cache)
        logp = jax.nn.log_softmax(logits)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        score = score + jnp.where(done, 0.0, jnp.max(logp, axis=-1))
        token = jnp.where(done, PAD, token)
        seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token[:, None], t + 1, axis=1)
        return t + 1, seqs, cache, done | (token == EOS), score

    init = (0, seqs, cache, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32))
    _, seqs, _, _, score = jax.lax.while_loop(cond, body, init)
    return seqs[:, 1:], score


def _length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    decoder: TextDecoder,
    memory: jax.Array,
    memory_valid: jax.Array,
    *,
    beam_size: int,
    length_penalty: float = 0.6,
    start: jax.Array | None = None,
    use_cache: bool = True,
    early_stop: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Beam search keeping `beam_size` live and `beam_size` finished hypotheses per example.

    Finished hypotheses are scored by log-probability / ((5 + length) / 6) ** length_penalty
    (GNMT); a hypothesis still alive at L_max is closed there. The search stops early once no
    live hypothesis of any row can still enter that row's finished top `beam_size`: with
    length_penalty >= 0 a live hypothesis can at best keep its log-probability and reach the
    largest penalty, L_max's, so its best possible score is alive_logp / penalty(L_max - 1);
    stopping then gives exactly the result of running to L_max (early_stop=False, the reference).

    Args:
      memory: [B, S, D]; memory_valid: [B, S] bool.
      start: [B] int32 first token of each row (default: <bos> for all).
    Returns:
      tokens [B, K, L_max - 1] int32, best first, and their normalised scores [B, K] float32.
    """
    batch, length, k = memory.shape[0], decoder.max_len, beam_size
    n = batch * k
    memory_k = jnp.repeat(memory, k, axis=0)
    valid_k = jnp.repeat(memory_valid, k, axis=0)
    neg_inf = jnp.float32(-jnp.inf)
    alive = _start_sequences(start, (batch, k, length))
    step, cache = _step_fn(decoder, memory_k, valid_k, alive.reshape(n, length)[:, 0], use_cache)
    alive_logp = jnp.full((batch, k), neg_inf).at[:, 0].set(0.0)
    finished = jnp.full((batch, k, length), PAD, jnp.int32)
    finished_score = jnp.full((batch, k), neg_inf)
    rows = jnp.arange(batch)[:, None]
    final_penalty = _length_penalty(length - 1.0, length_penalty)

    def cond(state):
        t, _, alive_logp, _, finished_score, _ = state
        if length_penalty < 0 or not early_stop:  # no safe bound with a negative penalty
            return t < length - 1
        best_alive = jnp.max(alive_logp, axis=1) / final_penalty
        settled = jnp.all(best_alive < jnp.min(finished_score, axis=1))
        return (t < length - 1) & ~settled

    def body(state):
        t, alive, alive_logp, finished, finished_score, cache = state
        logits, cache = step(alive.reshape(n, length), t, cache)
        vocab = logits.shape[-1]
        logp = jax.nn.log_softmax(logits).reshape(batch, k, vocab)
        candidates = (alive_logp[:, :, None] + logp).reshape(batch, k * vocab)
        top_scores, top_index = jax.lax.top_k(candidates, 2 * k)  # [B, 2K]
        origin, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        seqs = alive[rows, origin]  # [B, 2K, L]
        seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token[:, :, None], t + 1, axis=2)
        is_eos = token == EOS

        # Hypotheses that end here join the finished set (t + 1 tokens generated, <eos> included).
        new_finished = jnp.where(
            is_eos, top_scores / _length_penalty(t + 1.0, length_penalty), neg_inf
        )
        pool_scores = jnp.concatenate([finished_score, new_finished], axis=1)
        pool_seqs = jnp.concatenate([finished, seqs], axis=1)
        finished_score, keep = jax.lax.top_k(pool_scores, k)
        finished = pool_seqs[rows, keep]

        # The best beam_size hypotheses that did not end stay alive.
        alive_logp, keep = jax.lax.top_k(jnp.where(is_eos, neg_inf, top_scores), k)
        alive = seqs[rows, keep]
        source = (rows * k + origin[rows, keep]).reshape(n)
        cache = jax.tree.map(lambda x: _gather_beams(x, source), cache)
        return t + 1, alive, alive_logp, finished, finished_score, cache

    init = (0, alive, alive_logp, finished, finished_score, cache)
    _, alive, alive_logp, finished, finished_score, _ = jax.lax.while_loop(cond, body, init)
    # Close hypotheses that reached the maximum length without <eos>.
    closed = alive_logp / final_penalty
    pool_scores = jnp.concatenate([finished_score, closed], axis=1)
    pool_seqs = jnp.concatenate([finished, alive], axis=1)
    scores, keep = jax.lax.top_k(pool_scores, k)
    return pool_seqs[rows, keep][:, :, 1:], scores


def _gather_beams(x: jax.Array, source: jax.Array) -> jax.Array:
    """Reorders a cache leaf [layers, N, ...] along its beam axis: beam i takes source[i]."""
    return x[:, source]
