"""The embedded chain: an in-process EVM (py-evm through titanoboa). No setup at all.

Each transaction is executed as its own block (like a dev node's automine): the block
number advances by one and the clock stays where it is until `advance_time` moves it,
which keeps tests deterministic. Senders are not made to sign (there is no mempool),
but every signature the protocol checks on-chain (EIP-712 receipts, permits) is real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import boa
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from verinet.chain._accounts import DEV_ETHER, dev_accounts
from verinet.chain._backend import Log, TxReceipt
from verinet.chain._revert import decode_revert
from verinet.errors import ConfigError
from verinet.types import Address, TxHash

_TX_BASE = 21_000
_CREATE_BASE = 32_000


def _calldata_tokens(data: bytes) -> int:
    zeros = data.count(0)
    return zeros + 4 * (len(data) - zeros)


def intrinsic_gas(data: bytes, *, create: bool = False) -> tuple[int, int]:
    """(intrinsic gas, EIP-7623 floor) of a transaction carrying `data`."""
    tokens = _calldata_tokens(data)
    gas = _TX_BASE + 4 * tokens
    if create:
        gas += _CREATE_BASE + 2 * ((len(data) + 31) // 32)
    return gas, _TX_BASE + 10 * tokens


def _tx_gas(data: bytes, computation: Any, *, create: bool = False) -> int:
    intrinsic, floor = intrinsic_gas(data, create=create)
    spent = intrinsic + int(computation.get_gas_used())
    refund = min(int(computation.get_gas_refund()), spent // 5)
    return max(spent - refund, floor)


class EmbeddedChain:
    """A fresh in-process EVM. `accounts` start as `count` funded dev accounts."""

    def __init__(self, *, chain_id: int = 31337, accounts: int = 10, start_time: int | None = None):
        self._env = boa.Env()
        self._patch = self._env.evm.patch
        self._patch.chain_id = chain_id
        self._patch.timestamp = int(time.time()) if start_time is None else start_time
        self._chain_id = chain_id
        self._accounts: dict[str, LocalAccount] = {}
        self._logs: list[Log] = []
        self._tx_count = 0
        self._snapshots: dict[int, tuple[Any, int, int, int, int]] = {}
        self._snapshot_counter = 0
        for account in dev_accounts(accounts):
            self.add_account(account)

    # -- identity ---------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def accounts(self) -> Sequence[LocalAccount]:
        return list(self._accounts.values())

    def add_account(self, account: LocalAccount) -> None:
        self._accounts[account.address] = account
        self._env.set_balance(account.address, DEV_ETHER)

    def _sender(self, sender: Address) -> str:
        address = to_checksum_address(sender)
        if address not in self._accounts:
            raise ConfigError(f"{address} is not an account of this chain; add_account() it first")
        return address

    # -- transactions -----------------------------------------------------------

    def _next_block(self, sender: str, data: bytes) -> TxHash:
        self._patch.block_number += 1
        self._patch.prevrandao = keccak(
            b"verinet embedded prevrandao" + self._patch.block_number.to_bytes(32, "big")
        )
        self._tx_count += 1
        payload = self._tx_count.to_bytes(8, "big") + to_canonical_address(sender) + data
        return TxHash("0x" + keccak(payload).hex())

    def _collect_logs(self, computation: Any, tx_hash: TxHash) -> tuple[Log, ...]:
        logs = tuple(
            Log(
                address=Address(to_checksum_address(address)),
                topics=tuple(t.to_bytes(32, "big") for t in topics),
                data=bytes(data),
                block_number=self._patch.block_number,
                tx_hash=tx_hash,
                log_index=i,
            )
            for i, (address, topics, data) in enumerate(computation.get_log_entries())
        )
        self._logs.extend(logs)
        return logs

    def _execute(self, run: Callable[[], Any]) -> tuple[Any, Any]:
        """Run one transaction with cold storage and accounts (EIP-2929), as a real chain
        would; titanoboa otherwise keeps them warm across calls and under-counts gas.

        Returns (result, state snapshot taken before it) so a revert can undo it.
        """
        snap = self._env.evm.snapshot()
        accessed = self._env.evm.vm.state._account_db._journal_accessed_state
        checkpoint = accessed.record()
        try:
            return run(), snap
        finally:
            accessed.discard(checkpoint)

    def deploy(self, bytecode: bytes, *, sender: Address) -> TxReceipt:
        origin = self._sender(sender)
        tx_hash = self._next_block(origin, bytecode)
        (address, computation), snap = self._execute(
            lambda: self._env.deploy(sender=origin, bytecode=bytecode)
        )
        if computation.is_error:
            self._env.evm.revert(snap)
            raise decode_revert(bytes(computation.output))
        return TxReceipt(
            tx_hash=tx_hash,
            block_number=self._patch.block_number,
            gas_used=_tx_gas(bytecode, computation, create=True),
            logs=self._collect_logs(computation, tx_hash),
            contract_address=Address(to_checksum_address(str(address))),
        )

    def transact(self, to: Address, data: bytes, *, sender: Address) -> TxReceipt:
        origin = self._sender(sender)
        tx_hash = self._next_block(origin, data)
        computation, snap = self._execute(
            lambda: self._env.execute_code(to_address=to, sender=origin, data=data)
        )
        if computation.is_error:
            # A reverted transaction leaves no state change behind (the nonce aside).
            self._env.evm.revert(snap)
            raise decode_revert(bytes(computation.output))
        self._env.evm.vm.state.increment_nonce(to_canonical_address(origin))
        return TxReceipt(
            tx_hash=tx_hash,
            block_number=self._patch.block_number,
            gas_used=_tx_gas(data, computation),
            logs=self._collect_logs(computation, tx_hash),
        )

    def call(self, to: Address, data: bytes, *, sender: Address | None = None) -> bytes:
        origin = to_checksum_address(sender) if sender else next(iter(self._accounts))
        computation = self._env.execute_code(
            to_address=to, sender=origin, data=data, is_modifying=False, simulate=True
        )
        if computation.is_error:
            raise decode_revert(bytes(computation.output))
        return bytes(computation.output)

    def logs(self, *, address: Address | None = None, from_block: int = 0) -> list[Log]:
        want = to_checksum_address(address) if address else None
        return [
            log
            for log in self._logs
            if log.block_number >= from_block and (want is None or str(log.address) == str(want))
        ]

    # -- clock and state --------------------------------------------------------

    def block_number(self) -> int:
        return int(self._patch.block_number)

    def timestamp(self) -> int:
        return int(self._patch.timestamp)

    def advance_time(self, seconds: int) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._patch.timestamp += seconds
        self._patch.block_number += 1

    def snapshot(self) -> int:
        self._snapshot_counter += 1
        snap_id = self._snapshot_counter
        self._snapshots[snap_id] = (
            self._env.evm.snapshot(),
            self.timestamp(),
            self.block_number(),
            len(self._logs),
            self._tx_count,
        )
        return snap_id

    def revert(self, snapshot_id: int) -> None:
        try:
            state, ts, block, n_logs, n_tx = self._snapshots.pop(snapshot_id)
        except KeyError:
            raise ValueError(f"unknown or already used snapshot {snapshot_id}") from None
        for later in [s for s in self._snapshots if s > snapshot_id]:
            del self._snapshots[later]
        self._env.evm.revert(state)
        self._patch.timestamp = ts
        self._patch.block_number = block
        del self._logs[n_logs:]
        self._tx_count = n_tx
