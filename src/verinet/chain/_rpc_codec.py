"""The Ethereum JSON-RPC wire format for `rpc_server`: params in, results out, signed
transactions decoded. No chain state here: what the methods mean lives in `rpc_server`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rlp  # type: ignore[import-untyped]
from eth_abi.abi import decode
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes

from verinet.chain._backend import Log
from verinet.chain.embedded import Block, MinedTx
from verinet.types import Address, TxHash

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REFUSED = -32000  # geth's code for a transaction or request it will not serve
STATE_NOT_KEPT = -32001  # EIP-1474's "resource not found": that block's state is gone
EXECUTION_REVERTED = 3  # geth's and anvil's code for a revert; `data` holds the revert data

_ZERO_ADDRESS = "0x" + "00" * 20
ZERO_HASH = "0x" + "00" * 32
HashOf = Callable[[int], str]
"""A block's hash by number (0x-hex), as the objects below name the block they belong to."""
_ERROR_STRING = bytes.fromhex("08c379a0")


class RpcError(Exception):
    """A JSON-RPC error reply: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def reply(self, request_id: Any) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


# -- params in --------------------------------------------------------------------


def take(params: list[Any], required: int, most: int) -> list[Any]:
    """`params` padded with None to `most` entries; -32602 unless `required` are there."""
    if not required <= len(params) <= most:
        wanted = str(required) if required == most else f"{required} to {most}"
        raise invalid_params(f"expected {wanted} params, got {len(params)}")
    return params + [None] * (most - len(params))


def quantity(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value  # anvil takes plain numbers too (evm_increaseTime)
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise invalid_params(f"{what} must be a 0x-prefixed hex quantity, got {value!r:.80}")


def data(value: Any, what: str) -> bytes:
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise invalid_params(f"{what} must be 0x-prefixed hex bytes, got {value!r:.80}")


def address(value: Any, what: str) -> Address:
    raw = data(value, what)
    if len(raw) != 20:
        raise invalid_params(f"{what} must be a 20-byte address, got {len(raw)} bytes")
    return Address(to_checksum_address(raw))


def tx_hash(value: Any) -> TxHash:
    if len(data(value, "transaction hash")) != 32:
        raise invalid_params("a transaction hash has 32 bytes")
    return TxHash(str(value).lower())


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_params(f"{what} must be an object")
    return value


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise invalid_params(f"{what} must be true or false")
    return value


# -- signed transactions ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed transaction's fields and its recovered sender."""

    hash: TxHash
    type: int
    sender: Address
    chain_id: int | None  # None: a legacy transaction without EIP-155 replay protection
    nonce: int
    gas: int
    to: Address | None
    value: int
    data: bytes
    gas_price: int | None  # legacy and EIP-2930
    max_fee: int | None  # EIP-1559
    max_priority_fee: int | None
    v: int
    r: int
    s: int

    def fee_cap(self) -> int:
        return self.max_fee if self.max_fee is not None else self.gas_price or 0

    def effective_price(self, base_fee: int) -> int:
        if self.max_fee is None:
            return self.gas_price or 0
        return min(self.max_fee, base_fee + (self.max_priority_fee or 0))


def _legacy(raw: bytes, sender: Address) -> SignedTx:
    fields = [bytes(item) for item in rlp.decode(raw)]
    if len(fields) != 9:
        raise ValueError(f"a legacy transaction has 9 fields, not {len(fields)}")
    nonce, gas_price, gas, to, value, payload, v, r, s = fields
    v_int = int.from_bytes(v, "big")
    return SignedTx(
        hash=TxHash(to_hex(keccak(raw))),
        type=0,
        sender=sender,
        chain_id=(v_int - 35) // 2 if v_int >= 35 else None,
        nonce=int.from_bytes(nonce, "big"),
        gas=int.from_bytes(gas, "big"),
        to=Address(to_checksum_address(to)) if to else None,
        value=int.from_bytes(value, "big"),
        data=payload,
        gas_price=int.from_bytes(gas_price, "big"),
        max_fee=None,
        max_priority_fee=None,
        v=v_int,
        r=int.from_bytes(r, "big"),
        s=int.from_bytes(s, "big"),
    )


def decode_signed(raw: bytes) -> SignedTx:
    """Decode a signed legacy, EIP-2930 or EIP-1559 transaction and recover its sender."""
    if not raw:
        raise invalid_params("empty transaction")
    if raw[0] < 0xC0 and raw[0] not in (1, 2):
        raise RpcError(REFUSED, f"transaction type {raw[0]} not supported")
    try:
        sender = Address(to_checksum_address(Account.recover_transaction(raw)))
        if raw[0] >= 0xC0:
            return _legacy(raw, sender)
        typed = TypedTransaction.from_bytes(HexBytes(raw))
        fields = typed.as_dict()
    except Exception as exc:
        raise invalid_params(f"not a valid signed transaction: {exc}") from exc
    if fields.get("accessList"):
        # An access list pre-warms storage and costs intrinsic gas; the chain models neither.
        raise RpcError(REFUSED, "transactions with an access list are not supported here")
    to = fields.get("to")
    return SignedTx(
        hash=TxHash(to_hex(keccak(raw))),
        type=typed.transaction_type,
        sender=sender,
        chain_id=int(fields["chainId"]),
        nonce=int(fields["nonce"]),
        gas=int(fields["gas"]),
        to=Address(to_checksum_address(to)) if to else None,
        value=int(fields["value"]),
        data=bytes(fields["data"]),
        gas_price=fields.get("gasPrice"),
        max_fee=fields.get("maxFeePerGas"),
        max_priority_fee=fields.get("maxPriorityFeePerGas"),
        v=int(fields["v"]),
        r=int(fields["r"]),
        s=int(fields["s"]),
    )


