"""Tensors on the wire: the JSON form the node's HTTP API and the client SDK exchange, and the
binary form a job's input takes as a blob.

JSON, one tensor::

    {"dtype": "float32", "shape": [1, 16], "data": [[0.5, ...]]}   nested or flat list
    {"dtype": "float32", "shape": [1, 16], "b64": "AAAAPw..."}     little-endian C-order bytes

Either form is accepted; responses use ``b64`` (exact and compact) for numbers and ``data`` for
strings. A group is a JSON object of name → tensor.

Binary, a group: exactly the canonical encoding `verinet.runtime.tensors` hashes, so a blob's
bytes hash (sha2-256) to the job's input hash, and its CID names the same bytes.

Every malformed value raises `MalformedTensor` with a message saying what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from verinet.errors import InputTooLarge, MalformedTensor
from verinet.hub.manifest import ELEMENT_TYPES
from verinet.runtime.tensors import Array, _Sink, _update, dtype_name

MAX_RANK = 16
"""Deepest tensor accepted on the wire (the canonical encoding allows 255)."""
MAX_EXTENT = 2**40
"""Largest product of a shape's non-zero dims. An empty tensor (a zero dim) holds nothing
whatever its other dims, but numpy still multiplies them (and refuses past 2**63), so a
shape like [2**40, 2**40, 0] is refused here rather than failing inside a reshape."""

_CODES = {code: name for name, code in ELEMENT_TYPES.items()}


_FIELDS = frozenset({"dtype", "shape", "data", "b64"})
_WIRE_DTYPES: dict[str, np.dtype[Any]] = {}  # building a dtype costs ~0.5 µs a tensor


def _numpy_dtype(name: str) -> np.dtype[Any]:
    dtype = _WIRE_DTYPES.get(name)
    if dtype is None:
        dtype = np.dtype(object) if name == "string" else np.dtype(name).newbyteorder("<")
        _WIRE_DTYPES[name] = dtype
    return dtype


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise MalformedTensor(f"{where}: shape must be a list of at most {MAX_RANK} integers")
    dims: list[int] = []
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise MalformedTensor(f"{where}: shape {value} must hold non-negative integers")
        dims.append(dim)
    _check_extent(dims, where)
    return tuple(dims)


def _check_extent(dims: list[int] | tuple[int, ...], where: str) -> None:
    if math.prod(d for d in dims if d) > MAX_EXTENT:
        raise MalformedTensor(
            f"{where}: shape {list(dims)[:MAX_RANK]} spans more than {MAX_EXTENT} elements "
            "(zero dims aside); send a smaller shape"
        )


def tensor_from_json(value: Any, *, where: str = "tensor", max_bytes: int) -> Array:
    """One tensor from its JSON form; `max_bytes` bounds what it may allocate."""
    if not isinstance(value, dict) and not isinstance(value, Mapping):
        raise MalformedTensor(
            f'{where}: expected an object like {{"dtype": "float32", "shape": [1, 4], '
            f'"data": [...]}}, got {type(value).__name__}'
        )
    if not value.keys() <= _FIELDS:
        unknown = sorted(str(key) for key in value if key not in _FIELDS)
        raise MalformedTensor(f"{where}: unknown field(s) {unknown}; use dtype, shape, data|b64")
    name = value.get("dtype")
    if not isinstance(name, str) or name not in ELEMENT_TYPES:
        raise MalformedTensor(f"{where}: dtype {name!r} is not one of {sorted(ELEMENT_TYPES)}")
    shape = _shape(value.get("shape"), where)
    count = math.prod(shape)
    dtype = _numpy_dtype(name)
    if name != "string" and count * dtype.itemsize > max_bytes:
        raise InputTooLarge(
            f"{where}: shape {list(shape)} of {name} is {count * dtype.itemsize} bytes, over the "
            f"limit of {max_bytes}"
        )
    if ("data" in value) == ("b64" in value):
        raise MalformedTensor(f"{where}: give exactly one of data (a list) or b64 (raw bytes)")
    if "b64" in value:
        return _from_b64(value["b64"], dtype, shape, count, where, name)
    return _from_list(value["data"], dtype, shape, count, where, name, max_bytes)


def _from_b64(
    text: Any, dtype: np.dtype[Any], shape: tuple[int, ...], count: int, where: str, name: str
) -> Array:
    if name == "string":
        raise MalformedTensor(f"{where}: string tensors travel as data (a list of str), not b64")
    if not isinstance(text, str):
        raise MalformedTensor(f"{where}: b64 must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedTensor(f"{where}: b64 is not valid base64") from None
    if len(raw) != count * dtype.itemsize:
        raise MalformedTensor(
            f"{where}: b64 holds {len(raw)} bytes; shape {list(shape)} of {name} needs "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if name == "bool":
        array = array.view(np.uint8).astype(bool)
    return array if array.dtype.isnative else array.astype(dtype.newbyteorder("="))


def _from_list(
    data: Any,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    count: int,
    where: str,
    name: str,
    max_bytes: int,
) -> Array:
    flat = _flatten(data, where)
    if len(flat) != count:
        raise MalformedTensor(
            f"{where}: data holds {len(flat)} values; shape {list(shape)} needs {count}"
        )
    if name == "string":
        if not all(isinstance(item, str) for item in flat):
            raise MalformedTensor(f"{where}: a string tensor's data must hold only strings")
        if sum(len(item.encode()) for item in flat) > max_bytes:
            raise InputTooLarge(f"{where}: strings total over the limit of {max_bytes} bytes")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    for item in flat:
        if isinstance(item, str) or item is None or isinstance(item, (list, dict)):
            raise MalformedTensor(f"{where}: data must hold numbers for dtype {name}")
        if name == "bool" and not isinstance(item, bool) and item not in (0, 1):
            raise MalformedTensor(f"{where}: bool data must be true/false or 0/1")
        if dtype.kind in "iu" and not isinstance(item, int):
            raise MalformedTensor(f"{where}: {name} data must hold integers, found {item!r}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.array(flat, dtype=dtype.newbyteorder("="))
    except (OverflowError, FloatingPointError, ValueError, TypeError) as exc:
        raise MalformedTensor(f"{where}: data does not fit {name}: {exc}") from None
    if dtype.kind in "iu" and any(int(a) != b for a, b in zip(array.tolist(), flat, strict=True)):
        raise MalformedTensor(f"{where}: a value is out of range for {name}")
    return array.reshape(shape)


def _flatten(data: Any, where: str) -> list[Any]:
    """Nested lists flattened in C order (iteratively, so depth cannot blow the stack)."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack: list[tuple[list[Any], int, int]] = [(data, 0, 0)]
    while stack:
        items, index, depth = stack.pop()
        if depth > MAX_RANK:
            raise MalformedTensor(f"{where}: data is nested deeper than {MAX_RANK} levels")
        while index < len(items):
            item = items[index]
            index += 1
            if isinstance(item, list):
                stack.append((items, index, depth))
                stack.append((item, 0, depth + 1))
                break
            out.append(item)
    return out


