"""BYOL-A's PyTorch weights: reading a `.pth` without PyTorch and converting it to our layout.

`read_torch_state_dict` reads a `torch.save` checkpoint (zip format) with a restricted unpickler
that only rebuilds tensors and refuses every other global, so a `.pth` cannot run code.
`convert_state_dict` maps BYOL-A's PyTorch names and layouts onto `byola.AudioNTT2020`'s
parameter paths, and `convert_checkpoint` writes the directory that `byola.load_pretrained` and
`config.model.byola_init` read (`tools/convert_byola.py` is its command line):

  DIR/params.npz  float32 arrays under our parameter paths, from BYOL-A's names:
    conv{1,2,3}/kernel [kT, kF, C_in, C]  <- features.{0,4,8}.weight [C, C_in, kF, kT]
    conv{1,2,3}/bias   [C]                <- features.{0,4,8}.bias
    bn{1,2,3}/scale, bias [C]             <- features.{1,5,9}.weight, .bias
    bn{1,2,3}/mean, var   [C]             <- features.{1,5,9}.running_mean, .running_var
    fc1/kernel [F/8 * C, d], fc1/bias [d] <- fc.0.weight.T, fc.0.bias
    fc2/kernel [d, d],       fc2/bias [d] <- fc.3.weight.T, fc.3.bias
  DIR/meta.json   n_mels, channels, dim (checked against the config by `config.validate`),
                  the source file and its sha256, the source keys and our parameter shapes.

PyTorch flattens the pooled `[B, T, F, C]` map with feature index f * C + c, as our reshape does,
so fc.0 needs only a transpose.
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

import ml_dtypes
import numpy as np

from adc_jax.config import BYOLA_META_FILE, BYOLA_PARAMS_FILE
from adc_jax.models.byola import NUM_BLOCKS

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
    np.savez(os.path.join(output_dir, BYOLA_PARAMS_FILE), **params)
    with open(os.path.join(output_dir, BYOLA_META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return meta
