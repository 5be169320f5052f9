"""`Chain` over any Ethereum JSON-RPC endpoint: anvil in tests, an L2 in production.

Transactions are signed here with the sender's key (EIP-1559, chain id bound) and sent raw,
so the node never holds keys. Requests go through web3's provider without its middleware
and exception mapping: that keeps the raw `error.data` of a revert, which is what
`decode_revert` needs, whatever web3 made of the message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import ProviderConnectionError
from web3.types import RPCEndpoint, RPCResponse

from verinet import safe_json
from verinet.chain._accounts import DEV_ETHER
from verinet.chain._backend import Log, TxReceipt
from verinet.chain._revert import decode_revert
from verinet.errors import (
    ChainUnavailable,
    ConfigError,
    ContractRevert,
    JsonTooDeep,
    StateNotKept,
    TransientError,
    VerinetError,
)
from verinet.types import Address, TxHash

__all__ = ["JsonRpcChain"]

log = logging.getLogger("verinet.chain")

_EXECUTION_REVERTED = 3  # the JSON-RPC error code geth and anvil give a revert
_METHOD_NOT_FOUND = -32601
_RESOURCE_NOT_FOUND = -32001  # EIP-1474; the devnet's server answers so for a state it dropped
# Estimates are taken against the pending state; leave room for state that moves before mining.
_GAS_MARGIN = 10_000
_POLL_MAX_S = 0.1


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _int(value: Any) -> int:
    return value if isinstance(value, int) else int(value, 16)


def _address(value: str) -> Address:
    return Address(to_checksum_address(value))


def _log(raw: dict[str, Any]) -> Log:
    return Log(
        address=_address(raw["address"]),
        topics=tuple(bytes.fromhex(topic[2:]) for topic in raw["topics"]),
        data=bytes.fromhex(raw["data"][2:]),
        block_number=_int(raw["blockNumber"]),
        tx_hash=TxHash(raw["transactionHash"]),
        log_index=_int(raw["logIndex"]),
    )


class _Provider(HTTPProvider):
    """web3's HTTP provider reading answers through `safe_json`: the endpoint may be a
    third party's, and JSON nested deep enough would crash the process in json.loads."""

    @staticmethod
    def decode_rpc_response(raw_response: bytes) -> RPCResponse:
        return cast(RPCResponse, safe_json.loads(raw_response))


