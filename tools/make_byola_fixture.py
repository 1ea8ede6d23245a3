"""Writes a small random BYOL-A (AudioNTT2020) checkpoint in torch.save's zip format, without torch.

For tests of the reader and converter (`adc_jax/models/byola_weights.py`): the file has the same
key names as the official checkpoints and the same layout and pickle opcodes as
`torch.save(model.state_dict(), path)` (pickle protocol 2):

  <stem>/data.pkl         OrderedDict of tensors (with a `_metadata` attribute, as
                          nn.Module.state_dict() returns); each tensor is a REDUCE of
                          torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
                          requires_grad, OrderedDict()) where storage is the persistent id
                          ('storage', torch.<T>Storage, key, 'cpu', numel)
  <stem>/byteorder        "little" (plus .format_version, .storage_alignment)
  <stem>/data/<key>       raw little-endian storage bytes, 64-byte aligned as torch writes them
  <stem>/version          "3"

Checked once by hand: torch 2.13 `torch.load(path, weights_only=True)` reads these files, and
`tools/convert_byola.py` reads files that torch 2.13 wrote. Torch is never a dependency.

Usage:
  python tools/make_byola_fixture.py --output /tmp/byola_fixture.pth [--dim 64 --seed 0]
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping

import numpy as np

# numpy dtype -> name of the torch storage class torch.save writes for it.
_STORAGE_NAMES = {
    np.dtype("<f4"): "FloatStorage",
    np.dtype("<f8"): "DoubleStorage",
    np.dtype("<f2"): "HalfStorage",
    np.dtype("<i8"): "LongStorage",
    np.dtype("<i4"): "IntStorage",
}


def random_state_dict(
    *, dim: int = 64, channels: int = 64, n_mels: int = 64, seed: int = 0
) -> collections.OrderedDict[str, np.ndarray]:
    """A random AudioNTT2020 state dict with the official key names and PyTorch shapes."""
    rng = np.random.default_rng(seed)
    sd: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    c_in = 1
    for conv, bn in ((0, 1), (4, 5), (8, 9)):
        fan_in = c_in * 9
        sd[f"features.{conv}.weight"] = rng.normal(0, fan_in**-0.5, (channels, c_in, 3, 3))
        sd[f"features.{conv}.bias"] = rng.normal(0, 0.1, (channels,))
        sd[f"features.{bn}.weight"] = rng.uniform(0.5, 1.5, (channels,))
        sd[f"features.{bn}.bias"] = rng.normal(0, 0.1, (channels,))
        sd[f"features.{bn}.running_mean"] = rng.normal(0, 0.3, (channels,))
        sd[f"features.{bn}.running_var"] = rng.uniform(0.5, 2.0, (channels,))
        sd[f"features.{bn}.num_batches_tracked"] = np.array(1234, np.int64)
        c_in = channels
    flat = (n_mels // 8) * channels
    sd["fc.0.weight"] = rng.normal(0, flat**-0.5, (dim, flat))
    sd["fc.0.bias"] = rng.normal(0, 0.1, (dim,))
    sd["fc.3.weight"] = rng.normal(0, dim**-0.5, (dim, dim))
    sd["fc.3.bias"] = rng.normal(0, 0.1, (dim,))
    for k, v in sd.items():
        if v.dtype == np.float64:
            sd[k] = v.astype(np.float32)
    return sd


class _Global:
    """Base of stand-ins for torch globals: `_Pickler.save_global` writes their names."""


def _torch_global(module: str, name: str) -> type:
    return type(name, (_Global,), {"__module__": module, "__qualname__": name})


_REBUILD_TENSOR_V2 = _torch_global("torch._utils", "_rebuild_tensor_v2")
_STORAGE_TYPES = {dt: _torch_global("torch", name) for dt, name in _STORAGE_NAMES.items()}


class _Storage:
    """A tensor's storage; pickled as a persistent id, its bytes go to archive/data/<key>."""

    def __init__(self, key: str, arr: np.ndarray):
        self.key, self.arr = key, arr


