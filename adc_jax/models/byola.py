"""BYOL-A's frame-level audio encoder ("AudioNTT2020") in Flax NNX, and its weight converter.

Implemented from the BYOL-A paper's description (Niizumi et al., 2021); no BYOL-A code is used.

Network, for a normalised log-mel `[B, T, F]` (F = 64 mel bins):

  3 x [Conv 3x3 (C channels, padding 1, bias) -> BatchNorm -> ReLU -> MaxPool 2x2]
  -> [B, T/8, F/8, C] -> flatten to [B, T/8, F/8 * C] (feature index f * C + c)
  -> Linear(F/8 * C -> d) -> ReLU -> Dropout -> Linear(d -> d) -> ReLU  =>  [B, T/8, d]

Layout is NHWC with H = time and W = mel (`[B, T, F, C]`): XLA's GPU convolutions prefer it and
the time axis stays in front, so no transpose is needed before the head. PyTorch runs the same net
on `[B, 1, F, T]` (NCHW, H = mel, W = time) and flattens after permuting to `[B, T, F, C]`, which
gives the same feature order as our reshape; the converted first Linear needs no reordering.

Parameter paths (the names in `params.npz` written by `tools/convert_byola.py`):

  conv{1,2,3}/kernel [3, 3, C_in, C] (kT, kF, in, out) <- features.{0,4,8}.weight [C, C_in, kF, kT]
  conv{1,2,3}/bias   [C]                               <- features.{0,4,8}.bias
  bn{1,2,3}/scale, bias [C] (Param)                    <- features.{1,5,9}.weight, .bias
  bn{1,2,3}/mean, var   [C] (BatchStat)                <- features.{1,5,9}.running_mean, _var
  fc1/kernel [F/8 * C, d], fc1/bias [d]                <- fc.0.weight.T, fc.0.bias
  fc2/kernel [d, d],       fc2/bias [d]                <- fc.3.weight.T, fc.3.bias

PyTorch checkpoints are read without PyTorch by a restricted unpickler (`read_torch_state_dict`)
that only rebuilds tensors and refuses every other global, so a `.pth` cannot run code.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

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
        mean = jnp.mean(x32, axis=axes)
        var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)
        _update_running_stats(bn, mean, var)
    else:
        mean, var = bn.mean[...], bn.var[...]
    a = bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)
    return a, bn.bias[...] - mean * a


def conv_block(
    conv: nnx.Conv, bn: nnx.BatchNorm, x: jax.Array, *, train: bool, pool_first: bool = True
) -> jax.Array:
    """Conv 3x3 -> BatchNorm -> ReLU -> MaxPool 2x2 (floor): [B, T, F, C_in] -> [B, T/2, F/2, C].

    With `pool_first`, the 2x2 max is taken before the BatchNorm affine map and the ReLU. That is
    exact: per channel, v -> relu(a * v + b) is monotone, increasing when a >= 0 (so it commutes with
    max) and decreasing when a < 0 (so max of the outputs is the output of the min). The
    elementwise work then runs on a tensor 4x smaller, and the pooling is a reshape + max whose
    gradient is elementwise (XLA's reduce_window gradient, select-and-scatter, is slow on GPUs).
    """
    y = conv(x)
    a, b = batch_norm_affine(bn, y, train=train)
    batch, t, f, c = y.shape
    y = y[:, : t // 2 * 2, : f // 2 * 2]
    windows = y.reshape(batch, t // 2, 2, f // 2, 2, c)
    if pool_first:
        pooled = jnp.where(a >= 0, windows.max(axis=(2, 4)), windows.min(axis=(2, 4)))
        return jax.nn.relu(pooled * a.astype(y.dtype) + b.astype(y.dtype))
    activated = jax.nn.relu(windows * a.astype(y.dtype) + b.astype(y.dtype))
    return activated.max(axis=(2, 4))


def _patch_moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean [9] and covariance [9, 9] of the 3x3 patches of x [B, T, F] (zero padding 1), f32."""
    b, t, f = x.shape
    padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (1, 1), (1, 1)))
    patches = jnp.stack(
        [padded[:, i : i + t, j : j + f] for i in range(3) for j in range(3)], axis=-1
    ).reshape(-1, 9)
    n = patches.shape[0]
    mean = jnp.mean(patches, axis=0)
    second = jnp.einsum("nk,nl->kl", patches, patches, precision=jax.lax.Precision.HIGHEST) / n
    return mean, second - jnp.outer(mean, mean)


