"""A few Adam steps of teacher forcing on fixed captions, for the decoders' cache tests: a
decoder that has fitted its captions decodes them confidently, so cached and uncached searches
are compared on real choices rather than on ties between random logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def fit(decoder, captions: np.ndarray, memory, valid, *, pad: int, lr: float, steps: int):
    """The decoder after `steps` Adam steps on captions [B, L] (inputs [:, :-1], targets [:, 1:];
    `pad` targets carry no loss) given memory [B, S, D] and valid [B, S]."""
    inputs, targets = jnp.asarray(captions[:, :-1]), jnp.asarray(captions[:, 1:])
    weights = (targets != pad).astype(jnp.float32)
    graphdef, params, rest = nnx.split(decoder, nnx.Param, ...)
    tx = optax.adam(lr)

    @jax.jit
    def train(params):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(inputs, memory, valid, train=False)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            return jnp.sum(ce * weights) / weights.sum()

        def body(_, carry):
            p, opt = carry
            updates, opt = tx.update(jax.grad(loss)(p), opt, p)
            return optax.apply_updates(p, updates), opt

        return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))[0]

    return nnx.merge(graphdef, train(params), rest)
