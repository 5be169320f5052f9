"""Attacks found in review, each shown to fail.

- Stake grinding: the seed is public once a job exists, so stake moved afterwards could be
  sized to win a seat (or to deny one). Only stake from before the job's block counts,
  against the total recorded at request.
- A requester invalidating a receipt by moving the total stake with dust.
- A model owner raising the fee just before a request (max_fee).
- Retiring a market must not strand its open jobs.
"""

from __future__ import annotations

import pytest

from tests.helpers import addr, assert_nothing_lost, h
from verinet.devnet.bootstrap import TOKEN, Network, stake_node
from verinet.devnet.jobs import finalize_after_hold, run_quorum, sign_for
from verinet.errors import FeeTooHigh, NotEligible, NotProtocol
from verinet.protocol.rules import commitment
from verinet.protocol.types import JobState, Mode
from verinet.types import Address, Wei

pytestmark = pytest.mark.contracts


def _spare(net: Network) -> Address:
    return Address(net.chain.accounts[-1].address)


def test_stake_added_after_the_request_never_wins_a_seat(net: Network) -> None:
    d, client = net.deployment, net.clients[0]
    for attempt in range(20):  # each draw leaves a node out with probability ~0.67
        job_id, _ = d.market.request(
            net.model_id, h(f"grind {attempt}"), Mode.QUORUM, 2, sender=addr(client)
        )
        drawn = {addr(n) for n in net.nodes if d.market.is_eligible(job_id, addr(n))}
        losers = [n for n in net.nodes if addr(n) not in drawn]
        if losers:
            break
    loser = losers[0]
    # Topping up by any amount, even enough to dominate the total, does not help.
    for amount in (1, 566, 100_000 * TOKEN):
        d.token.transfer(addr(loser), Wei(amount), sender=addr(net.deployer))
        d.token.approve(d.nodes.address, Wei(amount), sender=addr(loser))
        d.nodes.stake(Wei(amount), sender=addr(loser))
        assert not d.market.is_eligible(job_id, addr(loser))
        with pytest.raises(NotEligible):
            d.market.commit(job_id, h("c"), sender=addr(loser))
    # Nor does anyone else's stake change move the draw of the nodes already drawn.
    assert {addr(n) for n in net.nodes if d.market.is_eligible(job_id, addr(n))} == drawn
    # For the next job, the new stake counts.
    job2, _ = d.market.request(net.model_id, h("grind 2"), Mode.QUORUM, 2, sender=addr(client))
    assert d.market.job(job2).stake_total == d.nodes.total_stake()
    assert d.market.is_eligible(job2, addr(loser))


def test_requester_cannot_void_a_receipt_with_dust_stake(net: Network) -> None:
    d, client = net.deployment, net.clients[0]
    job_id, _ = d.market.request(net.model_id, h("in"), Mode.SIGNED, 1, sender=addr(client))
    node = next(n for n in net.nodes if d.market.is_eligible(job_id, addr(n)))
    receipt = sign_for(net, node, job_id, h("in"), h("out"))
    # The requester, holding the output, moves the total stake by a single wei.
    d.nodes.register("http://127.0.0.1:1", sender=addr(client))
    d.token.approve(d.nodes.address, Wei(1), sender=addr(client))
    d.nodes.stake(Wei(1), sender=addr(client))
    d.market.submit_receipt(receipt, sender=addr(node))
    finalize_after_hold(net, job_id)
    d.market.finalize(job_id, sender=addr(node))
    assert d.market.job(job_id).state is JobState.PAID
    assert_nothing_lost(net)


def test_fee_raised_before_the_request_is_refused(net: Network) -> None:
    d, client = net.deployment, net.clients[0]
    agreed = d.models.model(net.model_id).fee
    balance = d.token.balance_of(addr(client))
    d.models.set_fee(net.model_id, Wei(balance), sender=addr(net.model_owner))
    with pytest.raises(FeeTooHigh):
        d.market.request(net.model_id, h("x"), Mode.SIGNED, 1, max_fee=agreed, sender=addr(client))
    assert d.token.balance_of(addr(client)) == balance


def test_retired_market_still_finishes_its_jobs(net: Network) -> None:
    d, client = net.deployment, net.clients[0]
    job_id, _ = d.market.request(net.model_id, h("retire"), Mode.QUORUM, 2, sender=addr(client))
    seated = [n for n in net.nodes if d.market.is_eligible(job_id, addr(n))][:2]
    for n in seated:
        d.market.commit(job_id, commitment(h("o"), b"\x01" * 32, addr(n)), sender=addr(n))
    d.nodes.set_protocol(d.market.address, False, sender=addr(net.deployer))
    assert not d.nodes.is_protocol(d.market.address)
    for n in seated:
        d.market.reveal(job_id, h("o"), b"\x01" * 32, sender=addr(n))
    d.market.finalize(job_id, sender=addr(client))
    assert d.market.job(job_id).state is JobState.PAID
    assert all(d.nodes.node(addr(n)).open_assignments == 0 for n in seated)
    # No new work can be handed out through it.
    job2, _ = d.market.request(net.model_id, h("after"), Mode.QUORUM, 2, sender=addr(client))
    n = next(n for n in net.nodes if d.market.is_eligible(job2, addr(n)))
    with pytest.raises(NotProtocol):
        d.market.commit(job2, h("c"), sender=addr(n))
    assert_nothing_lost(net)


def test_newly_staked_node_serves_jobs_requested_later(net: Network) -> None:
    d, newcomer = net.deployment, net.chain.accounts[-1]
    d.token.transfer(Address(newcomer.address), Wei(2_000 * TOKEN), sender=addr(net.deployer))
    stake_node(
        d, newcomer, endpoint="http://127.0.0.1:7", stake=Wei(1_000 * TOKEN), models=[net.model_id]
    )
    run = run_quorum(net, net.clients[0], h("later"), 3, lambda _: h("ok"))
    assert run.job is not None and run.job.state is JobState.PAID
