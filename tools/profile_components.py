"""Times each part of the model alone (forward + backward), to see where a training step goes.

  python tools/profile_components.py [--size=paper] [--batch_size=128] [--dtype=bfloat16]

Each component of the late-SDD model is jitted on its own with inputs of the shapes it sees in the
real step, and timed (median of N runs, synchronised) for the forward pass plus the gradient with
respect to its parameters and inputs: the log-mel front end (forward only: it has no
parameters), each BYOL-A conv block, the BYOL-A MLP head, the difference encoder, the SDD head and
the decoder with its cross-entropy. The sum is close to the full step minus the optimizer update;
the rest (concatenations, casts, dropout masks) is XLA fusion across the boundaries.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from adc_jax.config import base_config  # noqa: E402
from adc_jax.models.adc import create_model  # noqa: E402
from adc_jax.models.byola import conv_block, first_conv_block  # noqa: E402
from adc_jax.models.layers import compute_dtype  # noqa: E402


def _time(fn, *args, runs: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile(size: str, batch: int, dtype: str, runs: int) -> dict[str, float]:
    config = base_config(size)
    config.model.dtype = dtype
    vocab = 1000
    model = create_model(config, vocab, nnx.Rngs(0))
    cdt = compute_dtype(dtype)
    key = jax.random.key(0)
    n = int(round(config.data.clip_seconds * config.data.sample_rate))
    clips = 2 * batch
    out: dict[str, float] = {}

    wav = jax.random.normal(key, (clips, n), jnp.float32) * 0.1
    out["frontend (fwd)"] = _time(jax.jit(lambda w: model.log_mel(w)), wav, runs=runs)
    logmel = jax.jit(lambda w: model.log_mel(w))(wav)

    def grad_time(name, module, fn, *inputs, wrt_inputs=True):
        graphdef, state = nnx.split(module)
        argnums = tuple(range(len(inputs) + 1)) if wrt_inputs else 0

        @jax.jit
        def step(state, *xs):
            def loss(m, *xs):
                y = fn(m, *xs)
                return jnp.sum(jnp.asarray(y, jnp.float32) ** 2) * 1e-6

            m = nnx.merge(graphdef, state)
            return nnx.grad(loss, argnums=argnums)(m, *xs)

        out[name] = _time(step, state, *inputs, runs=runs)

    b = model.byola
    x = logmel[..., None].astype(cdt)
    # Block 1 as the model runs it (model.byola_first_block); its input needs no gradient.
    first = first_conv_block if b.first_block == "phases" else conv_block
    grad_time(
        f"cnn block 1 ({b.first_block})",
        b,
        lambda m, x: first(m.conv1, m.bn1, x, train=True),
        x,
        wrt_inputs=False,
    )
    x1 = first(b.conv1, b.bn1, x, train=True)
    grad_time("cnn block 2", b, lambda m, x: conv_block(m.conv2, m.bn2, x, train=True), x1)
    x2 = conv_block(b.conv2, b.bn2, x1, train=True)
    grad_time("cnn block 3", b, lambda m, x: conv_block(m.conv3, m.bn3, x, train=True), x2)
    x3 = conv_block(b.conv3, b.bn3, x2, train=True)
    flat = x3.reshape(x3.shape[0], x3.shape[1], -1)

    def head(m, h):
        h = jax.nn.relu(m.fc1(h))
        return jax.nn.relu(m.fc2(h))

    grad_time("byola head (2 linear)", b, head, flat)
    frames = flat.shape[1]
    feats = jax.random.normal(key, (clips, frames, config.model.byola_dim), cdt)
    valid = jnp.ones((batch, frames), bool)

    def encode(m, f):
        p = m.project(f)
        return m(p[:batch], valid, p[batch:], valid, train=True)[0]

    grad_time("encoder (proj + layers)", model.encoder, encode, feats)
    latent = jax.random.normal(key, (batch, frames, config.model.d_model), cdt)
    if model.sdd is not None:
        grad_time(
            "sdd (bilstm + losses)",
            model.sdd,
            lambda m, a, c: (
                m(a, valid, c, valid)["similar_loss"] + m(a, valid, c, valid)["discrepant_loss"]
            ),
            latent,
            latent,
        )
    tokens = jax.random.randint(key, (batch, config.data.max_caption_tokens - 1), 4, vocab)
    memory = jax.random.normal(key, (batch, 2 * frames, config.model.d_model), cdt)
    mvalid = jnp.ones((batch, 2 * frames), bool)

    def decode(m, mem):
        logits = m(tokens, mem, mvalid, train=True)
        return (
            jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, tokens[..., None], -1)[..., 0]
        )

    grad_time("decoder + cross-entropy", model.decoder, decode, memory)
    return out


def main() -> int:
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
    size = args.get("size", "paper")
    batch = int(args.get("batch_size", 128))
    dtype = args.get("dtype", "bfloat16")
    runs = int(args.get("runs", 10))
    start = time.time()
    out = profile(size, batch, dtype, runs)
    total = sum(out.values())
    print(f"{jax.devices()[0].device_kind}, {size}, batch {batch} pairs, {dtype}:")
    for k, v in out.items():
        print(f"  {k:<26} {v:8.2f} ms  {100 * v / total:5.1f}%")
    print(f"  {'sum':<26} {total:8.2f} ms   [{time.time() - start:.0f} s]")
    print(
        json.dumps(
            {
                "device_kind": jax.devices()[0].device_kind,
                "size": size,
                "batch": batch,
                "dtype": dtype,
                "ms": {k: round(v, 3) for k, v in out.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
