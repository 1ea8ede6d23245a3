"""GPT-2 (Hugging Face's GPT2LMHeadModel) in Flax NNX, and `from_pretrained` without torch.

The architecture of Radford et al. (2019) as `transformers` implements it: learned token and
position embeddings, pre-LayerNorm blocks (causal self-attention with one fused q/k/v projection,
GELU-tanh MLP of width n_inner = 4 n_embd), a final LayerNorm and an LM head tied to the token
embedding. Every size comes from a `config.json` (124M "gpt2" to the tiny ones the tests use).
Parameter names follow the checkpoint's (`h.0.attn.c_attn.kernel` <- `h.0.attn.c_attn.weight`;
HF's Conv1D stores its weight [in, out], as `nnx.Linear` does, so nothing is transposed).

Blocks may carry a cross-attention sub-layer (`cross_attention=True`) into an audio memory, placed
after the self-attention as HF's `add_cross_attention` does, but gated: its output is scaled by
tanh(gate) with gate = 0 at init (Flamingo), so a pretrained LM computes exactly its own function
at step 0. The sub-layers are new parameters (`h.N.cross.*`), never in the checkpoint.

`GPT2.blocks` runs the stack over input embeddings with an explicit mask and, optionally, a
key/value cache written at `index`: the same code path trains (no cache), pre-fills a prefix
and decodes one token at a time (`adc_jax.models.lm_decoder`).

Shapes: B batch, T positions in this call, S key positions (T, or the cache length), D n_embd,
H heads, E head size D/H, V vocabulary, M audio frames.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from adc_jax import lm_files
from adc_jax.models import safetensors_io
from adc_jax.models.layers import MASK_VALUE, Dropout, MultiHeadAttention

Cache = dict[str, jax.Array]
# Standard deviation of HF's GPT-2 initialiser (config.initializer_range) for random weights.
INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The architecture fields of a GPT-2 config.json."""

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    layer_norm_epsilon: float = 1e-5
    eos_token_id: int = 50256

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> GPT2Config:
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            n_positions=int(cfg["n_positions"]),
            n_embd=int(cfg["n_embd"]),
            n_layer=int(cfg["n_layer"]),
            n_head=int(cfg["n_head"]),
            n_inner=int(cfg.get("n_inner") or 4 * cfg["n_embd"]),
            layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-5)),
            eos_token_id=int(cfg.get("eos_token_id", cfg["vocab_size"] - 1)),
        )

    @classmethod
    def from_directory(cls, directory: str) -> GPT2Config:
        """Reads and checks `directory/config.json` (LMFilesError names what is wrong)."""
        return cls.from_dict(lm_files.read_lm_config(directory))


def _linear(d_in: int, d_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.initializers.normal(INIT_STD),
        rngs=rngs,
    )


