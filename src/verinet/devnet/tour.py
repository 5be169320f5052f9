"""A scripted tour of the protocol: deploy, stake, publish, run every mode, audit the escrow.

Until the node daemon lands, jobs are driven by hand (see `verinet.devnet.jobs`); the
tour still runs the real contracts and checks every receipt and every token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from eth_utils.crypto import keccak

from verinet.chain._backend import Chain
from verinet.chain.embedded import EmbeddedChain
from verinet.devnet.audit import audit
from verinet.devnet.bootstrap import TOKEN, Network, bootstrap
from verinet.devnet.jobs import JobRun, run_quorum, run_signed
from verinet.protocol.receipts import verify_receipt
from verinet.protocol.types import JobState
from verinet.types import Address, Hash32


@dataclass(frozen=True, slots=True)
class TourRow:
    job_id: int
    scenario: str
    mode: str
    outcome: str
    check: str
    transactions: int
    gas: int


@dataclass(frozen=True, slots=True)
class TourResult:
    chain: str
    network: Network
    rows: tuple[TourRow, ...]
    audit: dict[str, int]


def _hash(label: str) -> Hash32:
    return Hash32(keccak(text=label))


@contextmanager
def open_chain(kind: str) -> Iterator[Chain]:
    """`embedded` (in-process EVM) or `anvil` (a local anvil process, JSON-RPC)."""
    if kind == "embedded":
        yield EmbeddedChain(accounts=12)
        return
    if kind != "anvil":
        raise ValueError(f"unknown chain {kind!r}: use 'embedded' or 'anvil'")
    from verinet.chain._accounts import dev_accounts
    from verinet.chain.anvil import AnvilProcess
    from verinet.chain.jsonrpc import JsonRpcChain

    with AnvilProcess.start() as anvil:
        chain = JsonRpcChain(anvil.url, dev=True)
        for account in dev_accounts(12):
            chain.add_account(account)
        yield chain


def run_tour(chain: Chain, kind: str, step: Callable[[str], None] = lambda _: None) -> TourResult:
    step("deploying contracts, staking 4 nodes, publishing a model")
    net = bootstrap(chain, nodes=4, clients=2)
    client = net.clients[0]
    d = net.deployment
    rows: list[TourRow] = []

    def record(run: JobRun, scenario: str, mode: str, check: str) -> None:
        assert run.job is not None
        rows.append(
            TourRow(
                job_id=run.job_id,
                scenario=scenario,
                mode=mode,
                outcome=run.job.state.name,
                check=check,
                transactions=len(run.transactions),
                gas=run.gas,
            )
        )

    step("signed job: one node's EIP-712 receipt")
    run = run_signed(net, client, _hash("tour input 1"), _hash("tour output 1"))
    (node,) = d.market.seats_of(run.job_id)
    # The client checks the receipt it was handed: domain, low-s signature, signer == node.
    assert run.receipt is not None
    receipt = run.receipt
    verified = verify_receipt(receipt, chain_id=chain.chain_id, market=d.market.address)
    ok = (
        str(verified) == str(node)
        and run.job is not None
        and run.job.result == _hash("tour output 1")
    )
    record(run, "honest node", "signed", "receipt verified" if ok else "RECEIPT MISMATCH")

    step("quorum(3): three nodes agree")
    run = run_quorum(net, client, _hash("tour input 2"), 3, lambda _: _hash("tour output 2"))
    record(run, "all honest", "quorum(3)", "3 of 3 agree")

    step("quorum(3): one node lies and is slashed")
    run = run_quorum(
        net, client, _hash("tour input 3"), 3, lambda seat: _hash("lie" if seat == 1 else "truth")
    )
    slashed = sum(
        e.args["amount"] for e in d.market.events(run.transactions[-1][1], "NodePenalized")
    )
    record(run, "one liar", "quorum(3)", f"liar slashed {slashed / TOKEN:g} VNET")

    step("quorum(3): no majority, the client is refunded")
    run = run_quorum(net, client, _hash("tour input 4"), 3, lambda seat: _hash(f"answer {seat}"))
    record(run, "no majority", "quorum(3)", "refunded in full")

    step("quorum(3): one node never reveals and is slashed")
    run = run_quorum(
        net, client, _hash("tour input 5"), 3, lambda seat: None if seat == 2 else _hash("five")
    )
    record(run, "one no-show", "quorum(3)", "no-show slashed after deadline")

    step("withdrawing fees and auditing the escrow")
    for account in (*net.nodes, net.model_owner, net.treasury, client):
        if d.market.owed(Address(account.address)) > 0:
            d.market.withdraw(sender=Address(account.address))
    totals = audit(net.deployment)
    if any(
        d.market.job(r.job_id).state not in (JobState.PAID, JobState.REFUNDED)  # type: ignore[arg-type]
        for r in rows
    ):
        raise AssertionError("a job did not reach a terminal state")
    return TourResult(chain=kind, network=net, rows=tuple(rows), audit=totals)