class _Tensor:
    """Pickles like a contiguous CPU torch.Tensor (torch.Tensor.__reduce_ex__)."""

    def __init__(self, storage: _Storage):
        self.storage = storage

    def __reduce_ex__(self, protocol: int):
        shape = self.storage.arr.shape
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= max(n, 1)
        args = (self.storage, 0, shape, tuple(reversed(strides)), False, collections.OrderedDict())
        return (_REBUILD_TENSOR_V2, args)


class _TorchPickler(pickle._Pickler):
    """The pure-Python pickler (as torch.save uses pickle's, protocol 2), writing the stand-in
    globals by name without importing torch, and storages as torch's persistent ids."""

    def save_global(self, obj, name=None):
        if isinstance(obj, type) and issubclass(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            dtype_type = _STORAGE_TYPES[obj.arr.dtype]
            return ("storage", dtype_type, obj.key, "cpu", obj.arr.size)
        return None


def torch_pickle(sd: Mapping[str, np.ndarray]) -> tuple[bytes, list[bytes]]:
    """data.pkl bytes for an OrderedDict of tensors, and the raw bytes of storage 0, 1, ..."""
    state: collections.OrderedDict[str, _Tensor] = collections.OrderedDict()
    storages: list[bytes] = []
    metadata: dict[str, dict[str, int]] = {"": {"version": 1}}
    for key, value in sd.items():
        arr = np.asarray(value, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if arr.dtype not in _STORAGE_NAMES:
            raise TypeError(f"{key}: dtype {arr.dtype} is not supported by this writer.")
        state[key] = _Tensor(_Storage(str(len(storages)), arr))
        storages.append(arr.tobytes())
        metadata.setdefault(key.rpartition(".")[0], {"version": 1})
    # nn.Module.state_dict() attaches the modules' versions; pickled as the dict's BUILD state.
    state._metadata = metadata  # type: ignore[attr-defined]
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(state)
    return buf.getvalue(), storages


def _write_aligned(zf: zipfile.ZipFile, name: str, data: bytes, align: int = 64) -> None:
    """Writes an uncompressed record whose data starts at a multiple of `align`, as torch does
    (padding goes into an extra field with id 'FB')."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_end = zf.fp.tell() + 30 + len(name.encode())
    pad = -(header_end + 4) % align
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    zf.writestr(info, data)


def save_torch_state_dict(path: str, sd: Mapping[str, np.ndarray]) -> None:
    """Writes `sd` as torch.save(sd, path) does (zip format; the archive folder is the file's
    stem, as in torch 2.x; torch 1.x wrote 'archive', and readers accept any name)."""
    pkl, storages = torch_pickle(sd)
    name = os.path.splitext(os.path.basename(path))[0] or "archive"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        _write_aligned(zf, f"{name}/data.pkl", pkl)
        _write_aligned(zf, f"{name}/.format_version", b"1")
        _write_aligned(zf, f"{name}/.storage_alignment", b"64")
        _write_aligned(zf, f"{name}/byteorder", b"little")
        for key, data in enumerate(storages):
            _write_aligned(zf, f"{name}/data/{key}", data)
        _write_aligned(zf, f"{name}/version", b"3\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="checkpoint file to write (.pth)")
    parser.add_argument("--dim", type=int, default=64, help="output feature size d")
    parser.add_argument("--channels", type=int, default=64, help="conv channels C")
    parser.add_argument("--n_mels", type=int, default=64, help="mel bins (multiple of 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    sd = random_state_dict(dim=args.dim, channels=args.channels, n_mels=args.n_mels, seed=args.seed)
    save_torch_state_dict(args.output, sd)
    print(f"Wrote {len(sd)} tensors (dim={args.dim}, channels={args.channels}) to {args.output}")


if __name__ == "__main__":
    main()
