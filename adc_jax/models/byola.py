"""BYOL-A's frame-level audio encoder ("AudioNTT2020") in Flax NNX, and `load_pretrained`.

Implemented from the BYOL-A paper's description (Niizumi et al., 2021); no BYOL-A code is used.

Network, for a normalised log-mel `[B, T, F]` (F = 64 mel bins):

  3 x [Conv 3x3 (C channels, padding 1, bias) -> BatchNorm -> ReLU -> MaxPool 2x2]
  -> [B, T/8, F/8, C] -> flatten to [B, T/8, F/8 * C] (feature index f * C + c)
  -> Linear(F/8 * C -> d) -> ReLU -> Dropout -> Linear(d -> d) -> ReLU  =>  [B, T/8, d]

Layout is NHWC with H = time and W = mel (`[B, T, F, C]`): XLA's GPU convolutions prefer it and
the time axis stays in front, so no transpose is needed before the head. PyTorch runs the same net
on `[B, 1, F, T]` (NCHW, H = mel, W = time) and flattens after permuting to `[B, T, F, C]`, which
gives the same feature order as our reshape; the converted first Linear needs no reordering.

Parameter paths (the names in `params.npz`):

  conv{1,2,3}/kernel [3, 3, C_in, C] (kT, kF, in, out),  conv{1,2,3}/bias [C]
  bn{1,2,3}/scale, bias [C] (Param),                     bn{1,2,3}/mean, var [C] (BatchStat)
  fc1/kernel [F/8 * C, d], fc1/bias [d],                 fc2/kernel [d, d], fc2/bias [d]

`encoder_from_config` builds the encoder that a config's `model` section describes (the
captioner's and pretraining's configs name its fields alike), `load_pretrained` reads a directory
of converted weights. Official PyTorch checkpoints are read
(without PyTorch) and converted into one by `byola_weights.py` (`tools/convert_byola.py`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from adc_jax.config import BYOLA_META_FILE, BYOLA_PARAMS_FILE
from adc_jax.models import cpu_chunks
from adc_jax.models.layers import Dropout, compute_dtype

NUM_BLOCKS = 3

# ------------------------------------------------------------------------------------ the model


def num_output_frames(n_mel_frames: int) -> int:
    """Frames after the three 2x2 max-poolings (floor each time): [B, T, F] -> [B, T', d]."""
    t = n_mel_frames
    for _ in range(NUM_BLOCKS):
        t //= 2
    return t


def _update_running_stats(bn: nnx.BatchNorm, mean: jax.Array, var: jax.Array) -> None:
    """Exponential moving averages of the batch statistics (PyTorch momentum 0.1)."""
    m = bn.momentum
    bn.mean[...] = m * bn.mean[...] + (1.0 - m) * jax.lax.stop_gradient(mean)
    bn.var[...] = m * bn.var[...] + (1.0 - m) * jax.lax.stop_gradient(var)


def batch_norm_affine(
    bn: nnx.BatchNorm, x: jax.Array, *, train: bool
) -> tuple[jax.Array, jax.Array]:
    """BatchNorm as a per-channel affine map: returns (a, b) with BN(x) = a * x + b, float32.

    In training, the statistics are the batch's (one pass: E[x] and E[x^2], reduced in float32 over
    batch, time and mel) and the running averages are updated; otherwise the running averages are
    used. Gradients flow through the batch statistics as in any BatchNorm.
    """
    if train:
        x32 = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        # E[x] and E[x^2] as one reduction over [x, x^2], so x is read once (on CPUs a pass over
        # block 2's output is ~5 ms at `:quick`).
        moments = jnp.mean(jnp.concatenate([x32, jnp.square(x32)], axis=-1), axis=axes)
        mean, mean_sq = jnp.split(moments, 2)
        var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
        _update_running_stats(bn, mean, var)
    else:
        mean, var = bn.mean[...], bn.var[...]
    a = bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)
    return a, bn.bias[...] - mean * a


