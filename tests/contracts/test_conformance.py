"""One conformance suite, every backend: the embedded EVM and anvil over JSON-RPC.

Each test runs once per backend through the `any_net` fixture (as web3.py's
module_testing runs one test class against each provider).
"""

from __future__ import annotations

import pytest

from tests.helpers import addr, assert_nothing_lost, h
from verinet.devnet.bootstrap import Network
from verinet.devnet.jobs import run_quorum, run_signed, sign_for
from verinet.errors import (
    ContractRevert,
    DeadlinePassed,
    ModeNotAllowed,
    NotEligible,
    NotOwner,
    OpenAssignments,
    RevealNotOpen,
    StillUnbonding,
    TooEarly,
)
from verinet.protocol.receipts import receipt_digest
from verinet.protocol.rules import commitment, slash_amount, split_fee
from verinet.protocol.types import JobState, Mode, Penalty
from verinet.types import Wei

pytestmark = pytest.mark.contracts


def test_deployment_is_wired(any_net: Network) -> None:
    d = any_net.deployment
    assert d.token.symbol() == "VNET"
    assert d.token.decimals() == 18
    assert d.nodes.is_protocol(d.market.address)
    assert d.params.owner() == addr(any_net.deployer)
    assert d.nodes.node_count() == len(any_net.nodes)
    assert d.models.model(any_net.model_id).owner == addr(any_net.model_owner)