def first_conv_block(conv: nnx.Conv, bn: nnx.BatchNorm, x: jax.Array, *, train: bool) -> jax.Array:
    """The first block (1 input channel), with BatchNorm folded into the convolution.

    The conv is linear in its 3x3 input patch p, y_c = w_c . p + b_c, so the batch statistics of
    its output follow from the patches' mean m and covariance S without touching the C-channel
    output: mean_c = w_c . m + b_c, var_c = w_c^T S w_c. BatchNorm is then a per-channel affine map
    folded into the kernel and bias, ReLU commutes with max, and the block is one convolution and
    one pooling pass over the largest activation of the network (instead of four). Same function,
    same gradients (they flow through the statistics via w) as `conv_block`.

    Args:
      x: [B, T, F, 1]. Returns [B, T // 2, F // 2, C].
    """
    kernel = conv.kernel[...]  # [3, 3, 1, C], float32
    bias = conv.bias[...]
    w = kernel.reshape(9, -1)
    if train:
        m, cov = _patch_moments(x[..., 0])
        mean = m @ w + bias
        var = jnp.maximum(
            jnp.einsum("kc,kl,lc->c", w, cov, w, precision=jax.lax.Precision.HIGHEST), 0.0
        )
        _update_running_stats(bn, mean, var)
    else:
        mean, var = bn.mean[...], bn.var[...]
    a = bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)
    dtype = conv.dtype or x.dtype
    y = jax.lax.conv_general_dilated(
        x.astype(dtype),
        (kernel * a).astype(dtype),
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    y = y + ((bias - mean) * a + bn.bias[...]).astype(dtype)
    batch, t, f, c = y.shape
    windows = y[:, : t // 2 * 2, : f // 2 * 2].reshape(batch, t // 2, 2, f // 2, 2, c)
    return jax.nn.relu(windows.max(axis=(2, 4)))


class AudioNTT2020(nnx.Module):
    """BYOL-A's CNN encoder: normalised log-mel [B, T, n_mels] -> frame embeddings [B, T // 8, dim].

    Parameters are float32; activations are computed in `dtype` (float32 or bfloat16). BatchNorm
    statistics are always reduced in float32.
    """

    def __init__(
        self,
        *,
        n_mels: int = 64,
        channels: int = 64,
        dim: int = 2048,
        dropout: float = 0.3,
        dtype: Any = jnp.float32,
        pool_first: bool = True,
        rngs: nnx.Rngs,
    ):
        self.n_mels = n_mels
        self.pool_first = pool_first
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
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
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
        if self.pool_first:  # the fast path; `pool_first=False` is the textbook order
            x = first_conv_block(self.conv1, self.bn1, x, train=train)
        else:
            x = conv_block(self.conv1, self.bn1, x, train=train, pool_first=False)
        for conv, bn in ((self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = conv_block(conv, bn, x, train=train, pool_first=self.pool_first)
        b, t, f, c = x.shape  # [B, T/8, F/8, C]
        x = x.reshape(b, t, f * c)  # feature index f * C + c, as in PyTorch after its permute
        x = jax.nn.relu(self.fc1(x))
        x = self.dropout(x, deterministic=not train)
        x = jax.nn.relu(self.fc2(x))
        return x.astype(self.dtype)


# ------------------------------------------------------------------------------------ weights


def _flat_variables(module: AudioNTT2020) -> dict[str, nnx.Variable]:
    """'conv1/kernel' -> Variable, for every Param and BatchStat of the module."""
    flat = nnx.to_flat_state(nnx.state(module, (nnx.Param, nnx.BatchStat)))
    return {"/".join(str(p) for p in path): var for path, var in flat}


def load_pretrained(module: AudioNTT2020, path: str) -> None:
    """Loads converted BYOL-A weights into `module` in place (params and BatchNorm statistics).

    Args:
      module: the encoder to overwrite; its n_mels, channels and dim must match the weights.
      path: a directory written by `tools/convert_byola.py` (holding `params.npz`), or the
        `params.npz` file itself.

    Raises:
      FileNotFoundError: no `params.npz` there.
      ValueError: a parameter is missing, unexpected, or has another shape (names it and both
        shapes).
    """
    path = os.path.expanduser(path)
    npz_path = os.path.join(path, "params.npz") if os.path.isdir(path) else path
    if not os.path.isfile(npz_path):
        raise FileNotFoundError(
            f"No converted BYOL-A weights at {npz_path!r}. Convert an official checkpoint with "
            "`python tools/convert_byola.py --input AudioNTT2020-BYOLA-64x96d2048.pth "
            "--output DIR` and pass DIR."
        )
    meta_path = os.path.join(os.path.dirname(npz_path), "meta.json")
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


# -------------------------------------------------------- reading torch.save files without torch

# Storage types torch.save names in its persistent ids, and the dtype of their elements.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle names a global that is not needed to rebuild tensors."""


class _StorageType:
    """Stand-in for a `torch.*Storage` class: only records the element dtype. Slotted, so a
    pickle cannot BUILD other attributes onto it."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """NumPy version of `torch._utils._rebuild_tensor_v2`: a strided view, copied."""
    del requires_grad, backward_hooks, metadata
    size, stride = tuple(size), tuple(stride)
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if storage_offset < 0 or any(s < 0 for s in stride) or needed > storage.size:
        raise pickle.UnpicklingError(
            f"Tensor of size {size}, stride {stride}, offset {storage_offset} does not fit in "
            f"its storage of {storage.size} elements: the checkpoint is corrupt."
        )
    base = storage[storage_offset:]
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=[s * item for s in stride], writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any) -> np.ndarray:
    """NumPy version of `torch._utils._rebuild_parameter` (an nn.Parameter is just its data)."""
    del requires_grad, backward_hooks
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles torch.save's data.pkl, allowing only what rebuilding a state dict needs.

    Every global other than the tensor rebuild functions, the storage types and OrderedDict is
    refused with `UnsafeCheckpointError`, so a crafted file cannot call e.g. `os.system`.
    """

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"Refusing to load global {module}.{name} from the checkpoint: only tensors, storages "
            "and OrderedDicts are allowed (a .pth can run arbitrary code when unpickled). If this "
            "is a trusted file from a newer PyTorch, re-save its state dict with "
            "torch.save(model.state_dict(), path)."
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"Unsupported persistent id in checkpoint: {pid!r}.")
        _, storage_type, key, _location, _numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"Unsupported storage type in checkpoint: {pid!r}.")
        key = str(key)
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}data/{key}")
            except KeyError as e:
                raise pickle.UnpicklingError(
                    f"Checkpoint names storage {key!r} but holds no {self._prefix}data/{key}."
                ) from e
            dtype = _STORAGE_DTYPES[storage_type.name]
            if self._byteorder == "big" and dtype.itemsize > 1:
                dtype = dtype.newbyteorder(">")
            if len(raw) % dtype.itemsize:
                raise pickle.UnpicklingError(f"Storage {key!r} has a partial element.")
            arr = np.frombuffer(raw, dtype=dtype)
            self._storages[key] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        return self._storages[key]


def unpickle_torch(data: bytes, archive: zipfile.ZipFile, prefix: str = "archive/") -> Any:
    """Unpickles a torch.save `data.pkl` with the restricted unpickler (see `_TorchUnpickler`)."""
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    return _TorchUnpickler(io.BytesIO(data), archive, prefix, byteorder).load()


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads the tensors of a `torch.save` checkpoint (zip format, torch >= 1.6) without torch.

    Args:
      path: a `.pth`/`.pt` file holding a state dict, possibly nested in other dicts.

    Returns:
      flat {dotted key: array}; nested dicts are flattened with '.', non-tensor leaves dropped.

    Raises:
      FileNotFoundError, ValueError (not a zip checkpoint), UnsafeCheckpointError.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format torch checkpoint. Files from torch < 1.6 use the legacy "
            "format; re-save with a recent PyTorch: torch.save(torch.load(f), g)."
        )
    with zipfile.ZipFile(path) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ValueError(f"{path}: expected one <archive>/data.pkl record, found {pkls}.")
        prefix = pkls[0][: -len("data.pkl")]
        obj = unpickle_torch(archive.read(pkls[0]), archive, prefix)
    flat: dict[str, np.ndarray] = {}

    def visit(node: Any, key: str) -> None:
        if isinstance(node, np.ndarray):
            flat[key] = node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                visit(v, f"{key}.{k}" if key else str(k))

    visit(obj, "")
    if not flat:
        raise ValueError(f"{path} holds no tensors.")
    return flat