def conv_block(conv: nnx.Conv, bn: nnx.BatchNorm, x: jax.Array, *, train: bool) -> jax.Array:
    """Conv 3x3 -> BatchNorm -> ReLU -> MaxPool 2x2 (floor): [B, T, F, C_in] -> [B, T/2, F/2, C].

    The 2x2 pooling is a reshape + max, whose gradient is elementwise (XLA's reduce_window
    gradient, select-and-scatter, is slow on GPUs); an odd last row or column is dropped first.
    """
    y = conv(x)
    a, b = batch_norm_affine(bn, y, train=train)
    batch, t, f, c = y.shape
    y = y[:, : t // 2 * 2, : f // 2 * 2]
    windows = y.reshape(batch, t // 2, 2, f // 2, 2, c)
    activated = jax.nn.relu(windows * a.astype(y.dtype) + b.astype(y.dtype))
    return activated.max(axis=(2, 4))


# --------------------------------------------------- block 1 as a matmul over pooling phases
#
# Block 1 maps 1 channel to C at full resolution, so a direct convolution is memory-bound and, on
# CPUs, runs at a small fraction of the matmul rate. With the input cut into 2x2 blocks, each
# output of the 2x2 pooling window at block (i, j) and phase (a, b) (the position inside the
# window) depends only on the 4x4 input patch starting at (2i - 1, 2j - 1). So:
#   pre-activations [M, 4 phases, C] = patches [M, 16] @ W [16, 4 * C]   (M = B * T/2 * F/2)
# where W holds the 3x3 kernel shifted to each phase. The BatchNorm statistics are exact
# functions of the patches' sum and Gram matrix (16 x 16), so they are known before the matmul;
# the BatchNorm affine is then folded into W and the block is max over phases -> + shift -> ReLU
# (folding makes max and the affine commute whatever the sign of the scale). The full-resolution
# tensor is read once, by the max. Rows and columns that the pooling drops (odd T or F) still
# count in the statistics, as in the direct path; they are convolved separately (one row or
# column each).


def _phase_kernel_map() -> np.ndarray:
    """[4, 4, 2, 2, 3, 3] 0/1: patch tap (u, v) feeds phase (a, b) through kernel tap (u-a, v-b)."""
    taps = np.zeros((4, 4, 2, 2, 3, 3), np.float32)
    for u in range(4):
        for v in range(4):
            for a in range(2):
                for b in range(2):
                    if 0 <= u - a <= 2 and 0 <= v - b <= 2:
                        taps[u, v, a, b, u - a, v - b] = 1.0
    return taps


_PHASE_KERNEL_MAP = _phase_kernel_map()


def _pooling_patches(x: jax.Array) -> jax.Array:
    """The 4x4 input patch of every 2x2 pooling window: [B, T, F] -> [B, T/2, F/2, 16].

    Patch (i, j) covers input rows 2i-1 .. 2i+2 and columns 2j-1 .. 2j+2 (zero outside), tap
    index 4 u + v. Built from 2x2 blocks of the zero-padded input by slices, no gather.
    """
    n, t, f = x.shape
    rows, cols = t // 2, f // 2
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))[:, : 2 * rows + 2, : 2 * cols + 2]
    blocks = padded.reshape(n, rows + 1, 2, cols + 1, 2)
    # Neighbouring blocks (di, dj) in {0, 1}^2; tap u = 2 di + row-in-block, v = 2 dj + col.
    parts = [blocks[:, di : di + rows, :, dj : dj + cols, :] for di in (0, 1) for dj in (0, 1)]
    stacked = jnp.stack(parts, axis=-1).reshape(n, rows, 2, cols, 2, 2, 2)  # n i pt j pf di dj
    return stacked.transpose(0, 1, 3, 5, 2, 6, 4).reshape(n, rows, cols, 16)


