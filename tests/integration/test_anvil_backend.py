"""JsonRpcChain against a real anvil node, with contracts assembled by hand (no compiler)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.helpers import NOT_ELIGIBLE, REVERTS_WHEN_PAID, init_code
from verinet.chain._accounts import dev_account, dev_accounts
from verinet.chain._backend import Chain
from verinet.chain.anvil import AnvilProcess
from verinet.chain.jsonrpc import JsonRpcChain
from verinet.errors import REVERT_REASONS, ChainUnavailable, ConfigError
from verinet.types import Address

pytestmark = pytest.mark.integration

CONSTANT = bytes(range(32))
TOPIC = bytes([0xAB]) * 32
assert len(NOT_ELIGIBLE) == 100

# PUSH32 CONSTANT, PUSH0, MSTORE, PUSH1 32, PUSH0, RETURN
RETURNS_CONSTANT = b"\x7f" + CONSTANT + bytes.fromhex("5f5260205ff3")
# CODECOPY the 100 bytes of revert data that follow this 10-byte stub, then REVERT with them.
REVERTS = bytes.fromhex("6064600a5f3960645ffd") + NOT_ELIGIBLE
# LOG1(topic=TOPIC, data=calldata)
LOGS_CALLDATA = bytes.fromhex("365f5f37") + b"\x7f" + TOPIC + bytes.fromhex("365fa100")


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    with AnvilProcess.start() as node:
        yield node


@pytest.fixture(scope="module")
def chain(anvil: AnvilProcess) -> JsonRpcChain:
    return JsonRpcChain(anvil.url, dev_accounts(3), dev=True)


@pytest.fixture
def sender(chain: JsonRpcChain) -> Iterator[Address]:
    # Every test starts from, and leaves, the same chain state.
    snapshot = chain.snapshot()
    yield Address(chain.accounts[0].address)
    chain.revert(snapshot)


def deploy(chain: JsonRpcChain, runtime: bytes, sender: Address) -> Address:
    receipt = chain.deploy(init_code(runtime), sender=sender)
    assert receipt.contract_address is not None
    return receipt.contract_address


def test_is_a_chain(chain: JsonRpcChain) -> None:
    assert isinstance(chain, Chain)
    assert chain.chain_id == 31337
    assert len(chain.accounts) == 3


def test_deploy_and_call(chain: JsonRpcChain, sender: Address) -> None:
    receipt = chain.deploy(init_code(RETURNS_CONSTANT), sender=sender)
    address = receipt.contract_address
    assert address is not None and address.startswith("0x") and address != address.lower()
    assert receipt.tx_hash.startswith("0x") and len(receipt.tx_hash) == 66
    assert receipt.block_number == chain.block_number()
    assert receipt.gas_used > 21_000
    assert chain.call(address, b"anything") == CONSTANT
    assert chain.call(address, b"", sender=Address(chain.accounts[1].address)) == CONSTANT
    assert chain.code(address) == RETURNS_CONSTANT
    assert chain.code(Address(chain.accounts[1].address)) == b""  # an account has no code


def test_revert_is_decoded(chain: JsonRpcChain, sender: Address) -> None:
    address = deploy(chain, REVERTS, sender)
    with pytest.raises(REVERT_REASONS["NotEligible"]):
        chain.transact(address, b"\x01", sender=sender)
    with pytest.raises(REVERT_REASONS["NotEligible"]):
        chain.call(address, b"\x01")


def test_mined_revert_is_replayed(chain: JsonRpcChain, sender: Address) -> None:
    address = deploy(chain, REVERTS_WHEN_PAID, sender)
    assert chain.call(address, b"") == b""  # no fee, no revert: estimation passes too
    before = chain.block_number()
    with pytest.raises(REVERT_REASONS["NotEligible"]):
        chain.transact(address, b"", sender=sender)
    assert chain.block_number() == before + 1  # it was mined, and failed on-chain


def test_logs(chain: JsonRpcChain, sender: Address) -> None:
    address = deploy(chain, LOGS_CALLDATA, sender)
    receipt = chain.transact(address, b"hello", sender=sender)
    (entry,) = receipt.logs
    assert (entry.address, entry.topics, entry.data) == (address, (TOPIC,), b"hello")
    assert (entry.tx_hash, entry.block_number, entry.log_index) == (
        receipt.tx_hash,
        receipt.block_number,
        0,
    )
    chain.transact(address, b"again", sender=Address(chain.accounts[2].address))
    found = chain.logs(address=address, from_block=receipt.block_number)
    assert [log.data for log in found] == [b"hello", b"again"]
    assert chain.logs(address=address, from_block=chain.block_number() + 1) == []


def test_nonces_survive_many_transactions(chain: JsonRpcChain, sender: Address) -> None:
    address = deploy(chain, LOGS_CALLDATA, sender)
    first = chain.block_number()
    for i in range(20):
        chain.transact(address, bytes([i]), sender=sender)
    assert [log.data for log in chain.logs(address=address, from_block=first)] == [
        bytes([i]) for i in range(20)
    ]


def test_nonce_recovers_after_another_client_sent(
    anvil: AnvilProcess, chain: JsonRpcChain, sender: Address
) -> None:
    # Two processes sending from one account: each one's cached nonce goes stale in turn.
    other = JsonRpcChain(anvil.url, chain.accounts[:1])
    address = deploy(chain, LOGS_CALLDATA, sender)
    first = chain.block_number()
    for i in range(3):
        other.transact(address, b"other %d" % i, sender=sender)
        chain.transact(address, b"chain %d" % i, sender=sender)
    sent = [log.data for log in chain.logs(address=address, from_block=first)]
    assert sent == [b"%s %d" % (who, i) for i in range(3) for who in (b"other", b"chain")]


def test_advance_time(chain: JsonRpcChain, sender: Address) -> None:
    before = chain.timestamp()
    chain.advance_time(3600)
    assert chain.timestamp() >= before + 3600


def test_snapshot_and_revert(chain: JsonRpcChain, sender: Address) -> None:
    snapshot = chain.snapshot()
    before = chain.block_number()
    deploy(chain, RETURNS_CONSTANT, sender)
    chain.advance_time(10)
    assert chain.block_number() == before + 2
    chain.revert(snapshot)
    assert chain.block_number() == before
    # Nonces went back with the state, and sending still works.
    deploy(chain, RETURNS_CONSTANT, sender)
    assert chain.block_number() == before + 1


def test_unknown_sender(chain: JsonRpcChain) -> None:
    with pytest.raises(ConfigError):
        chain.deploy(init_code(RETURNS_CONSTANT), sender=Address(dev_account(99).address))


def test_dev_methods_need_dev(anvil: AnvilProcess) -> None:
    plain = JsonRpcChain(anvil.url)
    for action in (plain.snapshot, lambda: plain.advance_time(1), lambda: plain.revert(0)):
        with pytest.raises(ConfigError):
            action()


def test_stop() -> None:
    node = AnvilProcess.start()
    chain = JsonRpcChain(node.url)
    assert chain.block_number() == 0
    node.stop()
    assert not node.running
    with pytest.raises(ProcessLookupError):
        os.kill(node.pid, 0)  # reaped: no such process any more
    with pytest.raises(ChainUnavailable):
        chain.block_number()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", node.port)):
        pass