def tensor_to_json(array: Array) -> dict[str, Any]:
    """The JSON form of one tensor: b64 for numbers (exact), data for strings."""
    name = dtype_name(array)
    if name == "string":
        return {"dtype": name, "shape": list(array.shape), "data": array.reshape(-1).tolist()}
    if name == "bool":
        array = array.astype(np.uint8)
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {"dtype": name, "shape": list(array.shape), "b64": base64.b64encode(raw).decode()}


def group_from_json(value: Any, *, max_bytes: int, what: str = "inputs") -> dict[str, Array]:
    """A named group from JSON (an object of name → tensor), bounded in total by `max_bytes`."""
    if not isinstance(value, Mapping):
        raise MalformedTensor(f"{what} must be an object of name → tensor")
    arrays: dict[str, Array] = {}
    left = max_bytes
    for name, tensor in value.items():
        array = tensor_from_json(tensor, where=f"{what}[{name!r}]", max_bytes=left)
        left -= array.nbytes if array.dtype != object else 0
        arrays[str(name)] = array
    return arrays


def group_to_json(arrays: Mapping[str, Array]) -> dict[str, dict[str, Any]]:
    return {name: tensor_to_json(np.asarray(array)) for name, array in arrays.items()}


def encode_group(arrays: Mapping[str, Array]) -> bytes:
    """The canonical bytes of a named group (what `group_hash` hashes): a job's input blob."""
    sink = _Sink()
    sink.update(struct.pack("<I", len(arrays)))
    for name, array in arrays.items():
        raw = name.encode()
        sink.update(struct.pack("<H", len(raw)))
        sink.update(raw)
        _update(sink, np.asarray(array))
    return bytes(sink.buffer)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedTensor(
                f"input blob ends at byte {len(self.data)}; expected {n} more at {self.pos}"
            )
        view = self.data[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def decode_group(data: bytes) -> dict[str, Array]:
    """A named group from its canonical bytes (`encode_group`); strict and bounded by the data."""
    reader = _Reader(data)
    (count,) = reader.unpack("<I")
    if count > len(data):
        raise MalformedTensor(f"input blob claims {count} tensors in {len(data)} bytes")
    arrays: dict[str, Array] = {}
    for _ in range(count):
        (length,) = reader.unpack("<H")
        try:
            name = bytes(reader.take(length)).decode()
        except UnicodeDecodeError:
            raise MalformedTensor("a tensor name in the input blob is not UTF-8") from None
        code, rank = reader.unpack("<BB")
        dtype_name_ = _CODES.get(code)
        if dtype_name_ is None or rank > MAX_RANK:
            raise MalformedTensor(f"tensor {name!r}: element type {code} / rank {rank} refused")
        shape = reader.unpack(f"<{rank}Q")
        _check_extent(shape, f"tensor {name!r}")
        count_ = math.prod(shape)
        if dtype_name_ == "string":
            items = []
            for _ in range(count_):
                (size,) = reader.unpack("<I")
                try:
                    items.append(bytes(reader.take(size)).decode())
                except UnicodeDecodeError:
                    raise MalformedTensor(
                        f"tensor {name!r} holds a string that is not UTF-8"
                    ) from None
            array = np.empty(count_, dtype=object)
            array[:] = items
            arrays[name] = array.reshape(shape)
            continue
        dtype = _numpy_dtype(dtype_name_)
        raw = reader.take(count_ * dtype.itemsize)
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if dtype_name_ == "bool":
            if np.any(array.view(np.uint8) > 1):
                raise MalformedTensor(f"tensor {name!r}: bool bytes must be 0 or 1")
            array = array.view(np.uint8).astype(bool)
        arrays[name] = array.astype(dtype.newbyteorder("="), copy=True)
    if reader.pos != len(data):
        raise MalformedTensor(f"input blob has {len(data) - reader.pos} bytes after the tensors")
    return arrays
