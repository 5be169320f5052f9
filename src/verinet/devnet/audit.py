"""Accounting checks over a deployment: every token the contracts hold is accounted for, and
every ended job paid out or refunded exactly its escrow.

Each check reads the whole protocol at one block (`at_one_block`), so it holds while nodes
keep transacting: read view by view on the live chain, a job settled between reading the
market's balance and its books looked like money gone (1 audit in 6 of a demo failed so).
A failed audit therefore always means that money is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from verinet.chain.deploy import Deployment
from verinet.chain.embedded import EmbeddedChain
from verinet.chain.pinned import PinnedChain
from verinet.errors import StateNotKept
from verinet.protocol.types import JobState
from verinet.types import JobId

_T = TypeVar("_T")
_TRIES = 8
"""Reads started over when the chain does not have the block's state (see `at_one_block`)."""


def at_one_block(deployment: Deployment, read: Callable[[Deployment], _T]) -> _T:
    """`read(view)`, `view` being `deployment` as it stood after one block: every view call
    through it names that block. Checks run inside `read` on `view` read that block too.

    Which block: an in-process embedded chain is held (its lock) and read at its latest, the
    only state it keeps. A JSON-RPC node is read one block before its latest: anvil answers
    a read of its latest block from the state of the block it is mining (measured: 11 of 172
    pairs of reads of one block, 50 ms apart, differed while transactions streamed in; none
    one block back). A node that keeps only its latest state (the devnet's chain served
    over JSON-RPC) refuses that and is read at its latest, again if a block lands meanwhile.
    """
    chain = deployment.chain
    if isinstance(chain, PinnedChain):  # already one block's: checks run together agree
        return read(deployment)
    only_latest = isinstance(chain, EmbeddedChain)
    for attempt in range(_TRIES):
        with chain.lock if isinstance(chain, EmbeddedChain) else contextlib.nullcontext():
            latest = chain.block_number()
            block = latest if only_latest else max(latest - 1, 0)
            try:
                return read(Deployment.at(PinnedChain(chain, block), deployment.addresses()))
            except StateNotKept:
                if attempt == _TRIES - 1:
                    raise
                only_latest = True
    raise AssertionError("unreachable")


def audit(deployment: Deployment) -> dict[str, int]:
    """Token balances against the contracts' books, at one block. Raises `AssertionError` if
    anything is off."""
    return at_one_block(deployment, _audit_books)


def _audit_books(d: Deployment) -> dict[str, int]:
    market_balance = d.token.balance_of(d.market.address)
    escrow, owed = d.market.total_escrow(), d.market.total_owed()
    registry_balance, bonded = d.token.balance_of(d.nodes.address), d.nodes.total_bonded()
    if market_balance != escrow + owed or registry_balance != bonded:
        raise AssertionError(
            f"escrow audit failed: market holds {market_balance} for {escrow}+{owed}, "
            f"registry holds {registry_balance} for {bonded}"
        )
    game_balance = d.token.balance_of(d.disputes.address)
    bonds, game_owed = d.disputes.total_bonds(), d.disputes.total_owed()
    if game_balance != bonds + game_owed:
        raise AssertionError(
            f"dispute audit failed: the game holds {game_balance} for {bonds}+{game_owed}"
        )
    return {
        "block": d.chain.block_number(),  # the block whose state was read
        "game_balance": game_balance,
        "market_balance": market_balance,
        "open_escrow": escrow,
        "owed": owed,
        "registry_balance": registry_balance,
        "bonded": bonded,
    }


def audit_jobs(deployment: Deployment, *, now: int | None = None) -> dict[str, Any]:
    """Per job, at one block: a PAID job's payouts + owner share + treasury share, or a
    REFUNDED job's refund, equal its escrow; the jobs not ended hold the market's whole open
    escrow; no open job is past its deadline, nor a held one past its hold (when `now` is
    given, someone should have finalized it). Returns counts by state; raises
    `AssertionError` otherwise."""
    return at_one_block(deployment, lambda view: _audit_jobs(view, now))


def _audit_jobs(deployment: Deployment, now: int | None) -> dict[str, Any]:
    market = deployment.market
    open_escrow = 0
    paid = {e.args["job_id"]: e.args for e in market.history("JobPaid")}
    refunded = {e.args["job_id"]: e.args for e in market.history("JobRefunded")}
    counts: dict[str, int] = {}
    for job_id in range(1, market.job_count() + 1):
        job = market.job(JobId(job_id))
        counts[job.state.name] = counts.get(job.state.name, 0) + 1
        if job.state == JobState.PAID:
            p = paid[job_id]
            total = p["node_amount"] * p["winners"] + p["owner_amount"] + p["treasury_amount"]
            if total != job.escrow:
                raise AssertionError(f"job {job_id}: paid {total} of escrow {job.escrow}")
        elif job.state == JobState.REFUNDED:
            if refunded[job_id]["amount"] != job.escrow:
                raise AssertionError(f"job {job_id}: refunded {refunded[job_id]['amount']}")
        else:
            open_escrow += job.escrow
            if now is not None and now > max(job.reveal_deadline, job.finalize_after) + 60:
                raise AssertionError(f"job {job_id} is still {job.state.name} past its deadline")
    if open_escrow != market.total_escrow():
        raise AssertionError(
            f"escrow audit failed: jobs not ended hold {open_escrow}, "
            f"the market's books {market.total_escrow()}"
        )
    return counts
