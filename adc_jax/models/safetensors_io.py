"""Reads and writes the safetensors format with NumPy only (no torch, no safetensors package).

A file is an 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the tensors' bytes (row-major, little-endian), offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
# bfloat16 has no NumPy dtype: read as uint16 and widened to float32 by moving the bits up.
_BF16 = "BF16"


def load_file(path: str) -> dict[str, np.ndarray]:
    """name -> array of every tensor in `path` (BF16 becomes float32).

    Raises ValueError for a file that is not safetensors or holds a dtype read here cannot.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path} is not a safetensors file (only {len(raw)} bytes).")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as e:
        raise ValueError(f"{path} is not a safetensors file (header: {e}).") from e
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = info["dtype"]
        if dtype == _BF16:
            bits = np.frombuffer(data[begin:end], np.dtype("<u2")).astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(info["shape"])
        elif dtype in _DTYPES:
            arr = np.frombuffer(data[begin:end], np.dtype(_DTYPES[dtype]).newbyteorder("<"))
            out[name] = arr.reshape(info["shape"]).astype(_DTYPES[dtype])
        else:
            raise ValueError(f"{path}: tensor {name!r} has dtype {dtype}, which is not supported.")
    return out


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None):
    """Writes `tensors` (NumPy arrays of the dtypes above) to `path` in safetensors format."""
    header: dict = {"__metadata__": dict(metadata or {"format": "np"})}
    offset, blobs = 0, []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": _NAMES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
