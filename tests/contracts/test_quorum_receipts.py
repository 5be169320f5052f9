"""The quorum fast path: k receipts settled in one `submit_quorum` call.

What it must refuse mirrors commit and reveal: a seat already taken by a commit, the
wrong number of receipts, one node twice, a forged or replayed receipt, an undrawn node,
the commit deadline passed.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import addr, assert_nothing_lost, h
from verinet.devnet.bootstrap import Network
from verinet.devnet.jobs import drawn_nodes, run_quorum_receipts, sign_for
from verinet.errors import (
    DeadlinePassed,
    DuplicateNode,
    JobNotOpen,
    NotEligible,
    SeatsTaken,
    WrongMode,
    WrongReceiptCount,
    WrongSigner,
)
from verinet.protocol.receipts import Receipt
from verinet.protocol.rules import commitment
from verinet.protocol.types import JobState, Mode
from verinet.types import JobId

pytestmark = pytest.mark.contracts


def _open(net: Network, k: int = 3, mode: Mode = Mode.QUORUM) -> JobId:
    job_id, _ = net.deployment.market.request(
        net.model_id, h("in"), mode, k, sender=addr(net.clients[0])
    )
    return job_id


def _receipts(net: Network, job_id: JobId, answers: list[str]) -> list[Receipt]:
    seated = drawn_nodes(net, job_id, len(answers))
    return [sign_for(net, n, job_id, h("in"), h(a)) for n, a in zip(seated, answers, strict=True)]


def test_agreeing_receipts_pay_every_seat_in_one_transaction(net: Network) -> None:
    d = net.deployment
    run = run_quorum_receipts(net, net.clients[0], h("in"), 3, lambda _: h("out"))
    assert run.job is not None and run.job.state is JobState.PAID
    assert run.job.result == h("out") and run.job.seats == 3 and run.job.reveals == 3
    assert [name for name, _ in run.transactions] == ["request", "submit_quorum"]
    seats = d.market.seats_of(run.job_id)
    assert len(set(seats)) == 3
    assert all(d.market.revealed_by(run.job_id, n) == h("out") for n in seats)
    assert all(d.nodes.node(n).open_assignments == 0 for n in seats)  # seats released
    paid = d.market.history("JobPaid")[-1].args
    assert paid["job_id"] == run.job_id and paid["winners"] == 3
    assert_nothing_lost(net)


def test_the_minority_receipt_is_slashed(net: Network) -> None:
    d = net.deployment
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["right", "wrong", "right"])
    stake_before = d.nodes.node(receipts[1].node).stake
    d.market.submit_quorum(receipts, sender=addr(net.clients[0]))
    job = d.market.job(job_id)
    assert job.state is JobState.PAID and job.result == h("right")
    assert d.nodes.node(receipts[1].node).stake < stake_before
    assert d.market.history("JobPaid")[-1].args["winners"] == 2
    assert_nothing_lost(net)


def test_no_majority_refunds(net: Network) -> None:
    job_id = _open(net)
    net.deployment.market.submit_quorum(
        _receipts(net, job_id, ["a", "b", "c"]), sender=addr(net.clients[0])
    )
    assert net.deployment.market.job(job_id).state is JobState.REFUNDED
    assert_nothing_lost(net)


def test_refused_after_a_commit(net: Network) -> None:
    d = net.deployment
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["out", "out", "out"])
    first = receipts[0].node
    d.market.commit(job_id, commitment(h("out"), b"\x01" * 32, first), sender=first)
    with pytest.raises(SeatsTaken):
        d.market.submit_quorum(receipts, sender=addr(net.clients[0]))
    assert d.market.job(job_id).seats == 1  # the commit path goes on untouched


@pytest.mark.parametrize("count", [2, 4])
def test_refused_with_the_wrong_number_of_receipts(net: Network, count: int) -> None:
    job_id = _open(net)
    with pytest.raises(WrongReceiptCount):
        net.deployment.market.submit_quorum(
            _receipts(net, job_id, ["out"] * count), sender=addr(net.clients[0])
        )


def test_refused_with_one_node_twice(net: Network) -> None:
    job_id = _open(net)
    a, b, _ = _receipts(net, job_id, ["out", "out", "out"])
    with pytest.raises(DuplicateNode):
        net.deployment.market.submit_quorum([a, b, a], sender=addr(net.clients[0]))


def test_refused_with_a_tampered_or_foreign_receipt(net: Network) -> None:
    d = net.deployment
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["out", "out", "out"])
    tampered = dataclasses.replace(receipts[2], output_hash=h("other"))
    with pytest.raises(WrongSigner):
        d.market.submit_quorum([*receipts[:2], tampered], sender=addr(net.clients[0]))
    # A receipt signed for another job does not transfer.
    other = _open(net)
    foreign = [dataclasses.replace(r, job_id=other) for r in receipts]
    with pytest.raises(WrongSigner):
        d.market.submit_quorum(foreign, sender=addr(net.clients[0]))


def test_replayed_receipts_are_refused(net: Network) -> None:
    d = net.deployment
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["out", "out", "out"])
    d.market.submit_quorum(receipts, sender=addr(net.clients[0]))
    with pytest.raises(JobNotOpen):
        d.market.submit_quorum(receipts, sender=addr(net.clients[0]))


def test_refused_for_an_undrawn_node(net: Network) -> None:
    job_id = _open(net)
    drawn = _receipts(net, job_id, ["out", "out"])
    outsider = net.clients[1]  # holds no stake: never drawn
    forged = sign_for(net, outsider, job_id, h("in"), h("out"))
    with pytest.raises(NotEligible):
        net.deployment.market.submit_quorum([*drawn, forged], sender=addr(net.clients[0]))


def test_refused_in_signed_mode_and_after_the_commit_deadline(net: Network) -> None:
    d = net.deployment
    signed = _open(net, k=1, mode=Mode.SIGNED)
    one = _receipts(net, signed, ["out"])
    with pytest.raises(WrongMode):
        d.market.submit_quorum(one, sender=addr(net.clients[0]))
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["out", "out", "out"])
    job = d.market.job(job_id)
    net.chain.advance_time(job.commit_deadline - net.chain.timestamp() + 1)
    with pytest.raises(DeadlinePassed):
        d.market.submit_quorum(receipts, sender=addr(net.clients[0]))


def test_python_wrapper_refuses_mixed_jobs(net: Network) -> None:
    job_id = _open(net)
    receipts = _receipts(net, job_id, ["out", "out", "out"])
    mixed = [*receipts[:2], dataclasses.replace(receipts[2], job_id=JobId(job_id + 1))]
    with pytest.raises(ValueError, match="one job"):
        net.deployment.market.submit_quorum(mixed, sender=addr(net.clients[0]))
