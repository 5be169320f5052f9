"""The escrow audit reads one block: it holds while jobs settle beside it, and fails only when
money is really off. Each test runs on the embedded EVM and on anvil."""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import addr, h
from verinet.chain import EmbeddedChain, Token
from verinet.chain.pinned import PinnedChain
from verinet.devnet.audit import at_one_block, audit, audit_jobs
from verinet.devnet.bootstrap import MAX_UINT, TOKEN, Network
from verinet.devnet.jobs import run_quorum, run_signed
from verinet.errors import ConfigError, StateNotKept
from verinet.protocol.types import JobState
from verinet.types import Hash32, Wei

pytestmark = pytest.mark.contracts


def test_a_call_reads_the_state_of_the_block_it_names(any_net: Network) -> None:
    d, client = any_net.deployment, addr(any_net.clients[0])
    before = any_net.chain.block_number()
    balance = d.token.balance_of(client)
    d.token.transfer(addr(any_net.clients[1]), Wei(5), sender=client)
    then = PinnedChain(any_net.chain, before)
    now = PinnedChain(any_net.chain, any_net.chain.block_number())
    assert Token(now, d.token.address).balance_of(client) == balance - 5
    if isinstance(any_net.chain, EmbeddedChain):  # it keeps only its latest state
        with pytest.raises(StateNotKept):
            Token(then, d.token.address).balance_of(client)
    else:
        assert Token(then, d.token.address).balance_of(client) == balance
    with pytest.raises(ConfigError):
        then.transact(d.token.address, b"", sender=client)


def test_the_audit_holds_while_jobs_settle_beside_it(any_net: Network) -> None:
    """Jobs are requested, paid, refunded after a no-show (a slash), withdrawn and stakes
    topped up in one thread while the audits run in this one: every audit passes. Read view
    by view instead, most of them failed (26 of 39 in 20 s)."""
    d = any_net.deployment
    node = addr(any_net.nodes[0])
    d.token.approve(d.nodes.address, Wei(MAX_UINT), sender=node)
    stop, settled, failures = threading.Event(), [0], []

    def settle() -> None:
        try:
            for n in range(1_000_000):
                if stop.is_set():
                    return
                d.nodes.stake(Wei(1), sender=node)
                if n % 3 == 2:  # seat 0 never reveals: slashed, the rest paid
                    job = run_quorum(any_net, any_net.clients[1], h(f"q{n}"), 3, _no_show_first)
                else:
                    job = run_signed(any_net, any_net.clients[0], h(f"in{n}"), h(f"out{n}"))
                assert job.job is not None and job.job.state is JobState.PAID
                for seat in d.market.seats_of(job.job_id):
                    if d.market.owed(seat):
                        d.market.withdraw(sender=seat)
                settled[0] += 1
        except BaseException as exc:
            failures.append(exc)

    settler = threading.Thread(target=settle, daemon=True)
    settler.start()
    audits, deadline = 0, time.monotonic() + 240
    try:
        while (audits < 40 or settled[0] < 6) and not failures:
            assert time.monotonic() < deadline, f"{audits} audits, {settled[0]} jobs settled"
            done = settled[0]
            audit(d)
            counts = audit_jobs(d)
            assert sum(counts.values()) >= done  # it read a block no older than those jobs
            audits += 1
    finally:
        stop.set()
        settler.join(timeout=120)
    assert not settler.is_alive()
    assert not failures, failures


def test_checks_run_together_read_the_same_block(any_net: Network) -> None:
    d = any_net.deployment
    run_signed(any_net, any_net.clients[0], h("in"), h("out"))
    pinned, books, jobs = at_one_block(
        d, lambda view: (view.chain.block_number(), audit(view), audit_jobs(view))
    )
    assert books["block"] == pinned  # not one more block back
    # Paid in the latest block: a JSON-RPC chain is read one block back, before the finalize.
    assert jobs == ({"PAID": 1} if isinstance(any_net.chain, EmbeddedChain) else {"SUBMITTED": 1})


def _no_show_first(seat: int) -> Hash32 | None:
    return None if seat == 0 else h("the answer")


@pytest.mark.parametrize("into", ["registry", "market", "game"])
def test_the_audit_fails_when_tokens_move_without_the_books(any_net: Network, into: str) -> None:
    d, client = any_net.deployment, addr(any_net.clients[0])
    audit(d)
    target = {"registry": d.nodes, "market": d.market, "game": d.disputes}[into]
    d.token.transfer(target.address, Wei(TOKEN), sender=client)  # a gift, not a bond
    any_net.chain.advance_time(0)  # a JSON-RPC chain is audited one block behind its latest
    with pytest.raises(AssertionError, match="audit failed"):
        audit(d)