def _layer_norm(dim: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class SelfAttention(nnx.Module):
    """GPT-2's attention: fused q/k/v projection `c_attn`, output projection `c_proj`."""

    def __init__(self, d: int, heads: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, d // heads
        self.c_attn = _linear(d, 3 * d, dtype, rngs)
        self.c_proj = _linear(d, d, dtype, rngs)
        self.attn_dropout = Dropout(dropout, rngs=rngs)

    def qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, T, D] -> queries, keys, values [B, T, H, E] each."""
        b, t, _ = x.shape
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        return tuple(y.reshape(b, t, self.heads, self.head_dim) for y in (q, k, v))

    def attend(
        self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, train: bool
    ) -> jax.Array:
        """Queries [B, T, H, E] over keys/values [B, S, H, E]; mask [B|1, 1, T, S] bool.

        Returns [B, T, D] after the output projection.
        """
        logits = jnp.einsum("bthe,bshe->bhts", q, k).astype(jnp.float32) * self.head_dim**-0.5
        weights = jax.nn.softmax(jnp.where(mask, logits, MASK_VALUE), axis=-1)
        weights = self.attn_dropout(weights, deterministic=not train)
        context = jnp.einsum("bhts,bshe->bthe", weights.astype(v.dtype), v)
        return self.c_proj(context.reshape(context.shape[:2] + (-1,)))


class MLP(nnx.Module):
    """c_fc (D -> n_inner), GELU-tanh ("gelu_new"), c_proj (n_inner -> D)."""

    def __init__(self, d: int, inner: int, dtype, rngs: nnx.Rngs):
        self.c_fc = _linear(d, inner, dtype, rngs)
        self.c_proj = _linear(inner, d, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=True))


class GatedCrossAttention(nnx.Module):
    """x + tanh(gate) * CrossAttention(LayerNorm(x), memory); gate = 0 at init (a no-op)."""

    def __init__(self, d: int, heads: int, eps: float, *, dropout: float, dtype, rngs: nnx.Rngs):
        self.norm = _layer_norm(d, eps, dtype, rngs)
        self.attention = MultiHeadAttention(d, heads, dropout=dropout, dtype=dtype, rngs=rngs)
        self.gate = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(
        self, x: jax.Array, kv: tuple[jax.Array, jax.Array], mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """x [B, T, D]; kv: memory keys/values [B, M, H, E]; mask [B, 1, 1, M] bool.

        Returns x [B, T, D] and the attention weights [B, H, T, M].
        """
        y, weights = self.attention.attend(self.norm(x), *kv, mask, train=train)
        return x + jnp.tanh(self.gate[...]).astype(y.dtype) * y, weights


class Block(nnx.Module):
    """Pre-LN block: ln_1 -> attn (+ residual) [-> gated cross-attention] -> ln_2 -> mlp."""

    def __init__(self, c: GPT2Config, *, cross: bool, dropout: float, dtype, rngs: nnx.Rngs):
        eps = c.layer_norm_epsilon
        self.ln_1 = _layer_norm(c.n_embd, eps, dtype, rngs)
        self.attn = SelfAttention(c.n_embd, c.n_head, dropout=dropout, dtype=dtype, rngs=rngs)
        self.cross = (
            GatedCrossAttention(c.n_embd, c.n_head, eps, dropout=dropout, dtype=dtype, rngs=rngs)
            if cross
            else None
        )
        self.ln_2 = _layer_norm(c.n_embd, eps, dtype, rngs)
        self.mlp = MLP(c.n_embd, c.n_inner, dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        cache_kv: tuple[jax.Array, jax.Array] | None = None,
        index: jax.Array | int = 0,
        cross_kv: tuple[jax.Array, jax.Array] | None = None,
        cross_mask: jax.Array | None = None,
        train: bool,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One block.

        Args:
          x: [B, T, D]; mask: [B|1, 1, T, S] bool (S = T without a cache, else the cache length).
          cache_kv: this layer's cached keys/values [B, S, H, E]; x's are written at `index`.
          cross_kv, cross_mask: memory keys/values [B, M, H, E] and [B, 1, 1, M] (cross blocks).
        Returns:
          x [B, T, D] and the keys/values attended to ([B, S, H, E]: the updated cache).
        """
        q, k, v = self.attn.qkv(self.ln_1(x))
        if cache_kv is not None:
            k = jax.lax.dynamic_update_slice_in_dim(
                cache_kv[0], k.astype(cache_kv[0].dtype), index, 1
            )
            v = jax.lax.dynamic_update_slice_in_dim(
                cache_kv[1], v.astype(cache_kv[1].dtype), index, 1
            )
        deterministic = not train
        x = x + self.dropout(
            self.attn.attend(q, k, v, mask, train=train), deterministic=deterministic
        )
        if self.cross is not None:
            x, _ = self.cross(x, cross_kv, cross_mask, train=train)
        x = x + self.dropout(self.mlp(self.ln_2(x)), deterministic=deterministic)
        return x, (k, v)


class GPT2(nnx.Module):
    """GPT2LMHeadModel: `model(ids [B, T] int32) -> logits [B, T, V] float32`.

    Args:
      config: the architecture (`GPT2Config.from_directory`).
      cross_attention: give every block a zero-gated cross-attention sub-layer (new parameters).
      dropout: rate of the embedding, attention-weight and residual dropouts (GPT-2 uses 0.1).
      dtype: compute dtype; parameters are float32.
    """

    def __init__(
        self,
        config: GPT2Config,
        *,
        cross_attention: bool = False,
        dropout: float = 0.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        c = self.config = config
        self.dtype = dtype
        embed = nnx.initializers.normal(INIT_STD)
        self.wte = nnx.Embed(
            c.vocab_size,
            c.n_embd,
            dtype=dtype,
            param_dtype=jnp.float32,
            embedding_init=embed,
            rngs=rngs,
        )
        self.wpe = nnx.Embed(
            c.n_positions,
            c.n_embd,
            dtype=dtype,
            param_dtype=jnp.float32,
            embedding_init=embed,
            rngs=rngs,
        )
        self.drop = Dropout(dropout, rngs=rngs)
        self.h = nnx.List(
            [
                Block(c, cross=cross_attention, dropout=dropout, dtype=dtype, rngs=rngs)
                for _ in range(c.n_layer)
            ]
        )
        self.ln_f = _layer_norm(c.n_embd, c.layer_norm_epsilon, dtype, rngs)

    def embed(self, ids: jax.Array) -> jax.Array:
        """Token embeddings: ids [B, T] int -> [B, T, D] (no positions)."""
        return self.wte(ids)

    def add_positions(self, x: jax.Array, positions: jax.Array, *, train: bool) -> jax.Array:
        """x [B, T, D] + the position embeddings of positions [T] or [B, T] int, then embedding
        dropout."""
        pos = self.wpe(positions)
        return self.drop(x + (pos if pos.ndim == 3 else pos[None]), deterministic=not train)

    def logits(self, x: jax.Array) -> jax.Array:
        """Final LayerNorm and tied LM head: [B, T, D] -> [B, T, V] float32."""
        return self.wte.attend(self.ln_f(x)).astype(jnp.float32)

    def init_cache(self, batch: int, length: int) -> Cache:
        """Empty key/value cache [n_layer, B, length, H, E] in the compute dtype."""
        c = self.config
        shape = (c.n_layer, batch, length, c.n_head, c.n_embd // c.n_head)
        return {"keys": jnp.zeros(shape, self.dtype), "values": jnp.zeros(shape, self.dtype)}

    def blocks(
        self,
        x: jax.Array,
        mask: jax.Array,
        *,
        cache: Cache | None = None,
        index: jax.Array | int = 0,
        cross_kv: list[tuple[jax.Array, jax.Array]] | None = None,
        cross_mask: jax.Array | None = None,
        train: bool,
    ) -> tuple[jax.Array, Cache | None]:
        """Runs every block over embeddings x [B, T, D] (positions added).

        Args:
          mask: [B|1, 1, T, S] bool, True where a query may attend to a key.
          cache: from `init_cache`; x's keys/values are written at positions index..index+T-1.
          cross_kv: per layer memory keys/values [B, M, H, E] (cross-attention blocks only).
          cross_mask: [B, 1, 1, M] bool.
        Returns:
          hidden states [B, T, D] (before ln_f) and the updated cache (None without one).
        """
        keys, values = [], []
        for i, block in enumerate(self.h):
            layer_cache = None if cache is None else (cache["keys"][i], cache["values"][i])
            x, (k, v) = block(
                x,
                mask,
                cache_kv=layer_cache,
                index=index,
                cross_kv=None if cross_kv is None else cross_kv[i],
                cross_mask=cross_mask,
                train=train,
            )
            keys.append(k)
            values.append(v)
        if cache is None:
            return x, None
        return x, {"keys": jnp.stack(keys), "values": jnp.stack(values)}

    def __call__(self, ids: jax.Array, *, train: bool = False) -> jax.Array:
        """ids [B, T] int32 -> logits [B, T, V] float32 (causal; no cross-attention input)."""
        t = ids.shape[1]
        x = self.add_positions(self.embed(ids), jnp.arange(t), train=train)
        causal = jnp.tril(jnp.ones((t, t), bool))[None, None]
        x, _ = self.blocks(x, causal, train=train)
        return self.logits(x)


# ------------------------------------------------------------------------------ checkpoints

# nnx parameter leaf name -> the checkpoint's.
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# Checkpoint tensors that are not parameters (HF's causal-mask buffers) or are tied to others.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_TIED = ("lm_head.weight",)


def _checkpoint_name(path: tuple) -> str | None:
    """nnx path ('h', 0, 'attn', 'c_attn', 'kernel') -> 'h.0.attn.c_attn.weight'; None for the
    new cross-attention parameters (`h.N.cross.*`)."""
    parts = [str(getattr(p, "key", p)) for p in path]
    if "cross" in parts:
        return None
    return ".".join(parts[:-1] + [_LEAF_NAMES[parts[-1]]])


def load_weights(model: GPT2, directory: str) -> None:
    """Sets `model`'s pretrained parameters from `directory/model.safetensors` (in place).

    Tensor names may carry GPT2LMHeadModel's "transformer." prefix or not (the hub's gpt2 file
    has none). The cross-attention sub-layers keep their initial values.

    Raises:
      lm_files.LMFilesError: a tensor is missing or has another shape than the config's (the
        message lists them), or the file cannot be read.
    """
    path = os.path.join(os.path.expanduser(directory), lm_files.WEIGHTS_FILE)
    try:
        raw = safetensors_io.load_file(path)
    except (OSError, ValueError) as e:
        raise lm_files.LMFilesError(f"Cannot read {path}: {e}") from e
    tensors = {k.removeprefix("transformer."): v for k, v in raw.items()}
    params = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(params)
    missing, wrong, used = [], [], set()
    for key, var in flat:
        name = _checkpoint_name(key)
        if name is None:
            continue
        if name not in tensors:
            missing.append(name)
            continue
        value = tensors[name]
        used.add(name)
        if tuple(value.shape) != tuple(var.shape):
            wrong.append(f"{name} {tuple(value.shape)} (the config needs {tuple(var.shape)})")
            continue
        var[...] = jnp.asarray(value, var.dtype)
    if missing or wrong:
        problems = []
        if missing:
            problems.append(
                f"missing tensor(s): {', '.join(missing[:8])}"
                + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            )
        if wrong:
            problems.append(f"wrong shape(s): {'; '.join(wrong[:8])}")
        raise lm_files.LMFilesError(
            f"{path} does not match {os.path.join(directory, lm_files.CONFIG_FILE)}: "
            + "; ".join(problems)
            + "."
        )
    unused = [
        k for k in tensors if k not in used and not k.endswith(_IGNORED_SUFFIXES) and k not in _TIED
    ]
    if unused:
        raise lm_files.LMFilesError(
            f"{path} holds tensor(s) a GPT-2 of its config.json does not have: "
            f"{', '.join(sorted(unused)[:8])}."
        )
    if "lm_head.weight" in tensors and not np.array_equal(
        tensors["lm_head.weight"], tensors["wte.weight"]
    ):
        raise lm_files.LMFilesError(
            f"{path}: lm_head.weight differs from wte.weight; GPT-2's head is tied to it."
        )
    nnx.update(model, params)


def from_pretrained(
    directory: str,
    *,
    cross_attention: bool = False,
    dropout: float = 0.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs | None = None,
) -> GPT2:
    """The GPT-2 of a directory as downloaded from the hub (config.json, model.safetensors,
    tokenizer.json), with its weights; no torch.

    Raises lm_files.LMFilesError naming the file and the problem (missing files, a config that
    is not GPT-2's, a tokenizer larger than the vocabulary, missing or misshapen tensors).
    """
    config = GPT2Config.from_dict(lm_files.check_lm_directory(directory))
    model = GPT2(
        config,
        cross_attention=cross_attention,
        dropout=dropout,
        dtype=dtype,
        rngs=rngs or nnx.Rngs(0),
    )
    load_weights(model, directory)
    return model