# ------------------------------------------------------------------ PyTorch names -> our names

_CONV_INDEX = {1: 0, 2: 4, 3: 8}  # our block -> index of its Conv2d in `features`
_BN_INDEX = {1: 1, 2: 5, 3: 9}  # our block -> index of its BatchNorm2d in `features`
_ANCHOR = "features.0.weight"


def _find_prefix(keys: list[str]) -> str:
    """The prefix in front of BYOL-A's names (e.g. 'module.' or 'state_dict.'), '' if none."""
    prefixes = sorted(k[: -len(_ANCHOR)] for k in keys if k.endswith(_ANCHOR))
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if not prefixes:
        raise ValueError(
            f"Not a BYOL-A AudioNTT2020 state dict: no key ends with {_ANCHOR!r} "
            f"(first keys: {keys[:8]})."
        )
    if len(prefixes) > 1:
        raise ValueError(
            f"The checkpoint holds several BYOL-A encoders (prefixes {prefixes}); pass prefix=... "
            "(--prefix on the command line) to choose one."
        )
    return prefixes[0]


def convert_state_dict(
    sd: Mapping[str, np.ndarray], *, prefix: str | None = None
) -> dict[str, np.ndarray]:
    """Maps a BYOL-A AudioNTT2020 PyTorch state dict to our parameter paths (float32).

    Args:
      sd: {name: array} as returned by `read_torch_state_dict`. Names may carry a prefix such as
        'module.' or 'state_dict.'; it is found automatically when there is only one encoder.
      prefix: the prefix to use (e.g. 'module.'); None finds it.

    Returns:
      {'conv1/kernel': [3, 3, 1, C], ..., 'fc2/bias': [d]} float32 (see the module docstring).

    Raises:
      ValueError: a tensor is missing, unexpected or has an inconsistent shape.
    """
    if prefix is None:
        prefix = _find_prefix(list(sd))
    sub = {k[len(prefix) :]: np.asarray(v) for k, v in sd.items() if k.startswith(prefix)}
    used = set()

    def take(name: str, ndim: int) -> np.ndarray:
        if name not in sub:
            raise ValueError(f"BYOL-A state dict lacks {prefix}{name}.")
        arr = sub[name]
        if arr.ndim != ndim:
            raise ValueError(f"{prefix}{name} has shape {arr.shape}; expected {ndim} dimensions.")
        used.add(name)
        return arr.astype(np.float32)

    out: dict[str, np.ndarray] = {}
    c_in = 1
    for block in range(1, NUM_BLOCKS + 1):
        conv, bn = f"features.{_CONV_INDEX[block]}", f"features.{_BN_INDEX[block]}"
        w = take(f"{conv}.weight", 4)  # [O, I, kF, kT] on (B, C, F, T)
        if w.shape[1:] != (c_in, 3, 3):
            raise ValueError(
                f"{prefix}{conv}.weight has shape {w.shape}; expected [C, {c_in}, 3, 3]."
            )
        c_in = w.shape[0]
        out[f"conv{block}/kernel"] = np.ascontiguousarray(w.transpose(3, 2, 1, 0))  # [kT,kF,I,O]
        out[f"conv{block}/bias"] = take(f"{conv}.bias", 1)
        out[f"bn{block}/scale"] = take(f"{bn}.weight", 1)
        out[f"bn{block}/bias"] = take(f"{bn}.bias", 1)
        out[f"bn{block}/mean"] = take(f"{bn}.running_mean", 1)
        out[f"bn{block}/var"] = take(f"{bn}.running_var", 1)
        used.add(f"{bn}.num_batches_tracked")
    # PyTorch's flatten index is f * C + c, the same as our [B, T, F, C] reshape: no reordering.
    out["fc1/kernel"] = np.ascontiguousarray(take("fc.0.weight", 2).T)  # [F/8 * C, d]
    out["fc1/bias"] = take("fc.0.bias", 1)
    out["fc2/kernel"] = np.ascontiguousarray(take("fc.3.weight", 2).T)  # [d, d]
    out["fc2/bias"] = take("fc.3.bias", 1)
    unexpected = sorted(set(sub) - used)
    if unexpected:
        raise ValueError(
            f"BYOL-A state dict has tensors that AudioNTT2020 does not use: "
            f"{[prefix + k for k in unexpected]}."
        )
    channels, flat, dim = c_in, out["fc1/kernel"].shape[0], out["fc1/kernel"].shape[1]
    if flat % channels or out["fc2/kernel"].shape != (dim, dim):
        raise ValueError(
            f"Inconsistent head: fc.0 has {flat} inputs for {channels} channels and fc.3 is "
            f"{out['fc2/kernel'].shape[::-1]}."
        )
    return out


def converted_config(params: Mapping[str, np.ndarray]) -> dict[str, int]:
    """n_mels, channels and dim of converted params (n_mels assumes a multiple of 8)."""
    channels = int(params["conv3/kernel"].shape[-1])
    flat, dim = params["fc1/kernel"].shape
    return {"n_mels": int(flat // channels * 2**NUM_BLOCKS), "channels": channels, "dim": int(dim)}


def convert_checkpoint(input_path: str, output_dir: str, *, prefix: str | None = None) -> dict:
    """Reads a BYOL-A `.pth`, writes `output_dir/params.npz` and `output_dir/meta.json`.

    Returns:
      the metadata written to meta.json.
    """
    sd = read_torch_state_dict(input_path)
    params = convert_state_dict(sd, prefix=prefix)
    with open(input_path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    meta = {
        **converted_config(params),
        "source": os.path.abspath(input_path),
        "source_sha256": sha256,
        "source_keys": sorted(sd),
        "params": {k: list(v.shape) for k, v in sorted(params.items())},
    }
    os.makedirs(output_dir, exist_ok=True)
    np.savez(os.path.join(output_dir, "params.npz"), **params)
    with open(os.path.join(output_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta
