"""The canonical tensor encoding that Verinet hashes.

Two nodes agree on a tensor when they agree on its hash, so the bytes hashed must not depend on
the machine, numpy's memory layout or Python's pickling. One tensor is encoded as::

    dtype   u8          the ONNX TensorProto element type (FLOAT=1, INT64=7, BOOL=9, ...)
    rank    u8
    dims    rank x u64  little-endian
    data                the elements in C (row-major) order, little-endian; bool as one byte
                        0/1; strings as u32 little-endian byte length + UTF-8 bytes each

A named group of tensors (a request's inputs, a model's outputs, one op's outputs) is::

    count   u32         little-endian
    then per tensor, in the model's declared order:
    name    u16 length + UTF-8 bytes
    tensor  as above

`tensor_hash` / `group_hash` are sha2-256 of these bytes. The encoding is streamed into the
hash, so a large tensor is never copied just to be hashed (except to fix byte order or layout).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from verinet.hub.manifest import ELEMENT_TYPES
from verinet.types import Hash32

Array = npt.NDArray[Any]


_NAMES: dict[np.dtype[Any], str] = {}  # dtype → name; `dtype.name` costs ~1.5 us per call


def dtype_name(array: Array) -> str:
    """The manifest name of an array's dtype: ``string`` for unicode (``U``) and object arrays
    (whose items must be ``str``; `_update` checks), never for byte strings (``S``), which
    onnxruntime would read as NUL-terminated C strings past each item."""
    dtype = array.dtype
    name = _NAMES.get(dtype)
    if name is None:
        name = "string" if dtype.kind in "OU" else dtype.name
        if name not in ELEMENT_TYPES:
            raise TypeError(f"dtype {dtype} has no canonical encoding")
        _NAMES[dtype] = name
    return name


_HEADERS: dict[int, struct.Struct] = {}


def _header(rank: int) -> struct.Struct:
    """dtype code, rank and dims: one compiled Struct per rank."""
    header = _HEADERS.get(rank)
    if header is None:
        header = _HEADERS[rank] = struct.Struct(f"<BB{rank}Q")
    return header


def _update(h: Any, array: Array) -> None:
    name = dtype_name(array)
    if array.ndim > 255:
        raise ValueError(f"rank {array.ndim} exceeds 255")
    h.update(_header(array.ndim).pack(ELEMENT_TYPES[name], array.ndim, *array.shape))
    if name == "string":
        for item in array.reshape(-1).tolist():
            if not isinstance(item, str):
                raise TypeError(f"a string tensor holds a {type(item).__name__}, not str")
            raw = item.encode()  # strict: a lone surrogate raises UnicodeEncodeError
            h.update(struct.pack("<I", len(raw)))
            h.update(raw)
        return
    if name == "bool":
        # Any non-zero byte is True; encode it as 1 so one truth value has one encoding.
        array = np.asarray(np.not_equal(array.view(np.uint8), 0)).view(np.uint8)
    # hashlib reads any C-contiguous buffer; this copies only to fix layout or byte order.
    h.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")))


def encode_tensor(array: Array) -> bytes:
    """The canonical bytes of one tensor (mostly for tests and documentation; hashing streams)."""
    sink = _Sink()
    _update(sink, np.asarray(array))
    return bytes(sink.buffer)


def tensor_hash(array: Array) -> Hash32:
    h = hashlib.sha256()
    _update(h, np.asarray(array))
    return Hash32(h.digest())


def group_hash(tensors: Sequence[tuple[str, Array]] | Mapping[str, Array]) -> Hash32:
    """sha2-256 of a named group of tensors in the given order (a mapping's insertion order)."""
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    h = hashlib.sha256(_U32.pack(len(items)))
    for name, array in items:
        raw = name.encode()
        h.update(_U16.pack(len(raw)) + raw)
        _update(h, array if isinstance(array, np.ndarray) else np.asarray(array))
    return Hash32(h.digest())


_U16, _U32 = struct.Struct("<H"), struct.Struct("<I")


class _Sink:
    def __init__(self) -> None:
        self.buffer = bytearray()

    def update(self, data: bytes | Array) -> None:
        self.buffer += data.tobytes() if isinstance(data, np.ndarray) else data