def test_signed_job_pays_node_owner_and_treasury(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    run = run_signed(any_net, client, h("input"), h("output"))
    assert run.job is not None and run.job.state is JobState.PAID
    assert run.job.result == h("output")
    (node,) = d.market.seats_of(run.job_id)
    p = d.params.snapshot()
    split = split_fee(run.job.escrow, 1, p.owner_bps, p.treasury_bps)
    assert d.market.owed(node) == split.per_node
    assert d.market.owed(addr(any_net.model_owner)) == split.owner
    (paid,) = d.market.events(run.transactions[-1][1], "JobPaid")
    assert paid.args["owner"] == addr(any_net.model_owner)
    assert d.market.owed(p.treasury) == split.treasury
    before = d.token.balance_of(node)
    d.market.withdraw(sender=node)
    assert d.token.balance_of(node) == before + split.per_node
    assert d.market.owed(node) == 0
    assert_nothing_lost(any_net)


def test_quorum_majority_paid_minority_slashed(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    bonded_before = {addr(n): d.nodes.bonded(addr(n)) for n in any_net.nodes}
    run = run_quorum(
        any_net, client, h("q-in"), 3, lambda seat: h("bad") if seat == 2 else h("good")
    )
    assert run.job is not None and run.job.state is JobState.PAID
    assert run.job.result == h("good")
    seats = d.market.seats_of(run.job_id)
    liar = seats[2]
    penalties = d.market.events(run.transactions[-1][1], "NodePenalized")
    assert [(e.args["node"], e.args["reason"]) for e in penalties] == [(liar, Penalty.WRONG_OUTPUT)]
    fault = d.params.snapshot().slash_fault_bps
    assert penalties[0].args["amount"] == slash_amount(bonded_before[liar], fault)
    assert d.nodes.bonded(liar) == bonded_before[liar] - penalties[0].args["amount"]
    assert d.market.owed(liar) == 0
    assert all(d.nodes.node(s).open_assignments == 0 for s in seats)
    assert_nothing_lost(any_net)


def test_quorum_without_majority_refunds(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    escrow_before = d.market.owed(addr(client))
    run = run_quorum(any_net, client, h("split"), 3, lambda seat: h(f"answer {seat}"))
    assert run.job is not None and run.job.state is JobState.REFUNDED
    assert d.market.owed(addr(client)) == escrow_before + run.job.escrow
    # Nobody can tell who was right, so nobody is slashed for a wrong answer.
    assert d.market.events(run.transactions[-1][1], "NodePenalized") == []
    assert_nothing_lost(any_net)


def test_no_show_is_slashed_and_job_still_paid_after_deadline(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    run = run_quorum(any_net, client, h("noshow"), 3, lambda seat: None if seat == 0 else h("good"))
    assert run.job is not None and run.job.state is JobState.PAID
    penalties = d.market.events(run.transactions[-1][1], "NodePenalized")
    assert [e.args["reason"] for e in penalties] == [Penalty.NO_SHOW]
    assert_nothing_lost(any_net)


def test_reverts_are_typed(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    job_id, _ = d.market.request(any_net.model_id, h("x"), Mode.QUORUM, 3, sender=addr(client))
    with pytest.raises(NotEligible):
        d.market.commit(job_id, h("c"), sender=addr(client))
    with pytest.raises(TooEarly):
        d.market.finalize(job_id, sender=addr(client))
    with pytest.raises(ModeNotAllowed):
        d.market.request(any_net.model_id, h("x"), Mode.ZK, 1, sender=addr(client))
    with pytest.raises(NotOwner) as info:
        d.params.set_min_stake(Wei(1), sender=addr(client))
    assert isinstance(info.value, ContractRevert)


def test_reveal_waits_for_all_seats_and_deadline(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    job_id, _ = d.market.request(any_net.model_id, h("rv"), Mode.QUORUM, 3, sender=addr(client))
    drawn = [n for n in any_net.nodes if d.market.is_eligible(job_id, addr(n))]
    assert drawn, "with equal stake and oversampling every node is drawn at once"
    node, salt = drawn[0], b"\x07" * 32
    d.market.commit(job_id, commitment(h("out"), salt, addr(node)), sender=addr(node))
    # One seat of three is taken: revealing now would let later nodes copy.
    with pytest.raises(RevealNotOpen):
        d.market.reveal(job_id, h("out"), salt, sender=addr(node))
    job = d.market.job(job_id)
    any_net.chain.advance_time(job.reveal_deadline - any_net.chain.timestamp() + 1)
    with pytest.raises(DeadlinePassed):
        d.market.reveal(job_id, h("out"), salt, sender=addr(node))
    d.market.finalize(job_id, sender=addr(client))
    assert d.market.job(job_id).state is JobState.REFUNDED
    assert_nothing_lost(any_net)


def test_receipt_digest_matches_python(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    job_id, _ = d.market.request(any_net.model_id, h("dg"), Mode.SIGNED, 1, sender=addr(client))
    node = any_net.nodes[0]
    receipt = sign_for(any_net, node, job_id, h("dg"), h("out"))
    assert d.market.receipt_digest(job_id, h("out"), addr(node)) == receipt_digest(receipt)


def test_unbonding_respects_open_jobs_and_delay(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    job_id, _ = d.market.request(any_net.model_id, h("ub"), Mode.QUORUM, 2, sender=addr(client))
    node = next(n for n in any_net.nodes if d.market.is_eligible(job_id, addr(n)))
    d.market.commit(job_id, commitment(h("o"), b"\x01" * 32, addr(node)), sender=addr(node))
    with pytest.raises(OpenAssignments):
        d.nodes.request_unstake(Wei(1), sender=addr(node))
    any_net.chain.advance_time(d.market.job(job_id).reveal_deadline - any_net.chain.timestamp() + 1)
    d.market.finalize(job_id, sender=addr(client))
    stake = d.nodes.node(addr(node)).stake
    d.nodes.request_unstake(stake, sender=addr(node))
    with pytest.raises(StillUnbonding):
        d.nodes.withdraw(sender=addr(node))
    any_net.chain.advance_time(d.params.snapshot().unbonding_delay + 1)
    before = d.token.balance_of(addr(node))
    d.nodes.withdraw(sender=addr(node))
    assert d.token.balance_of(addr(node)) == before + stake
    assert_nothing_lost(any_net)


def test_events_are_decoded_from_history(any_net: Network) -> None:
    d, client = any_net.deployment, any_net.clients[0]
    start = any_net.chain.block_number()
    job_id, receipt = d.market.request(
        any_net.model_id, h("ev"), Mode.SIGNED, 1, sender=addr(client)
    )
    (event,) = d.market.history("JobRequested", from_block=start + 1)
    assert event.args["job_id"] == job_id
    assert event.args["requester"] == addr(client)
    assert event.args["input_hash"] == h("ev")
    assert event.tx_hash == receipt.tx_hash
    assert receipt.gas_used > 21_000
