"""A pretrained GPT-2 as the caption decoder, conditioned on the difference encoder's memory.

Two conditionings (`config.model.lm_conditioning`):
  prefix: ADIFF's way. K learned queries attend over the encoder's valid frames (one attention
          pooling), a linear map takes the K results to the LM's width, and these K embeddings
          stand in front of the text; the LM reads them through its own causal self-attention.
  cross:  every GPT-2 block gets a zero-gated cross-attention sub-layer into the encoder output
          (projected to the LM's width), so the pretrained LM's function is unchanged at step 0.
ADIFF's tiers are text prompts placed after the audio prefix (`LMTokenizer.prompt_table`): the
row's start token picks the prompt; prompts shorter than the longest are left-padded with
slots no query attends to and that take no position id, so a row without a prompt is read by
GPT-2 exactly as if the padding were not there.

The decoder keeps `TextDecoder`'s interface (`__call__`, `prefill`, `step`, `max_len`), so
`greedy_decode` and `beam_search` drive it unchanged, with and without the key/value cache. Ids
are the run's (`adc_jax.data.lm_tokenizer`): <pad>/<bos>/<eos>/<unk>, tier tokens, then the LM's
ids + offset. The LM sees its end-of-text token for every id below the offset; its end-of-text
logit becomes <eos>'s, and ids it can never produce (<pad>, <bos>, <unk>, tiers) get MASK_VALUE.

Shapes: B batch (N = B*K beams when searching), L text positions (start token first), P prefix
positions (K audio + prompt), M encoder frames, Dm encoder width, D LM width, V run vocabulary.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from adc_jax.data.lm_tokenizer import LMTokenizer, run_tiers
from adc_jax.data.tokenizer import EOS, SPECIAL_TOKENS
from adc_jax.lm_files import tiny_size
from adc_jax.models.gpt2 import GPT2, INIT_STD, Cache, GPT2Config
from adc_jax.models.layers import MASK_VALUE, MultiHeadAttention
from adc_jax.models.tiny_gpt2 import lm_directory

CONDITIONINGS = ("prefix", "cross")


def _positions(valid: jax.Array) -> jax.Array:
    """GPT-2 position ids [B, T] of a row whose valid slots are `valid` [B, T] bool: the number of
    valid slots before each (padding takes no position, as HF's position_ids from a mask)."""
    return jnp.maximum(jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)


class LMDecoder(nnx.Module):
    """GPT-2 writing captions from the difference encoder's memory.

    Args:
      lm: the GPT-2 (built with cross_attention=True for "cross").
      memory_dim: the encoder output width Dm.
      conditioning: "prefix" or "cross".
      prefix_len: K, the audio prefix length ("prefix").
      pool_heads: heads of the prefix's attention pooling.
      prompts: LM ids of each start token's prompt (row 0: <bos>; row r: the r-th tier token).
      id_offset: the run id of LM id 0.
      max_len: L_max, text positions including the start token.
    """

    def __init__(
        self,
        lm: GPT2,
        *,
        memory_dim: int,
        conditioning: str,
        prefix_len: int,
        pool_heads: int,
        prompts: tuple[tuple[int, ...], ...],
        id_offset: int,
        max_len: int,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
    ):
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"Unknown LM conditioning {conditioning!r}; use {CONDITIONINGS}.")
        if (conditioning == "cross") != (lm.h[0].cross is not None):
            raise ValueError("The LM needs cross-attention blocks exactly for 'cross'.")
        self.lm, self.conditioning = lm, conditioning
        self.max_len, self.offset = max_len, id_offset
        self.eos_lm = lm.config.eos_token_id
        width = lm.config.n_embd
        longest = max(len(p) for p in prompts)
        self.prompt_ids = tuple((0,) * (longest - len(p)) + tuple(p) for p in prompts)
        self.prompt_valid = tuple((False,) * (longest - len(p)) + (True,) * len(p) for p in prompts)
        self.prefix_len = prefix_len if conditioning == "prefix" else 0
        self.total_prefix = self.prefix_len + longest
        if self.total_prefix + max_len > lm.config.n_positions:
            raise ValueError(
                f"The LM has {lm.config.n_positions} positions; the prefix ({self.total_prefix}) "
                f"and the caption ({max_len}) need {self.total_prefix + max_len}."
            )
        if conditioning == "prefix":
            self.prefix_queries = nnx.Param(
                nnx.initializers.normal(INIT_STD)(rngs.params(), (prefix_len, memory_dim))
            )
            self.prefix_pool = MultiHeadAttention(
                memory_dim, pool_heads, dropout=dropout, dtype=dtype, rngs=rngs
            )
        self.memory_proj = nnx.Linear(
            memory_dim, width, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
        )

    # ------------------------------------------------------------------ ids and conditioning

    def _lm_ids(self, tokens: jax.Array) -> jax.Array:
        """Run ids -> LM ids; ids below the offset (specials, tier tokens) -> end-of-text."""
        return jnp.where(tokens >= self.offset, tokens - self.offset, self.eos_lm)

    def _run_logits(self, lm_logits: jax.Array) -> jax.Array:
        """LM logits [..., V_lm] -> run logits [..., offset + V_lm] (float32)."""
        head = jnp.full(lm_logits.shape[:-1] + (self.offset,), MASK_VALUE, lm_logits.dtype)
        head = head.at[..., EOS].set(lm_logits[..., self.eos_lm])
        body = lm_logits.at[..., self.eos_lm].set(MASK_VALUE)
        return jnp.concatenate([head, body], axis=-1)

    def prefix(
        self, start: jax.Array, memory: jax.Array, memory_valid: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """The embeddings in front of the text: [B, P, D] (no positions) and valid [B, P] bool.

        start [B] int: each row's start token (its prompt); memory [B, M, Dm], memory_valid [B, M].
        """
        batch = start.shape[0]
        parts, valid = [], []
        if self.conditioning == "prefix":
            queries = jnp.broadcast_to(
                self.prefix_queries[...].astype(memory.dtype),
                (batch,) + self.prefix_queries.shape,
            )
            pooled, _ = self.prefix_pool(
                queries, memory, memory_valid[:, None, None, :], train=train
            )
            parts.append(self.memory_proj(pooled).astype(self.lm.dtype))
            valid.append(jnp.ones((batch, self.prefix_len), bool))
        if self.total_prefix > self.prefix_len:
            rows = len(self.prompt_ids)
            row = jnp.clip(start - (len(SPECIAL_TOKENS) - 1), 0, rows - 1)
            parts.append(self.lm.embed(jnp.asarray(self.prompt_ids, jnp.int32)[row]))
            valid.append(jnp.asarray(self.prompt_valid, bool)[row])
        if not parts:
            return jnp.zeros((batch, 0, self.lm.config.n_embd), self.lm.dtype), jnp.zeros(
                (batch, 0), bool
            )
        return jnp.concatenate(parts, axis=1), jnp.concatenate(valid, axis=1)

    def cross_kv(
        self, memory: jax.Array, memory_valid: jax.Array
    ) -> tuple[list[tuple[jax.Array, jax.Array]] | None, jax.Array | None]:
        """("cross") each block's memory keys/values [B, M, H, E] and the mask [B, 1, 1, M]."""
        if self.conditioning != "cross":
            return None, None
        projected = self.memory_proj(memory)
        kv = [block.cross.attention.project_kv(projected) for block in self.lm.h]
        return kv, memory_valid[:, None, None, :]

    # ------------------------------------------------------------------ teacher forcing

    def __call__(
        self, tokens: jax.Array, memory: jax.Array, memory_valid: jax.Array, *, train: bool
    ) -> jax.Array:
        """Teacher-forced logits.

        Args:
          tokens: [B, L] int run ids (start token first).
          memory: [B, M, Dm] encoder output; memory_valid: [B, M] bool.
        Returns:
          [B, L, V] float32 logits for the next token at every text position.
        """
        batch, length = tokens.shape
        prefix, prefix_valid = self.prefix(tokens[:, 0], memory, memory_valid, train=train)
        p = prefix.shape[1]
        x = jnp.concatenate([prefix, self.lm.embed(self._lm_ids(tokens))], axis=1)
        key_valid = jnp.concatenate([prefix_valid, jnp.ones((batch, length), bool)], axis=1)
        x = self.lm.add_positions(x, _positions(key_valid), train=train)
        mask = jnp.tril(jnp.ones((p + length,) * 2, bool))[None, None] & key_valid[:, None, None]
        cross_kv, cross_mask = self.cross_kv(memory, memory_valid)
        h, _ = self.lm.blocks(x, mask, cross_kv=cross_kv, cross_mask=cross_mask, train=train)
        return self._run_logits(self.lm.logits(h[:, p:]))

    # ------------------------------------------------------------------ cached decoding

    def prefill(
        self, memory: jax.Array, memory_valid: jax.Array, start: jax.Array
    ) -> tuple[dict, Cache]:
        """The decoding context and a cache holding the prefix's keys/values.

        Returns ({"prefix_valid": [N, P], "cross_kv", "cross_mask"}, cache [layers, N, P+L, H, E]).
        """
        n = memory.shape[0]
        p, total = self.total_prefix, self.total_prefix + self.max_len
        cache = self.lm.init_cache(n, total)
        prefix, prefix_valid = self.prefix(start, memory, memory_valid, train=False)
        cross_kv, cross_mask = self.cross_kv(memory, memory_valid)
        if p:
            x = self.lm.add_positions(prefix, _positions(prefix_valid), train=False)
            keys = jnp.arange(total)[None, :] <= jnp.arange(p)[:, None]  # causal, [P, P + L]
            valid = jnp.pad(prefix_valid, ((0, 0), (0, self.max_len)))
            mask = keys[None, None] & valid[:, None, None]
            _, cache = self.lm.blocks(
                x,
                mask,
                cache=cache,
                index=0,
                cross_kv=cross_kv,
                cross_mask=cross_mask,
                train=False,
            )
        context = {"prefix_valid": prefix_valid, "cross_kv": cross_kv, "cross_mask": cross_mask}
        return context, cache

    def step(
        self, token: jax.Array, position: jax.Array, cache: Cache, context: dict, memory_valid
    ) -> tuple[jax.Array, Cache]:
        """One cached step: token [N] at text position `position` -> logits [N, V] float32 for
        position + 1, and the updated cache."""
        p, total = self.total_prefix, self.total_prefix + self.max_len
        index = p + position
        x = self.lm.embed(self._lm_ids(token)[:, None])
        position_id = jnp.sum(context["prefix_valid"], axis=1, dtype=jnp.int32) + position
        x = self.lm.add_positions(x, position_id[:, None], train=False)
        keys = jnp.arange(total)
        prefix_valid = jnp.pad(context["prefix_valid"], ((0, 0), (0, self.max_len)))
        key_valid = jnp.where(keys < p, prefix_valid, (keys <= index)[None])
        h, cache = self.lm.blocks(
            x,
            key_valid[:, None, None, :],
            cache=cache,
            index=index,
            cross_kv=context["cross_kv"],
            cross_mask=context["cross_mask"],
            train=False,
        )
        return self._run_logits(self.lm.logits(h))[:, 0], cache


def lm_decoder_from_config(
    config: ml_collections.ConfigDict, vocab_size: int, *, dtype, rngs: nnx.Rngs
) -> LMDecoder:
    """The LM decoder of `config.model` (random weights: `step.build_model_and_optimizer` loads
    the pretrained ones). `model.lm_path` is a GPT-2 directory or "tiny:<size>", written already
    (`rundir.ensure_tiny_lm`); `vocab_size` must be the run tokenizer's."""
    m = config.model
    directory = lm_directory(config)
    if tiny_size(m.lm_path) is not None and not os.path.isdir(directory):
        raise FileNotFoundError(
            f"model.lm_path={m.lm_path!r}: {directory} has not been written yet; training writes "
            "it on first use (adc_jax.rundir.ensure_tiny_lm), or run tools/make_tiny_gpt2.py."
        )
    lm_config = GPT2Config.from_directory(directory)
    tiers = run_tiers(config)
    # Only tier prompts need the tokenizer (and the `tokenizers` package, which the GPU image
    # lacks): without tiers the run's ids are the 4 specials, then the LM's.
    prompts = LMTokenizer.from_directory(directory, tiers).prompt_table() if tiers else ((),)
    offset = len(SPECIAL_TOKENS) + len(tiers)
    if offset + lm_config.vocab_size != vocab_size:
        raise ValueError(
            f"The run's vocabulary has {vocab_size} ids but the LM of {directory} with tiers "
            f"{tiers} needs {offset + lm_config.vocab_size}: the workdir was trained with another "
            "LM."
        )
    lm = GPT2(
        lm_config,
        cross_attention=m.lm_conditioning == "cross",
        dropout=m.dropout,
        dtype=dtype,
        rngs=rngs,
    )
    return LMDecoder(
        lm,
        memory_dim=m.d_model,
        conditioning=m.lm_conditioning,
        prefix_len=m.lm_prefix_len,
        pool_heads=m.num_heads,
        prompts=prompts,
        id_offset=offset,
        max_len=m.max_decode_len,
        dropout=m.dropout,
        dtype=dtype,
        rngs=rngs,
    )
