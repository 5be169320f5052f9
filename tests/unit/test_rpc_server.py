"""The JSON-RPC server over an EmbeddedChain, driven by `JsonRpcChain` as another process
would drive it; and the embedded chain's wall clock and lock.

The server runs on loopback in this process; every test sees the bootstrapped protocol in
the same state (snapshot before, revert after, over JSON-RPC).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import REVERTS_WHEN_PAID, addr, h, init_code
from verinet._server import serve
from verinet.chain import EmbeddedChain, dev_account, dev_accounts
from verinet.chain.deploy import Deployment
from verinet.chain.jsonrpc import JsonRpcChain
from verinet.chain.rpc_server import MAX_BODY, rpc_app
from verinet.devnet.audit import audit
from verinet.devnet.bootstrap import Network, bootstrap
from verinet.devnet.jobs import run_quorum, run_signed
from verinet.errors import ConfigError, NotEligible, StateNotKept, TooEarly
from verinet.protocol.types import JobState, Mode
from verinet.types import Address, Wei

NODES = 4
CLIENTS = 2
ACCOUNTS = 3 + NODES + CLIENTS + 1


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[EmbeddedChain, str]]:
    chain = EmbeddedChain(accounts=ACCOUNTS)
    with serve(rpc_app(chain)) as url:
        yield chain, url


@pytest.fixture(scope="module")
def _rpc_net(served: tuple[EmbeddedChain, str]) -> Network:
    _, url = served
    chain = JsonRpcChain(url, dev_accounts(ACCOUNTS), dev=True)
    return bootstrap(chain, nodes=NODES, clients=CLIENTS)


@pytest.fixture
def rpc_net(_rpc_net: Network) -> Iterator[Network]:
    snapshot = _rpc_net.chain.snapshot()
    try:
        yield _rpc_net
    finally:
        _rpc_net.chain.revert(snapshot)


@pytest.fixture
def embedded(served: tuple[EmbeddedChain, str], rpc_net: Network) -> EmbeddedChain:
    """The chain behind the server, in the state `rpc_net` sees."""
    return served[0]


@pytest.fixture
def url(served: tuple[EmbeddedChain, str], rpc_net: Network) -> str:
    return served[1]


def rpc(url: str, method: str, *params: Any) -> dict[str, Any]:
    """One raw JSON-RPC request; the whole reply (result or error)."""
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    reply: dict[str, Any] = httpx.post(url, json=body).json()
    assert reply["id"] == 7
    return reply


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert "result" not in reply, reply
    error: dict[str, Any] = reply["error"]
    return error


# -- the protocol over JSON-RPC ----------------------------------------------------


def test_protocol_runs_over_json_rpc(rpc_net: Network, embedded: EmbeddedChain) -> None:
    assert isinstance(rpc_net.chain, JsonRpcChain)
    d = rpc_net.deployment
    assert d.nodes.node_count() == NODES
    assert embedded.code(d.market.address) != b""
    signed = run_signed(rpc_net, rpc_net.clients[0], h("in"), h("out"))
    assert signed.job is not None and signed.job.state is JobState.PAID
    assert signed.job.result == h("out")
    quorum = run_quorum(
        rpc_net, rpc_net.clients[1], h("q"), 3, lambda seat: h("bad") if seat == 2 else h("good")
    )
    assert quorum.job is not None and quorum.job.state is JobState.PAID
    assert quorum.job.result == h("good")
    (penalty,) = d.market.events(quorum.transactions[-1][1], "NodePenalized")
    assert penalty.args["node"] == d.market.seats_of(quorum.job_id)[2]
    # What the client was told is what the chain mined: hash, block, gas and logs.
    for _, receipt in signed.transactions + quorum.transactions:
        mined = embedded.transaction(receipt.tx_hash)
        assert mined is not None and mined.success
        assert mined.receipt == receipt


def test_logs_match_the_chain(rpc_net: Network, embedded: EmbeddedChain, url: str) -> None:
    start = rpc_net.chain.block_number() + 1
    run = run_signed(rpc_net, rpc_net.clients[0], h("logs"), h("out"))
    market = rpc_net.deployment.market.address
    over_rpc = rpc_net.chain.logs(address=market, from_block=start)
    assert over_rpc == embedded.logs(address=market, from_block=start)
    assert {entry.tx_hash for entry in over_rpc} == {r.tx_hash for _, r in run.transactions}
    # Topic filters: exact, any-of, and a wildcard position.
    paid = [e for e in over_rpc if e.topics[0] == over_rpc[-1].topics[0]]
    topic = "0x" + paid[0].topics[0].hex()
    query = {"fromBlock": hex(start), "toBlock": "latest", "topics": [topic]}
    found = rpc(url, "eth_getLogs", query)["result"]
    assert [(x["transactionHash"], x["logIndex"]) for x in found] == [
        (e.tx_hash, hex(e.log_index)) for e in paid
    ]
    anywhere = {**query, "address": [market, rpc_net.deployment.token.address]}
    assert len(rpc(url, "eth_getLogs", anywhere)["result"]) == len(paid)
    assert rpc(url, "eth_getLogs", {**query, "address": rpc_net.deployment.token.address}) == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": [],
    }
    too_many = {**query, "topics": [topic, None, None, None, None]}
    assert rpc(url, "eth_getLogs", too_many)["result"] == []
    assert rpc(url, "eth_getLogs", {**query, "fromBlock": hex(start + 1000)})["result"] == []


def test_typed_revert_is_the_same_class_as_embedded(
    rpc_net: Network, embedded: EmbeddedChain
) -> None:
    d, client = rpc_net.deployment, addr(rpc_net.clients[0])
    job_id, _ = d.market.request(rpc_net.model_id, h("early"), Mode.QUORUM, 3, sender=client)
    with pytest.raises(TooEarly):
        d.market.finalize(job_id, sender=client)
    with pytest.raises(NotEligible):
        d.market.commit(job_id, h("c"), sender=client)
    # The same contracts reached in-process raise the same classes.
    direct = Deployment.at(embedded, d.addresses())
    with pytest.raises(TooEarly):
        direct.market.finalize(job_id, sender=client)


def test_mined_revert_has_a_status_0_receipt(
    rpc_net: Network, embedded: EmbeddedChain, url: str
) -> None:
    chain, sender = rpc_net.chain, addr(rpc_net.clients[0])
    deployed = chain.deploy(init_code(REVERTS_WHEN_PAID), sender=sender).contract_address
    assert deployed is not None
    assert chain.call(deployed, b"") == b""  # no fee, no revert: estimation passes too
    before, nonce = chain.block_number(), embedded.nonce(sender)
    with pytest.raises(NotEligible):
        chain.transact(deployed, b"", sender=sender)
    assert chain.block_number() == before + 1
    (tx_hash,) = rpc(url, "eth_getBlockByNumber", "latest", False)["result"]["transactions"]
    receipt = rpc(url, "eth_getTransactionReceipt", tx_hash)["result"]
    assert (receipt["status"], receipt["logs"], receipt["from"]) == ("0x0", [], sender)
    assert int(receipt["gasUsed"], 16) > 21_000
    assert embedded.nonce(sender) == nonce + 1  # a failed transaction still uses its nonce
    after = rpc_net.deployment.token.transfer(addr(rpc_net.clients[1]), Wei(1), sender=sender)
    assert after.block_number == before + 2 and embedded.nonce(sender) == nonce + 2


def test_replayed_or_misnumbered_transaction_is_refused(
    rpc_net: Network, embedded: EmbeddedChain, url: str
) -> None:
    token, account = rpc_net.deployment.token, rpc_net.clients[0]
    to, sender = addr(rpc_net.clients[1]), addr(account)
    base_fee = int(rpc(url, "eth_gasPrice")["result"], 16)
    fields: dict[str, Any] = {
        "type": 2,
        "chainId": embedded.chain_id,
        "to": token.address,
        "value": 0,
        "data": token.calldata("transfer", to, 5),
        "gas": 200_000,
        "maxFeePerGas": 2 * base_fee,
        "maxPriorityFeePerGas": 0,
    }
    nonce = int(rpc(url, "eth_getTransactionCount", sender, "pending")["result"], 16)
    raw = "0x" + account.sign_transaction({**fields, "nonce": nonce}).raw_transaction.hex()
    before = token.balance_of(to)
    tx_hash = rpc(url, "eth_sendRawTransaction", raw)["result"]
    assert rpc(url, "eth_getTransactionReceipt", tx_hash)["result"]["status"] == "0x1"
    assert rpc(url, "eth_getTransactionByHash", tx_hash)["result"]["nonce"] == hex(nonce)
    again = error_of(rpc(url, "eth_sendRawTransaction", raw))
    assert again["code"] == -32000 and again["message"].startswith("nonce too low")
    assert token.balance_of(to) == before + 5  # paid once
    ahead = account.sign_transaction({**fields, "nonce": nonce + 5}).raw_transaction.hex()
    assert error_of(rpc(url, "eth_sendRawTransaction", "0x" + ahead))["message"].startswith(
        "nonce too high"
    )
    other_chain = {**fields, "nonce": nonce + 1, "chainId": embedded.chain_id + 1}
    raw_other = account.sign_transaction(other_chain).raw_transaction.hex()
    assert "chain id" in error_of(rpc(url, "eth_sendRawTransaction", "0x" + raw_other))["message"]
    # A legacy EIP-155 transaction is mined too; one without a chain id is not.
    legacy = {k: v for k, v in fields.items() if not k.startswith("max") and k != "type"}
    legacy.update(gasPrice=base_fee, nonce=nonce + 1)
    raw_legacy = account.sign_transaction(legacy).raw_transaction.hex()
    legacy_hash = rpc(url, "eth_sendRawTransaction", "0x" + raw_legacy)["result"]
    assert rpc(url, "eth_getTransactionReceipt", legacy_hash)["result"]["status"] == "0x1"
    unprotected = {k: v for k, v in legacy.items() if k != "chainId"}
    unprotected["nonce"] = nonce + 2
    raw_unprotected = account.sign_transaction(unprotected).raw_transaction.hex()
    refused = error_of(rpc(url, "eth_sendRawTransaction", "0x" + raw_unprotected))
    assert "replay-protected" in refused["message"]
    assert token.balance_of(to) == before + 10
    assert embedded.nonce(sender) == nonce + 2


def test_advance_time_and_snapshots(rpc_net: Network, embedded: EmbeddedChain) -> None:
    chain = rpc_net.chain
    before, block = chain.timestamp(), chain.block_number()
    chain.advance_time(3600)
    assert chain.timestamp() == embedded.timestamp() == before + 3600
    assert chain.block_number() > block
    snapshot = chain.snapshot()
    chain.advance_time(60)
    chain.revert(snapshot)
    assert (chain.timestamp(), embedded.timestamp()) == (before + 3600, before + 3600)
    with pytest.raises(ConfigError):
        chain.revert(snapshot)  # a snapshot is good for one revert, as on anvil


# -- the JSON-RPC envelope ----------------------------------------------------------


def test_json_rpc_errors_and_batches(url: str) -> None:
    unknown = error_of(rpc(url, "eth_mining"))
    assert unknown["code"] == -32601 and "eth_mining" in unknown["message"]
    assert error_of(rpc(url, "eth_getBalance", "not hex"))["code"] == -32602
    assert error_of(rpc(url, "eth_blockNumber", "extra"))["code"] == -32602
    malformed = httpx.post(url, content=b'{"jsonrpc": "2.0", "id": 1, "method"')
    assert malformed.json()["error"]["code"] == -32700
    deep = httpx.post(url, content=b"[" * 200_000)  # would overflow json's C parser
    assert (
        deep.json()["error"]["code"] == -32700 and "deeper than" in deep.json()["error"]["message"]
    )
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # a notification
        {"jsonrpc": "2.0", "id": "b", "method": "nope", "params": []},
    ]
    replies = httpx.post(url, json=batch).json()
    assert [reply["id"] for reply in replies] == [1, "b"]
    assert replies[0]["result"] == hex(31337) and replies[1]["error"]["code"] == -32601
    assert httpx.post(url, json=[]).json()["error"]["code"] == -32600
    assert httpx.post(url, json=batch[1]).status_code == 204
    too_big = httpx.post(url, content=b" " * (MAX_BODY + 1))
    assert too_big.status_code == 413


def test_state_is_only_read_at_the_latest_block(url: str, rpc_net: Network) -> None:
    latest = rpc_net.chain.block_number()
    sender = addr(rpc_net.clients[0])
    assert rpc(url, "eth_getTransactionCount", sender, hex(latest))["result"].startswith("0x")
    assert error_of(rpc(url, "eth_getBalance", sender, hex(latest - 1)))["code"] == -32001
    call = {"to": rpc_net.deployment.token.address, "data": "0x"}
    assert error_of(rpc(url, "eth_call", call, hex(latest + 1)))["code"] == -32000


def test_an_older_block_is_state_not_kept_and_the_audit_reads_the_latest(
    rpc_net: Network,
) -> None:
    chain, d = rpc_net.chain, rpc_net.deployment
    assert isinstance(chain, JsonRpcChain)
    latest = chain.block_number()
    data = d.token.calldata("totalSupply")
    assert chain.call(d.token.address, data, block=latest) == chain.call(d.token.address, data)
    with pytest.raises(StateNotKept):
        chain.call(d.token.address, data, block=latest - 1)
    assert audit(d)["block"] == latest  # it fell back from the block before


def test_the_genesis_hash_is_the_first_blocks(rpc_net: Network, embedded: EmbeddedChain) -> None:
    assert rpc_net.chain.genesis_hash() == embedded.genesis_hash() == embedded.first_block().hash
    later = EmbeddedChain(accounts=1, start_time=embedded.first_block().timestamp + 1)
    assert later.genesis_hash() != embedded.genesis_hash()  # a chain started later differs


# -- the embedded chain's clock and lock --------------------------------------------


def test_wall_clock_follows_real_time() -> None:
    manual = EmbeddedChain(accounts=1, start_time=1_000_000)
    assert manual.timestamp() == 1_000_000
    wall = EmbeddedChain(accounts=1, start_time=1_000_000, clock="wall")
    assert wall.timestamp() >= time.time() - 1
    wall.advance_time(3600)
    assert wall.timestamp() >= time.time() + 3600 - 1
    ahead = wall.timestamp()
    receipt = wall.deploy(init_code(b"\x00"), sender=Address(wall.accounts[0].address))
    block = wall.block(receipt.block_number)
    assert block is not None and block.timestamp >= ahead  # never backwards
    with serve(rpc_app(wall)) as url:
        assert JsonRpcChain(url).timestamp() >= time.time() + 3600 - 1
    with pytest.raises(ConfigError):
        EmbeddedChain(accounts=1, clock="sundial")  # type: ignore[arg-type]


def test_threads_share_one_embedded_chain(net: Network) -> None:
    d, chain = net.deployment, net.chain
    assert isinstance(chain, EmbeddedChain)
    senders = [addr(node) for node in net.nodes[:4]]
    recipients = [Address(dev_account(1000 + i).address) for i in range(4)]
    start_balances = [d.token.balance_of(s) for s in senders]
    start_block = chain.block_number()
    barrier = threading.Barrier(len(senders))
    hashes: list[list[str]] = [[] for _ in senders]
    failures: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait()
            for amount in range(1, 51):
                receipt = d.token.transfer(recipients[i], Wei(amount), sender=senders[i])
                hashes[i].append(receipt.tx_hash)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(senders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    sent = sum(range(1, 51))
    assert [d.token.balance_of(r) for r in recipients] == [sent] * 4
    assert [d.token.balance_of(s) for s in senders] == [b - sent for b in start_balances]
    assert chain.block_number() == start_block + 200
    assert len({tx for per_thread in hashes for tx in per_thread}) == 200
