"""The embedded chain: an in-process EVM (py-evm through titanoboa). No setup at all.

Each transaction is executed as its own block (like a dev node's automine): the block
number advances by one. The clock is manual by default: it stays where it is until
`advance_time` moves it, which keeps tests deterministic. A long-running devnet asks for
`clock="wall"`: the clock then follows real time plus whatever `advance_time` added, and
never goes backwards.

Senders are not made to sign (there is no mempool), but every signature the protocol
checks on-chain (EIP-712 receipts, permits) is real. `verinet.chain.rpc_server` puts a
JSON-RPC endpoint in front of the chain, and that one checks transaction signatures and
nonces.

Every public method holds one re-entrant lock: py-evm is not thread-safe, and the services
of one process share the chain from several threads.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import boa
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from verinet.chain._accounts import DEV_ETHER, dev_accounts
from verinet.chain._backend import Log, TxReceipt
from verinet.chain._revert import decode_revert
from verinet.errors import ConfigError, StateNotKept
from verinet.types import Address, TxHash

__all__ = ["Block", "Clock", "EmbeddedChain", "MinedTx", "Outcome", "intrinsic_gas"]

_log = logging.getLogger(__name__)

Clock = Literal["manual", "wall"]

_TX_BASE = 21_000
_CREATE_BASE = 32_000
_ZERO_ADDRESS = "0x" + "00" * 20

_P = ParamSpec("_P")
_R = TypeVar("_R")


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


def _locked(
    method: Callable[Concatenate[EmbeddedChain, _P], _R],
) -> Callable[Concatenate[EmbeddedChain, _P], _R]:
    @functools.wraps(method)
    def locked(self: EmbeddedChain, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


@dataclass(frozen=True, slots=True)
class Outcome:
    """What executing a message did, whether or not it succeeded."""

    success: bool
    output: bytes
    """Return data (the runtime code, for a create), or the revert data when it failed."""
    gas_used: int
    """As a receipt counts it: intrinsic gas included, refunds taken off."""


@dataclass(frozen=True, slots=True)
class MinedTx:
    """A transaction as the embedded chain mined it. Failed ones are kept too, without logs."""

    receipt: TxReceipt
    sender: Address
    to: Address | None
    data: bytes
    value: int
    nonce: int
    gas_limit: int
    gas_price: int
    success: bool
    output: bytes
    """Return data, or the revert data when it failed."""


@dataclass(frozen=True, slots=True)
class Block:
    """One block: it holds one transaction, or none (a block `advance_time` mined)."""

    number: int
    timestamp: int
    transaction: MinedTx | None = None
    hash: bytes = b""
    """What BLOCKHASH returns for it: keccak of the number, time and transaction hash, so
    it is unknown until the block exists (the audit draw depends on that)."""

    @classmethod
    def make(cls, number: int, timestamp: int, transaction: MinedTx | None = None) -> Block:
        tx_hash = b"" if transaction is None else bytes.fromhex(transaction.receipt.tx_hash[2:])
        digest = keccak(
            b"verinet embedded block" + number.to_bytes(32, "big") + timestamp.to_bytes(32, "big")
        )
        return cls(number, timestamp, transaction, keccak(digest + tx_hash))


@dataclass(frozen=True, slots=True)
class _Saved:
    state: Any
    timestamp: int
    time_offset: int
    block_number: int
    n_logs: int
    n_blocks: int
    tx_count: int


class EmbeddedChain:
    """A fresh in-process EVM. `accounts` start as `count` funded dev accounts.

    `clock="wall"`: before every transaction, call and `timestamp()` the clock moves up to
    the wall clock plus what `advance_time` added so far (see the module docstring).
    """

    def __init__(
        self,
        *,
        chain_id: int = 31337,
        accounts: int = 10,
        start_time: int | None = None,
        clock: Clock = "manual",
    ) -> None:
        if clock not in ("manual", "wall"):
            raise ConfigError(f"clock must be 'manual' or 'wall', not {clock!r}")
        self._lock = threading.RLock()
        self._wall = clock == "wall"
        self._time_offset = 0  # what advance_time added on top of the wall clock
        self._env = boa.Env()
        self._patch = self._env.evm.patch
        self._patch.chain_id = chain_id
        self._patch.timestamp = int(time.time()) if start_time is None else start_time
        self._chain_id = chain_id
        self._accounts: dict[str, LocalAccount] = {}
        self._logs: list[Log] = []
        self._blocks = [Block.make(int(self._patch.block_number), int(self._patch.timestamp))]
        self._mined: dict[TxHash, MinedTx] = {}
        self._tx_count = 0
        self._snapshots: dict[int, _Saved] = {}
        self._snapshot_counter = 0
        self._subscribers: dict[int, Callable[[int], None]] = {}
        self._subscription_ids = itertools.count()
        for account in dev_accounts(accounts):
            self.add_account(account)

    # -- identity ---------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    @_locked
    def accounts(self) -> Sequence[LocalAccount]:
        return list(self._accounts.values())

    @property
    def lock(self) -> threading.RLock:
        """The lock every public method holds; hold it to make several calls one step."""
        return self._lock

    @_locked
    def add_account(self, account: LocalAccount) -> None:
        self._accounts[account.address] = account
        self._env.set_balance(account.address, DEV_ETHER)

    def _sender(self, sender: Address) -> str:
        address = to_checksum_address(sender)
        if address not in self._accounts:
            raise ConfigError(f"{address} is not an account of this chain; add_account() it first")
        return address

    # -- transactions -----------------------------------------------------------

    def _tick(self) -> None:
        if self._wall:
            now = int(time.time()) + self._time_offset
            self._patch.timestamp = max(int(self._patch.timestamp), now)

    def _sync_hashes(self) -> None:
        """BLOCKHASH as calls see it, at the latest block: the 256 blocks before that one,
        newest first (a transaction's block sees one more: `_next_block`)."""
        self._patch.prev_hashes = [block.hash for block in self._blocks[-2:-258:-1]]

    def _next_block(self, sender: str, data: bytes) -> tuple[int, TxHash]:
        # The block being built comes after the latest: its BLOCKHASH window starts there.
        self._patch.prev_hashes = [block.hash for block in self._blocks[-1:-257:-1]]
        self._patch.block_number += 1
        self._patch.prevrandao = keccak(
            b"verinet embedded prevrandao" + self._patch.block_number.to_bytes(32, "big")
        )
        self._tx_count += 1
        payload = self._tx_count.to_bytes(8, "big") + to_canonical_address(sender) + data
        return int(self._patch.block_number), TxHash("0x" + keccak(payload).hex())

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

    @contextlib.contextmanager
    def _priced(self, gas_price: int) -> Iterator[None]:
        # What GASPRICE reads. titanoboa has no setter; gas itself is never charged here.
        self._env._gas_price = gas_price or None
        try:
            yield
        finally:
            self._env._gas_price = None

    @staticmethod
    def _execution_gas(data: bytes, gas: int | None, *, create: bool) -> int | None:
        """Gas left for execution under a transaction gas limit (None: the block's)."""
        if gas is None:
            return None
        intrinsic, floor = intrinsic_gas(data, create=create)
        if gas < max(intrinsic, floor):
            raise ValueError(f"gas limit {gas} is below the intrinsic gas {max(intrinsic, floor)}")
        return gas - intrinsic

    def _mine(
        self,
        origin: str,
        to: Address | None,
        data: bytes,
        *,
        value: int = 0,
        gas: int | None = None,
        gas_price: int = 0,
        tx_hash: TxHash | None = None,
    ) -> MinedTx:
        self._tick()
        create = to is None
        execution_gas = self._execution_gas(data, gas, create=create)
        state = self._env.evm.vm.state
        account = to_canonical_address(origin)
        nonce = int(state.get_nonce(account))
        number, local_hash = self._next_block(origin, data)
        tx_hash = TxHash(tx_hash.lower()) if tx_hash else local_hash
        created: Any = None
        with self._priced(gas_price):
            if to is None:
                (created, computation), snap = self._execute(
                    lambda: self._env.deploy(
                        sender=origin, bytecode=data, value=value, gas=execution_gas
                    )
                )
            else:
                computation, snap = self._execute(
                    lambda: self._env.execute_code(
                        to_address=to, sender=origin, data=data, value=value, gas=execution_gas
                    )
                )
        success = not computation.is_error
        logs: tuple[Log, ...] = ()
        if success:
            logs = self._collect_logs(computation, tx_hash)
        else:
            # A failed transaction leaves no state change behind but its used nonce.
            self._env.evm.revert(snap)
        if not (create and success):  # a successful create counted the nonce already
            state.increment_nonce(account)
        mined = MinedTx(
            receipt=TxReceipt(
                tx_hash=tx_hash,
                block_number=number,
                gas_used=_tx_gas(data, computation, create=create),
                logs=logs,
                contract_address=(
                    Address(to_checksum_address(str(created))) if create and success else None
                ),
            ),
            sender=Address(origin),
            to=None if to is None else Address(to_checksum_address(to)),
            data=data,
            value=value,
            nonce=nonce,
            gas_limit=int(state.gas_limit) if gas is None else gas,
            gas_price=gas_price,
            success=success,
            output=bytes(computation.output),
        )
        self._blocks.append(Block.make(number, int(self._patch.timestamp), mined))
        self._mined[tx_hash] = mined
        self._announce()
        return mined

    @staticmethod
    def _succeeded(mined: MinedTx) -> TxReceipt:
        if not mined.success:
            raise decode_revert(mined.output)
        return mined.receipt

    @_locked
    def deploy(self, bytecode: bytes, *, sender: Address) -> TxReceipt:
        return self._succeeded(self._mine(self._sender(sender), None, bytecode))

    @_locked
    def transact(self, to: Address, data: bytes, *, sender: Address) -> TxReceipt:
        return self._succeeded(self._mine(self._sender(sender), to, data))

    @_locked
    def mine(
        self,
        to: Address | None,
        data: bytes,
        *,
        sender: Address,
        value: int = 0,
        gas: int | None = None,
        gas_price: int = 0,
        tx_hash: TxHash | None = None,
    ) -> MinedTx:
        """Mine one transaction from any `sender` in a block of its own, failed or not.

        For callers that authenticated the sender themselves (the JSON-RPC server checks
        signature and nonce): `sender` needs no key here, and a revert is not raised but
        kept as a failed `MinedTx`. `to=None` deploys `data`. `gas` is the transaction's gas
        limit, intrinsic gas included (None: the block's; below the intrinsic gas:
        ValueError). `gas_price` is what GASPRICE reads; gas is metered, never charged.
        """
        return self._mine(
            to_checksum_address(sender),
            to,
            data,
            value=value,
            gas=gas,
            gas_price=gas_price,
            tx_hash=tx_hash,
        )

    @_locked
    def simulate(
        self,
        to: Address | None,
        data: bytes,
        *,
        sender: Address | None = None,
        value: int = 0,
        gas: int | None = None,
        gas_price: int = 0,
    ) -> Outcome:
        """Execute as a transaction would (not static, storage cold), then undo it all.

        What eth_call and eth_estimateGas run; arguments as for `mine`. Without a sender
        the first account calls.
        """
        self._tick()
        create = to is None
        execution_gas = self._execution_gas(data, gas, create=create)
        origin = (
            to_checksum_address(sender) if sender else next(iter(self._accounts), _ZERO_ADDRESS)
        )
        with self._env.anchor(), self._priced(gas_price):
            if to is None:
                _, computation = self._env.deploy(
                    sender=origin, bytecode=data, value=value, gas=execution_gas
                )
            else:
                computation = self._env.execute_code(
                    to_address=to, sender=origin, data=data, value=value, gas=execution_gas
                )
            return Outcome(
                success=not computation.is_error,
                output=bytes(computation.output),
                gas_used=_tx_gas(data, computation, create=create),
            )

    @_locked
    def call(
        self, to: Address, data: bytes, *, sender: Address | None = None, block: int | None = None
    ) -> bytes:
        """As `Chain.call`; only the latest block's state is kept, so `block` must name it
        (hold `lock` across several calls to read them all at one block)."""
        if block is not None and block != self._patch.block_number:
            raise StateNotKept(
                f"state at block {block} is not kept: the embedded chain has only the latest "
                f"block's ({self._patch.block_number})"
            )
        outcome = self.simulate(to, data, sender=sender)
        if not outcome.success:
            raise decode_revert(outcome.output)
        return outcome.output

    @_locked
    def logs(self, *, address: Address | None = None, from_block: int = 0) -> list[Log]:
        want = to_checksum_address(address) if address else None
        return [
            log
            for log in self._logs
            if log.block_number >= from_block and (want is None or str(log.address) == str(want))
        ]

    # -- reading state ----------------------------------------------------------

    @_locked
    def block(self, number: int) -> Block | None:
        """Block `number` as mined; None before the first block or past the latest."""
        index = number - self._blocks[0].number
        return self._blocks[index] if 0 <= index < len(self._blocks) else None

    @_locked
    def transaction(self, tx_hash: TxHash) -> MinedTx | None:
        """A mined transaction by hash (its local id, or the signed transaction's hash)."""
        return self._mined.get(TxHash(tx_hash.lower()))

    @_locked
    def nonce(self, address: Address) -> int:
        """Transactions `address` has sent, failed ones included: its next nonce."""
        return int(self._env.evm.vm.state.get_nonce(to_canonical_address(address)))

    @_locked
    def balance(self, address: Address) -> int:
        return int(self._env.get_balance(to_checksum_address(address)))

    @_locked
    def set_balance(self, address: Address, wei: int) -> None:
        self._env.set_balance(to_checksum_address(address), wei)

    @_locked
    def code(self, address: Address) -> bytes:
        """The runtime code at `address` (empty for an account)."""
        return bytes(self._env.get_code(to_checksum_address(address)))

    @_locked
    def base_fee(self) -> int:
        """What BASEFEE reads, in wei."""
        return int(self._env.evm.vm.state.execution_context.base_fee_per_gas)

    @_locked
    def gas_limit(self) -> int:
        """The block gas limit: the most gas one transaction may be given."""
        return int(self._env.evm.vm.state.gas_limit)

    # -- clock and state --------------------------------------------------------

    @_locked
    def block_number(self) -> int:
        return int(self._patch.block_number)

    @_locked
    def first_block(self) -> Block:
        """The chain's first block (number 1: titanoboa starts there)."""
        return self._blocks[0]

    def genesis_hash(self) -> bytes:
        # Made from the start time: a chain started later has another.
        return self.first_block().hash

    @_locked
    def subscribe_blocks(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(number)` after every new block (and after a `revert`), from the
        thread that made it, with the chain's lock held."""
        key = next(self._subscription_ids)
        self._subscribers[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    def _announce(self) -> None:
        number = int(self._patch.block_number)
        for callback in list(self._subscribers.values()):
            try:
                callback(number)
            except Exception:  # a subscriber's bug must not fail the transaction
                _log.exception("block subscriber failed")

    @_locked
    def timestamp(self) -> int:
        self._tick()
        return int(self._patch.timestamp)

    @_locked
    def advance_time(self, seconds: int) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._tick()
        self._patch.timestamp += seconds
        self._time_offset += seconds
        self._patch.block_number += 1
        self._blocks.append(Block.make(int(self._patch.block_number), int(self._patch.timestamp)))
        self._sync_hashes()
        self._announce()

    @_locked
    def snapshot(self) -> int:
        self._snapshot_counter += 1
        snap_id = self._snapshot_counter
        self._snapshots[snap_id] = _Saved(
            state=self._env.evm.snapshot(),
            timestamp=int(self._patch.timestamp),
            time_offset=self._time_offset,
            block_number=self.block_number(),
            n_logs=len(self._logs),
            n_blocks=len(self._blocks),
            tx_count=self._tx_count,
        )
        return snap_id

    @_locked
    def revert(self, snapshot_id: int) -> None:
        try:
            saved = self._snapshots.pop(snapshot_id)
        except KeyError:
            raise ValueError(f"unknown or already used snapshot {snapshot_id}") from None
        for later in [s for s in self._snapshots if s > snapshot_id]:
            del self._snapshots[later]
        self._env.evm.revert(saved.state)
        self._patch.timestamp = saved.timestamp
        self._time_offset = saved.time_offset
        self._patch.block_number = saved.block_number
        del self._logs[saved.n_logs :]
        for block in self._blocks[saved.n_blocks :]:
            if block.transaction is not None:
                del self._mined[block.transaction.receipt.tx_hash]
        del self._blocks[saved.n_blocks :]
        self._sync_hashes()
        self._tx_count = saved.tx_count
        self._announce()