class JsonRpcChain:
    """A `Chain` reached over HTTP JSON-RPC.

    `dev=True` marks an anvil node: `add_account` then funds accounts with `DEV_ETHER`, and
    `advance_time`, `snapshot` and `revert` work. On other chains they raise `ConfigError`.
    Safe to share between threads: nonces are handed out under a lock.
    """

    def __init__(
        self,
        url: str,
        accounts: Sequence[LocalAccount] = (),
        *,
        dev: bool = False,
        receipt_timeout: float = 60.0,
    ) -> None:
        self._url = url
        self._w3 = Web3(_Provider(url))
        self._dev = dev
        self._receipt_timeout = receipt_timeout
        self._accounts: dict[Address, LocalAccount] = {}
        self._nonces: dict[Address, int] = {}
        self._lock = threading.Lock()
        self._chain_id = _int(self._rpc("eth_chainId", []))
        for account in accounts:
            self.add_account(account)

    @property
    def url(self) -> str:
        return self._url

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id, read once from the node."""
        return self._chain_id

    @property
    def accounts(self) -> Sequence[LocalAccount]:
        """Accounts this chain object may send transactions from."""
        return tuple(self._accounts.values())

    def add_account(self, account: LocalAccount) -> None:
        """Make `account` usable as a sender; on a dev chain also set its balance to DEV_ETHER."""
        address = _address(account.address)
        self._accounts[address] = account
        if self._dev:
            self._rpc("anvil_setBalance", [address, hex(DEV_ETHER)])

    def deploy(self, bytecode: bytes, *, sender: Address) -> TxReceipt:
        """Deploy init code (constructor arguments appended); `contract_address` is set."""
        return self._send(None, bytecode, sender)

    def transact(self, to: Address, data: bytes, *, sender: Address) -> TxReceipt:
        """Send a transaction and wait until it is mined; a revert raises its decoded error."""
        return self._send(to, data, sender)

    def call(
        self, to: Address, data: bytes, *, sender: Address | None = None, block: int | None = None
    ) -> bytes:
        """`eth_call` at block `block` (None: the latest); a revert raises its decoded error."""
        params: dict[str, Any] = {"to": to, "data": _hex(data)}
        if sender is not None:
            params["from"] = sender
        result: str = self._rpc("eth_call", [params, "latest" if block is None else hex(block)])
        return bytes.fromhex(result[2:])

    def code(self, address: Address) -> bytes:
        """`eth_getCode` at the latest block."""
        result: str = self._rpc("eth_getCode", [address, "latest"])
        return bytes.fromhex(result[2:])

    def logs(self, *, address: Address | None = None, from_block: int = 0) -> list[Log]:
        """Logs emitted from `from_block` to the latest block, oldest first."""
        latest = self.block_number()
        if from_block > latest:
            return []  # anvil refuses a range that starts past the head
        query: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(latest)}
        if address is not None:
            query["address"] = address
        return [_log(raw) for raw in self._rpc("eth_getLogs", [query])]

    def block_number(self) -> int:
        """Number of the latest block."""
        return _int(self._rpc("eth_blockNumber", []))

    def subscribe_blocks(self, callback: Callable[[int], None]) -> Callable[[], None] | None:
        """None: blocks are not pushed over HTTP JSON-RPC; callers poll `block_number`."""
        return None

    def timestamp(self) -> int:
        """The latest block's timestamp."""
        return _int(self._latest_block()["timestamp"])

    def advance_time(self, seconds: int) -> None:
        """Move the clock forward and mine a block that carries the new time (dev chains)."""
        self._require_dev("advance_time")
        self._rpc("evm_increaseTime", [seconds])
        self._rpc("evm_mine", [])

    def snapshot(self) -> int:
        """Remember the chain state (dev chains). anvil forgets a snapshot once reverted to."""
        self._require_dev("snapshot")
        return _int(self._rpc("evm_snapshot", []))

    def revert(self, snapshot_id: int) -> None:
        """Return to the state `snapshot` remembered (dev chains)."""
        self._require_dev("revert")
        if self._rpc("evm_revert", [hex(snapshot_id)]) is not True:
            raise ConfigError(
                f"no snapshot {snapshot_id} on {self._url}: a snapshot can be reverted to once; "
                "take a new one after each revert"
            )
        # Account nonces went back with the state.
        with self._lock:
            self._nonces.clear()

    def _send(self, to: Address | None, data: bytes, sender: Address) -> TxReceipt:
        account = self._accounts.get(sender)
        if account is None:
            raise ConfigError(
                f"no key for sender {sender}: add it with add_account() or pass it in accounts="
            )
        call: dict[str, Any] = {"from": sender, "data": _hex(data)}
        if to is not None:
            call["to"] = to
        gas = _int(self._rpc("eth_estimateGas", [call])) * 5 // 4 + _GAS_MARGIN
        base_fee = self._latest_block().get("baseFeePerGas")
        if base_fee is None:
            raise ConfigError(
                f"{self._url} has no EIP-1559 base fee; Verinet needs London or later"
            )
        tip = _int(self._rpc("eth_maxPriorityFeePerGas", []))
        # Twice the base fee survives six full blocks of base-fee growth before mining.
        fields: dict[str, Any] = {
            "type": 2,
            "chainId": self._chain_id,
            "value": 0,
            "data": data,
            "gas": gas,
            "maxFeePerGas": 2 * _int(base_fee) + tip,
            "maxPriorityFeePerGas": tip,
        }
        if to is not None:
            fields["to"] = to
        with self._lock:
            tx_hash = self._sign_and_send(account, sender, fields)
        receipt = self._wait_for_receipt(tx_hash, sender)
        if _int(receipt["status"]) == 0:
            # The same gas and fees, so out-of-gas and fee-dependent code fail alike.
            limits = {
                key: hex(fields[key]) for key in ("gas", "maxFeePerGas", "maxPriorityFeePerGas")
            }
            self._raise_replayed({**call, **limits}, _int(receipt["blockNumber"]))
        contract = receipt.get("contractAddress")
        return TxReceipt(
            tx_hash=TxHash(receipt["transactionHash"]),
            block_number=_int(receipt["blockNumber"]),
            gas_used=_int(receipt["gasUsed"]),
            logs=tuple(_log(raw) for raw in receipt["logs"]),
            contract_address=_address(contract) if contract else None,
        )

    def _sign_and_send(self, account: LocalAccount, sender: Address, fields: dict[str, Any]) -> str:
        """Sign with the next nonce and send; called with the lock held."""
        for attempt in range(2):
            nonce = self._nonces.get(sender)
            if nonce is None:
                nonce = _int(self._rpc("eth_getTransactionCount", [sender, "pending"]))
            signed = account.sign_transaction({**fields, "nonce": nonce})
            tx_hash = _hex(signed.hash)
            try:
                self._rpc("eth_sendRawTransaction", [_hex(signed.raw_transaction)])
            except VerinetError as exc:
                self._nonces.pop(sender, None)
                if isinstance(exc, TransientError) or attempt == 1:
                    raise
                # A lost reply to a send that got through (web3 retries) shows up as an
                # error: the transaction is known, so it must not be sent again.
                if self._rpc("eth_getTransactionByHash", [tx_hash]) is not None:
                    self._nonces[sender] = nonce + 1
                    return tx_hash
                # A stale nonce (another client used this account) shows as a changed count:
                # re-sign once with the chain's count. Anything else is a real rejection.
                pending = _int(self._rpc("eth_getTransactionCount", [sender, "pending"]))
                if pending == nonce:
                    raise
                log.info("nonce for %s was %d, chain says %d: re-signing", sender, nonce, pending)
                continue
            self._nonces[sender] = nonce + 1
            return tx_hash
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_for_receipt(self, tx_hash: str, sender: Address) -> dict[str, Any]:
        deadline = time.monotonic() + self._receipt_timeout
        wait = 0.002
        while True:
            receipt: dict[str, Any] | None = self._rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt
            if time.monotonic() >= deadline:
                # A nonce gap would keep it queued forever: recount before the next send.
                with self._lock:
                    self._nonces.pop(sender, None)
                raise TransientError(
                    f"transaction {tx_hash} was not mined within {self._receipt_timeout:.0f} s "
                    f"on {self._url}; check that the node is mining and the fee is high enough"
                )
            time.sleep(wait)
            wait = min(wait * 2, _POLL_MAX_S)

    def _raise_replayed(self, call: dict[str, Any], block_number: int) -> NoReturn:
        """Re-execute a failed transaction on its parent block's state to get the revert data."""
        try:
            self._rpc("eth_call", [call, hex(block_number - 1)])
        except (ContractRevert, TransientError):
            raise
        except VerinetError as exc:
            # Failed without revert data (an invalid opcode, say): still this tx's revert.
            raise decode_revert(b"") from exc
        # The replay succeeded: the transaction ran out of gas (the replay has the same gas
        # limit but not the other transactions of its block), or the state moved under it.
        raise decode_revert(b"")

    def genesis_hash(self) -> bytes:
        """The hash of block `earliest` (0 on anvil and public chains)."""
        block: dict[str, Any] = self._rpc("eth_getBlockByNumber", ["earliest", False])
        return bytes.fromhex(block["hash"][2:])

    def _latest_block(self) -> dict[str, Any]:
        block: dict[str, Any] = self._rpc("eth_getBlockByNumber", ["latest", False])
        return block

    def _require_dev(self, what: str) -> None:
        if not self._dev:
            raise ConfigError(
                f"{what}() needs a dev chain: {self._url} was not opened with dev=True "
                "(evm_increaseTime, evm_snapshot and evm_revert exist on dev nodes such as anvil)"
            )

    def _rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC request; errors become Verinet errors (reverts are decoded)."""
        try:
            response = self._w3.provider.make_request(RPCEndpoint(method), params)
        except (OSError, ProviderConnectionError) as exc:
            raise ChainUnavailable(
                f"{self._url} did not answer {method}: {exc}; is the node running?"
            ) from exc
        except JsonTooDeep as exc:
            raise JsonTooDeep(f"{self._url} answered {method} with {exc}") from None
        error = cast("dict[str, Any] | None", response.get("error"))
        if error is None:
            return response.get("result")
        code, message, data = error.get("code"), error.get("message"), error.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            raise decode_revert(bytes.fromhex(data[2:]))
        if code == _EXECUTION_REVERTED:
            raise decode_revert(b"")
        if code == _METHOD_NOT_FOUND:
            raise ConfigError(f"{self._url} does not support {method}: {message}")
        if code == _RESOURCE_NOT_FOUND:
            raise StateNotKept(f"{self._url} refused {method}: {message}")
        raise VerinetError(f"{self._url} refused {method}: {message} (JSON-RPC error {code})")

    def __repr__(self) -> str:
        return f"JsonRpcChain({self._url!r}, chain_id={self._chain_id}, dev={self._dev})"
