"""The bytes between a node and its model workers: length-prefixed frames on a socket pair.

A model run is the hot path, so it has a frame of its own: the manifest CID, then each tensor
as name, numpy dtype string, shape and raw bytes, read back as arrays over the received
buffer (no copy). That costs ~1 µs a side where pickling numpy arrays costs ~10 µs. Any other
call and any failure travel pickled. Both ends are trusted code of the node; the worker's
answers are still parsed defensively (a truncated or garbled frame is `ChannelError`), since
a model could make a worker die mid-write.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from verinet.errors import ExecutionFailed
from verinet.runtime.tensors import Array

_HEAD = struct.Struct("<IB")  # payload length, kind
_LEN = struct.Struct("<Q")
PICKLED, RUN, TENSORS, FAILED, DIRECT, HASHED = 0, 1, 2, 3, 4, 5
"""Frame kinds: a pickled ``(method, args)`` call or answer; a run request (CID + tensors);
a run's outputs (tensors); a pickled exception; a direct run request (CID + tensors not yet
validated); its answer (input hash, output hash, outputs)."""
RETIRE = 0x80
"""A flag on an answer's kind: the worker exits after it (its memory ran out: what is left
of its heap cannot be trusted to run the next request)."""
AWAKE = 0x40
"""A flag on a request's kind: the node's calls come one at a time, so the worker watches its
socket for the next one a moment after answering instead of going to sleep."""
_PICKLE = pickle.HIGHEST_PROTOCOL
_READ = 64 * 1024  # under malloc's mmap threshold: a read costs no page faults


class ChannelError(ExecutionFailed):
    """A worker's frame did not parse (it died mid-write, or its memory was corrupted)."""


def _frame(kind: int, parts: list[bytes | memoryview]) -> bytes:
    payload = b"".join(parts)
    return _HEAD.pack(len(payload), kind) + payload


def _pack_tensors(parts: list[bytes | memoryview], tensors: Mapping[str, Array]) -> bool:
    """Append `tensors` to `parts`; False if one holds Python objects (pickle those)."""
    parts.append(struct.pack("<B", len(tensors)))
    for name, array in tensors.items():
        if array.dtype.hasobject:
            return False
        contiguous = np.ascontiguousarray(array)  # 0-d comes back 1-d: the shape is array's
        label, dtype = name.encode(), contiguous.dtype.str.encode()
        parts.append(
            struct.pack(
                f"<H{len(label)}sB{len(dtype)}sB{array.ndim}q",
                len(label), label, len(dtype), dtype, array.ndim, *array.shape,
            )
        )  # fmt: skip
        parts.append(_LEN.pack(contiguous.nbytes))
        parts.append(contiguous.data.cast("B") if contiguous.nbytes else b"")
    return True