def _dropped_edge_outputs(conv: nnx.Conv, x: jax.Array) -> list[jax.Array]:
    """Conv outputs of the last row / column that 2x2 pooling drops (odd T / F), each [K, C]."""
    _, t, f, _ = x.shape
    rows, cols = t // 2, f // 2
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = conv.kernel[...].astype(x.dtype)
    edges = []
    if t % 2:  # row 2 * rows, every column
        edges.append(padded[:, 2 * rows : 2 * rows + 3])
    if f % 2:  # column 2 * cols, the rows not counted above
        edges.append(padded[:, : 2 * rows + 2, 2 * cols : 2 * cols + 3])
    outputs = []
    for edge in edges:
        y = jax.lax.conv_general_dilated(
            edge, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = y.astype(jnp.float32) + conv.bias[...]
        outputs.append(y.reshape(-1, y.shape[-1]))
    return outputs


# On one CPU device, block 1's [rows of M, 4 phases, C] pre-activations are computed, pooled and
# differentiated a few clips at a time (`phase_max`), so the 4x-sized tensor stays in cache:
# about this many pooling windows (rows of the patch matrix) per chunk.
CPU_CHUNK_WINDOWS = 8192


def _phase_max_chunk(patches: jax.Array, kernel: jax.Array, shift: jax.Array) -> jax.Array:
    """relu(max over the 4 phases of patches [..., R, 16] @ kernel [16, 4 C] + shift [C])."""
    pre = patches @ kernel
    pooled = pre.reshape(pre.shape[:-1] + (4, kernel.shape[-1] // 4)).max(axis=-2)
    return jax.nn.relu(pooled + shift)


@jax.custom_vjp
def phase_max(patches: jax.Array, kernel: jax.Array, shift: jax.Array) -> jax.Array:
    """Block 1's output from its patches, in chunks of clips: [N, R, 16] -> [N, R, C].

    relu(max over pooling phases of patches @ kernel + shift): the same function as
    `_phase_max_chunk` on the whole batch, with the same kernel and shift gradients (the max's
    gradient split equally between tied phases, as `jnp.max`'s is; relu's is 0 at 0). The
    [N, R, 4 C] pre-activations are never stored: the backward pass recomputes them chunk by
    chunk. The patches get no gradient (a zero cotangent): block 1's input is the log-mel, whose
    front end has no parameters, and computing it would cost a [N, R, 16] matmul and buffer.
    """
    return _phase_max_fwd(patches, kernel, shift)[0]


def _chunks(patches: jax.Array) -> jax.Array:
    """[N, R, 16] -> [N / c, c R, 16] for `cpu_chunks.items_per_chunk` clips per chunk."""
    n, r, k = patches.shape
    c = cpu_chunks.items_per_chunk(n, r, CPU_CHUNK_WINDOWS)
    return patches.reshape(n // c, c * r, k)


def _phase_max_fwd(patches, kernel, shift):
    out = jax.lax.map(lambda p: _phase_max_chunk(p, kernel, shift), _chunks(patches))
    return out.reshape(patches.shape[:2] + shift.shape), (patches, kernel, shift)


def _phase_max_bwd(residuals, g):
    patches, kernel, shift = residuals
    chunks = _chunks(patches)
    g = g.reshape(chunks.shape[:2] + g.shape[-1:])
    channels = shift.shape[-1]

    def chunk_grads(grads, inputs):
        kernel_grad, shift_grad = grads
        p, g_out = inputs  # [c R, 16], [c R, C]
        pre = (p @ kernel).reshape(p.shape[0], 4, channels)
        pooled = pre.max(axis=1, keepdims=True)  # [c R, 1, C]
        g_out = jnp.where(pooled[:, 0] + shift > 0, g_out, 0)  # through the relu
        winner = pre == pooled
        share = g_out[:, None, :] / winner.sum(axis=1, keepdims=True).astype(g_out.dtype)
        g_pre = jnp.where(winner, share, 0).astype(p.dtype).reshape(p.shape[0], 4 * channels)
        kernel_grad = kernel_grad + jnp.matmul(p.T, g_pre, preferred_element_type=jnp.float32)
        shift_grad = shift_grad + jnp.sum(g_out, axis=0, dtype=jnp.float32)
        return (kernel_grad, shift_grad), None

    zeros = (jnp.zeros(kernel.shape, jnp.float32), jnp.zeros(shift.shape, jnp.float32))
    (kernel_grad, shift_grad), _ = jax.lax.scan(chunk_grads, zeros, (chunks, g))
    return None, kernel_grad.astype(kernel.dtype), shift_grad.astype(shift.dtype)


phase_max.defvjp(_phase_max_fwd, _phase_max_bwd)


def first_conv_block(conv: nnx.Conv, bn: nnx.BatchNorm, x: jax.Array, *, train: bool) -> jax.Array:
    """`conv_block` for a 1-channel input, as one matmul over pooling phases (see above).

    Same result as `conv_block(conv, bn, x, train=train)` (tested to float32 rounding, forward
    and gradients, running statistics included): [B, T, F, 1] -> [B, T/2, F/2, C].
    """
    n, t, f, _ = x.shape
    channels = conv.kernel.shape[-1]
    rows, cols = t // 2, f // 2
    kernel = conv.kernel[...][:, :, 0, :]  # [3, 3, C] float32
    phase_kernel = jnp.einsum("uvabkl,klc->uvabc", _PHASE_KERNEL_MAP, kernel)
    phase_kernel = phase_kernel.reshape(16, 4, channels)  # [tap, phase, C]
    patches = _pooling_patches(x[..., 0]).reshape(-1, 16)  # [M, 16] in the compute dtype
    if train:
        p32 = patches.astype(jnp.float32)
        count = 4 * p32.shape[0]  # every phase of every window
        tap_sum = jnp.sum(p32, axis=0)  # [16]
        gram = jnp.matmul(p32.T, p32, precision=jax.lax.Precision.HIGHEST)  # [16, 16]
        bias = conv.bias[...]
        linear_sum = jnp.einsum("k,kpc->c", tap_sum, phase_kernel)  # sum of (y - bias)
        total = linear_sum + count * bias
        total_sq = (
            jnp.einsum("kpc,kl,lpc->c", phase_kernel, gram, phase_kernel)
            + 2.0 * bias * linear_sum
            + count * jnp.square(bias)
        )
        for edge in _dropped_edge_outputs(conv, x):
            total += jnp.sum(edge, axis=0)
            total_sq += jnp.sum(jnp.square(edge), axis=0)
            count += edge.shape[0]
        mean = total / count
        var = jnp.maximum(total_sq / count - jnp.square(mean), 0.0)
        _update_running_stats(bn, mean, var)
    else:
        mean, var = bn.mean[...], bn.var[...]
    scale = bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)
    shift = bn.bias[...] + (conv.bias[...] - mean) * scale
    folded = (phase_kernel * scale).reshape(16, 4 * channels).astype(patches.dtype)
    # No gradient reaches x through the phase max (see `phase_max`): block 1 is the first layer.
    out = phase_max(patches.reshape(n, rows * cols, 16), folded, shift.astype(folded.dtype))
    return out.reshape(n, rows, cols, channels)


FIRST_BLOCK_IMPLS = ("conv", "phases")


class AudioNTT2020(nnx.Module):
    """BYOL-A's CNN encoder: normalised log-mel [B, T, n_mels] -> frame embeddings [B, T // 8, dim].

    Parameters are float32; activations are computed in `dtype` (float32 or bfloat16). BatchNorm
    statistics are always reduced in float32. `first_block` picks how block 1 is computed:
    "conv" (a direct convolution) or "phases" (`first_conv_block`, the same function as one
    matmul over pooling phases); the parameters are the same either way.
    """

    def __init__(
        self,
        *,
        n_mels: int = 64,
        channels: int = 64,
        dim: int = 2048,
        dropout: float = 0.3,
        dtype: Any = jnp.float32,
        first_block: str = "conv",
        rngs: nnx.Rngs,
    ):
        if first_block not in FIRST_BLOCK_IMPLS:
            raise ValueError(f"first_block={first_block!r}; use one of {FIRST_BLOCK_IMPLS}.")
        self.first_block = first_block
        self.n_mels = n_mels
        self.channels = channels
        self.dim = dim
        self.dtype = dtype
        conv = dict(
            kernel_size=(3, 3),
            padding=((1, 1), (1, 1)),
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        # PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (new = 0.9 old + 0.1 batch).
        norm = dict(
            momentum=0.9,
            epsilon=1e-5,
            dtype=dtype,
            param_dtype=jnp.float32,
            use_fast_variance=False,
            rngs=rngs,
        )
        self.conv1 = nnx.Conv(1, channels, **conv)
        self.bn1 = nnx.BatchNorm(channels, **norm)
        self.conv2 = nnx.Conv(channels, channels, **conv)
        self.bn2 = nnx.BatchNorm(channels, **norm)
        self.conv3 = nnx.Conv(channels, channels, **conv)
        self.bn3 = nnx.BatchNorm(channels, **norm)
        flat = num_output_frames(n_mels) * channels  # F/8 * C (pooling floors like T)
        dense = dict(dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.fc1 = nnx.Linear(flat, dim, **dense)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.fc2 = nnx.Linear(dim, dim, **dense)

    def __call__(self, logmel: jax.Array, *, train: bool) -> jax.Array:
        """Frame embeddings of a batch of log-mel spectrograms.

        Args:
          logmel: [B, T, n_mels] float32, normalised log-mel from `frontend.log_mel`; T >= 8.
          train: BatchNorm uses (and updates its running averages from) the batch statistics and
            dropout is active; otherwise running averages are used and dropout is off.

        Returns:
          [B, T // 8, dim] in `dtype` (T // 8 = `num_output_frames(T)`).
        """
        if logmel.ndim != 3 or logmel.shape[-1] != self.n_mels:
            raise ValueError(
                f"AudioNTT2020 expects logmel [B, T, n_mels={self.n_mels}]; got {logmel.shape}."
            )
        if num_output_frames(logmel.shape[1]) < 1:
            raise ValueError(f"AudioNTT2020 needs at least 8 frames; got T={logmel.shape[1]}.")
        x = logmel[..., None].astype(self.dtype)  # [B, T, F, 1]
        first = first_conv_block if self.first_block == "phases" else conv_block
        x = first(self.conv1, self.bn1, x, train=train)
        for conv, bn in ((self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = conv_block(conv, bn, x, train=train)
        b, t, f, c = x.shape  # [B, T/8, F/8, C]
        x = x.reshape(b, t, f * c)  # feature index f * C + c, as in PyTorch after its permute
        x = jax.nn.relu(self.fc1(x))
        x = self.dropout(x, deterministic=not train)
        x = jax.nn.relu(self.fc2(x))
        return x.astype(self.dtype)


# ------------------------------------------------------------------------ converted weights


def first_block_impl(setting: str) -> str:
    """`config.model.byola_first_block` -> the implementation used on this backend: "auto" is
    "phases" on CPU, where it was measured faster, and "conv" elsewhere."""
    if setting == "auto":
        return "phases" if jax.default_backend() == "cpu" else "conv"
    return setting


def encoder_from_config(model: Any, *, rngs: nnx.Rngs) -> AudioNTT2020:
    """The AudioNTT2020 that a config's `model` section describes: n_mels, byola_channels,
    byola_dim, byola_dropout, byola_first_block and the compute dtype (`model.dtype`)."""
    return AudioNTT2020(
        n_mels=model.n_mels,
        channels=model.byola_channels,
        dim=model.byola_dim,
        dropout=model.byola_dropout,
        dtype=compute_dtype(model.dtype),
        first_block=first_block_impl(model.byola_first_block),
        rngs=rngs,
    )


def _flat_variables(module: AudioNTT2020) -> dict[str, nnx.Variable]:
    """'conv1/kernel' -> Variable, for every Param and BatchStat of the module."""
    flat = nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat)))
    return {"/".join(str(p) for p in path): var for path, var in flat}


def load_pretrained(module: AudioNTT2020, path: str, *, frozen: bool | None = None) -> None:
    """Loads converted BYOL-A weights into `module` in place (params and BatchNorm statistics).

    Logs one line naming the file, the shapes and (if `frozen` is given) whether BYOL-A is then
    kept fixed or fine-tuned.

    Args:
      module: the encoder to overwrite; its n_mels, channels and dim must match the weights.
      path: a directory written by `tools/convert_byola.py` (holding `params.npz`), or the
        `params.npz` file itself.
      frozen: whether training keeps these weights fixed (`config.model.byola_freeze`); only
        reported in the log line.

    Raises:
      FileNotFoundError: no `params.npz` there.
      ValueError: a parameter is missing, unexpected, or has another shape (names it and both
        shapes).
    """
    path = os.path.expanduser(path)
    npz_path = os.path.join(path, BYOLA_PARAMS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(npz_path):
        raise FileNotFoundError(
            f"No converted BYOL-A weights at {npz_path!r}. Convert an official checkpoint with "
            "`python tools/convert_byola.py --input AudioNTT2020-BYOLA-64x96d2048.pth "
            "--output DIR` and pass DIR."
        )
    meta_path = os.path.join(os.path.dirname(npz_path), BYOLA_META_FILE)
    hint = ""
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        hint = (
            f" The weights are for n_mels={meta.get('n_mels')}, channels={meta.get('channels')}, "
            f"dim={meta.get('dim')}; set config.model.n_mels / byola_channels / byola_dim to match."
        )
    with np.load(npz_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    variables = _flat_variables(module)
    missing = sorted(set(variables) - set(arrays))
    unexpected = sorted(set(arrays) - set(variables))
    if missing or unexpected:
        raise ValueError(
            f"{npz_path} does not hold the parameters of AudioNTT2020: missing {missing}, "
            f"unexpected {unexpected}.{hint}"
        )
    mismatched = [
        f"{name!r} has shape {tuple(arrays[name].shape)} in the file but the model expects "
        f"{tuple(var.shape)}"
        for name, var in variables.items()
        if tuple(var.shape) != tuple(arrays[name].shape)
    ]
    if mismatched:
        raise ValueError(
            f"BYOL-A weights in {npz_path} do not fit the model: "
            + "; ".join(mismatched)
            + "."
            + hint
        )
    new = {
        tuple(name.split("/")): jnp.asarray(arrays[name], dtype=var.dtype)
        for name, var in variables.items()
    }
    nnx.update(module, nnx.from_flat_state(new))
    mode = "" if frozen is None else "; BYOL-A is frozen" if frozen else "; BYOL-A is fine-tuned"
    logging.info(
        "Loaded pretrained BYOL-A weights from %s (n_mels=%d, channels=%d, dim=%d)%s.",
        npz_path,
        module.n_mels,
        module.channels,
        module.dim,
        mode,
    )
