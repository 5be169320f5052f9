"""The Python rules (verinet.protocol.rules) and InferenceMarket.vy agree on the same vectors."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.helpers import addr, h
from verinet.devnet.bootstrap import Network
from verinet.devnet.jobs import run_quorum
from verinet.protocol.rules import resolve_quorum, slash_amount, split_fee
from verinet.protocol.types import JobState, Penalty
from verinet.types import Hash32, Wei

pytestmark = pytest.mark.contracts

# Each vector: what seat i reveals (None: no-show).
VECTORS: list[list[str | None]] = [
    ["a", "a", "a"],
    ["a", "a", "b"],
    ["a", "b", "c"],
    ["a", None, "a"],
    [None, None, "a"],
    ["a", "b"],
    ["a", "a", "b", "b"],
    ["a", "b", "a", "b", "a"],
    [None, "b", "b", "a", None],
]


def _check(net: Network, votes_by_label: list[str | None]) -> None:
    d = net.deployment
    k = len(votes_by_label)
    votes: list[Hash32 | None] = [h(v) if v else None for v in votes_by_label]
    bonded = {addr(n): d.nodes.bonded(addr(n)) for n in net.nodes}
    run = run_quorum(net, net.clients[0], h(f"vector {votes_by_label}"), k, lambda i: votes[i])
    assert run.job is not None
    verdict = resolve_quorum(votes, k)
    final = run.transactions[-1][1]
    seats = d.market.seats_of(run.job_id)
    p = d.params.snapshot()
    expected_penalties = sorted(
        [
            (seats[i], Penalty.WRONG_OUTPUT, slash_amount(bonded[seats[i]], p.slash_fault_bps))
            for i in verdict.wrong
        ]
        + [
            (seats[i], Penalty.NO_SHOW, slash_amount(bonded[seats[i]], p.slash_noshow_bps))
            for i in verdict.no_show
        ]
    )
    got_penalties = sorted(
        (e.args["node"], Penalty(e.args["reason"]), e.args["amount"])
        for e in d.market.events(final, "NodePenalized")
    )
    assert got_penalties == expected_penalties
    if verdict.majority is None:
        assert run.job.state is JobState.REFUNDED
        return
    assert run.job.state is JobState.PAID
    assert run.job.result == verdict.majority
    (paid,) = d.market.events(final, "JobPaid")
    split = split_fee(run.job.escrow, len(verdict.winners), p.owner_bps, p.treasury_bps)
    assert (paid.args["winners"], paid.args["node_amount"]) == (
        len(verdict.winners),
        split.per_node,
    )
    assert (paid.args["owner_amount"], paid.args["treasury_amount"]) == (
        split.owner,
        split.treasury,
    )


@pytest.mark.parametrize("votes", VECTORS, ids=lambda v: ",".join(x or "-" for x in v))
def test_quorum_vectors_agree(net: Network, votes: list[str | None]) -> None:
    _check(net, votes)


@settings(max_examples=25)
@given(votes=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=2, max_size=5))
def test_random_quorums_agree(_embedded_net: Network, votes: list[str | None]) -> None:
    snap = _embedded_net.chain.snapshot()
    try:
        _check(_embedded_net, votes)
    finally:
        _embedded_net.chain.revert(snap)


@given(
    escrow=st.integers(0, 10**30),
    winners=st.integers(1, 15),
    owner_bps=st.integers(0, 10_000),
    treasury_bps=st.integers(0, 10_000),
)
def test_fee_split_adds_up(escrow: int, winners: int, owner_bps: int, treasury_bps: int) -> None:
    assume(owner_bps + treasury_bps <= 10_000)
    split = split_fee(Wei(escrow), winners, owner_bps, treasury_bps)
    assert split.total(winners) == escrow
    assert min(split.per_node, split.owner, split.treasury) >= 0