def _unpack_tensors(view: memoryview, offset: int) -> tuple[dict[str, Array], int]:
    (count,) = struct.unpack_from("<B", view, offset)
    offset += 1
    tensors: dict[str, Array] = {}
    for _ in range(count):
        (size,) = struct.unpack_from("<H", view, offset)
        name = bytes(view[offset + 2 : offset + 2 + size]).decode()
        offset += 2 + size
        (size,) = struct.unpack_from("<B", view, offset)
        dtype = np.dtype(bytes(view[offset + 1 : offset + 1 + size]).decode())
        offset += 1 + size
        (ndim,) = struct.unpack_from("<B", view, offset)
        shape = struct.unpack_from(f"<{ndim}q", view, offset + 1)
        offset += 1 + 8 * ndim
        (nbytes,) = _LEN.unpack_from(view, offset)
        offset += 8
        if offset + nbytes > len(view):
            raise ChannelError("a worker's frame ends inside a tensor")
        flat = np.frombuffer(view, dtype, nbytes // dtype.itemsize, offset) if nbytes else None
        tensors[name] = np.empty(shape, dtype) if flat is None else flat.reshape(shape)
        offset += nbytes
    return tensors, offset


def run_request(
    manifest_cid: str, feeds: Mapping[str, Array], *, direct: bool = False, awake: bool = False
) -> bytes:
    """The frame of a model run: the worker's ``run(manifest_cid, feeds)``, or with `direct`
    its ``direct(manifest_cid, inputs)``; `awake` asks the worker to stay awake for the next
    one."""
    cid = manifest_cid.encode()
    parts: list[bytes | memoryview] = [struct.pack("<H", len(cid)), cid]
    if _pack_tensors(parts, feeds):
        return _frame((DIRECT if direct else RUN) | (AWAKE if awake else 0), parts)
    return call_request("direct" if direct else "run", manifest_cid, dict(feeds))


def call_request(method: str, *args: Any) -> bytes:
    """The frame of any other call: pickled ``(method, args)``."""
    return _frame(PICKLED, [pickle.dumps((method, args), _PICKLE)])


def parse_request(kind: int, payload: memoryview) -> tuple[str, tuple[Any, ...]]:
    """The ``(method, args)`` of a request frame (in the worker)."""
    if kind & ~AWAKE in (RUN, DIRECT):
        (size,) = struct.unpack_from("<H", payload, 0)
        cid = bytes(payload[2 : 2 + size]).decode()
        feeds, _ = _unpack_tensors(payload, 2 + size)
        return "run" if kind & ~AWAKE == RUN else "direct", (cid, feeds)
    method, args = pickle.loads(payload)
    return method, args


class Hashed(NamedTuple):
    """A direct run's answer: its validated inputs' hash, its outputs' hash, its outputs."""

    input_hash: bytes
    output_hash: bytes
    outputs: dict[str, Array]


def answer(value: Any) -> bytes:
    """The frame of a call's result (in the worker): tensors for a run, else pickled."""
    if isinstance(value, Hashed) and len(value.input_hash) == len(value.output_hash) == 32:
        parts: list[bytes | memoryview] = [value.input_hash, value.output_hash]
        if _pack_tensors(parts, value.outputs):
            return _frame(HASHED, parts)
    elif isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
        parts = []
        if _pack_tensors(parts, value):
            return _frame(TENSORS, parts)
    return _frame(PICKLED, [pickle.dumps(value, _PICKLE)])


def failure(exc: BaseException, *, retire: bool = False) -> bytes:
    """The frame of a call that raised (in the worker); an exception that does not pickle
    goes as `ExecutionFailed` naming it. `retire`: the worker exits after sending it."""
    kind = FAILED | (RETIRE if retire else 0)
    try:
        return _frame(kind, [pickle.dumps(exc, _PICKLE)])
    except Exception:
        named = ExecutionFailed(f"{type(exc).__name__}: {exc}")
        return _frame(kind, [pickle.dumps(named, _PICKLE)])


def result(kind: int, payload: memoryview) -> Any:
    """The value of an answer frame, or its exception raised (in the node)."""
    kind &= ~RETIRE
    try:
        if kind == TENSORS:
            tensors, _ = _unpack_tensors(payload, 0)
            return tensors
        if kind == HASHED:
            tensors, _ = _unpack_tensors(payload, 64)
            return Hashed(bytes(payload[:32]), bytes(payload[32:64]), tensors)
        value = pickle.loads(payload)
    except ChannelError:
        raise
    except Exception as exc:
        raise ChannelError(f"a worker's answer did not parse: {type(exc).__name__}") from None
    if kind == FAILED:
        if isinstance(value, BaseException):
            raise value
        raise ChannelError("a worker's failure frame held no exception")
    return value


class FrameReader:
    """Frames out of the bytes read from one end of a socket pair, in order."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.parsed: deque[tuple[int, memoryview]] = deque()  # read by `next`, not yet taken

    def frames(self) -> list[tuple[int, memoryview]]:
        """The complete frames buffered now, removed from the buffer."""
        frames = []
        start, end = 0, len(self.buffer)
        while end - start >= _HEAD.size:
            size, kind = _HEAD.unpack_from(self.buffer, start)
            if end - start - _HEAD.size < size:
                break
            body = bytes(self.buffer[start + _HEAD.size : start + _HEAD.size + size])
            frames.append((kind, memoryview(body)))
            start += _HEAD.size + size
        if start == end:
            self.buffer = bytearray()  # hand back what a large frame took
        elif start:
            del self.buffer[:start]
        return frames

    def fill(self) -> bool:
        """Read what the socket has (one read; it must be readable); False at EOF."""
        chunk = os.read(self.fd, max(_READ, self._missing()))
        self.buffer += chunk
        return bool(chunk)

    def next(self, deadline: float | None) -> tuple[int, memoryview] | None:
        """The next frame, waiting until `deadline` (`time.monotonic`; None: no limit); None
        when the time is up. Raises EOFError when the other end is gone."""
        if self.parsed:
            return self.parsed.popleft()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            self.parsed.extend(self.frames())
            if self.parsed:
                return self.parsed.popleft()
            wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1e3))
            if not poller.poll(wait):
                return None
            if not self.fill():
                raise EOFError

    def _missing(self) -> int:
        if len(self.buffer) < _HEAD.size:
            return 0
        size, _ = _HEAD.unpack_from(self.buffer, 0)
        return int(_HEAD.size + size - len(self.buffer))


def send(fd: int, frame: bytes) -> None:
    """Write a whole frame to a blocking socket."""
    view = memoryview(frame)
    while view:
        written = os.write(fd, view)
        view = view[written:]
