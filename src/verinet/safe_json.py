"""JSON from the network, parsed without letting its sender crash the process.

json's C parser recurses once per nesting level, and py-evm and py_ecc raise Python's recursion
limit to 100,000 when imported, so ~90,000 ``[`` overflow the C stack (a segfault, not a
`RecursionError`) before the limit is reached: 90 KB from any HTTP client would end a node.
`loads` measures the nesting first, without parsing, and refuses a document deeper than
`max_depth` with `JsonTooDeep`::

    body = safe_json.loads(raw)               # as json.loads; JsonTooDeep is a ValueError

Measuring costs nothing for a document with fewer brackets than the limit (two `bytes.count`),
and a pass over it otherwise (string contents skipped, so a ``"[["`` does not count).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import numpy as np

from verinet.errors import JsonTooDeep

__all__ = ["MAX_DEPTH", "loads", "nesting"]

MAX_DEPTH: Final = 64
"""Deepest nesting `loads` takes by default: a tensor as nested lists needs its rank plus a few
levels of envelope, and no model input has a rank near 60."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


def nesting(data: bytes | str) -> int:
    """How deep JSON `data` nests, found without parsing it: exact for valid JSON, and never
    below the depth json's parser would reach before it stops at an error."""
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else bytes(data)
    codes = np.frombuffer(_STRING.sub(b"", raw), np.uint8)
    if not codes.size:
        return 0
    steps = np.isin(codes, _OPEN).astype(np.int64) - np.isin(codes, _CLOSE)
    return max(0, int(np.cumsum(steps).max()))


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(data)`, unless `data` nests deeper than `max_depth` (`JsonTooDeep`)."""
    raw = data.encode(errors="surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting(raw) > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels (refused unparsed)")
    return json.loads(data)
