"""Revert decoding: exact reason codes become typed exceptions; anything else stays raw."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode

from verinet.chain import decode_revert
from verinet.errors import (
    REVERT_REASONS,
    ContractRevert,
    InsufficientBalance,
    NotEligible,
    UnknownRevert,
    VerinetError,
)

ERROR = bytes.fromhex("08c379a0")


def _error(reason: str) -> bytes:
    return ERROR + encode(["string"], [reason])


@pytest.mark.parametrize("reason", sorted(REVERT_REASONS))
def test_every_reason_code_decodes_to_its_class(reason: str) -> None:
    exc = decode_revert(_error(reason))
    assert type(exc) is REVERT_REASONS[reason]
    assert isinstance(exc, ContractRevert) and isinstance(exc, VerinetError)
    assert reason in str(exc) and len(str(exc)) > len(reason)  # the hint says what to do


def test_snekmate_strings_map_into_the_tree() -> None:
    assert (
        type(decode_revert(_error("erc20: transfer amount exceeds balance"))) is InsufficientBalance
    )


def test_near_miss_is_not_matched_by_substring() -> None:
    exc = decode_revert(_error("NotEligible: but longer"))
    assert type(exc) is UnknownRevert
    assert not isinstance(exc, NotEligible)


def test_panic_and_empty_data_are_unknown_with_a_reason() -> None:
    panic = decode_revert(bytes.fromhex("4e487b71") + (0x11).to_bytes(32, "big"))
    assert isinstance(panic, UnknownRevert) and "overflow" in str(panic)
    empty = decode_revert(b"")
    assert isinstance(empty, UnknownRevert) and "out of gas" in str(empty)
    garbage = decode_revert(ERROR + b"\x01\x02")
    assert isinstance(garbage, UnknownRevert) and garbage.data == ERROR + b"\x01\x02"


def test_contract_reason_codes_are_all_known() -> None:
    """Every reason string the Vyper sources use has a typed exception."""
    import re

    from verinet.chain.artifacts import contracts_dir

    used = set()
    for path in contracts_dir().glob("*.vy"):
        used |= set(re.findall(r'(?:assert .*?|raise) "([A-Z][A-Za-z]+)"', path.read_text()))
    assert used, "found no reason codes in the contracts"
    assert used <= set(REVERT_REASONS), f"missing exceptions for {used - set(REVERT_REASONS)}"
