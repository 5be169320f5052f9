"""Assertions shared by the contract, conformance and property tests."""

from __future__ import annotations

from eth_utils.crypto import keccak

from verinet.devnet.bootstrap import Network
from verinet.protocol.types import JobState
from verinet.types import Address, Hash32, JobId


def h(label: str) -> Hash32:
    return Hash32(keccak(text=label))


def addr(account: object) -> Address:
    return Address(account.address)  # type: ignore[attr-defined]


def assert_nothing_lost(net: Network) -> None:
    """The escrow audit: every token the market and registry hold is accounted for.

    market balance == open escrows + what it owes; registry balance == everything
    bonded; and for every job, payouts + refund + fees == escrow (checked from events).
    """
    d = net.deployment
    assert d.token.balance_of(d.market.address) == d.market.total_escrow() + d.market.total_owed()
    assert d.token.balance_of(d.nodes.address) == d.nodes.total_bonded()
    assert d.token.total_supply() == 1_000_000_000 * 10**18
    open_escrow = 0
    paid = {e.args["job_id"]: e.args for e in d.market.history("JobPaid")}
    refunded = {e.args["job_id"]: e.args for e in d.market.history("JobRefunded")}
    for job_id in range(1, d.market.job_count() + 1):
        job = d.market.job(JobId(job_id))
        if job.state is JobState.PAID:
            p = paid[job_id]
            total = p["node_amount"] * p["winners"] + p["owner_amount"] + p["treasury_amount"]
            assert total == job.escrow, f"job {job_id}: paid {total} of escrow {job.escrow}"
            assert job_id not in refunded
        elif job.state is JobState.REFUNDED:
            assert refunded[job_id]["amount"] == job.escrow
            assert job_id not in paid
        else:
            open_escrow += job.escrow
    assert open_escrow == d.market.total_escrow()
