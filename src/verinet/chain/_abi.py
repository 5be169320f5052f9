"""ABI plumbing shared by the typed contract wrappers: encode calls, decode results and logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from verinet.chain import artifacts
from verinet.chain._backend import Chain, Log, TxReceipt
from verinet.types import Address, TxHash


def _type(param: Mapping[str, Any]) -> str:
    """Canonical ABI type string, expanding tuples (structs) recursively."""
    t: str = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(_type(c) for c in param["components"])
        return f"({inner}){t[len('tuple') :]}"
    return t


def _normalize(value: Any, abi_type: str) -> Any:
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.startswith("(") and isinstance(value, tuple):
        inner = _split_tuple(abi_type)
        return tuple(_normalize(v, t) for v, t in zip(value, inner, strict=True))
    if abi_type.endswith("[]") and isinstance(value, (tuple, list)):
        return tuple(_normalize(v, abi_type[:-2]) for v in value)
    return value


def _split_tuple(abi_type: str) -> list[str]:
    body = abi_type[1 : abi_type.rindex(")")]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return parts


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    selector: bytes


@dataclass(frozen=True, slots=True)
class _EventAbi:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]
    indexed: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded contract event."""

    name: str
    args: Mapping[str, Any]
    address: Address
    block_number: int
    tx_hash: TxHash
    log_index: int


class BoundContract:
    """A deployed contract of kind `NAME` at `address` on `chain`."""

    NAME: ClassVar[str]

    def __init__(self, chain: Chain, address: Address) -> None:
        self.chain = chain
        self.address = Address(to_checksum_address(address))
        abi = artifacts.load(self.NAME).abi
        self._functions: dict[str, _Function] = {}
        self._events: dict[bytes, _EventAbi] = {}
        for item in abi:
            if item["type"] == "function":
                inputs = tuple(_type(p) for p in item["inputs"])
                signature = f"{item['name']}({','.join(inputs)})"
                self._functions[item["name"]] = _Function(
                    name=item["name"],
                    inputs=inputs,
                    outputs=tuple(_type(p) for p in item["outputs"]),
                    selector=keccak(text=signature)[:4],
                )
            elif item["type"] == "event":
                types = tuple(_type(p) for p in item["inputs"])
                topic = keccak(text=f"{item['name']}({','.join(types)})")
                self._events[topic] = _EventAbi(
                    name=item["name"],
                    names=tuple(p["name"] for p in item["inputs"]),
                    types=types,
                    indexed=tuple(bool(p["indexed"]) for p in item["inputs"]),
                )

    def calldata(self, fn: str, *args: Any) -> bytes:
        f = self._functions[fn]
        return f.selector + encode(list(f.inputs), list(args))

    def _call(self, fn: str, *args: Any) -> Any:
        f = self._functions[fn]
        raw = self.chain.call(self.address, self.calldata(fn, *args))
        values = decode(list(f.outputs), raw)
        out = tuple(_normalize(v, t) for v, t in zip(values, f.outputs, strict=True))
        return out[0] if len(out) == 1 else out

    def _send(self, fn: str, *args: Any, sender: Address) -> TxReceipt:
        return self.chain.transact(self.address, self.calldata(fn, *args), sender=sender)

    def decode_logs(self, logs: Iterable[Log]) -> list[Event]:
        """Decode the logs this contract emitted; others are skipped."""
        events = []
        for log in logs:
            if log.address != self.address or not log.topics:
                continue
            abi = self._events.get(log.topics[0])
            if abi is None:
                continue
            topics = iter(log.topics[1:])
            data_types = [t for t, ix in zip(abi.types, abi.indexed, strict=True) if not ix]
            data_values = iter(decode(data_types, log.data))
            args: dict[str, Any] = {}
            for name, t, ix in zip(abi.names, abi.types, abi.indexed, strict=True):
                value = decode([t], next(topics))[0] if ix else next(data_values)
                args[name] = _normalize(value, t)
            events.append(
                Event(
                    name=abi.name,
                    args=args,
                    address=log.address,
                    block_number=log.block_number,
                    tx_hash=log.tx_hash,
                    log_index=log.log_index,
                )
            )
        return events

    def events(self, receipt: TxReceipt, name: str | None = None) -> list[Event]:
        """Events of this contract in `receipt`, optionally only those called `name`."""
        return [e for e in self.decode_logs(receipt.logs) if name is None or e.name == name]

    def history(self, name: str | None = None, *, from_block: int = 0) -> list[Event]:
        """Every event this contract emitted since `from_block` (optionally one kind)."""
        logs = self.chain.logs(address=self.address, from_block=from_block)
        return [e for e in self.decode_logs(logs) if name is None or e.name == name]


def deploy_contract(
    chain: Chain, name: str, types: Sequence[str], args: Sequence[Any], *, sender: Address
) -> tuple[Address, TxReceipt]:
    """Deploy artifact `name` with ABI-encoded constructor `args`."""
    artifact = artifacts.load(name)
    receipt = chain.deploy(artifact.bytecode + encode(list(types), list(args)), sender=sender)
    if receipt.contract_address is None:
        raise RuntimeError(f"deploying {name} returned no contract address")
    return receipt.contract_address, receipt
