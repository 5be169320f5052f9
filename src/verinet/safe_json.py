"""JSON from the network, parsed without letting its sender crash the process.

json's C parser recurses once per nesting level, and py-evm and py_ecc raise Python's recursion
limit to 100,000 when imported, so ~90,000 ``[`` overflow the C stack (a segfault, not a
`RecursionError`) before the limit is reached: 90 KB from any HTTP client would end a node.
`loads` measures the nesting first, without parsing, and refuses a document deeper than
`max_depth` with `JsonTooDeep`::

    body = safe_json.loads(raw)               # as json.loads; JsonTooDeep is a ValueError

Measuring costs little for a document with fewer brackets than the limit (two `str.count`),
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

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
"""A JSON string, escapes included. The closing quote is optional so that a match, once at a
quote, never fails: the scan stays linear (a required quote made unterminated strings
quadratic). An unterminated string is where json's parser stops anyway."""
_OPEN = (ord("["), ord("{"))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
"""Deleted before counting: a tensor's digits and commas are most of a body."""


def nesting(data: bytes | bytearray | str) -> int:
    """How deep JSON `data` nests, found without parsing it: exact for valid JSON, and never
    below the depth json's parser would reach before it stops at an error."""
    utf8 = _text(data).encode("utf-8", "surrogatepass")
    brackets = _STRING.sub(b"", utf8).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, np.uint8)
    steps = np.where((codes == _OPEN[0]) | (codes == _OPEN[1]), 1, -1).astype(np.int32)
    return max(0, int(np.cumsum(steps).max()))


def loads(data: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads(data)`, unless `data` nests deeper than `max_depth` (`JsonTooDeep`)."""
    text = _text(data)
    if text.count("[") + text.count("{") > max_depth and nesting(text) > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels (refused unparsed)")
    return json.loads(text)


def _text(data: bytes | bytearray | str) -> str:
    """`data` as the text json.loads reads from it: bytes in UTF-8, -16 or -32 as json
    detects. Measuring the bytes instead would misread UTF-16/32, where a character such as
    U+0122 holds a quote byte. Raises `UnicodeDecodeError` (a `ValueError`)."""
    if isinstance(data, str):
        return data
    raw = bytes(data)
    return raw.decode(json.detect_encoding(raw), "surrogatepass")
