"""A chain read as it stood after one block: every view through it sees the same state.

Reading several views one after another on a live chain reads several states when
transactions land in between (a job settled between reading the market's balance and its
books). A `PinnedChain` passes its block to every call and hides later logs, so
`Deployment.at(PinnedChain(chain, n), addresses)` reads the whole protocol at block `n`. It
cannot transact: a view of the past has nowhere to send to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

from eth_account.signers.local import LocalAccount

from verinet.chain._backend import Chain, Log, TxReceipt
from verinet.errors import ConfigError
from verinet.types import Address

__all__ = ["PinnedChain"]


class PinnedChain:
    """`chain` at block `block`, read-only (a `Chain` whose writes raise `ConfigError`)."""

    def __init__(self, chain: Chain, block: int) -> None:
        self.inner = chain
        self.block = block

    def _read_only(self, what: str) -> NoReturn:
        raise ConfigError(f"{what}: this view of the chain at block {self.block} is read-only")

    @property
    def chain_id(self) -> int:
        return self.inner.chain_id

    @property
    def accounts(self) -> Sequence[LocalAccount]:
        return ()

    def add_account(self, account: LocalAccount) -> None:
        self._read_only("add_account")

    def deploy(self, bytecode: bytes, *, sender: Address) -> TxReceipt:
        self._read_only("deploy")

    def transact(self, to: Address, data: bytes, *, sender: Address) -> TxReceipt:
        self._read_only("transact")

    def call(
        self, to: Address, data: bytes, *, sender: Address | None = None, block: int | None = None
    ) -> bytes:
        at = self.block if block is None else block
        return self.inner.call(to, data, sender=sender, block=at)

    def logs(self, *, address: Address | None = None, from_block: int = 0) -> list[Log]:
        return [
            log
            for log in self.inner.logs(address=address, from_block=from_block)
            if log.block_number <= self.block
        ]

    def code(self, address: Address) -> bytes:
        # Verinet's contracts never self-destruct: the latest code is the code at any block
        # since their deployment.
        return self.inner.code(address)

    def block_number(self) -> int:
        return self.block

    def genesis_hash(self) -> bytes:
        return self.inner.genesis_hash()

    def subscribe_blocks(self, callback: Callable[[int], None]) -> Callable[[], None] | None:
        return None  # no block comes after this one

    def timestamp(self) -> int:
        self._read_only("timestamp (ask the live chain for its clock)")

    def advance_time(self, seconds: int) -> None:
        self._read_only("advance_time")

    def snapshot(self) -> int:
        self._read_only("snapshot")

    def revert(self, snapshot_id: int) -> None:
        self._read_only("revert")
