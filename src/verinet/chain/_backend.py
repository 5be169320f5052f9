"""The `Chain` seam: what Verinet needs from any EVM, and the values it returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eth_account.signers.local import LocalAccount

from verinet.types import Address, TxHash


@dataclass(frozen=True, slots=True)
class Log:
    """One EVM log entry as emitted."""

    address: Address
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    tx_hash: TxHash
    log_index: int


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """What a mined transaction left behind.

    `gas_used` is the receipt's figure on a JSON-RPC chain; on the embedded chain it is
    execution gas plus intrinsic gas (21,000 + calldata, EIP-7623 floor) less refunds,
    computed the same way a client would.
    """

    tx_hash: TxHash
    block_number: int
    gas_used: int
    logs: tuple[Log, ...]
    contract_address: Address | None = None


@runtime_checkable
class Chain(Protocol):
    """An EVM Verinet can deploy to, call and transact with.

    Implementations: `EmbeddedChain` (in-process py-evm, the default) and
    `JsonRpcChain` (any Ethereum JSON-RPC endpoint; anvil in tests). A transaction that
    reverts raises the `ContractRevert` subclass decoded from its revert data.
    """

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id (part of every EIP-712 domain)."""
        ...

    @property
    def accounts(self) -> Sequence[LocalAccount]:
        """Accounts this chain object may send transactions from."""
        ...

    def add_account(self, account: LocalAccount) -> None:
        """Make `account` usable as a sender (dev chains also fund it with ether)."""
        ...

    def deploy(self, bytecode: bytes, *, sender: Address) -> TxReceipt:
        """Deploy init code (constructor arguments appended); `contract_address` is set."""
        ...

    def transact(self, to: Address, data: bytes, *, sender: Address) -> TxReceipt:
        """Send a transaction and wait until it is mined."""
        ...

    def call(
        self, to: Address, data: bytes, *, sender: Address | None = None, block: int | None = None
    ) -> bytes:
        """Execute without changing state (eth_call) and return the output: on the state
        after block number `block` (None: the latest). Raises `StateNotKept` when the chain
        no longer has that block's state."""
        ...

    def logs(self, *, address: Address | None = None, from_block: int = 0) -> list[Log]:
        """Logs emitted since `from_block`, oldest first."""
        ...

    def code(self, address: Address) -> bytes:
        """The runtime code at `address` as of the latest block (empty for an account)."""
        ...

    def block_number(self) -> int:
        """Number of the latest block."""
        ...

    def genesis_hash(self) -> bytes:
        """Hash of the chain's first block: with the chain id and the contracts' addresses it
        tells one chain from another (a restarted dev chain has the same id and addresses)."""
        ...

    def subscribe_blocks(self, callback: Callable[[int], None]) -> Callable[[], None] | None:
        """Have `callback(number)` called after each new block, from whichever thread made
        it; it must be quick and must not call the chain. Returns the function that ends
        the subscription, or None when this chain cannot push blocks (callers poll)."""
        ...

    def timestamp(self) -> int:
        """Timestamp the next transaction will at least see (latest block's time)."""
        ...

    def advance_time(self, seconds: int) -> None:
        """Move the clock forward (dev chains only)."""
        ...

    def snapshot(self) -> int:
        """Remember the whole chain state (dev chains only)."""
        ...

    def revert(self, snapshot_id: int) -> None:
        """Return to a state remembered by `snapshot` (dev chains only)."""
        ...