# -- results out ------------------------------------------------------------------


def to_hex(raw: bytes) -> str:
    return "0x" + raw.hex()


def logs_bloom(logs: tuple[Log, ...]) -> str:
    """The logs bloom (yellow paper 4.3.1): 3 bits of 2048 for each address and topic."""
    bloom = 0
    for entry in logs:
        for item in (bytes.fromhex(entry.address[2:]), *entry.topics):
            digest = keccak(item)
            for i in (0, 2, 4):
                bloom |= 1 << (int.from_bytes(digest[i : i + 2], "big") & 2047)
    return to_hex(bloom.to_bytes(256, "big"))


def revert_error(output: bytes) -> RpcError:
    """Error 3 with the revert data, as geth and anvil report a revert."""
    message = "execution reverted"
    if output[:4] == _ERROR_STRING:
        try:
            (reason,) = decode(["string"], output[4:])
            message = f"execution reverted: {reason}"
        except Exception:
            pass  # a malformed reason still travels whole in `data`
    return RpcError(EXECUTION_REVERTED, message, to_hex(output))


def log_json(hash_of: HashOf, entry: Log) -> dict[str, Any]:
    return {
        "address": entry.address,
        "topics": [to_hex(topic) for topic in entry.topics],
        "data": to_hex(entry.data),
        "blockNumber": hex(entry.block_number),
        "blockHash": hash_of(entry.block_number),
        "transactionHash": entry.tx_hash,
        "transactionIndex": "0x0",
        "logIndex": hex(entry.log_index),
        "removed": False,
    }


def tx_json(hash_of: HashOf, mined: MinedTx, signed: SignedTx | None) -> dict[str, Any]:
    """eth_getTransactionByHash's object; `signed` is None for one sent in-process."""
    number = mined.receipt.block_number
    fields: dict[str, Any] = {
        "hash": mined.receipt.tx_hash,
        "blockHash": hash_of(number),
        "blockNumber": hex(number),
        "transactionIndex": "0x0",
        "from": mined.sender,
        "to": mined.to,
        "input": to_hex(mined.data),
        "value": hex(mined.value),
        "nonce": hex(mined.nonce),
        "gas": hex(mined.gas_limit),
        "gasPrice": hex(mined.gas_price),
        "type": hex(signed.type if signed else 0),
        "v": hex(signed.v if signed else 0),
        "r": hex(signed.r if signed else 0),
        "s": hex(signed.s if signed else 0),
    }
    if signed is not None and signed.chain_id is not None:
        fields["chainId"] = hex(signed.chain_id)
    if signed is not None and signed.type:
        fields["accessList"] = []
        fields["yParity"] = hex(signed.v)
    if signed is not None and signed.max_fee is not None:
        fields["maxFeePerGas"] = hex(signed.max_fee)
        fields["maxPriorityFeePerGas"] = hex(signed.max_priority_fee or 0)
    return fields


def receipt_json(hash_of: HashOf, mined: MinedTx, signed: SignedTx | None) -> dict[str, Any]:
    receipt = mined.receipt
    return {
        "transactionHash": receipt.tx_hash,
        "transactionIndex": "0x0",
        "blockHash": hash_of(receipt.block_number),
        "blockNumber": hex(receipt.block_number),
        "from": mined.sender,
        "to": mined.to,
        "contractAddress": receipt.contract_address,
        "cumulativeGasUsed": hex(receipt.gas_used),
        "gasUsed": hex(receipt.gas_used),
        "effectiveGasPrice": hex(mined.gas_price),
        "logs": [log_json(hash_of, entry) for entry in receipt.logs],
        "logsBloom": logs_bloom(receipt.logs),
        "status": "0x1" if mined.success else "0x0",
        "type": hex(signed.type if signed else 0),
    }


def block_json(
    hash_of: HashOf,
    block: Block,
    *,
    base_fee: int,
    gas_limit: int,
    transactions: list[Any],
) -> dict[str, Any]:
    """eth_getBlockByNumber's object; `transactions` as hashes or objects."""
    tx = block.transaction
    return {
        "number": hex(block.number),
        "hash": hash_of(block.number),
        "parentHash": hash_of(block.number - 1),
        "timestamp": hex(block.timestamp),
        "baseFeePerGas": hex(base_fee),
        "gasLimit": hex(gas_limit),
        "gasUsed": hex(tx.receipt.gas_used if tx else 0),
        "miner": _ZERO_ADDRESS,
        "difficulty": "0x0",
        "nonce": "0x0000000000000000",
        "extraData": "0x",
        "logsBloom": logs_bloom(tx.receipt.logs if tx else ()),
        "transactions": transactions,
        "uncles": [],
    }
