"""Deterministic development accounts, the same on every dev chain."""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

DEV_ETHER = 10**24
"""Wei each dev account starts with on a dev chain (embedded or anvil)."""


def dev_account(index: int) -> LocalAccount:
    """The `index`-th development account. Its key is public knowledge: tests and devnets only."""
    key = keccak(b"verinet development account " + index.to_bytes(4, "big"))
    account: LocalAccount = Account.from_key(key)
    return account


def dev_accounts(count: int) -> list[LocalAccount]:
    return [dev_account(i) for i in range(count)]
