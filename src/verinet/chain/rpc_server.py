"""Ethereum JSON-RPC 2.0 over an `EmbeddedChain`, so other processes can reach an in-process
devnet with `JsonRpcChain(url, accounts, dev=True)` as they would reach anvil.

Transactions arrive signed (legacy, EIP-2930 or EIP-1559; replay-protected by chain id; no
access lists), are checked as a node checks them (chain id, nonce, intrinsic gas, fee cap,
gas limit, funds for the value) and are mined at once, each in a block of its own, through
the chain's own execution, so gas and logs are the ones the in-process chain reports. Gas is
metered and limited as on a node but not charged. A transaction that reverts is mined with
status 0; an `eth_call` on its parent block replays it, which is how a client gets the revert
data (error 3, `data` the revert data, as from geth and anvil).

The embedded chain keeps only its latest state: state reads name the latest block (or
`latest`/`pending`), and on an older block `eth_call` answers only the replay of the failed
transaction in the block after it; any other read of an older block gets error -32001
(`StateNotKept` in `JsonRpcChain`: read again at the latest). A call without `from` comes
from the chain's first account, as `EmbeddedChain.call` does.

Methods: eth_chainId, net_version, web3_clientVersion, eth_blockNumber, eth_getBlockByNumber,
eth_getBalance, eth_getCode, eth_getTransactionCount, eth_call, eth_estimateGas, eth_gasPrice,
eth_maxPriorityFeePerGas, eth_feeHistory, eth_sendRawTransaction, eth_getTransactionByHash,
eth_getTransactionReceipt, eth_getLogs, evm_increaseTime, evm_mine, evm_snapshot, evm_revert,
anvil_setBalance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from verinet import __version__, safe_json
from verinet.chain import _rpc_codec as codec
from verinet.chain._backend import Log
from verinet.chain._rpc_codec import REFUSED, STATE_NOT_KEPT, RpcError, SignedTx, take
from verinet.chain.embedded import Block, EmbeddedChain, Outcome, intrinsic_gas
from verinet.types import Address, TxHash

__all__ = ["MAX_BODY", "rpc_app"]

log = logging.getLogger("verinet.chain")

MAX_BODY = 1 << 20
"""Largest request body accepted, in bytes; a larger one gets HTTP 413."""

_LATEST_TAGS = ("latest", "pending", "safe", "finalized")
_MAX_FEE_HISTORY = 1024
_ESTIMATE_RATIO = 0.015  # estimation stops this close to the least sufficient gas, as geth's
_CALL_STIPEND = 2_300


@dataclass(frozen=True, slots=True)
class _Call:
    """An eth_call / eth_estimateGas call object."""

    sender: Address | None
    to: Address | None
    data: bytes
    value: int
    gas: int | None
    gas_price: int

    def run(self, chain: EmbeddedChain, gas: int | None) -> Outcome:
        return chain.simulate(
            self.to,
            self.data,
            sender=self.sender,
            value=self.value,
            gas=gas,
            gas_price=self.gas_price,
        )


def _constant(read: Callable[[], Any]) -> Callable[[list[Any]], Any]:
    """A method without params."""

    def method(params: list[Any]) -> Any:
        take(params, 0, 0)
        return read()

    return method


class _Methods:
    """The JSON-RPC methods over one chain; `table` maps each name to its handler."""

    def __init__(self, chain: EmbeddedChain) -> None:
        self._chain = chain
        self._signed: dict[TxHash, SignedTx] = {}
        self.table: dict[str, Callable[[list[Any]], Any]] = {
            "anvil_setBalance": self.set_balance,
            "eth_blockNumber": _constant(lambda: hex(chain.block_number())),
            "eth_call": self.call,
            "eth_chainId": _constant(lambda: hex(chain.chain_id)),
            "eth_estimateGas": self.estimate_gas,
            "eth_feeHistory": self.fee_history,
            # Gas is not charged: nominally a transaction pays the base fee and no tip.
            "eth_gasPrice": _constant(lambda: hex(chain.base_fee())),
            "eth_getBalance": self.get_balance,
            "eth_getBlockByNumber": self.get_block,
            "eth_getCode": self.get_code,
            "eth_getLogs": self.get_logs,
            "eth_getTransactionByHash": self.get_transaction,
            "eth_getTransactionCount": self.get_transaction_count,
            "eth_getTransactionReceipt": self.get_receipt,
            "eth_maxPriorityFeePerGas": _constant(lambda: "0x0"),
            "eth_sendRawTransaction": self.send_raw_transaction,
            "evm_increaseTime": self.increase_time,
            "evm_mine": self.mine,
            "evm_revert": self.revert,
            "evm_snapshot": _constant(lambda: hex(chain.snapshot())),
            "net_version": _constant(lambda: str(chain.chain_id)),
            "web3_clientVersion": _constant(lambda: f"verinet/v{__version__}/embedded"),
        }

    # -- blocks and state -----------------------------------------------------

    def _hash_of(self, number: int) -> str:
        """Block `number`'s hash: what BLOCKHASH gives for it, so a client sees the hash the
        contracts see, and two chains (a devnet started again) never share a block's name."""
        block = self._chain.block(number)
        return codec.ZERO_HASH if block is None else codec.to_hex(block.hash)

    def _number(self, tag: Any) -> int:
        """A block tag or number as a number (it may be past the latest)."""
        if tag is None or tag in _LATEST_TAGS:
            return self._chain.block_number()
        if tag == "earliest":
            return self._chain.first_block().number
        return codec.quantity(tag, "block number")

    def _at_latest(self, tag: Any) -> None:
        number, latest = self._number(tag), self._chain.block_number()
        if number > latest:
            raise RpcError(
                REFUSED, f"header not found: block {number} is past the latest, {latest}"
            )
        if number < latest:
            raise RpcError(
                STATE_NOT_KEPT,
                f"state at block {number} is not kept: the embedded chain has only the latest "
                f"block's ({latest}); ask for 'latest'",
            )

    def get_block(self, params: list[Any]) -> dict[str, Any] | None:
        tag, full = take(params, 1, 2)
        full = full is not None and codec.flag(full, "full transactions")
        chain = self._chain
        with chain.lock:
            block = chain.block(self._number(tag))
            if block is None:
                return None
            if block.number == chain.block_number():
                # The latest block shows the time the next transaction will see, as
                # `Chain.timestamp()` promises; on a wall clock that moves with real time.
                block = Block(block.number, chain.timestamp(), block.transaction)
            tx = block.transaction
            transactions: list[Any] = []
            if tx is not None:
                signed = self._signed.get(tx.receipt.tx_hash)
                full_tx = codec.tx_json(self._hash_of, tx, signed)
                transactions.append(full_tx if full else tx.receipt.tx_hash)
            return codec.block_json(
                self._hash_of,
                block,
                base_fee=chain.base_fee(),
                gas_limit=chain.gas_limit(),
                transactions=transactions,
            )

    def get_balance(self, params: list[Any]) -> str:
        address, tag = take(params, 1, 2)
        with self._chain.lock:
            self._at_latest(tag)
            return hex(self._chain.balance(codec.address(address, "address")))

    def get_code(self, params: list[Any]) -> str:
        address, tag = take(params, 1, 2)
        with self._chain.lock:
            self._at_latest(tag)
            return codec.to_hex(self._chain.code(codec.address(address, "address")))

    def get_transaction_count(self, params: list[Any]) -> str:
        address, tag = take(params, 1, 2)
        with self._chain.lock:
            self._at_latest(tag)  # transactions are mined at once: pending is latest
            return hex(self._chain.nonce(codec.address(address, "address")))

    def fee_history(self, params: list[Any]) -> dict[str, Any]:
        count, newest, percentiles = take(params, 2, 3)
        count = min(codec.quantity(count, "block count"), _MAX_FEE_HISTORY)
        if percentiles is not None and not isinstance(percentiles, list):
            raise codec.invalid_params("reward percentiles must be an array")
        chain = self._chain
        with chain.lock:
            last = min(self._number(newest), chain.block_number())
            found = [chain.block(n) for n in range(last - count + 1, last + 1)]
            blocks = [block for block in found if block is not None]
            limit, base_fee = chain.gas_limit(), chain.base_fee()
        history: dict[str, Any] = {
            "oldestBlock": hex(blocks[0].number if blocks else last),
            "baseFeePerGas": [hex(base_fee)] * (len(blocks) + 1),
            "gasUsedRatio": [
                (b.transaction.receipt.gas_used if b.transaction else 0) / limit for b in blocks
            ],
        }
        if percentiles is not None:
            history["reward"] = [["0x0"] * len(percentiles) for _ in blocks]
        return history

    # -- calls ----------------------------------------------------------------

    def _call_object(self, value: Any) -> _Call:
        call = codec.json_object(value, "call")
        to, sender, gas, amount = (
            call.get("to"),
            call.get("from"),
            call.get("gas"),
            call.get("value"),
        )
        data = call.get("input", call.get("data"))
        if call.get("gasPrice") is not None:
            gas_price = codec.quantity(call["gasPrice"], "gasPrice")
        elif call.get("maxFeePerGas") is not None:
            cap = codec.quantity(call["maxFeePerGas"], "maxFeePerGas")
            tip = codec.quantity(call.get("maxPriorityFeePerGas") or 0, "maxPriorityFeePerGas")
            gas_price = min(cap, self._chain.base_fee() + tip)
        else:
            gas_price = 0
        return _Call(
            sender=None if sender is None else codec.address(sender, "from"),
            to=None if to is None else codec.address(to, "to"),
            data=b"" if data is None else codec.data(data, "input"),
            value=0 if amount is None else codec.quantity(amount, "value"),
            gas=None if gas is None else codec.quantity(gas, "gas"),
            gas_price=gas_price,
        )

    def _check_gas(self, gas: int | None, data: bytes, *, create: bool) -> None:
        if gas is None:
            return
        least = max(intrinsic_gas(data, create=create))
        if gas < least:
            raise RpcError(REFUSED, f"intrinsic gas too low: gas {gas}, minimum needed {least}")
        if gas > self._chain.gas_limit():
            raise RpcError(REFUSED, f"exceeds block gas limit: gas {gas}")

    def _replay(self, call: _Call, number: int) -> RpcError | None:
        """The revert of the failed transaction in block `number + 1`, if `call` is it."""
        block = self._chain.block(number + 1)
        tx = block.transaction if block else None
        if (
            tx is None
            or tx.success
            or (call.sender, call.to, call.data) != (tx.sender, tx.to, tx.data)
        ):
            return None
        return codec.revert_error(tx.output)

    def call(self, params: list[Any]) -> str:
        raw_call, tag = take(params, 1, 2)
        call = self._call_object(raw_call)
        chain = self._chain
        with chain.lock:
            replayed = self._replay(call, self._number(tag))
            if replayed is not None:
                raise replayed
            self._at_latest(tag)
            self._check_gas(call.gas, call.data, create=call.to is None)
            outcome = call.run(chain, call.gas)
        if not outcome.success:
            raise codec.revert_error(outcome.output)
        return codec.to_hex(outcome.output)

    def estimate_gas(self, params: list[Any]) -> str:
        """The least gas limit the call succeeds with, to within 1.5% (searched as geth does)."""
        raw_call, tag = take(params, 1, 2)
        call = self._call_object(raw_call)
        chain = self._chain
        with chain.lock:  # every try sees the same state
            self._at_latest(tag)
            self._check_gas(call.gas, call.data, create=call.to is None)
            high = chain.gas_limit() if call.gas is None else call.gas
            first = call.run(chain, high)
            if not first.success:
                raise codec.revert_error(first.output)
            # It cannot succeed below its gas used; refunds (up to a fifth) and the 63/64 rule
            # for calls usually put the need a little above that.
            least = max(first.gas_used, *intrinsic_gas(call.data, create=call.to is None))
            low = least - 1
            for guess in (least, (least * 5 // 4 + _CALL_STIPEND) * 64 // 63):
                if guess >= high:
                    break
                if call.run(chain, guess).success:
                    high = guess
                    break
                low = guess
            while high - low > max(1, int(high * _ESTIMATE_RATIO)):
                middle = (low + high) // 2
                if call.run(chain, middle).success:
                    high = middle
                else:
                    low = middle
        return hex(high)

    # -- transactions ---------------------------------------------------------

    def send_raw_transaction(self, params: list[Any]) -> str:
        (raw,) = take(params, 1, 1)
        tx = codec.decode_signed(codec.data(raw, "signed transaction"))
        chain = self._chain
        if tx.chain_id is None:
            raise RpcError(REFUSED, "only replay-protected (EIP-155) transactions allowed over RPC")
        if tx.chain_id != chain.chain_id:
            raise RpcError(
                REFUSED, f"invalid chain id for signer: have {tx.chain_id} want {chain.chain_id}"
            )
        self._check_gas(tx.gas, tx.data, create=tx.to is None)
        if tx.max_fee is not None and (tx.max_priority_fee or 0) > tx.max_fee:
            raise RpcError(REFUSED, "max priority fee per gas higher than max fee per gas")
        with chain.lock:  # nothing else may use the nonce between the check and the mining
            base_fee = chain.base_fee()
            if tx.fee_cap() < base_fee:
                raise RpcError(
                    REFUSED,
                    f"max fee per gas less than block base fee: address {tx.sender}, "
                    f"maxFeePerGas: {tx.fee_cap()}, baseFee: {base_fee}",
                )
            expected = chain.nonce(tx.sender)
            if tx.nonce != expected:
                which = "low" if tx.nonce < expected else "high"
                raise RpcError(
                    REFUSED,
                    f"nonce too {which}: address {tx.sender}, tx: {tx.nonce} state: {expected}",
                )
            balance = chain.balance(tx.sender)
            if tx.value > balance:
                raise RpcError(
                    REFUSED,
                    f"insufficient funds for transfer: address {tx.sender} "
                    f"have {balance} want {tx.value}",
                )
            self._signed[tx.hash] = tx
            mined = chain.mine(
                tx.to,
                tx.data,
                sender=tx.sender,
                value=tx.value,
                gas=tx.gas,
                gas_price=tx.effective_price(base_fee),
                tx_hash=tx.hash,
            )
        if not mined.success:
            log.debug("transaction %s failed in block %d", tx.hash, mined.receipt.block_number)
        return tx.hash

    def get_transaction(self, params: list[Any]) -> dict[str, Any] | None:
        (tx_hash,) = take(params, 1, 1)
        mined = self._chain.transaction(codec.tx_hash(tx_hash))
        if mined is None:
            return None
        signed = self._signed.get(mined.receipt.tx_hash)
        return codec.tx_json(self._hash_of, mined, signed)

    def get_receipt(self, params: list[Any]) -> dict[str, Any] | None:
        (tx_hash,) = take(params, 1, 1)
        mined = self._chain.transaction(codec.tx_hash(tx_hash))
        if mined is None:
            return None
        signed = self._signed.get(mined.receipt.tx_hash)
        return codec.receipt_json(self._hash_of, mined, signed)

    def get_logs(self, params: list[Any]) -> list[dict[str, Any]]:
        (query,) = take(params, 1, 1)
        query = codec.json_object(query, "filter")
        if "blockHash" in query:
            raise codec.invalid_params(
                "filter by fromBlock and toBlock; blockHash is not supported"
            )
        addresses = query.get("address")
        if addresses is not None and not isinstance(addresses, list):
            addresses = [addresses]
        wanted = None if addresses is None else {codec.address(a, "address") for a in addresses}
        topics = query.get("topics") or []
        if not isinstance(topics, list):
            raise codec.invalid_params("topics must be an array")
        # Per position: None matches anything, else any of a set of topics.
        allowed = [
            None
            if slot is None
            else {codec.data(t, "topic") for t in (slot if isinstance(slot, list) else [slot])}
            for slot in topics
        ]
        chain = self._chain
        with chain.lock:
            start = self._number(query.get("fromBlock"))
            end = min(self._number(query.get("toBlock")), chain.block_number())
            found = chain.logs(from_block=start) if start <= end else []

        def matches(entry: Log) -> bool:
            if entry.block_number > end or (wanted is not None and entry.address not in wanted):
                return False
            # As geth: a log with fewer topics than the filter has positions never matches.
            return len(entry.topics) >= len(allowed) and all(
                choice is None or topic in choice
                for topic, choice in zip(entry.topics, allowed, strict=False)
            )

        return [codec.log_json(self._hash_of, entry) for entry in found if matches(entry)]

    # -- dev methods ----------------------------------------------------------

    def set_balance(self, params: list[Any]) -> None:
        address, wei = take(params, 2, 2)
        self._chain.set_balance(codec.address(address, "address"), codec.quantity(wei, "balance"))

    def increase_time(self, params: list[Any]) -> str:
        (seconds,) = take(params, 1, 1)
        seconds = codec.quantity(seconds, "seconds")
        self._chain.advance_time(seconds)
        return hex(seconds)

    def mine(self, params: list[Any]) -> str:
        (timestamp,) = take(params, 0, 1)
        chain = self._chain
        with chain.lock:
            now = chain.timestamp()
            target = now if timestamp is None else codec.quantity(timestamp, "timestamp")
            if target < now:
                raise codec.invalid_params(f"timestamp {target} is before the chain's time {now}")
            chain.advance_time(target - now)
        return "0x0"

    def revert(self, params: list[Any]) -> bool:
        (snapshot_id,) = take(params, 1, 1)
        try:
            self._chain.revert(codec.quantity(snapshot_id, "snapshot id"))
        except ValueError:
            return False  # unknown, or already reverted to: anvil answers false as well
        return True

    # -- dispatch -------------------------------------------------------------

    def handle(self, body: bytes) -> Any:
        """The reply to one HTTP body: an object, a list (batch), or None (notifications)."""
        try:
            request = safe_json.loads(body)
        except ValueError as exc:  # JsonTooDeep included: parsing it could crash the process
            return RpcError(codec.PARSE_ERROR, f"parse error: {exc}").reply(None)
        if not isinstance(request, list):
            return self._one(request)
        if not request:
            return RpcError(codec.INVALID_REQUEST, "empty batch").reply(None)
        replies = [reply for reply in map(self._one, request) if reply is not None]
        return replies or None

    def _one(self, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return RpcError(codec.INVALID_REQUEST, "a request must be an object").reply(None)
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int, type(None))):
            return RpcError(codec.INVALID_REQUEST, "id must be a string, number or null").reply(
                None
            )
        name, params = request.get("method"), request.get("params", [])
        try:
            if request.get("jsonrpc") != "2.0" or not isinstance(name, str):
                raise RpcError(
                    codec.INVALID_REQUEST, 'a request needs "jsonrpc": "2.0" and a method'
                )
            method = self.table.get(name)
            if method is None:
                raise RpcError(
                    codec.METHOD_NOT_FOUND, f"the method {name} does not exist/is not available"
                )
            if not isinstance(params, list):
                raise codec.invalid_params("params must be an array")
            result = method(list(params))
        except RpcError as exc:
            reply = exc.reply(request_id)
        except ValueError as exc:  # the chain refused an argument (a negative time, say)
            reply = codec.invalid_params(str(exc)).reply(request_id)
        except Exception:
            log.exception("JSON-RPC %s failed", name)
            reply = RpcError(codec.INTERNAL_ERROR, f"internal error in {name}").reply(request_id)
        else:
            reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
        return reply if "id" in request else None  # a notification gets no reply


async def _read_body(request: Request) -> bytes | None:
    """The body, or None once it is over `MAX_BODY` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def rpc_app(chain: EmbeddedChain) -> Starlette:
    """An ASGI app answering Ethereum JSON-RPC 2.0 (single and batch requests) on POST `/`.

    Serve it on loopback (`verinet._server.serve`, or uvicorn) and point
    `JsonRpcChain(url, accounts, dev=True)` at it. Requests run in worker threads; the
    chain's lock takes them into the EVM one at a time.
    """
    methods = _Methods(chain)

    async def endpoint(request: Request) -> Response:
        body = await _read_body(request)
        if body is None:
            too_large = RpcError(codec.INVALID_REQUEST, f"request body over {MAX_BODY} bytes")
            return JSONResponse(too_large.reply(None), status_code=413)
        reply = await run_in_threadpool(methods.handle, body)
        if reply is None:
            return Response(status_code=204)
        return JSONResponse(reply)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])
