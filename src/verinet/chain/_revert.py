"""Revert data → typed exception."""

from __future__ import annotations

from eth_abi.abi import decode

from verinet.errors import ContractRevert, UnknownRevert, revert_class

_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)
_PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x32: "array index out of bounds",
    0x41: "out of memory",
}


def decode_revert(data: bytes) -> ContractRevert:
    """Decode revert data into the matching `ContractRevert` subclass.

    `Error(string)` reasons are looked up whole in the reason table; anything else
    (a panic, empty data from out-of-gas or an invalid opcode) is an `UnknownRevert`
    that keeps the raw data.
    """
    if data[:4] == _ERROR_STRING:
        try:
            (reason,) = decode(["string"], data[4:])
        except Exception:
            return UnknownRevert(data)
        cls = revert_class(reason)
        if cls is not None:
            return cls()
        return UnknownRevert(data, f"transaction reverted: {reason}")
    if data[:4] == _PANIC and len(data) == 36:
        code = int.from_bytes(data[4:], "big")
        what = _PANIC_CODES.get(code, "panic")
        return UnknownRevert(data, f"transaction reverted: {what} (panic 0x{code:02x})")
    if not data:
        return UnknownRevert(data, "transaction reverted without data (out of gas or a bad opcode)")
    return UnknownRevert(data)
